select
    channel_code,
    name as channel_name,
    kind as channel_kind,
    active as is_active,
    _loaded_at
from {{ source('oms', 'channels') }} final
