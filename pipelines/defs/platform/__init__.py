"""Platform health: the stores answer and the schema is current, on a schedule."""

import dagster as dg

from pipelines.defs.platform.checks import (
    platform_health,
    platform_health_schedule,
    schema_is_current,
    stores_reachable,
)

defs = dg.Definitions(
    assets=[platform_health],
    asset_checks=[schema_is_current, stores_reachable],
    schedules=[platform_health_schedule],
)
