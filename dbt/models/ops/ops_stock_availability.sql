-- Available to sell (ATS) per channel × location × SKU: on hand − reserved − the channel's safety stock,
-- never below 0, for every stock row of the channel's ATS pool (ops_channel_pool). Safety stock is the
-- largest of the channel's default, by-location-kind and by-SKU-class values, as
-- BusinessConfig.safety_stock_for; the SKU's class is the first configured class that lists it or whose glob
-- pattern (* and ?; character classes [..] are not supported here) matches it, as BusinessConfig.sku_class_of.
with sku_class_patterns as (
    select
        cls.ordinality as class_rank,
        cls.value ->> 'name' as class_name,
        -- an explicit SKU matches itself only: LIKE's wildcards escaped
        replace(replace(replace(sku.value #>> '{}', '\', '\\'), '%', '\%'), '_', '\_') as like_pattern
    from {{ ref('ops_business_config') }} as config,
        jsonb_array_elements(config.body -> 'sku_classes') with ordinality as cls (value, ordinality),
        jsonb_array_elements(coalesce(cls.value -> 'skus', '[]'::jsonb)) as sku (value)
    union all
    select
        cls.ordinality as class_rank,
        cls.value ->> 'name' as class_name,
        -- a glob pattern: LIKE's wildcards escaped, then * → % and ? → _
        replace(
            replace(replace(replace(replace(pat.value #>> '{}', '\', '\\'), '%', '\%'), '_', '\_'), '*', '%'),
            '?',
            '_'
        ) as like_pattern
    from {{ ref('ops_business_config') }} as config,
        jsonb_array_elements(config.body -> 'sku_classes') with ordinality as cls (value, ordinality),
        jsonb_array_elements(coalesce(cls.value -> 'patterns', '[]'::jsonb)) as pat (value)
),

stock_class as (
    select distinct on (s.location_code, s.sku)
        s.location_code,
        s.sku,
        s.on_hand,
        s.reserved,
        p.class_name
    from {{ source('oms_live', 'stock') }} as s
    left join sku_class_patterns as p on s.sku like p.like_pattern
    order by s.location_code asc, s.sku asc, p.class_rank asc
),

assessed as (
    select
        pool.channel_code,
        pool.location_code,
        pool.location_kind,
        stock_class.sku,
        stock_class.class_name as sku_class,
        stock_class.on_hand,
        stock_class.reserved,
        greatest(
            pool.location_safety_stock,
            coalesce((pool.safety_stock_by_sku_class ->> stock_class.class_name)::int, 0)
        ) as safety_stock
    from {{ ref('ops_channel_pool') }} as pool
    inner join stock_class on stock_class.location_code = pool.location_code
)

select
    channel_code,
    location_code,
    location_kind,
    sku,
    sku_class,
    on_hand,
    reserved,
    on_hand - reserved as available,
    safety_stock,
    greatest(on_hand - reserved - safety_stock, 0) as ats
from assessed
