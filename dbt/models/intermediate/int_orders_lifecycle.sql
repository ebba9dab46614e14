{{
    config(
        materialized='incremental',
        incremental_strategy='delete+insert',
        unique_key='order_id',
        engine='MergeTree()',
        order_by='order_id',
        partition_by=none,
    )
}}
-- Lifecycle of each order: placed → allocated → picked → packed → shipped → delivered / picked up →
-- returned, with the quantities, pick results, allocation promise and returns the KPIs need.
--
-- Rules (docs/kpi-glossary.md):
-- * shipped_at: the order has nothing left to ship (open units = 0) and every shipment has left; it is the
--   LAST shipment's departure. first_shipped_at is the first one (time to first shipment).
-- * delivered_at: every shipment delivered / picked up or returned to sender, at least one delivered; it is
--   the LAST delivery (a multi-shipment order is delivered when its last parcel is).
-- * location_code: where the order is fulfilled — its first shipment's location, else the location of the
--   latest allocation decision, else 'UNASSIGNED'.
-- * ship_by_at / promise_date: from the latest allocation decision that set them.
-- * planned_shipping_cost: carrier cost planned by the decisions since the last reroute (Postgres keeps no
--   actual carrier invoice per shipment).

with changed as (
    {{ changed_orders() }}
),

orders as (
    select *
    from {{ ref('stg_oms__orders') }}
    where order_id in (select order_id from changed)
),

lines as (
    select
        order_id,
        toUInt64(count()) as line_count,
        toInt64(sumIf(qty, not is_backorder_line)) as units_ordered,
        toInt64(sum(qty - qty_cancelled)) as units_sold,
        toInt64(sum(qty_shipped)) as units_shipped,
        toInt64(sum(qty - qty_shipped - qty_cancelled)) as units_open,
        toDecimal128(sum((qty - qty_cancelled) * unit_price), 2) as revenue
    from {{ ref('stg_oms__order_lines') }}
    where order_id in (select order_id from changed)
    group by order_id
),

events as (
    select
        order_id,
        minIfOrNull(occurred_at, entity = 'order' and to_state in ('allocated', 'partially_allocated'))
            as allocated_at,
        countIf(entity in ('order', 'order_line') and to_state = 'backordered') > 0 as was_backordered
    from {{ ref('stg_oms__order_events') }}
    where order_id in (select order_id from changed)
    group by order_id
),

picks as (
    select
        order_id,
        maxIfOrNull(picked_at, pick_status != 'cancelled') as picked_at,
        if(
            countIf(pick_status != 'cancelled' and packed_at is null) = 0,
            maxIfOrNull(packed_at, pick_status != 'cancelled'),
            null
        ) as packed_at
    from {{ ref('stg_oms__picks') }}
    where order_id in (select order_id from changed)
    group by order_id
),

pick_lines as (
    select
        picks.order_id as order_id,
        toUInt64(count()) as pick_line_count,
        toUInt64(countIf(pick_lines.is_accurate)) as accurate_pick_line_count
    from {{ ref('stg_oms__pick_lines') }} as pick_lines
    inner join {{ ref('stg_oms__picks') }} as picks on picks.pick_id = pick_lines.pick_id
    where picks.order_id in (select order_id from changed)
        and pick_lines.pick_id in (
            select pick_id from {{ ref('stg_oms__picks') }} where order_id in (select order_id from changed)
        )
    group by picks.order_id
),

shipments as (
    select
        order_id,
        toUInt64(count()) as shipment_count,
        toUInt64(countIf(is_delivered)) as delivered_shipment_count,
        toUInt64(countIf(is_returned_to_sender)) as returned_to_sender_count,
        argMin(location_code, shipment_id) as first_location_code,
        minOrNull(shipped_at) as first_shipped_at,
        if(countIf(shipped_at is null) = 0, maxOrNull(shipped_at), null) as last_shipped_at,
        maxIfOrNull(delivered_at, is_delivered) as last_delivered_at,
        toInt64(sumIf(units, is_delivered)) as units_delivered
    from {{ ref('int_shipments_lifecycle') }}
    -- a shipment cancelled before hand-over never left: it neither ships nor holds back the order
    where order_id in (select order_id from changed) and not ifNull(is_cancelled, false)
    group by order_id
),

decisions as (
    select *
    from {{ ref('stg_oms__allocation_decisions') }}
    where order_id in (select order_id from changed)
),

last_reroute as (
    select order_id, max(decision_id) as decision_id
    from decisions
    where decision_kind = 'reroute'
    group by order_id
),

