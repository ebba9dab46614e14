"""Jobs and schedules of the analytics.

* ``analytics_dbt_build`` (every 10 minutes): replicate Postgres → ClickHouse, then ``dbt build`` of the
  marts (incremental) with their tests as asset checks.
* ``ops_views_build`` (hourly): ``dbt build --target postgres --select ops`` — recreates the read model's
  live views (a no-op for the data, which is always live) and runs their tests against the current state.
  The views do not wait for it: ``oms up`` / ``oms demo`` / ``oms migrate`` build them right after the
  migrations (``oms_ops.analytics.dbt.build_ops_views``).

Each run gets a ``run_key`` from its scheduled time, so a replayed tick never starts a second run.
"""

import dagster as dg

from oms_ops.queries import any_shipment
from pipelines.defs.analytics.assets import oms_dbt_assets, ops_dbt_views
from pipelines.defs.analytics.replication import replication_assets
from pipelines.resources import PostgresResource

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
    description="Ops views hourly: recreate the read model's views and test the live data (start-up built "
    "them first).",
)
def ops_views_schedule(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
    return dg.RunRequest(run_key=_run_key(context))


@dg.sensor(
    name="analytics_first_build_sensor",
    jobs=[analytics_job],
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Builds the marts as soon as the first order has shipped, instead of waiting for the "
    "schedule's next tick (a new installation shows KPIs within minutes). Once per instance. (The ops views "
    "need no first build here: start-up builds them.)",
)
def analytics_first_build_sensor(context: dg.SensorEvaluationContext, postgres: PostgresResource):
    if context.cursor == "done":
        return dg.SkipReason("the first build was requested already; the schedules keep the marts fresh")
    with postgres.connection() as conn:
        shipped = any_shipment(conn)
    if not shipped:
        return dg.SkipReason("no shipment yet: nothing for the KPI marts to show")
    context.update_cursor("done")
    return [dg.RunRequest(run_key="first-build", job_name=analytics_job.name)]
