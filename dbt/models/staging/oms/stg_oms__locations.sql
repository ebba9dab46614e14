select
    location_code,
    name as location_name,
    kind as location_kind,
    region,
    city,
    timezone,
    capacity_per_day,
    cutoff_local,
    ships as can_ship,
    hands_over as can_hand_over,
    priority,
    active as is_active,
    _loaded_at
from {{ source('oms', 'locations') }} final
