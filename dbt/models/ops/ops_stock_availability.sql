-- Available to sell per channel × location × SKU: on hand − reserved − the channel's safety stock, never
-- below 0, over the locations of the channel's ATS pool. Safety stock and pools come from the latest synced
-- business configuration (oms.business_config_versions, written by oms_ops.business_config): the largest of
-- the channel's default, by-location-kind and by-SKU-class values, as BusinessConfig.safety_stock_for does.
-- Without a synced configuration every active channel sells every active location with no safety stock.
-- SKU classes match glob patterns with * and ? (character classes [..] are not supported here).
with config as (
    select body
    from {{ source('oms_live', 'business_config_versions') }}
    order by loaded_at desc
    limit 1
),

channel_config as (
    select
        c.channel_code,
        (
            select ch.value
            from config, jsonb_array_elements(config.body -> 'channels') as ch(value)
            where ch.value ->> 'code' = c.channel_code
        ) as cfg
    from {{ source('oms_live', 'channels') }} as c
    where c.active
),

pool_groups as (
    select channel_config.channel_code, channel_config.cfg, g.value #>> '{}' as group_name
    from channel_config,
        jsonb_array_elements(coalesce(channel_config.cfg -> 'ats_pool', '["all"]'::jsonb)) as g(value)
),

pool as (
    select distinct pool_groups.channel_code, pool_groups.cfg, l.location_code, l.kind as location_kind
    from pool_groups
    cross join {{ source('oms_live', 'locations') }} as l
    left join config on true
    left join lateral (select config.body -> 'location_groups' -> pool_groups.group_name as sel) as s on true
    where l.active
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
),

sku_classes as (
    select
        cls.ordinality as class_rank,
        cls.value ->> 'name' as class_name,
        replace(replace(replace(replace(replace(pat.value #>> '{}', '\', '\\'), '%', '\%'), '_', '\_'), '*', '%'), '?', '_')
            as like_pattern
    from config,
        jsonb_array_elements(config.body -> 'sku_classes') with ordinality as cls(value, ordinality),
        jsonb_array_elements(cls.value -> 'patterns') as pat(value)
),

stock_class as (
    select distinct on (s.location_code, s.sku)
        s.location_code, s.sku, s.on_hand, s.reserved, sku_classes.class_name
    from {{ source('oms_live', 'stock') }} as s
    left join sku_classes on s.sku like sku_classes.like_pattern
    order by s.location_code, s.sku, sku_classes.class_rank
)

select
    pool.channel_code,
    pool.location_code,
    pool.location_kind,
    stock_class.sku,
    stock_class.class_name as sku_class,
    stock_class.on_hand,
    stock_class.reserved,
    stock_class.on_hand - stock_class.reserved as available,
    greatest(
        coalesce((pool.cfg -> 'safety_stock' ->> 'default')::int, 0),
        coalesce((pool.cfg -> 'safety_stock' -> 'by_location_kind' ->> pool.location_kind)::int, 0),
        coalesce((pool.cfg -> 'safety_stock' -> 'by_sku_class' ->> stock_class.class_name)::int, 0)
    ) as safety_stock,
    greatest(
        stock_class.on_hand - stock_class.reserved - greatest(
            coalesce((pool.cfg -> 'safety_stock' ->> 'default')::int, 0),
            coalesce((pool.cfg -> 'safety_stock' -> 'by_location_kind' ->> pool.location_kind)::int, 0),
            coalesce((pool.cfg -> 'safety_stock' -> 'by_sku_class' ->> stock_class.class_name)::int, 0)
        ),
        0
    ) as ats
from pool
inner join stock_class on stock_class.location_code = pool.location_code
