select
    location_code,
    sku,
    on_hand,
    reserved,
    on_hand - reserved as available,
    updated_at,
    _loaded_at
from {{ source('oms', 'stock') }} final