allocation as (
    select
        decisions.order_id as order_id,
        if(
            countIf(decisions.ship_by_at is not null) = 0,
            null,
            argMaxIf(decisions.ship_by_at, decisions.decision_id, decisions.ship_by_at is not null)
        ) as ship_by_at,
        if(
            countIf(decisions.promise_date is not null) = 0,
            null,
            argMaxIf(decisions.promise_date, decisions.decision_id, decisions.promise_date is not null)
        ) as promise_date,
        argMaxIf(
            decisions.first_location_code, decisions.decision_id, decisions.first_location_code is not null
        ) as decision_location_code,
        toDecimal128(
            sumIf(decisions.planned_shipping_cost, decisions.decision_id >= last_reroute.decision_id), 2
        ) as planned_shipping_cost
    from decisions
    left join last_reroute on last_reroute.order_id = decisions.order_id
    group by decisions.order_id
),

returns as (
    select *
    from {{ ref('stg_oms__returns') }}
    where order_id in (select order_id from changed) and return_status != 'cancelled'
),

returned as (
    select
        returns.order_id as order_id,
        minIfOrNull(returns.received_at, returns.received_at is not null) as returned_at,
        toInt64(sum(return_lines.qty_received)) as units_returned,
        toDecimal128(sum(return_lines.qty_received * order_lines.unit_price), 2) as returned_revenue,
        countIf(reasons.is_damage) > 0 as has_damage_return,
        countIf(return_lines.reason_code in {{ "('" ~ var('document_error_reasons') | join("', '") ~ "')" }}) > 0
            as has_document_error_return
    from returns
    inner join {{ ref('stg_oms__return_lines') }} as return_lines on return_lines.return_id = returns.return_id
    inner join (
        select line_id, unit_price
        from {{ ref('stg_oms__order_lines') }}
        where order_id in (select order_id from changed)
    ) as order_lines on order_lines.line_id = return_lines.line_id
    left join {{ ref('stg_oms__return_reasons') }} as reasons on reasons.reason_code = return_lines.reason_code
    group by returns.order_id
)

select
    orders.order_id as order_id,
    orders.channel_code as channel_code,
    orders.delivery_method as delivery_method,
    orders.order_status as order_status,
    coalesce(
        nullIf(shipments.first_location_code, ''), nullIf(allocation.decision_location_code, ''), 'UNASSIGNED'
    ) as location_code,
    orders.placed_at as placed_at,
    {{ business_date('orders.placed_at') }} as placed_date,
    lines.line_count as line_count,
    lines.units_ordered as units_ordered,
    lines.units_sold as units_sold,
    lines.units_shipped as units_shipped,
    lines.units_open as units_open,
    lines.revenue as revenue,
    events.allocated_at as allocated_at,
    picks.picked_at as picked_at,
    picks.packed_at as packed_at,
    shipments.first_shipped_at as first_shipped_at,
    if(lines.units_open = 0 and lines.units_shipped > 0, shipments.last_shipped_at, null) as shipped_at,
    if(
        lines.units_open = 0 and lines.units_shipped > 0
        and shipments.delivered_shipment_count > 0
        and shipments.delivered_shipment_count + shipments.returned_to_sender_count = shipments.shipment_count,
        shipments.last_delivered_at,
        null
    ) as delivered_at,
    orders.cancelled_at as cancelled_at,
    returned.returned_at as returned_at,
    shipments.shipment_count as shipment_count,
    shipments.delivered_shipment_count as delivered_shipment_count,
    shipments.units_delivered as units_delivered,
    pick_lines.pick_line_count as pick_line_count,
    pick_lines.accurate_pick_line_count as accurate_pick_line_count,
    events.was_backordered as was_backordered,
    allocation.ship_by_at as ship_by_at,
    allocation.promise_date as promise_date,
    allocation.planned_shipping_cost as planned_shipping_cost,
    returned.units_returned as units_returned,
    returned.returned_revenue as returned_revenue,
    returned.has_damage_return as has_damage_return,
    returned.has_document_error_return as has_document_error_return,
    changed._loaded_at as _loaded_at
from orders
inner join changed on changed.order_id = orders.order_id
left join lines on lines.order_id = orders.order_id
left join events on events.order_id = orders.order_id
left join picks on picks.order_id = orders.order_id
left join pick_lines on pick_lines.order_id = orders.order_id
left join shipments on shipments.order_id = orders.order_id
left join allocation on allocation.order_id = orders.order_id
left join returned on returned.order_id = orders.order_id
