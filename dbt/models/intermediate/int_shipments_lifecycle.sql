{{
    config(
        materialized='incremental',
        incremental_strategy='delete+insert',
        unique_key='shipment_id',
        engine='MergeTree()',
        order_by='shipment_id',
        partition_by=none,
    )
}}
-- Lifecycle of each shipment (parcel): picked, packed, shipped, delivered or picked up, returned to sender.
-- "Shipped" is when the parcel left fulfilment: handed to the carrier, or — for a store handing its own
-- stock to the customer (carrier 'self') — ready for pickup. Delivered = delivered or picked up. A shipment
-- cancelled before hand-over (is_cancelled) never left: it has no shipped_at and its order does not count it.

with changed as (
    {{ changed_orders() }}
),

shipments as (
    select *
    from {{ ref('stg_oms__shipments') }}
    where order_id in (select order_id from changed)
),

shipment_lines as (
    select
        shipment_id,
        toUInt64(count()) as line_count,
        toInt64(sum(qty)) as units
    from {{ ref('stg_oms__shipment_lines') }}
    where shipment_id in (select shipment_id from shipments)
    group by shipment_id
),

picks as (
    select
        assumeNotNull(shipment_id) as shipment_id,
        maxOrNull(picked_at) as picked_at,
        maxOrNull(packed_at) as packed_at
    from {{ ref('stg_oms__picks') }}
    where order_id in (select order_id from changed) and shipment_id is not null
    group by shipment_id
)

select
    shipments.shipment_id as shipment_id,
    shipments.order_id as order_id,
    shipments.shipment_number as shipment_number,
    shipments.location_code as location_code,
    shipments.carrier_code as carrier_code,
    shipments.service_code as service_code,
    shipments.delivery_method as delivery_method,
    shipments.shipment_status as shipment_status,
    shipment_lines.line_count as line_count,
    shipment_lines.units as units,
    picks.picked_at as picked_at,
    picks.packed_at as packed_at,
    shipments.created_at as created_at,
    coalesce(
        shipments.handed_over_at, shipments.in_transit_at, shipments.ready_for_pickup_at,
        shipments.delivered_at, shipments.picked_up_at
    ) as shipped_at,
    coalesce(shipments.delivered_at, shipments.picked_up_at) as delivered_at,
    shipments.returned_to_sender_at as returned_to_sender_at,
    shipments.shipment_status in ('delivered', 'picked_up') as is_delivered,
    shipments.shipment_status = 'returned_to_sender' as is_returned_to_sender,
    shipments.shipment_status = 'cancelled' as is_cancelled,
    shipments.cancelled_at as cancelled_at,
    changed._loaded_at as _loaded_at
from shipments
inner join changed on changed.order_id = shipments.order_id
left join shipment_lines on shipment_lines.shipment_id = shipments.shipment_id
left join picks on picks.shipment_id = shipments.shipment_id
