{{
    config(
        materialized='incremental',
        incremental_strategy='delete+insert',
        unique_key='shipment_id',
        engine='MergeTree()',
        order_by='(placed_date, shipment_id)',
        partition_by='toYYYYMM(placed_date)',
    )
}}
-- One row per shipment (parcel): where it left from, with which carrier, when it left and arrived, and
-- whether it left by the order's ship-by time.

with changed as (
    {{ changed_orders() }}
),

shipments as (
    select *
    from {{ ref('int_shipments_lifecycle') }}
    where order_id in (select order_id from changed)
),

lifecycle as (
    select order_id, channel_code, placed_at, placed_date, ship_by_at
    from {{ ref('int_orders_lifecycle') }}
    where order_id in (select order_id from changed)
)

select
    cast(shipments.shipment_id as Int64) as shipment_id,
    cast(shipments.order_id as Int64) as order_id,
    cast(shipments.shipment_number as String) as shipment_number,
    cast(shipments.location_code as String) as location_code,
    cast(lifecycle.channel_code as String) as channel_code,
    cast(shipments.carrier_code as String) as carrier_code,
    shipments.service_code as service_code,
    cast(shipments.delivery_method as String) as delivery_method,
    cast(shipments.shipment_status as String) as shipment_status,
    cast(shipments.line_count as UInt64) as line_count,
    cast(shipments.units as Int64) as units,
    lifecycle.placed_at as placed_at,
    cast(lifecycle.placed_date as Date) as placed_date,
    shipments.picked_at as picked_at,
    shipments.packed_at as packed_at,
    shipments.created_at as created_at,
    shipments.shipped_at as shipped_at,
    shipments.delivered_at as delivered_at,
    shipments.returned_to_sender_at as returned_to_sender_at,
    lifecycle.ship_by_at as ship_by_at,
    cast({{ seconds_between('lifecycle.placed_at', 'shipments.shipped_at') }} as Nullable(Int64))
        as fulfillment_seconds,
    cast({{ seconds_between('shipments.shipped_at', 'shipments.delivered_at') }} as Nullable(Int64))
        as transit_seconds,
    cast(
        if(shipments.shipped_at is not null and lifecycle.ship_by_at is not null,
           shipments.shipped_at <= lifecycle.ship_by_at, null)
        as Nullable(Bool)
    ) as is_shipped_on_time,
    cast(shipments.is_delivered as Bool) as is_delivered,
    cast(shipments.is_returned_to_sender as Bool) as is_returned_to_sender,
    cast(shipments.is_cancelled as Bool) as is_cancelled,
    shipments.cancelled_at as cancelled_at,
    changed._loaded_at as _loaded_at
from shipments
inner join changed on changed.order_id = shipments.order_id
inner join lifecycle on lifecycle.order_id = shipments.order_id
