-- The business configuration the live views apply: the most recently synced validated snapshot
-- (oms.business_config_versions, written by oms_ops.business_config.sync_reference_data at start-up and by
-- the demo seed). One row; none before the first sync, and then the views fall back to their documented
-- defaults (every active channel sells every active location, no safety stock, no SLA).
select
    fingerprint as config_fingerprint,
    body,
    loaded_at
from {{ source('oms_live', 'business_config_versions') }}
order by loaded_at desc, fingerprint asc
limit 1
