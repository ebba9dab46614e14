select
    sku,
    name as product_name,
    weight_g,
    price,
    barcode,
    active as is_active,
    updated_at,
    _loaded_at
from {{ source('oms', 'products') }} final
