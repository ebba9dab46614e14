"""dbt models as Dagster assets; ``dbt build`` so dbt tests surface as asset checks.

Two selections of the one cached project: the ClickHouse marts (staging → intermediate → marts, plus the
platform models) downstream of the replication assets, and the live ops views on Postgres (the read model of
operations, ``oms_ops.read_model``; start-up builds them first, this asset rebuilds and tests them). dbt sources are
mapped to the assets that produce them in the translator's ``get_asset_spec``: ``source('oms', t)`` is the
replication asset ``oms_raw/<t>``; the Postgres tables the ops views read are ``postgres/<schema>/<t>``.
"""

from collections.abc import Mapping
from typing import Any

import dagster as dg
from dagster_dbt import (
    DagsterDbtTranslator,
    DagsterDbtTranslatorSettings,
    DbtCliResource,
    DbtProject,
    dbt_assets,
)

from oms_ops.analytics.dbt import analytics_dbt_env, patched_environ
from pipelines.defs.analytics.project import dbt_project
from pipelines.defs.analytics.replication import replication_asset_key
from pipelines.resources import ClickHouseResource, PostgresResource

_project = dbt_project()

OPS_SELECT = "path:models/ops"
GROUPS = {
    "staging": "analytics_staging",
    "intermediate": "analytics_intermediate",
    "marts": "analytics_marts",
    "platform": "analytics_platform",
    "ops": "ops_views",
}


class OmsDbtTranslator(DagsterDbtTranslator):
    """Sources → the assets that load them; groups by project folder."""

    def get_asset_spec(
        self, manifest: Mapping[str, Any], unique_id: str, project: DbtProject | None
    ) -> dg.AssetSpec:
        spec = super().get_asset_spec(manifest, unique_id, project)
        props = self.get_resource_props(manifest, unique_id)
        if props["resource_type"] == "source":
            if props["source_name"] == "oms":
                return spec.replace_attributes(
                    key=replication_asset_key(props["name"]), group_name="replication"
                )
            return spec.replace_attributes(
                key=dg.AssetKey(["postgres", props["schema"], props["name"]]), group_name="system_of_record"
            )
        folder = props.get("fqn", ["", ""])[1] if len(props.get("fqn", [])) > 2 else "platform"
        return spec.replace_attributes(group_name=GROUPS.get(folder, "analytics_platform"))


TRANSLATOR = OmsDbtTranslator(settings=DagsterDbtTranslatorSettings(enable_asset_checks=True))


def _invoke(
    context: dg.AssetExecutionContext,
    dbt: DbtCliResource,
    args: list[str],
    env: dict[str, str],
):
    # dbt reads its connection from the environment: set it only while the dbt process is started
    with patched_environ(env):
        invocation = dbt.cli(args, context=context)
    yield from invocation.stream()


@dbt_assets(
    manifest=_project.manifest_path,
    project=_project,
    exclude=OPS_SELECT,
    dagster_dbt_translator=TRANSLATOR,
    name="oms_dbt_assets",
    pool="clickhouse_dbt",
)
def oms_dbt_assets(
    context: dg.AssetExecutionContext,
    dbt: DbtCliResource,
    postgres: PostgresResource,
    clickhouse: ClickHouseResource,
):
    """Staging, intermediate, marts and platform models with their tests, built on ClickHouse."""
    env = analytics_dbt_env(postgres.database_url, clickhouse.url, target="clickhouse")
    # unit tests check the SQL, not the data: CI runs them (tests/analytics), scheduled runs skip them
    yield from _invoke(
        context, dbt, ["build", "--target", "clickhouse", "--exclude-resource-type", "unit_test"], env
    )


@dbt_assets(
    manifest=_project.manifest_path,
    project=_project,
    select=OPS_SELECT,
    dagster_dbt_translator=TRANSLATOR,
    name="ops_dbt_views",
)
def ops_dbt_views(context: dg.AssetExecutionContext, dbt: DbtCliResource, postgres: PostgresResource):
    """The read model of operations (live views in the Postgres ``ops`` schema), rebuilt with their tests
    against live data; start-up builds the same views (``oms_ops.analytics.dbt.build_ops_views``)."""
    env = analytics_dbt_env(postgres.database_url, None, target="postgres")
    yield from _invoke(context, dbt, ["build", "--target", "postgres"], env)
