-- Stored channel payloads waiting for the normaliser (raw.pending_orders), per channel: how many and since
-- when. A queue whose oldest entry keeps ageing means the normaliser fails on a batch (the channels'
-- "normalisation not stuck" check). Channels with nothing queued have no row.
select
    p.channel_code,
    count(*) as queued_payloads,
    min(r.received_at) as oldest_received_at,
    round(cast(extract(epoch from (now() - min(r.received_at))) as numeric), 1) as oldest_wait_seconds
from {{ source('raw_live', 'pending_orders') }} as p
inner join {{ source('raw_live', 'channel_orders') }} as r on p.raw_id = r.raw_id
group by p.channel_code
