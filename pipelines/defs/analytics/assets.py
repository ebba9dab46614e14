"""dbt models as Dagster assets; ``dbt build`` so dbt tests surface as asset checks."""

import dagster as dg
from dagster_dbt import DbtCliResource, dbt_assets

from oms_ops.platform.dbt_env import dbt_env
from pipelines.defs.analytics.project import dbt_project

_project = dbt_project()


def dbt_environment(target: str = "clickhouse") -> dict[str, str]:
    """dbt reads its connection fields from the environment; derive them from the store URLs."""
    import os

    return dbt_env(os.environ.get("OMS_DATABASE_URL"), os.environ.get("OMS_CLICKHOUSE_URL"), target=target)


@dbt_assets(manifest=_project.manifest_path, project=_project)
def oms_dbt_assets(context: dg.AssetExecutionContext, dbt: DbtCliResource):
    """Every dbt model, seed and test of the project, built on the ClickHouse target."""
    import os

    os.environ.update(dbt_environment("clickhouse"))
    yield from dbt.cli(["build"], context=context).stream()
