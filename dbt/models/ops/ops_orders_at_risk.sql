-- Open orders at risk of missing their promise: the ship-by deadline of their latest allocation decision is
-- past or within var at_risk_hours (not shipped yet), or the promised delivery date is past or near (in
-- delivery). One row per order with the reason; ordered by urgency in the dashboards.
with latest_decision as (
    select distinct on (order_id) order_id, ship_by, promise_date
    from {{ source('oms_live', 'allocation_decisions') }}
    where ship_by is not null or promise_date is not null
    order by order_id, decision_id desc
),

open_orders as (
    select
        o.order_id,
        o.order_number,
        o.channel_code,
        o.state,
        o.placed_at,
        d.ship_by as ship_by_at,
        coalesce({{ business_date('o.promised_at') }}, d.promise_date) as promise_date,
        o.state in (
            'new', 'on_hold', 'backordered', 'partially_allocated', 'allocated', 'picking', 'packed',
            'partially_shipped'
        ) as is_before_shipping
    from {{ source('oms_live', 'orders') }} as o
    left join latest_decision as d on d.order_id = o.order_id
    where o.state not in ('delivered', 'picked_up', 'returned_to_sender', 'cancelled')
),

assessed as (
    select
        open_orders.*,
        {{ end_of_business_date('promise_date') }} as promise_deadline_at,
        case
            when is_before_shipping and ship_by_at < now() then 'ship_by_missed'
            when is_before_shipping and ship_by_at < now() + interval '{{ var("at_risk_hours") }} hours'
                then 'ship_by_due_soon'
            when {{ end_of_business_date('promise_date') }} < now() then 'promise_missed'
            when {{ end_of_business_date('promise_date') }} < now() + interval '{{ var("at_risk_hours") }} hours'
                then 'promise_due_soon'
        end as risk
    from open_orders
)

select
    order_id,
    order_number,
    channel_code,
    state as order_status,
    placed_at,
    ship_by_at,
    promise_date,
    promise_deadline_at,
    risk,
    round(cast(extract(epoch from (ship_by_at - now())) / 3600.0 as numeric), 1) as hours_to_ship_by,
    round(cast(extract(epoch from (promise_deadline_at - now())) / 3600.0 as numeric), 1) as hours_to_promise
from assessed
where risk is not null
