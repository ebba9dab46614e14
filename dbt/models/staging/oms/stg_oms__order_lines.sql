select
    line_id,
    order_id,
    line_no,
    sku,
    name as product_name,
    qty,
    unit_price,
    state as line_status,
    qty_shipped,
    qty_cancelled,
    qty_returned,
    split_from_line_id,
    split_from_line_id is not null as is_backorder_line,
    updated_at,
    _loaded_at
from {{ source('oms', 'order_lines') }} final
