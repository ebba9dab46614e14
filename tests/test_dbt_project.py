"""The dbt project builds, with its tests, on both targets; the incremental model grows incrementally.

The KPI marts need replicated data and are tested in tests/analytics; here the ClickHouse build is limited to
the platform models (calendar, KPI glossary), which need none.
"""

from __future__ import annotations

import csv
import json
import uuid

import clickhouse_connect
import psycopg
import pytest

from oms_ops.analytics.dbt import analytics_dbt_env
from oms_ops.platform.dbt_env import DBT_PROJECT_DIR

KPIS = len(list(csv.DictReader((DBT_PROJECT_DIR / "seeds" / "kpi_glossary.csv").open())))
PLATFORM = ("--select", "path:models/platform", "path:seeds")


@pytest.fixture
def run_dbt(tmp_path, monkeypatch):
    from dbt.cli.main import dbtRunner

    def _run(env: dict[str, str], *args: str):
        for k, v in env.items():
            monkeypatch.setenv(k, v)
        # own target/log folders so the test never touches the manifest Dagster reads
        monkeypatch.setenv("DBT_TARGET_PATH", str(tmp_path / "target"))
        monkeypatch.setenv("DBT_LOG_PATH", str(tmp_path / "logs"))
        res = dbtRunner().invoke(
            [*args, "--project-dir", str(DBT_PROJECT_DIR), "--profiles-dir", str(DBT_PROJECT_DIR)]
        )
        assert res.success, res.exception or [r.message for r in getattr(res.result, "results", [])]
        results = tmp_path / "target" / "run_results.json"
        if args[0] == "debug" or not results.exists():
            return None
        data = json.loads(results.read_text())
        results.unlink()
        return data

    return _run


def test_debug_and_build_on_postgres(db_url, run_dbt):
    env = analytics_dbt_env(db_url, None, target="postgres", pg_schema="dbt_test")
    run_dbt(env, "debug")
    results = run_dbt(env, "build")  # platform models and the live ops views
    assert results["results"] and all(r["status"] in ("success", "pass") for r in results["results"])
    assert any(r["unique_id"].startswith("test.") for r in results["results"])
    with psycopg.connect(db_url) as conn:
        n = conn.execute("SELECT count(*) FROM dbt_test.dim_kpi").fetchone()[0]
        assert n == KPIS
        assert conn.execute("SELECT count(*) FROM dbt_test.ops_orders_at_risk").fetchone()[0] == 0


def test_debug_and_incremental_build_on_clickhouse(clickhouse_url, run_dbt):
    database = f"dbt_{uuid.uuid4().hex[:8]}"
    env = analytics_dbt_env(None, clickhouse_url, target="clickhouse", analytics_db=database)
    run_dbt(env, "debug")
    first = run_dbt(
        env, "build", *PLATFORM, "--vars", '{calendar_start: "2024-01-01", calendar_end: "2024-01-31"}'
    )
    assert all(r["status"] in ("success", "pass") for r in first["results"])
    client = clickhouse_connect.get_client(
        host=env["OMS_CH_HOST"],
        port=int(env["OMS_CH_PORT"]),
        username=env["OMS_CH_USER"],
        password=env["OMS_CH_PASSWORD"],
        database=database,
    )
    try:
        assert client.command("SELECT count() FROM dim_date") == 31
        first_built = client.command("SELECT max(built_at) FROM dim_date")
        second = run_dbt(
            env,
            "build",
            "--select",
            "dim_date",
            "--vars",
            '{calendar_start: "2024-01-01", calendar_end: "2024-02-29"}',
        )
        assert all(r["status"] in ("success", "pass") for r in second["results"])
        assert client.command("SELECT count() FROM dim_date") == 60
        assert client.command("SELECT uniqExact(date_day) FROM dim_date") == 60
        # January rows were not rebuilt: they keep the first run's timestamp; February rows are new
        jan = client.query("SELECT max(built_at) FROM dim_date WHERE date_day < '2024-02-01'").result_rows[0][
            0
        ]
        feb = client.query("SELECT min(built_at) FROM dim_date WHERE date_day >= '2024-02-01'").result_rows[
            0
        ][0]
        assert str(jan) == str(first_built)
        assert feb >= jan
        assert client.command("SELECT count() FROM dim_kpi") == KPIS
    finally:
        client.command(f"DROP DATABASE IF EXISTS {database}")
