-- Ingest health per channel: the last payload received and how many arrived in 24 h (raw.channel_orders),
-- the normaliser's queue (ops_normalisation_backlog), open quarantine rows whose source is the channel
-- (ops_quarantine_by_source) and the newest order the channel produced.
select
    c.channel_code,
    c.active as is_active,
    (
        select max(r.received_at) from {{ source('raw_live', 'channel_orders') }} as r
        where r.channel_code = c.channel_code
    ) as last_received_at,
    (
        select count(*) from {{ source('raw_live', 'channel_orders') }} as r
        where r.channel_code = c.channel_code and r.received_at > now() - interval '24 hours'
    ) as received_last_24h,
    coalesce(n.queued_payloads, 0) as queued_payloads,
    n.oldest_received_at as oldest_queued_at,
    coalesce(q.open_rows, 0) as open_quarantine,
    (
        select max(o.created_at) from {{ source('oms_live', 'orders') }} as o
        where o.channel_code = c.channel_code
    ) as last_order_at
from {{ source('oms_live', 'channels') }} as c
left join {{ ref('ops_normalisation_backlog') }} as n on c.channel_code = n.channel_code
left join {{ ref('ops_quarantine_by_source') }} as q on c.channel_code = q.source
