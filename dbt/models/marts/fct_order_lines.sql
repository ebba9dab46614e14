{{
    config(
        materialized='incremental',
        incremental_strategy='delete+insert',
        unique_key='line_id',
        engine='MergeTree()',
        order_by='(placed_date, order_id, line_id)',
        partition_by='toYYYYMM(placed_date)',
    )
}}
-- One row per order line: quantities ordered / cancelled / shipped / returned, revenue and pick result.
-- A short-picked remainder re-ordered as its own line is a backorder line (is_backorder_line); its units are
-- not "ordered" again (units_ordered counts original lines only) but are part of the units sold.

with changed as (
    {{ changed_orders() }}
),

lines as (
    select *
    from {{ ref('stg_oms__order_lines') }}
    where order_id in (select order_id from changed)
),

lifecycle as (
    select order_id, channel_code, location_code, placed_at, placed_date
    from {{ ref('int_orders_lifecycle') }}
    where order_id in (select order_id from changed)
),

picked as (
    select
        pick_lines.line_id as line_id,
        toInt64(sum(pick_lines.qty_expected)) as qty_pick_expected,
        toInt64(sum(pick_lines.qty_picked)) as qty_picked,
        toUInt64(count()) as pick_line_count,
        toUInt64(countIf(pick_lines.is_accurate)) as accurate_pick_line_count
    from {{ ref('stg_oms__pick_lines') }} as pick_lines
    inner join {{ ref('stg_oms__picks') }} as picks on picks.pick_id = pick_lines.pick_id
    where picks.order_id in (select order_id from changed)
        and pick_lines.pick_id in (
            select pick_id from {{ ref('stg_oms__picks') }} where order_id in (select order_id from changed)
        )
    group by pick_lines.line_id
),

returned as (
    select
        return_lines.line_id as line_id,
        toInt64(sum(return_lines.qty_received)) as qty_customer_returned
    from {{ ref('stg_oms__return_lines') }} as return_lines
    inner join {{ ref('stg_oms__returns') }} as returns on returns.return_id = return_lines.return_id
    where returns.order_id in (select order_id from changed) and returns.return_status != 'cancelled'
    group by return_lines.line_id
)

select
    cast(lines.line_id as Int64) as line_id,
    cast(lines.order_id as Int64) as order_id,
    cast(lines.line_no as Int32) as line_no,
    cast(lines.sku as String) as sku,
    cast(lines.line_status as String) as line_status,
    cast(lines.is_backorder_line as Bool) as is_backorder_line,
    lines.split_from_line_id as split_from_line_id,
    cast(lifecycle.channel_code as String) as channel_code,
    cast(lifecycle.location_code as String) as location_code,
    lifecycle.placed_at as placed_at,
    cast(lifecycle.placed_date as Date) as placed_date,
    cast(lines.qty as Int64) as qty_ordered,
    cast(lines.qty_cancelled as Int64) as qty_cancelled,
    cast(lines.qty - lines.qty_cancelled as Int64) as qty_sold,
    cast(lines.qty_shipped as Int64) as qty_shipped,
    cast(returned.qty_customer_returned as Int64) as qty_returned,
    cast(lines.unit_price as Decimal(18, 2)) as unit_price,
    cast((lines.qty - lines.qty_cancelled) * lines.unit_price as Decimal(18, 2)) as revenue,
    cast(picked.qty_pick_expected as Int64) as qty_pick_expected,
    cast(picked.qty_picked as Int64) as qty_picked,
    cast(
        if(picked.pick_line_count > 0, picked.accurate_pick_line_count = picked.pick_line_count, null)
        as Nullable(Bool)
    ) as is_pick_accurate,
    changed._loaded_at as _loaded_at
from lines
inner join changed on changed.order_id = lines.order_id
inner join lifecycle on lifecycle.order_id = lines.order_id
left join picked on picked.line_id = lines.line_id
left join returned on returned.line_id = lines.line_id
