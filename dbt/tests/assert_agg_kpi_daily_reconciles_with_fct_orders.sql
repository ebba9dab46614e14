{{ config(enabled=target.type == 'clickhouse' or var('all_targets', false)) }}
-- agg_kpi_daily is a pure roll-up of fct_orders: per day, its additive columns must equal the facts'.
-- Any row returned is a day whose aggregate drifted (e.g. an incremental run that missed a change).
with facts as (
    select
        placed_date as date_day,
        count() as orders_placed,
        sum(units_sold) as units_sold,
        sum(revenue) as revenue,
        countIf(is_shipped) as orders_shipped,
        countIf(is_delivered) as orders_delivered,
        sum(units_returned) as units_returned
    from {{ ref('fct_orders') }}
    group by placed_date
),

agg as (
    select
        date_day,
        sum(orders_placed) as orders_placed,
        sum(units_sold) as units_sold,
        sum(revenue) as revenue,
        sum(orders_shipped) as orders_shipped,
        sum(orders_delivered) as orders_delivered,
        sum(units_returned) as units_returned
    from {{ ref('agg_kpi_daily') }}
    group by date_day
)

select facts.date_day, facts.orders_placed, agg.orders_placed as agg_orders_placed
from facts
full outer join agg on agg.date_day = facts.date_day
where facts.orders_placed != agg.orders_placed
    or facts.units_sold != agg.units_sold
    or facts.revenue != agg.revenue
    or facts.orders_shipped != agg.orders_shipped
    or facts.orders_delivered != agg.orders_delivered
    or facts.units_returned != agg.units_returned
