"""Sensors where an event fits better than a clock: POS files dropped, payloads queued outside a feed run
(webhooks, operators), simulators restarted.

Each keeps its position in ``context.cursor`` and gives every run a ``run_key`` derived from what it saw, so
an evaluation repeated after a daemon restart launches nothing twice; the connectors themselves are the
second line of defence (processed files are recorded, raw rows dedupe).
"""

import hashlib
import json
from pathlib import Path

import dagster as dg

from oms_ops.channels import pos, registry
from oms_ops.channels.rawstore import pending_raw_orders
from oms_ops.connectors.config import NotConfigured
from pipelines.defs.channels.assets import ORDER_ASSETS, STOCK_ASSETS, channel_mappings, order_asset_of
from pipelines.defs.channels.resources import ChannelConnectorsResource
from pipelines.resources import PostgresResource

pos_files_job = dg.define_asset_job(
    "pos_files",
    selection=dg.AssetSelection.assets(order_asset_of(pos.CODE)),
    description="Read new POS end-of-day files into offline orders.",
)
seed_job = dg.define_asset_job(
    "channel_seed",
    selection=dg.AssetSelection.assets(channel_mappings, *STOCK_ASSETS),
    description="Mappings and stock from the simulated world (after a restart).",
)


def new_files(drop_dir: Path, cursor: str | None) -> tuple[list[str], str]:
    """Files newer than the cursor ``{"mtime": m, "names": [names with mtime == m]}`` and the next cursor."""
    state = json.loads(cursor) if cursor else {"mtime": 0.0, "names": []}
    mtime, seen = float(state.get("mtime", 0.0)), set(state.get("names", []))
    found = []
    if drop_dir.is_dir():
        for p in drop_dir.glob("sales_*.csv"):
            if p.name.startswith("."):
                continue
            m = p.stat().st_mtime
            if m > mtime or (m == mtime and p.name not in seen):
                found.append((m, p.name))
    if not found:
        return [], json.dumps({"mtime": mtime, "names": sorted(seen)})
    newest = max(m for m, _ in found)
    names_at_newest = {n for m, n in found if m == newest} | (seen if newest == mtime else set())
    return sorted(n for _, n in found), json.dumps({"mtime": newest, "names": sorted(names_at_newest)})


@dg.sensor(
    job=pos_files_job,
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="New sales_*.csv in the POS drop folder → a run reading them.",
)
def pos_drop_folder_sensor(context: dg.SensorEvaluationContext, channels: ChannelConnectorsResource):
    try:
        drop_dir = Path(channels.settings().endpoint(pos.CHANNEL.system).get("drop_dir"))
    except NotConfigured as exc:
        return dg.SkipReason(str(exc))
    names, cursor = new_files(drop_dir, context.cursor)
    context.update_cursor(cursor)
    if not names:
        return dg.SkipReason(f"no new files in {drop_dir}")
    key = hashlib.sha1("\n".join(names).encode()).hexdigest()[:16]
    return dg.RunRequest(run_key=f"pos:{key}", tags={"oms/files": ",".join(names)[:200]})


@dg.sensor(
    asset_selection=dg.AssetSelection.assets(*ORDER_ASSETS),
    minimum_interval_seconds=15,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Payloads stored outside a feed run (webhook deliveries, operator submissions) and still "
    "queued for the normaliser → a run of that channel's order asset.",
)
def queued_payloads_sensor(context: dg.SensorEvaluationContext, postgres: PostgresResource):
    seen = json.loads(context.cursor) if context.cursor else {}
    requests = []
    with postgres.connection() as conn:
        for channel in registry.CHANNELS:
            newest, pending = pending_raw_orders(
                conn, channel.code, after_raw_id=int(seen.get(channel.code, 0))
            )
            if newest is None:
                continue
            seen[channel.code] = newest
            requests.append(
                dg.RunRequest(
                    run_key=f"queued:{channel.code}:{newest}",
                    asset_selection=[order_asset_of(channel.code).key],
                    tags={"oms/pending": str(pending), "oms/channel": channel.code},
                )
            )
    context.update_cursor(json.dumps(seen))
    return requests or dg.SkipReason("nothing queued outside the feeds")


@dg.sensor(
    job=seed_job,
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="The simulators (re)started (a new manifest) → load mappings and stock.",
)
def simulators_manifest_sensor(context: dg.SensorEvaluationContext, channels: ChannelConnectorsResource):
    manifest = channels.settings().manifest
    if not manifest:
        return dg.SkipReason("no simulators manifest")
    started = str(manifest.get("started_at"))
    if context.cursor == started:
        return dg.SkipReason(f"simulators started at {started} already seeded")
    context.update_cursor(started)
    return dg.RunRequest(run_key=f"seed:{started}")


SENSORS = [pos_drop_folder_sensor, queued_payloads_sensor, simulators_manifest_sensor]
JOBS = [pos_files_job, seed_job]
