"""Analytics: replication of the system of record into ClickHouse, dbt marts on ClickHouse, live ops views
on Postgres, their schedules and freshness checks."""

import dagster as dg

from pipelines.defs.analytics.assets import oms_dbt_assets, ops_dbt_views
from pipelines.defs.analytics.checks import freshness_checks, freshness_sensor
from pipelines.defs.analytics.replication import replication_assets
from pipelines.defs.analytics.schedules import (
    analytics_first_build_sensor,
    analytics_job,
    analytics_schedule,
    ops_views_job,
    ops_views_schedule,
)

defs = dg.Definitions(
    assets=[replication_assets, oms_dbt_assets, ops_dbt_views],
    asset_checks=freshness_checks,
    jobs=[analytics_job, ops_views_job],
    schedules=[analytics_schedule, ops_views_schedule],
    sensors=[freshness_sensor, analytics_first_build_sensor],
)
