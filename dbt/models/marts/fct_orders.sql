{{
    config(
        materialized='incremental',
        incremental_strategy='delete+insert',
        unique_key='order_id',
        engine='MergeTree()',
        order_by='(placed_date, order_id)',
        partition_by='toYYYYMM(placed_date)',
        on_schema_change='fail',
    )
}}
-- One row per order with its lifecycle, durations and the per-order KPI flags that agg_kpi_daily sums.
-- Flags are NULL where the KPI does not apply (e.g. is_shipped_on_time for an order not shipped), so a
-- denominator never silently contains undelivered or cancelled orders.

with changed as (
    {{ changed_orders() }}
),

lifecycle as (
    select *
    from {{ ref('int_orders_lifecycle') }}
    where order_id in (select order_id from changed)
),

orders as (
    select *
    from {{ ref('stg_oms__orders') }}
    where order_id in (select order_id from changed)
),

flags as (
    select
        lifecycle.*,
        orders.order_number as order_number,
        orders.payment_method as payment_method,
        orders.currency as currency,
        orders.promised_at as promised_at,
        orders.latest_promised_at as latest_promised_at,
        orders.requested_delivery_at as requested_delivery_at,
        -- the promise on-time delivery is measured against: the customer's original promised date, else
        -- the SLA promise date of the allocation
        coalesce({{ business_date('orders.promised_at') }}, lifecycle.promise_date) as promised_delivery_date,
        orders.order_status = 'cancelled' as cancelled,
        lifecycle.shipped_at is not null as shipped,
        lifecycle.delivered_at is not null as delivered,
        lifecycle.units_returned > 0 as returned,
        lifecycle.pick_line_count > 0 as picked
    from lifecycle
    inner join orders on orders.order_id = lifecycle.order_id
)

select
    cast(order_id as Int64) as order_id,
    cast(order_number as String) as order_number,
    cast(channel_code as String) as channel_code,
    cast(location_code as String) as location_code,
    cast(delivery_method as String) as delivery_method,
    cast(payment_method as String) as payment_method,
    cast(order_status as String) as order_status,
    cast(currency as String) as currency,
    cast(placed_at as DateTime64(6, 'UTC')) as placed_at,
    cast(placed_date as Date) as placed_date,
    cast(allocated_at as Nullable(DateTime64(6, 'UTC'))) as allocated_at,
    cast(picked_at as Nullable(DateTime64(6, 'UTC'))) as picked_at,
    cast(packed_at as Nullable(DateTime64(6, 'UTC'))) as packed_at,
    cast(first_shipped_at as Nullable(DateTime64(6, 'UTC'))) as first_shipped_at,
    cast(shipped_at as Nullable(DateTime64(6, 'UTC'))) as shipped_at,
    cast(delivered_at as Nullable(DateTime64(6, 'UTC'))) as delivered_at,
    cast(cancelled_at as Nullable(DateTime64(6, 'UTC'))) as cancelled_at,
    cast(returned_at as Nullable(DateTime64(6, 'UTC'))) as returned_at,
    cast(requested_delivery_at as Nullable(DateTime64(6, 'UTC'))) as requested_delivery_at,
    cast(promised_at as Nullable(DateTime64(6, 'UTC'))) as promised_at,
    cast(latest_promised_at as Nullable(DateTime64(6, 'UTC'))) as latest_promised_at,
    cast(ship_by_at as Nullable(DateTime64(6, 'UTC'))) as ship_by_at,
    cast(promised_delivery_date as Nullable(Date)) as promised_delivery_date,
    cast(line_count as UInt64) as line_count,
    cast(units_ordered as Int64) as units_ordered,
    cast(units_sold as Int64) as units_sold,
    cast(units_shipped as Int64) as units_shipped,
    cast(units_delivered as Int64) as units_delivered,
    cast(units_returned as Int64) as units_returned,
    cast(revenue as Decimal(18, 2)) as revenue,
    cast(returned_revenue as Decimal(18, 2)) as returned_revenue,
    cast(planned_shipping_cost as Decimal(18, 2)) as planned_shipping_cost,
    cast(shipment_count as UInt64) as shipment_count,
    cast(pick_line_count as UInt64) as pick_line_count,
    cast(accurate_pick_line_count as UInt64) as accurate_pick_line_count,
    cast({{ seconds_between('placed_at', 'first_shipped_at') }} as Nullable(Int64)) as first_shipment_seconds,
    cast({{ seconds_between('placed_at', 'shipped_at') }} as Nullable(Int64)) as fulfillment_seconds,
    cast({{ seconds_between('placed_at', 'delivered_at') }} as Nullable(Int64)) as delivery_seconds,
    cast(cancelled as Bool) as is_cancelled,
    cast(shipped as Bool) as is_shipped,
    cast(delivered as Bool) as is_delivered,
    cast(returned as Bool) as is_returned,
    cast(was_backordered as Bool) as was_backordered,
    cast(shipped and shipment_count > 1 as Bool) as is_split_shipment,
    cast(picked as Bool) as is_picked,
    cast(if(picked, accurate_pick_line_count = pick_line_count, null) as Nullable(Bool)) as is_pick_accurate,
    cast(if(shipped and ship_by_at is not null, shipped_at <= ship_by_at, null) as Nullable(Bool))
        as is_shipped_on_time,
    cast(
        if(delivered and promised_delivery_date is not null,
           {{ business_date('delivered_at') }} <= promised_delivery_date, null)
        as Nullable(Bool)
    ) as is_delivered_on_time,
    cast(if(delivered, units_delivered >= units_ordered, null) as Nullable(Bool)) as is_in_full,
    cast(not has_damage_return as Bool) as is_damage_free,
    cast(not has_document_error_return as Bool) as has_accurate_documents,
    cast(
        if(delivered,
           promised_delivery_date is not null
           and {{ business_date('delivered_at') }} <= promised_delivery_date
           and units_delivered >= units_ordered
           and not has_damage_return
           and not has_document_error_return,
           null)
        as Nullable(Bool)
    ) as is_perfect_order,
    cast(_loaded_at as DateTime64(6, 'UTC')) as _loaded_at
from flags
