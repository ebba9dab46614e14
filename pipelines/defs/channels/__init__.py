"""Channels: order ingestion per channel, WMS stock per location and inbound supply, mappings, feed checks and
sensors."""

import dagster as dg

from pipelines.defs.channels.assets import ORDER_ASSETS, STOCK_ASSETS, channel_mappings, wms_inbound_supply
from pipelines.defs.channels.checks import CHECKS
from pipelines.defs.channels.resources import channel_resources
from pipelines.defs.channels.scheduling import every
from pipelines.defs.channels.sensors import JOBS, SENSORS

stock_job = dg.define_asset_job(
    "stock_snapshots",
    selection=dg.AssetSelection.assets(wms_inbound_supply, *STOCK_ASSETS),
    description="The WMS's inbound supply (promise dates), then its stock snapshot of every mapped location.",
)

defs = dg.Definitions(
    assets=[*ORDER_ASSETS, channel_mappings, *STOCK_ASSETS, wms_inbound_supply],
    asset_checks=CHECKS,
    jobs=[*JOBS, stock_job],
    schedules=[every(stock_job, "*/5 * * * *", description="WMS stock every 5 minutes.")],
    sensors=SENSORS,
    resources=channel_resources(),
)
