"""The analytics assets materialize in-process: replication, then the dbt marts on ClickHouse with their
tests as asset checks. (The ops views asset is materialized in test_ops_views.)"""

from __future__ import annotations

import dagster as dg
from dagster_dbt import DbtCliResource

from oms_ops.platform.dbt_env import DBT_PROJECT_DIR
from pipelines.defs.analytics.assets import oms_dbt_assets
from pipelines.defs.analytics.replication import replication_asset_key, replication_assets
from pipelines.resources import ClickHouseResource, PostgresResource


def test_replication_and_dbt_assets_materialize(
    history, db_url, clickhouse_url, ch_database, ch_client, tmp_path, monkeypatch
):
    monkeypatch.setenv("OMS_CH_RAW_DATABASE", ch_database)
    monkeypatch.setenv("OMS_CH_DATABASE", ch_database)
    monkeypatch.setenv("DBT_TARGET_PATH", str(tmp_path / "target"))  # dagster-dbt puts its run folders here
    result = dg.materialize(
        [replication_assets, oms_dbt_assets],
        resources={
            "postgres": PostgresResource(database_url=db_url),
            "clickhouse": ClickHouseResource(url=clickhouse_url),
            "dbt": DbtCliResource(project_dir=str(DBT_PROJECT_DIR), profiles_dir=str(DBT_PROJECT_DIR)),
        },
        raise_on_error=False,
    )
    assert result.success, [str(e) for e in result.all_events if e.is_failure]

    orders = result.asset_materializations_for_node("replicate_oms_to_clickhouse")
    by_key = {m.asset_key: m.metadata for m in orders}
    assert by_key[replication_asset_key("orders")]["rows_copied"].value == 5
    assert {"watermark", "lag_seconds", "snapshot_at"} <= set(by_key[replication_asset_key("orders")])

    materialized = {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}
    assert {"stg_oms__orders", "fct_orders", "agg_kpi_daily"} <= materialized
    checks = result.get_asset_check_evaluations()
    assert checks and all(c.passed for c in checks), [c.check_name for c in checks if not c.passed]
    assert any(c.asset_key == dg.AssetKey("agg_kpi_daily") for c in checks)
    assert ch_client.command("SELECT count() FROM fct_orders") == 5
