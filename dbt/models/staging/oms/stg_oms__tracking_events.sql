select
    tracking_event_id,
    shipment_id,
    status_code,
    status_name,
    occurred_at,
    city,
    mapped_state,
    applied as is_applied,
    received_at,
    _loaded_at
from {{ source('oms', 'tracking_events') }} final
