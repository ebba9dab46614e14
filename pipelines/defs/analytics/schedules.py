"""Schedules for the analytics models."""

import dagster as dg
from dagster_dbt import build_schedule_from_dbt_selection

from pipelines.defs.analytics.assets import oms_dbt_assets

analytics_schedule = build_schedule_from_dbt_selection(
    [oms_dbt_assets],
    job_name="analytics_dbt_build",
    cron_schedule="*/10 * * * *",
    dbt_select="fqn:*",
    default_status=dg.DefaultScheduleStatus.RUNNING,
)
