select
    shipment_id,
    line_id,
    sku,
    qty,
    _loaded_at
from {{ source('oms', 'shipment_lines') }} final
