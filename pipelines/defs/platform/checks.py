"""The platform's own health as an asset with checks, so data engineers see it in the Dagster UI."""

import dagster as dg

from oms_ops.platform.health import clickhouse_health, postgres_health
from oms_ops.platform.migrate import status as migration_status
from pipelines.resources import ClickHouseResource, PostgresResource


@dg.asset(
    group_name="platform", description="Reachability and latency of Postgres and ClickHouse; schema version."
)
def platform_health(
    context: dg.AssetExecutionContext, postgres: PostgresResource, clickhouse: ClickHouseResource
) -> dg.MaterializeResult:
    pg = postgres_health(postgres.database_url)
    ch = clickhouse_health(clickhouse.url)
    for h in (pg, ch):
        if not h.up:
            raise dg.Failure(f"{h.name} is down: {h.error}")
    context.log.info(
        "postgres %s (%.1f ms), clickhouse %s (%.1f ms)", pg.version, pg.latency_ms, ch.version, ch.latency_ms
    )
    return dg.MaterializeResult(
        metadata={
            "postgres_version": pg.version,
            "postgres_latency_ms": round(pg.latency_ms, 1),
            "clickhouse_version": ch.version,
            "clickhouse_latency_ms": round(ch.latency_ms, 1),
            "migrations_applied": pg.detail["migrations_applied"],
            "migrations_pending": dg.MetadataValue.json(pg.detail["migrations_pending"]),
        }
    )


@dg.asset_check(asset=platform_health, description="Every migration file is applied to the database.")
def schema_is_current(postgres: PostgresResource) -> dg.AssetCheckResult:
    with postgres.connection() as conn:
        migrations = migration_status(conn)
    return dg.AssetCheckResult(
        passed=not migrations["pending"],
        metadata={
            "pending": dg.MetadataValue.json(migrations["pending"]),
            "applied": len(migrations["applied"]),
        },
    )


@dg.asset_check(asset=platform_health, description="ClickHouse answers a query.")
def stores_reachable(clickhouse: ClickHouseResource) -> dg.AssetCheckResult:
    try:
        ok = clickhouse.client().command("SELECT 1") == 1
        error = ""
    except Exception as exc:  # noqa: BLE001 - the check reports any failure as data
        ok, error = False, str(exc)[:500]
    return dg.AssetCheckResult(passed=ok, metadata={"error": error})


platform_health_schedule = dg.ScheduleDefinition(
    name="platform_health_every_5_minutes",
    target=dg.AssetSelection.assets(platform_health),
    cron_schedule="*/5 * * * *",
    default_status=dg.DefaultScheduleStatus.RUNNING,
)
