-- Available to sell per channel and SKU: the sum over the channel's pool (what a stock push would send).
select
    channel_code,
    sku,
    sum(on_hand) as on_hand,
    sum(reserved) as reserved,
    sum(safety_stock) as safety_stock,
    sum(ats) as ats,
    count(*) as locations
from {{ ref('ops_stock_availability') }}
group by channel_code, sku
