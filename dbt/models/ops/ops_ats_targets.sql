-- What the ATS pushers send each channel: one row per active listing of the channel (connectors.
-- channel_listings) at every location of its ATS pool that the channel knows (an active connectors.
-- channel_locations row, system = the channel), with the ids the channel's API keys stock by and the ATS of
-- ops_stock_availability — 0 where the location holds none of the SKU, so a sold-out SKU is pushed as 0.
select
    l.channel_code,
    pool.location_code,
    l.sku,
    coalesce(a.ats, 0) as ats,
    cl.external_id as external_location,
    l.offer_id,
    l.product_id,
    l.chrt_id,
    l.inventory_item_id
from {{ source('connectors_live', 'channel_listings') }} as l
inner join {{ source('connectors_live', 'channel_locations') }} as cl
    on cl.system = l.channel_code and cl.active
inner join {{ ref('ops_channel_pool') }} as pool
    on pool.channel_code = l.channel_code and pool.location_code = cl.location_code
left join {{ ref('ops_stock_availability') }} as a
    on a.channel_code = l.channel_code and a.location_code = pool.location_code and a.sku = l.sku
where l.active
