select
    reason_code,
    description as reason_description,
    is_damage,
    is_seller_fault,
    _loaded_at
from {{ source('oms', 'return_reasons') }} final
