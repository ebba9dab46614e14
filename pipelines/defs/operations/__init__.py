"""Operations: the jobs that move orders through the OMS, their schedules and the invariant checks.

| job | selection | schedule |
|---|---|---|
| ``ingest_and_allocate`` | every channel's order asset + ``allocation`` | every minute |
| ``fulfilment`` | ``shipments``, ``customer_notifications``, ``payment_requests`` → ``outbox_delivery`` → ``carrier_documents`` | every minute |
| ``tracking_and_returns`` | ``carrier_tracking`` → ``returns`` (refunds delivered) | every 5 minutes |
| ``ats_push`` | ``ats_pushes`` | every 5 minutes |
"""

import dagster as dg

from pipelines.defs.channels.scheduling import every
from pipelines.defs.operations.assets import (
    ASSETS,
    ORDER_FEEDS,
    allocation,
    ats_pushes,
    carrier_documents,
    carrier_tracking,
    customer_notifications,
    outbox_delivery,
    payment_requests,
    returns,
    shipments,
)
from pipelines.defs.operations.checks import CHECKS
from pipelines.defs.operations.sensors import SENSORS

ingest_and_allocate = dg.define_asset_job(
    "ingest_and_allocate",
    selection=dg.AssetSelection.assets(*ORDER_FEEDS) | dg.AssetSelection.assets(allocation),
    description="Poll every channel, normalise, then allocate (reserve + route).",
)
fulfilment = dg.define_asset_job(
    "fulfilment",
    selection=dg.AssetSelection.assets(
        shipments, customer_notifications, payment_requests, outbox_delivery, carrier_documents
    ),
    description="Ship allocated orders, deliver the outbox (carrier bookings, channel statuses), fetch labels.",
)
tracking_and_returns = dg.define_asset_job(
    "tracking_and_returns",
    selection=dg.AssetSelection.assets(carrier_tracking, returns),
    description="Carrier tracking → delivered / not delivered; refund inspected returns and deliver the refunds.",
)
ats_push = dg.define_asset_job(
    "ats_push",
    selection=dg.AssetSelection.assets(ats_pushes),
    description="Push changed available-to-sell to the channels.",
)

JOBS = [ingest_and_allocate, fulfilment, tracking_and_returns, ats_push]

defs = dg.Definitions(
    assets=ASSETS,
    asset_checks=CHECKS,
    jobs=JOBS,
    sensors=SENSORS,
    schedules=[
        every(
            ingest_and_allocate, "* * * * *", description="Ingest every channel and allocate, every minute."
        ),
        every(fulfilment, "* * * * *", description="Ship and deliver effects, every minute."),
        every(tracking_and_returns, "*/5 * * * *", description="Tracking and returns every 5 minutes."),
        every(ats_push, "*/5 * * * *", description="ATS to the channels every 5 minutes."),
    ],
)
