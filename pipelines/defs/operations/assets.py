"""The operational steps as assets: allocate → ship → deliver effects (outbox) → carrier documents → tracking →
returns, and the ATS pushes. Each is one ``oms_ops`` call; its metadata says what moved.

They are assets (not bare ops) so the Dagster UI shows the flow as lineage from the channel feeds, and so the
invariant checks hang off the step that could break them.
"""

import dagster as dg

from oms_ops.channels import registry
from oms_ops.connectors.config import NotConfigured
from oms_ops.connectors.http import ConnectorError
from oms_ops.services import allocation as allocation_service
from oms_ops.services import ats as ats_service
from oms_ops.services import carrier, shipping
from oms_ops.services import notifications as notifications_service
from oms_ops.services import payments as payments_service
from oms_ops.services import returns as returns_service
from oms_ops.services.outbox import drain_outbox
from pipelines.defs.channels.resources import ChannelConnectorsResource
from pipelines.resources import PostgresResource

GROUP = "operations"
ORDER_FEEDS = [c.asset_name for c in registry.CHANNELS]


@dg.asset(
    group_name=GROUP,
    kinds={"python", "postgres"},
    deps=ORDER_FEEDS,
    description="Expire unpaid reservations, release resolved holds, allocate new orders and backorders.",
)
def allocation(
    context: dg.AssetExecutionContext, postgres: PostgresResource, channels: ChannelConnectorsResource
) -> dg.MaterializeResult:
    with postgres.connection() as conn:
        res = allocation_service.allocate(conn, channels.business_config())
    return dg.MaterializeResult(metadata=res.metadata())


@dg.asset(
    group_name=GROUP,
    kinds={"python", "postgres"},
    deps=[allocation],
    description="Pick, pack and ship what is reserved (carrier and tariff from the allocation decision); "
    "carrier bookings go to the outbox.",
)
def shipments(context: dg.AssetExecutionContext, postgres: PostgresResource) -> dg.MaterializeResult:
    with postgres.connection() as conn:
        res = shipping.ship_reserved(conn)
    for e in res.errors[:20]:
        context.log.warning(e)
    return dg.MaterializeResult(
        metadata={**res.metadata(), "error_sample": dg.MetadataValue.json(res.errors[:20])}
    )


@dg.asset(
    group_name=GROUP,
    kinds={"python", "postgres"},
    deps=[shipments],
    description="Customer notifications: new order events → SMS / e-mail in the outbox (rules, quiet hours, "
    "opt-outs), then the SMS gateway's delivery statuses.",
)
def customer_notifications(
    context: dg.AssetExecutionContext, postgres: PostgresResource, channels: ChannelConnectorsResource
) -> dg.MaterializeResult:
    with channels.clients() as clients, postgres.connection() as conn:
        meta = notifications_service.run(conn, clients, channels.business_config())
    return dg.MaterializeResult(metadata={k: _json(v) for k, v in meta.items()})


def _json(value):
    return dg.MetadataValue.json(value) if isinstance(value, dict | list) else value


@dg.asset(
    group_name=GROUP,
    kinds={"python", "postgres"},
    deps=[allocation],
    description="Payments the OMS takes itself (YooKassa): payment links for the orders waiting for one into the "
    "outbox, then the poll of open payments and pending refunds (the safety net under its notifications).",
)
def payment_requests(
    context: dg.AssetExecutionContext, postgres: PostgresResource, channels: ChannelConnectorsResource
) -> dg.MaterializeResult:
    with channels.clients() as clients, postgres.connection() as conn:
        meta = payments_service.run(conn, clients)
    return dg.MaterializeResult(metadata={k: _json(v) for k, v in meta.items()})


@dg.asset(
    group_name=GROUP,
    kinds={"python", "postgres"},
    deps=[shipments, customer_notifications, payment_requests],
    description="Drain the outbox: carrier bookings (CDEK), channel order statuses, refunds, notifications.",
)
def outbox_delivery(
    context: dg.AssetExecutionContext, postgres: PostgresResource, channels: ChannelConnectorsResource
) -> dg.MaterializeResult:
    with channels.clients() as clients, postgres.connection() as conn:
        res = drain_outbox(conn, clients, fallback_phone=channels.cdek_fallback_phone)
    for e in res.errors[:20]:
        context.log.warning(e)
    return dg.MaterializeResult(
        metadata={**res.metadata(), "error_sample": dg.MetadataValue.json(res.errors[:20])}
    )


