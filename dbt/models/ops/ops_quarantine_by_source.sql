-- Open quarantine per source: how many rows wait for ops, how many arrived in the last hour (a source whose
-- input keeps being rejected grows here first — the channels' "quarantine not growing" check), oldest and
-- newest arrival.
select
    source,
    count(*) as open_rows,
    count(*) filter (where received_at > now() - interval '1 hour') as new_last_hour,
    min(received_at) as oldest_received_at,
    max(received_at) as newest_received_at
from {{ ref('ops_quarantine_open') }}
group by source
