"""Freshness of the analytics: the replicated raw tables and the marts dashboards read must have been
updated recently; a sensor evaluates the checks every few minutes (checks with no run of their own)."""

from datetime import timedelta

import dagster as dg

from pipelines.defs.analytics.replication import replication_asset_key

#: Two missed 10-minute schedule ticks plus slack.
FRESHNESS_LIMIT = timedelta(minutes=30)
#: What dashboards read (dbt model names are their asset keys).
DASHBOARD_MARTS = ("agg_kpi_daily", "fct_orders", "fct_returns")
WATCHED_RAW = ("orders", "order_lines", "order_events", "shipments", "returns")

freshness_checks = dg.build_last_update_freshness_checks(
    assets=[dg.AssetKey(m) for m in DASHBOARD_MARTS] + [replication_asset_key(t) for t in WATCHED_RAW],
    lower_bound_delta=FRESHNESS_LIMIT,
    severity=dg.AssetCheckSeverity.WARN,
)

freshness_sensor = dg.build_sensor_for_freshness_checks(
    freshness_checks=freshness_checks,
    minimum_interval_seconds=300,
    name="analytics_freshness_sensor",
    default_status=dg.DefaultSensorStatus.RUNNING,
)
