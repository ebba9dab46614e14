-- Open orders at risk of missing their promise, one row per order with the reason (risk), the deadline it
-- concerns and the hours left (negative once passed):
--   * ship_by_missed / ship_by_due_soon: not fully shipped yet (new … partially shipped, or a parcel still
--     waiting for its carrier: order_status `awaiting_handover`, as in ops_backlog_by_state — shipped means
--     handed over, as in the KPIs) and the ship-by time is past / within var at_risk_hours. Ship-by = that
--     of the latest allocation decision that set one, else placed_at + the SLA's ship_by_hours (the most
--     specific sla entry of the synced business configuration for the order's channel and delivery method,
--     as BusinessConfig.sla_for) — so an order nobody allocated yet is at risk too. ship_by_missed is what
--     the "orders within SLA" check counts.
--   * promise_missed / promise_due_soon: the end of the promised delivery date (the customer's promised_at as
--     a business date, else the allocation's SLA promise date — the date the on-time delivery KPI uses) is
--     past / within var at_risk_hours.
with sla_targets as (
    select
        t.ordinality as position,
        t.value ->> 'channel' as channel_code,
        t.value ->> 'delivery_method' as delivery_method,
        (t.value ->> 'ship_by_hours')::float8 as ship_by_hours
    from {{ ref('ops_business_config') }} as config,
        jsonb_array_elements(config.body -> 'sla') with ordinality as t (value, ordinality)
),

open_orders as (
    select
        o.order_id,
        o.order_number,
        o.channel_code,
        o.delivery_method,
        case
            when o.state = 'shipped' and exists (
                select 1 from {{ source('oms_live', 'shipments') }} as s
                where s.order_id = o.order_id and s.state in ('created', 'label_printed')
            ) then 'awaiting_handover'
            else o.state
        end as state,
        o.placed_at,
        o.hold_reason,
        latest.reason as decision_reason,
        array_to_string(latest.locations, ', ') as locations,
        coalesce(promise.ship_by, o.placed_at + make_interval(secs => sla.ship_by_hours * 3600)) as ship_by_at,
        coalesce({{ business_date('o.promised_at') }}, promise.promise_date) as promise_date
    from {{ source('oms_live', 'orders') }} as o
    left join lateral (
        select d.reason, d.locations
        from {{ source('oms_live', 'allocation_decisions') }} as d
        where d.order_id = o.order_id
        order by d.decision_id desc
        limit 1
    ) as latest on true
    left join lateral (
        select d.ship_by, d.promise_date
        from {{ source('oms_live', 'allocation_decisions') }} as d
        where d.order_id = o.order_id and (d.ship_by is not null or d.promise_date is not null)
        order by d.decision_id desc
        limit 1
    ) as promise on true
    left join lateral (
        select s.ship_by_hours
        from sla_targets as s
        where
            (s.channel_code is null or s.channel_code = o.channel_code)
            and (s.delivery_method is null or s.delivery_method = o.delivery_method)
        order by
            (case when s.channel_code is null then 0 else 2 end)
            + (case when s.delivery_method is null then 0 else 1 end) desc,
            s.position asc
        limit 1
    ) as sla on true
    where o.state not in ('delivered', 'picked_up', 'returned_to_sender', 'cancelled')
),

staged as (
    select
        open_orders.*,
        state in (
            'new', 'on_hold', 'backordered', 'partially_allocated', 'allocated', 'picking', 'packed',
            'partially_shipped', 'awaiting_handover'
        ) as is_awaiting_shipment
    from open_orders
),

assessed as (
    select
        staged.*,
        {{ end_of_business_date('promise_date') }} as promise_deadline_at,
        case
            when is_awaiting_shipment and ship_by_at < now() then 'ship_by_missed'
            when is_awaiting_shipment and ship_by_at < now() + make_interval(secs => {{ var('at_risk_hours') }} * 3600)
                then 'ship_by_due_soon'
            when {{ end_of_business_date('promise_date') }} < now() then 'promise_missed'
            when {{ end_of_business_date('promise_date') }} < now() + make_interval(secs => {{ var('at_risk_hours') }} * 3600)
                then 'promise_due_soon'
        end as risk
    from staged
),

with_deadline as (
    select
        assessed.*,
        case when risk like 'ship_by%' then ship_by_at else promise_deadline_at end as deadline_at
    from assessed
    where risk is not null
)

select
    order_id,
    order_number,
    channel_code,
    delivery_method,
    state as order_status,
    risk,
    deadline_at,
    round(cast(extract(epoch from (deadline_at - now())) / 3600.0 as numeric), 1) as hours_left,
    placed_at,
    ship_by_at,
    promise_date,
    promise_deadline_at,
    locations,
    hold_reason,
    decision_reason
from with_deadline
