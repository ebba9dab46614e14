{{ config(materialized='table', engine='MergeTree()', order_by='channel_code') }}
-- Sales channels (ozon, wildberries, webstore, offline, callcentre).
select
    cast(channel_code as String) as channel_code,
    cast(channel_name as String) as channel_name,
    cast(channel_kind as String) as channel_kind,
    cast(is_active as Bool) as is_active
from {{ ref('stg_oms__channels') }}
