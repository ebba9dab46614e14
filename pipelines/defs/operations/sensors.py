"""The fast lane in the control plane: the worker's journal as asset materializations.

The always-on worker (``oms_ops/worker.py``) runs the same service functions as the assets of this code
location, event by event. Each step that moved something is journalled (``oms.worker_journal``) under the
asset it stands for; this sensor turns new entries into ``AssetMaterialization`` events of those assets, with
the step's figures as metadata, so lineage, freshness and the asset pages show what actually happened —
whichever lane did it. The cursor is the last journal id reported.
"""

import dagster as dg

from oms_ops.services import journal
from pipelines.defs.channels.assets import ORDER_ASSETS, STOCK_ASSETS, channel_mappings, wms_inbound_supply
from pipelines.defs.operations.assets import ASSETS
from pipelines.resources import PostgresResource

#: journal asset name → Dagster asset key (stock entries are "stock:<location code>")
KNOWN = {
    a.key.to_user_string(): a.key for a in (*ORDER_ASSETS, *ASSETS, channel_mappings, wms_inbound_supply)
}
STOCK_KEYS = {a.tags_by_key[a.key]["location"]: a.key for a in STOCK_ASSETS}
BATCH = 500


def asset_key_of(name: str) -> dg.AssetKey | None:
    if name.startswith("stock:"):
        return STOCK_KEYS.get(name.removeprefix("stock:"))
    return KNOWN.get(name)


def _value(v):
    return dg.MetadataValue.json(v) if isinstance(v, dict | list) else v


@dg.sensor(
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="What the always-on worker did (oms.worker_journal) → materializations of the same assets.",
)
def worker_journal_sensor(context: dg.SensorEvaluationContext, postgres: PostgresResource):
    after = int(context.cursor or 0)
    with postgres.connection() as conn:
        entries = journal.entries_after(conn, after, limit=BATCH)
    if not entries:
        return dg.SkipReason("the worker has journalled nothing new")
    events = []
    for e in entries:
        key = asset_key_of(e.asset)
        if key is None:
            continue
        meta = {k: _value(v) for k, v in e.metadata.items()}
        events.append(
            dg.AssetMaterialization(
                asset_key=key,
                description=f"worker {e.worker_id} at {e.at.isoformat()}",
                metadata={**meta, "lane": "worker", "journal_id": e.entry_id},
            )
        )
    return dg.SensorResult(asset_events=events, cursor=str(entries[-1].entry_id))


SENSORS = [worker_journal_sensor]
