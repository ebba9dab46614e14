{{
    config(
        materialized='incremental',
        incremental_strategy='delete+insert',
        unique_key='date_day',
        engine='MergeTree()',
        order_by='(date_day, channel_code, location_code)',
        partition_by='toYYYYMM(date_day)',
        on_schema_change='fail',
    )
}}
-- The KPI table the dashboards read: one row per business date × channel × location, where the date is
-- the order's placed date in the reporting time zone (var reporting_timezone) — every KPI, returns included,
-- is attributed to the sales cohort. Numerators and denominators are kept next to each rate so that any
-- roll-up (week, all channels) can recompute it; percentiles are exact (linear interpolation, like
-- Postgres percentile_cont) and cannot be rolled up. Incremental: a run recomputes whole days whose
-- orders changed (unique_key date_day → those days are deleted and rebuilt), so cells never go stale.
-- Definitions: docs/kpi-glossary.md.

with days as (
    select distinct placed_date
    from {{ ref('fct_orders') }}
    {% if is_incremental() -%} where _loaded_at > {{ incremental_watermark() }} {%- endif %}
),

orders as (
    select *
    from {{ ref('fct_orders') }}
    where placed_date in (select placed_date from days)
),

reason_units as (
    select
        placed_date,
        channel_code,
        location_code,
        reason_code,
        sum(qty_received) as units
    from {{ ref('fct_returns') }}
    where placed_date in (select placed_date from days) and is_received
    group by placed_date, channel_code, location_code, reason_code
),

top_reasons as (
    select
        placed_date,
        channel_code,
        location_code,
        arraySlice(
            arrayMap(r -> r.2, arraySort(r -> (-r.1, r.2), groupArray((units, reason_code)))), 1, 3
        ) as top_return_reasons
    from reason_units
    group by placed_date, channel_code, location_code
),

daily as (
    select
        placed_date as date_day,
        channel_code,
        location_code,
        count() as orders_placed,
        countIf(is_cancelled) as orders_cancelled,
        countIf(not is_cancelled) as orders_sold,
        sum(units_ordered) as units_ordered,
        sum(units_sold) as units_sold,
        sum(revenue) as revenue,
        countIf(is_shipped) as orders_shipped,
        countIf(is_delivered) as orders_delivered,
        quantileExactInclusiveIf(0.5)(assumeNotNull(fulfillment_seconds), is_shipped) as fulfillment_p50_s,
        quantileExactInclusiveIf(0.9)(assumeNotNull(fulfillment_seconds), is_shipped) as fulfillment_p90_s,
        quantileExactInclusiveIf(0.5)(assumeNotNull(delivery_seconds), is_delivered) as delivery_p50_s,
        quantileExactInclusiveIf(0.9)(assumeNotNull(delivery_seconds), is_delivered) as delivery_p90_s,
        countIf(is_shipped_on_time is not null) as orders_shipped_with_ship_by,
        countIf(is_shipped_on_time) as orders_shipped_on_time,
        countIf(is_delivered_on_time is not null) as orders_delivered_with_promise,
        countIf(is_delivered_on_time) as orders_delivered_on_time,
        countIf(is_picked) as orders_picked,
        countIf(is_pick_accurate) as orders_picked_accurately,
        sum(units_returned) as units_returned,
        countIf(is_returned) as orders_returned,
        sum(returned_revenue) as returned_revenue,
        countIf(was_backordered) as orders_backordered,
        countIf(is_split_shipment) as orders_split_shipment,
        sumIf(planned_shipping_cost, is_shipped) as shipping_cost,
        countIf(is_perfect_order) as orders_perfect,
        max(_loaded_at) as _loaded_at
    from orders
    group by placed_date, channel_code, location_code
)

