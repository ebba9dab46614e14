{{ config(materialized='table', engine='MergeTree()', order_by='sku') }}
-- The product catalog.
select
    cast(sku as String) as sku,
    cast(product_name as String) as product_name,
    cast(weight_g as Int32) as weight_g,
    cast(price as Decimal(18, 2)) as price,
    barcode,
    cast(is_active as Bool) as is_active
from {{ ref('stg_oms__products') }}
