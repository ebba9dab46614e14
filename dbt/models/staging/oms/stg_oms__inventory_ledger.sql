select
    entry_id,
    location_code,
    sku,
    kind as movement_kind,
    on_hand_delta,
    reserved_delta,
    order_id,
    line_id,
    reservation_id,
    reference,
    actor,
    reason,
    created_at as moved_at,
    _loaded_at
from {{ source('oms', 'inventory_ledger') }} final
