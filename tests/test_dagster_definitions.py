"""The Dagster code location loads, and its platform asset materializes against the real stores."""

import dagster as dg


def test_code_location_loads():
    from pipelines.definitions import defs

    defs.resolve_all_job_defs()
    keys = {k.to_user_string() for k in defs.resolve_asset_graph().get_all_asset_keys()}
    assert {"platform_health", "dim_kpi", "dim_date", "kpi_glossary"} <= keys
    assert defs.resolve_schedule_def("platform_health_every_5_minutes")
    assert defs.resolve_schedule_def("analytics_dbt_build_schedule")


def test_workspace_yaml_loads_the_code_location():
    from dagster._core.test_utils import instance_for_test
    from dagster._core.workspace.context import WorkspaceProcessContext
    from dagster._core.workspace.load_target import WorkspaceFileTarget

    with instance_for_test() as instance:
        with WorkspaceProcessContext(instance, WorkspaceFileTarget(paths=["workspace.yaml"])) as ctx:
            request = ctx.create_request_context()
            locations = request.get_code_location_entries()
            assert list(locations) == ["pipelines.definitions"]
            entry = locations["pipelines.definitions"]
            assert entry.load_error is None, entry.load_error


def test_platform_health_materializes(db_url, clickhouse_url, monkeypatch):
    from pipelines.defs.platform.checks import platform_health, schema_is_current, stores_reachable
    from pipelines.resources import ClickHouseResource, PostgresResource

    result = dg.materialize(
        [platform_health, schema_is_current, stores_reachable],
        resources={
            "postgres": PostgresResource(database_url=db_url),
            "clickhouse": ClickHouseResource(url=clickhouse_url),
        },
    )
    assert result.success
    checks = result.get_asset_check_evaluations()
    assert {c.check_name for c in checks} == {"schema_is_current", "stores_reachable"}
    assert all(c.passed for c in checks)
    mat = result.asset_materializations_for_node("platform_health")[0]
    assert mat.metadata["migrations_applied"].value >= 1
