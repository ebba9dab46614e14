select
    return_line_id,
    return_id,
    line_id,
    sku,
    qty as qty_requested,
    qty_received,
    reason_code,
    reason_text,
    disposition,
    inspected_at,
    _loaded_at
from {{ source('oms', 'return_lines') }} final
