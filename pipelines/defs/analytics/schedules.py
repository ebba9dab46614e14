"""Jobs and schedules of the analytics.

* ``analytics_dbt_build`` (every 10 minutes): replicate Postgres → ClickHouse, then ``dbt build`` of the
  marts (incremental) with their tests as asset checks.
* ``ops_views_build`` (hourly): ``dbt build --target postgres --select ops`` — recreates the live views (a
  no-op for the data, which is always live) and runs their tests against the current state.

Each run gets a ``run_key`` from its scheduled time, so a replayed tick never starts a second run.
"""

import dagster as dg

from pipelines.defs.analytics.assets import oms_dbt_assets, ops_dbt_views
from pipelines.defs.analytics.replication import replication_assets

analytics_job = dg.define_asset_job(
    "analytics_dbt_build",
    selection=dg.AssetSelection.assets(replication_assets, oms_dbt_assets),
    description="Replicate the system of record into ClickHouse, then build the KPI marts (dbt build).",
)

ops_views_job = dg.define_asset_job(
    "ops_views_build",
    selection=dg.AssetSelection.assets(ops_dbt_views),
    description="Recreate and test the live ops views in Postgres (dbt build --target postgres --select ops).",
)


def _run_key(context: dg.ScheduleEvaluationContext) -> str:
    return context.scheduled_execution_time.isoformat()


@dg.schedule(
    name="analytics_dbt_build_schedule",
    job=analytics_job,
    cron_schedule="*/10 * * * *",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Marts every 10 minutes: replication, then dbt build.",
)
def analytics_schedule(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
    return dg.RunRequest(run_key=_run_key(context))


@dg.schedule(
    name="ops_views_build_schedule",
    job=ops_views_job,
    cron_schedule="7 * * * *",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Ops views hourly: recreate the views and test the live data.",
)
def ops_views_schedule(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
    return dg.RunRequest(run_key=_run_key(context))