def _carrier_step(context, postgres, channels, fn) -> dg.MaterializeResult:
    try:
        with channels.clients() as clients, postgres.connection() as conn:
            out = fn(conn, clients)
    except NotConfigured as exc:
        context.log.warning(str(exc))
        return dg.MaterializeResult(metadata={"skipped": str(exc)})
    except ConnectorError as exc:
        raise dg.Failure(description=str(exc)) from exc
    return dg.MaterializeResult(metadata=out)


@dg.asset(
    group_name=GROUP,
    kinds={"python", "postgres"},
    deps=[outbox_delivery],
    description="CDEK bookings: registration state, waybill and label PDFs stored; label → label_printed.",
)
def carrier_documents(
    context: dg.AssetExecutionContext, postgres: PostgresResource, channels: ChannelConnectorsResource
) -> dg.MaterializeResult:
    return _carrier_step(context, postgres, channels, carrier.sync_documents)


@dg.asset(
    group_name=GROUP,
    kinds={"python", "postgres"},
    deps=[carrier_documents],
    description="CDEK statuses of open shipments → tracking events → shipment and order states.",
)
def carrier_tracking(
    context: dg.AssetExecutionContext, postgres: PostgresResource, channels: ChannelConnectorsResource
) -> dg.MaterializeResult:
    return _carrier_step(context, postgres, channels, carrier.poll_tracking)


@dg.asset(
    group_name=GROUP,
    kinds={"python", "postgres"},
    deps=[carrier_tracking],
    description="Returned parcels the WMS received → returns received and inspected (restock / write-off by "
    "the reported condition); inspected returns refunded and closed; then the refunds, customer notices and "
    "return announcements to the WMS delivered from the outbox.",
)
def returns(
    context: dg.AssetExecutionContext, postgres: PostgresResource, channels: ChannelConnectorsResource
) -> dg.MaterializeResult:
    with postgres.connection() as conn:
        with channels.clients() as clients:
            asked = returns_service.sync_channel_returns(conn, clients)
        for e in asked.errors[:20]:
            context.log.warning(f"return request quarantined: {e}")
        try:
            with channels.client("wms") as client:
                receipts = returns_service.sync_return_receipts(conn, client).metadata()
        except NotConfigured as exc:
            context.log.info(f"WMS return receipts skipped: {exc}")
            receipts = {"skipped": str(exc)}
        except ConnectorError as exc:  # the refunds of returns inspected by hand still go out
            context.log.warning(f"WMS return receipts: {exc}")
            receipts = {"error": str(exc)}
        for e in receipts.get("errors", [])[:20]:
            context.log.warning(f"WMS return receipt quarantined: {e}")
        res = returns_service.refund_inspected(conn, actor="returns")
        exchanged = returns_service.exchange_inspected(conn, actor="returns")
        with channels.clients() as clients:
            drained = drain_outbox(
                conn, clients, effects=("wms.announce_return", "payment.refund", "notify.customer")
            )
    return dg.MaterializeResult(
        metadata={
            "customer_requests": dg.MetadataValue.json(asked.metadata()),
            "wms_receipts": dg.MetadataValue.json(receipts),
            "refunded": res.refunded,
            "exchanges_replaced": len(exchanged),
            "refunds_delivered": drained.by_effect["payment.refund"],
            "notices_delivered": drained.by_effect["notify.customer"],
            "returns_announced": drained.by_effect["wms.announce_return"],
            "outbox_errors": dg.MetadataValue.json(drained.errors[:20]),
        }
    )


@dg.asset(
    group_name=GROUP,
    kinds={"python", "postgres"},
    deps=[allocation],
    description="Available-to-sell (on hand − reserved − safety stock) pushed to every channel with an ATS "
    "pusher: changed values only, batched to each API's limits, verified.",
)
def ats_pushes(
    context: dg.AssetExecutionContext, postgres: PostgresResource, channels: ChannelConnectorsResource
) -> dg.MaterializeResult:
    with channels.clients() as clients, postgres.connection() as conn:
        results = ats_service.push_all(conn, clients)
    meta = {code: dg.MetadataValue.json(r) for code, r in results.metadata.items()}
    for e in results.errors[:20]:
        context.log.warning(e)
    return dg.MaterializeResult(metadata={**meta, "errors": dg.MetadataValue.json(results.errors[:20])})


ASSETS = [
    allocation,
    shipments,
    customer_notifications,
    payment_requests,
    outbox_delivery,
    carrier_documents,
    carrier_tracking,
    returns,
    ats_pushes,
]
