{{
    config(
        materialized='incremental',
        incremental_strategy='delete+insert',
        unique_key='order_id',
        engine='MergeTree()',
        order_by='order_id',
        partition_by=none,
        query_settings={
            'lightweight_delete_mode': 'lightweight_update',
            'optimize_move_to_prewhere_if_final': 1,
        },
    )
}}
-- The change feed of the marts: per order, when the newest replicated row that belongs to it arrived
-- (_loaded_at). Rows without an order_id reach their order through their parent (pick → order,
-- shipment → order, return → order), so a late-arriving child row still refreshes its order.
-- optimize_move_to_prewhere_if_final: the `_loaded_at > since` filters run before FINAL — correct here (any
-- copy loaded after `since` marks its order as changed) and it spares merging the whole of every table.

{% set since = incremental_watermark() %}

with changes as (
    select order_id, _loaded_at from {{ ref('stg_oms__orders') }} where _loaded_at > {{ since }}
    union all
    select order_id, _loaded_at from {{ ref('stg_oms__order_lines') }} where _loaded_at > {{ since }}
    union all
    select order_id, _loaded_at from {{ ref('stg_oms__order_events') }} where _loaded_at > {{ since }}
    union all
    select order_id, _loaded_at from {{ ref('stg_oms__allocation_decisions') }} where _loaded_at > {{ since }}
    union all
    select order_id, _loaded_at from {{ ref('stg_oms__picks') }} where _loaded_at > {{ since }}
    union all
    select order_id, _loaded_at from {{ ref('stg_oms__shipments') }} where _loaded_at > {{ since }}
    union all
    select order_id, _loaded_at from {{ ref('stg_oms__returns') }} where _loaded_at > {{ since }}
    union all
    select picks.order_id, pick_lines.loaded_at
    from (
        select pick_id, _loaded_at as loaded_at from {{ ref('stg_oms__pick_lines') }} where _loaded_at > {{ since }}
    ) as pick_lines
    inner join {{ ref('stg_oms__picks') }} as picks on picks.pick_id = pick_lines.pick_id
    union all
    select shipments.order_id, shipment_lines.loaded_at
    from (
        select shipment_id, _loaded_at as loaded_at
        from {{ ref('stg_oms__shipment_lines') }}
        where _loaded_at > {{ since }}
    ) as shipment_lines
    inner join {{ ref('stg_oms__shipments') }} as shipments on shipments.shipment_id = shipment_lines.shipment_id
    union all
    select returns.order_id, return_lines.loaded_at
    from (
        select return_id, _loaded_at as loaded_at
        from {{ ref('stg_oms__return_lines') }}
        where _loaded_at > {{ since }}
    ) as return_lines
    inner join {{ ref('stg_oms__returns') }} as returns on returns.return_id = return_lines.return_id
)

select
    order_id,
    max(_loaded_at) as _loaded_at
from changes
group by order_id
