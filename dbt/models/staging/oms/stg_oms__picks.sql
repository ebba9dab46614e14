select
    pick_id,
    order_id,
    location_code,
    state as pick_status,
    picked_at,
    packed_at,
    shipment_id,
    _loaded_at
from {{ source('oms', 'picks') }} final
