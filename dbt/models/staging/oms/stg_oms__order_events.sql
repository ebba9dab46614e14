select
    event_id,
    order_id,
    entity,
    entity_id,
    from_state,
    to_state,
    actor,
    reason,
    created_at as occurred_at,
    _loaded_at
from {{ source('oms', 'order_events') }} final
