-- The ATS pool of every active channel: the active locations of the location groups named in its ats_pool
-- ("all" = every active location), as BusinessConfig.channel_pool, with the safety stock that applies at the
-- location before the SKU is known (max of the channel's default and its by-location-kind value) and the
-- channel's by-SKU-class values (applied per SKU in ops_stock_availability). A channel missing from the
-- configuration (or no configuration synced yet) sells every active location with no safety stock.
with channel_config as (
    select
        c.channel_code,
        (
            select ch.value
            from {{ ref('ops_business_config') }} as config,
                jsonb_array_elements(config.body -> 'channels') as ch (value)
            where ch.value ->> 'code' = c.channel_code
        ) as cfg
    from {{ source('oms_live', 'channels') }} as c
    where c.active
),

pool_groups as (
    select
        channel_config.channel_code,
        channel_config.cfg,
        g.value #>> '{}' as group_name
    from channel_config,
        jsonb_array_elements(coalesce(channel_config.cfg -> 'ats_pool', '["all"]'::jsonb)) as g (value)
),

pool as (
    select distinct
        pool_groups.channel_code,
        pool_groups.cfg,
        l.location_code,
        l.kind as location_kind
    from pool_groups
    cross join {{ source('oms_live', 'locations') }} as l
    left join {{ ref('ops_business_config') }} as config on true
    left join lateral (select config.body -> 'location_groups' -> pool_groups.group_name as sel) as s on true
    where
        l.active
        and (
            pool_groups.group_name = 'all'
            or (
                jsonb_typeof(s.sel) = 'object'
                and (jsonb_typeof(s.sel -> 'kinds') is distinct from 'array' or (s.sel -> 'kinds') ? l.kind)
                and (jsonb_typeof(s.sel -> 'regions') is distinct from 'array' or (s.sel -> 'regions') ? l.region)
                and (
                    jsonb_typeof(s.sel -> 'codes') is distinct from 'array' or (s.sel -> 'codes') ? l.location_code
                )
            )
        )
)

select
    channel_code,
    location_code,
    location_kind,
    greatest(
        coalesce((cfg -> 'safety_stock' ->> 'default')::int, 0),
        coalesce((cfg -> 'safety_stock' -> 'by_location_kind' ->> location_kind)::int, 0)
    ) as location_safety_stock,
    coalesce(cfg -> 'safety_stock' -> 'by_sku_class', '{}'::jsonb) as safety_stock_by_sku_class
from pool