select
    cast(daily.date_day as Date) as date_day,
    cast(daily.channel_code as String) as channel_code,
    cast(daily.location_code as String) as location_code,
    cast(daily.orders_placed as UInt64) as orders_placed,
    cast(daily.orders_cancelled as UInt64) as orders_cancelled,
    cast({{ safe_pct('daily.orders_cancelled', 'daily.orders_placed') }} as Nullable(Float64))
        as cancellation_rate_pct,
    cast(daily.orders_sold as UInt64) as orders_sold,
    cast(daily.units_ordered as Int64) as units_ordered,
    cast(daily.units_sold as Int64) as units_sold,
    cast(daily.revenue as Decimal(18, 2)) as revenue,
    cast(daily.orders_shipped as UInt64) as orders_shipped,
    cast(daily.orders_delivered as UInt64) as orders_delivered,
    cast(if(daily.orders_shipped = 0, null, daily.fulfillment_p50_s / 3600) as Nullable(Float64))
        as fulfillment_hours_p50,
    cast(if(daily.orders_shipped = 0, null, daily.fulfillment_p90_s / 3600) as Nullable(Float64))
        as fulfillment_hours_p90,
    cast(if(daily.orders_delivered = 0, null, daily.delivery_p50_s / 3600) as Nullable(Float64))
        as delivery_hours_p50,
    cast(if(daily.orders_delivered = 0, null, daily.delivery_p90_s / 3600) as Nullable(Float64))
        as delivery_hours_p90,
    cast(daily.orders_shipped_with_ship_by as UInt64) as orders_shipped_with_ship_by,
    cast(daily.orders_shipped_on_time as UInt64) as orders_shipped_on_time,
    cast({{ safe_pct('daily.orders_shipped_on_time', 'daily.orders_shipped_with_ship_by') }} as Nullable(Float64))
        as on_time_shipment_pct,
    cast(daily.orders_delivered_with_promise as UInt64) as orders_delivered_with_promise,
    cast(daily.orders_delivered_on_time as UInt64) as orders_delivered_on_time,
    cast({{ safe_pct('daily.orders_delivered_on_time', 'daily.orders_delivered_with_promise') }} as Nullable(Float64))
        as on_time_delivery_pct,
    cast(daily.orders_picked as UInt64) as orders_picked,
    cast(daily.orders_picked_accurately as UInt64) as orders_picked_accurately,
    cast({{ safe_pct('daily.orders_picked_accurately', 'daily.orders_picked') }} as Nullable(Float64))
        as pick_accuracy_pct,
    cast(daily.units_returned as Int64) as units_returned,
    cast(daily.orders_returned as UInt64) as orders_returned,
    cast(daily.returned_revenue as Decimal(18, 2)) as returned_revenue,
    cast({{ safe_pct('daily.units_returned', 'daily.units_sold') }} as Nullable(Float64)) as return_rate_units_pct,
    cast({{ safe_pct('daily.orders_returned', 'daily.orders_sold') }} as Nullable(Float64)) as return_rate_orders_pct,
    cast({{ safe_pct('daily.returned_revenue', 'daily.revenue') }} as Nullable(Float64)) as return_rate_revenue_pct,
    cast(top_reasons.top_return_reasons as Array(String)) as top_return_reasons,
    cast(daily.orders_backordered as UInt64) as orders_backordered,
    cast({{ safe_pct('daily.orders_backordered', 'daily.orders_placed') }} as Nullable(Float64)) as backorder_rate_pct,
    cast(daily.orders_split_shipment as UInt64) as orders_split_shipment,
    cast({{ safe_pct('daily.orders_split_shipment', 'daily.orders_shipped') }} as Nullable(Float64))
        as split_shipment_rate_pct,
    cast(daily.shipping_cost as Decimal(18, 2)) as shipping_cost,
    cast(
        if(daily.orders_shipped = 0, null, daily.shipping_cost / daily.orders_shipped) as Nullable(Decimal(18, 2))
    ) as shipping_cost_per_order,
    cast(daily.orders_perfect as UInt64) as orders_perfect,
    cast({{ safe_pct('daily.orders_perfect', 'daily.orders_delivered') }} as Nullable(Float64))
        as perfect_order_rate_pct,
    cast(daily._loaded_at as DateTime64(6, 'UTC')) as _loaded_at
from daily
left join top_reasons
    on top_reasons.placed_date = daily.date_day
    and top_reasons.channel_code = daily.channel_code
    and top_reasons.location_code = daily.location_code
