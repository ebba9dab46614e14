select
    pick_id,
    reservation_id,
    line_id,
    sku,
    qty_expected,
    qty_picked,
    qty_short,
    discrepancy_reason,
    qty_picked = qty_expected as is_accurate,
    _loaded_at
from {{ source('oms', 'pick_lines') }} final
