"""Replication assets: one asset per replicated table (``oms_raw/<table>``), all produced by one op.

The op only orchestrates: :func:`oms_ops.analytics.replication.replicate_all` does the work (incremental,
idempotent, watermarks in ClickHouse). Each asset reports its freshness as materialization metadata: rows
copied, batches, watermark, snapshot time and lag. Subsetting is supported (materialize one table alone).
"""

import dagster as dg

from oms_ops.analytics.dbt import raw_database
from oms_ops.analytics.replication import DEFAULT_SPECS, TableSpec, replicate_all
from pipelines.resources import ClickHouseResource, PostgresResource

REPLICATION_PREFIX = "oms_raw"
REPLICATION_GROUP = "replication"


def replication_asset_key(table: str) -> dg.AssetKey:
    """Asset key of the ClickHouse raw table replicating ``oms.<table>`` (dbt source ``oms.<table>``)."""
    return dg.AssetKey([REPLICATION_PREFIX, table])


def _spec(t: TableSpec) -> dg.AssetSpec:
    how = {
        "append": f"new rows by {t.cursor}",
        "mutable": f"changed rows by {t.cursor}",
        "children": "rows of entities with new order events",
        "snapshot": "whole table every run",
    }[t.mode]
    return dg.AssetSpec(
        key=replication_asset_key(t.name),
        description=f"{t.description} Replica of {t.source} in ClickHouse ({t.mode}: {how}).",
        group_name=REPLICATION_GROUP,
        kinds={"postgres", "clickhouse"},
        skippable=True,
        metadata={"source_table": t.source, "mode": t.mode, "key": ", ".join(t.key)},
    )


@dg.multi_asset(
    specs=[_spec(t) for t in DEFAULT_SPECS],
    can_subset=True,
    name="replicate_oms_to_clickhouse",
    pool="oms_replication",
)
def replication_assets(
    context: dg.AssetExecutionContext, postgres: PostgresResource, clickhouse: ClickHouseResource
):
    """Copy what changed in the system of record into the ClickHouse raw tables."""
    wanted = {key.path[-1] for key in context.selected_asset_keys}
    database = raw_database()
    client = clickhouse.client(database="default")
    try:
        client.command(f"CREATE DATABASE IF NOT EXISTS `{database}`")
        with postgres.connection() as conn:
            results = replicate_all(conn, client, DEFAULT_SPECS, database=database, only=wanted)
    finally:
        client.close()
    for r in results:
        context.log.info(
            "%s: %d rows in %d batch(es), watermark %s", r.table, r.rows_copied, r.batches, r.watermark
        )
        yield dg.MaterializeResult(asset_key=replication_asset_key(r.table), metadata=r.as_metadata())
