"""Sensors where an event fits better than a clock: POS files dropped, payloads queued outside a feed run
(webhooks, operators), simulators restarted.

Each keeps its position in ``context.cursor`` and gives every run a ``run_key`` derived from what it saw, so
an evaluation repeated after a daemon restart launches nothing twice; the connectors themselves are the
second line of defence (processed files are recorded, raw rows dedupe).
"""

import hashlib
import json
from pathlib import Path
from typing import Any

import dagster as dg

from oms_ops.channels import registry
from oms_ops.channels.base import Channel
from oms_ops.connectors.config import NotConfigured
from oms_ops.services import intake
from pipelines.defs.channels.assets import ORDER_ASSETS, STOCK_ASSETS, channel_mappings, order_asset_of
from pipelines.defs.channels.resources import ChannelConnectorsResource
from pipelines.resources import PostgresResource

seed_job = dg.define_asset_job(
    "channel_seed",
    selection=dg.AssetSelection.assets(channel_mappings, *STOCK_ASSETS),
    description="Mappings and stock from the simulated world (after a restart).",
)


def new_files(drop_dir: Path, cursor: str | None, pattern: str = "sales_*.csv") -> tuple[list[str], str]:
    """Files newer than the cursor ``{"mtime": m, "names": [names with mtime == m]}`` and the next cursor."""
    state = json.loads(cursor) if cursor else {"mtime": 0.0, "names": []}
    mtime, seen = float(state.get("mtime", 0.0)), set(state.get("names", []))
    found = []
    if drop_dir.is_dir():
        for p in drop_dir.glob(pattern):
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


def drop_folder_sensor(channel: Channel) -> tuple[dg.SensorDefinition, Any]:
    """New files in a file-drop channel's folder (``Channel.drop_pattern``) → a run of its order asset."""
    job = dg.define_asset_job(
        f"{channel.system}_files",
        selection=dg.AssetSelection.assets(order_asset_of(channel.code)),
        description=f"Read new {channel.title} files into {channel.code} orders.",
    )

    @dg.sensor(
        name=f"{channel.system}_drop_folder_sensor",
        job=job,
        minimum_interval_seconds=30,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=f"New {channel.drop_pattern} in the {channel.title} drop folder → a run reading them.",
    )
    def _sensor(context: dg.SensorEvaluationContext, channels: ChannelConnectorsResource):
        try:
            drop_dir = Path(channels.settings().endpoint(channel.system).get("drop_dir"))
        except NotConfigured as exc:
            return dg.SkipReason(str(exc))
        names, cursor = new_files(drop_dir, context.cursor, channel.drop_pattern)
        context.update_cursor(cursor)
        if not names:
            return dg.SkipReason(f"no new files in {drop_dir}")
        key = hashlib.sha1("\n".join(names).encode()).hexdigest()[:16]
        return dg.RunRequest(run_key=f"{channel.system}:{key}", tags={"oms/files": ",".join(names)[:200]})

    return _sensor, job


DROP_FOLDERS = [drop_folder_sensor(c) for c in registry.CHANNELS if c.drop_pattern]


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
            newest, pending = intake.queued(conn, channel.code, after_raw_id=int(seen.get(channel.code, 0)))
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


SENSORS = [*(s for s, _ in DROP_FOLDERS), queued_payloads_sensor, simulators_manifest_sensor]
JOBS = [*(j for _, j in DROP_FOLDERS), seed_job]
