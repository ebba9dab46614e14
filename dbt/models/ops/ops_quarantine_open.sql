-- Bad input kept for ops: every open quarantine row with its reason and age (replay or discard it in the app).
select
    quarantine_id,
    source,
    external_id,
    reason,
    received_at,
    round(cast(extract(epoch from (now() - received_at)) / 3600.0 as numeric), 1) as age_hours,
    payload
from {{ source('raw_live', 'quarantine') }}
where state = 'open'
