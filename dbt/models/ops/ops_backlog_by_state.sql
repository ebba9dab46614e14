-- Live backlog: open orders (every state but delivered, picked up, returned to sender and cancelled) by
-- state, channel and age since they were placed, with their open units and the oldest order of each bucket.
-- is_awaiting_shipment separates what still has to leave a location (new … partially shipped, and orders
-- whose parcels wait for the carrier) from orders on their way to the customer (shipped, ready for pickup,
-- not delivered).
--
-- "Shipped" means handed to the carrier or the customer, as in the KPIs (docs/kpi-glossary.md): the order
-- state machine enters `shipped` once every unit is in a parcel, so an order in state `shipped` with a parcel
-- still waiting for its carrier (created / label printed) is reported as order_status `awaiting_handover` —
-- still to leave, never counted as shipped.
with open_orders as (
    select
        o.order_id,
        case
            when o.state = 'shipped' and exists (
                select 1 from {{ source('oms_live', 'shipments') }} as s
                where s.order_id = o.order_id and s.state in ('created', 'label_printed')
            ) then 'awaiting_handover'
            else o.state
        end as state,
        o.channel_code,
        o.placed_at,
        greatest(extract(epoch from (now() - o.placed_at)) / 3600.0, 0) as age_hours
    from {{ source('oms_live', 'orders') }} as o
    where o.state not in ('delivered', 'picked_up', 'returned_to_sender', 'cancelled')
),

open_units as (
    select
        l.order_id,
        sum(l.qty - l.qty_shipped - l.qty_cancelled) as units
    from {{ source('oms_live', 'order_lines') }} as l
    where l.order_id in (select open_orders.order_id from open_orders)
    group by l.order_id
),

bucketed as (
    select
        open_orders.*,
        coalesce(open_units.units, 0) as units,
        case
            when open_orders.age_hours < 1 then 1
            when open_orders.age_hours < 4 then 2
            when open_orders.age_hours < 24 then 3
            when open_orders.age_hours < 72 then 4
            else 5
        end as age_bucket_rank
    from open_orders
    left join open_units on open_orders.order_id = open_units.order_id
)

select
    state as order_status,
    state in (
        'new', 'on_hold', 'backordered', 'partially_allocated', 'allocated', 'picking', 'packed', 'partially_shipped',
        'awaiting_handover'
    ) as is_awaiting_shipment,
    channel_code,
    age_bucket_rank,
    case age_bucket_rank
        when 1 then '< 1h' when 2 then '1-4h' when 3 then '4-24h' when 4 then '1-3d' else '> 3d'
    end as age_bucket,
    count(*) as orders,
    sum(units) as open_units,
    min(placed_at) as oldest_placed_at,
    round(cast(max(age_hours) as numeric), 1) as max_age_hours
from bucketed
group by state, channel_code, age_bucket_rank
