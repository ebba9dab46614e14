select
    return_id,
    rma_number,
    order_id,
    kind as return_kind,
    state as return_status,
    location_code as received_location_code,
    exchange_order_id,
    requested_at,
    received_at,
    inspected_at,
    closed_at,
    cancelled_at,
    updated_at,
    _loaded_at
from {{ source('oms', 'returns') }} final
