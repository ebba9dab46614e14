{{
    config(
        materialized='incremental',
        incremental_strategy='delete+insert',
        unique_key='return_line_id',
        engine='MergeTree()',
        order_by='(placed_date, return_line_id)',
        partition_by='toYYYYMM(placed_date)',
        on_schema_change='fail',
    )
}}
-- One row per returned order line (RMA line) with its reason. Returns are attributed to the SALES cohort:
-- placed_date / channel_code / location_code are those of the order, not of the return, so a return that
-- arrives weeks later lowers the quality of the day the order was sold.

with changed as (
    {{ changed_orders() }}
),

returns as (
    select *
    from {{ ref('stg_oms__returns') }}
    where order_id in (select order_id from changed)
),

lifecycle as (
    select order_id, channel_code, location_code, placed_at, placed_date
    from {{ ref('int_orders_lifecycle') }}
    where order_id in (select order_id from changed)
)

select
    cast(return_lines.return_line_id as Int64) as return_line_id,
    cast(returns.return_id as Int64) as return_id,
    cast(returns.rma_number as String) as rma_number,
    cast(returns.order_id as Int64) as order_id,
    cast(return_lines.line_id as Int64) as line_id,
    cast(return_lines.sku as String) as sku,
    cast(returns.return_kind as String) as return_kind,
    cast(returns.return_status as String) as return_status,
    cast(return_lines.reason_code as String) as reason_code,
    cast(reasons.reason_description as String) as reason_description,
    cast(reasons.is_damage as Bool) as is_damage,
    cast(reasons.is_seller_fault as Bool) as is_seller_fault,
    cast(return_lines.qty_requested as Int64) as qty_requested,
    cast(return_lines.qty_received as Int64) as qty_received,
    cast(order_lines.unit_price as Decimal(18, 2)) as unit_price,
    cast(return_lines.qty_received * order_lines.unit_price as Decimal(18, 2)) as returned_revenue,
    return_lines.disposition as disposition,
    cast(returns.return_status in ('received', 'inspected', 'closed') and return_lines.qty_received > 0 as Bool)
        as is_received,
    returns.received_location_code as received_location_code,
    cast(returns.requested_at as DateTime64(6, 'UTC')) as requested_at,
    cast(returns.received_at as Nullable(DateTime64(6, 'UTC'))) as received_at,
    cast(lifecycle.channel_code as String) as channel_code,
    cast(lifecycle.location_code as String) as location_code,
    cast(lifecycle.placed_at as DateTime64(6, 'UTC')) as placed_at,
    cast(lifecycle.placed_date as Date) as placed_date,
    cast(changed._loaded_at as DateTime64(6, 'UTC')) as _loaded_at
from returns
inner join changed on changed.order_id = returns.order_id
inner join lifecycle on lifecycle.order_id = returns.order_id
inner join {{ ref('stg_oms__return_lines') }} as return_lines on return_lines.return_id = returns.return_id
inner join (
    select line_id, unit_price
    from {{ ref('stg_oms__order_lines') }}
    where order_id in (select order_id from changed)
) as order_lines on order_lines.line_id = return_lines.line_id
left join {{ ref('stg_oms__return_reasons') }} as reasons on reasons.reason_code = return_lines.reason_code
