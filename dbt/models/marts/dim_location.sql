{{ config(materialized='table', engine='MergeTree()', order_by='location_code') }}
-- Fulfilment locations, plus the UNASSIGNED member that orders without an allocation are attributed to.
select
    cast(location_code as String) as location_code,
    cast(location_name as String) as location_name,
    cast(location_kind as String) as location_kind,
    cast(region as String) as region,
    cast(city as String) as city,
    cast(timezone as String) as timezone,
    cast(can_ship as Bool) as can_ship,
    cast(can_hand_over as Bool) as can_hand_over,
    cast(is_active as Bool) as is_active
from {{ ref('stg_oms__locations') }}
union all
select
    'UNASSIGNED', 'Not allocated to a location', 'none', '', '', '{{ var("reporting_timezone") }}',
    false, false, true
