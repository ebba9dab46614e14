"""Channel ingestion assets (one per channel), WMS stock assets (one per location) and the channel mappings.

Each asset calls one ``oms_ops.connectors`` function and reports what it did as metadata; the business logic
(cursors, crash safety, normalisation) lives there. A system that is not configured (no variables, no
simulators' manifest) makes its asset succeed with ``skipped`` in the metadata, so a partial setup still runs.
"""

import re

import dagster as dg

from oms_ops.connectors import callcentre, ozon, pos, state, webstore, wildberries, wms
from oms_ops.connectors.config import NotConfigured
from oms_ops.connectors.http import ConnectorError
from oms_ops.connectors.normalize import normalize_pending
from oms_ops.connectors.seed import LOCATION_MAP, seed_from_simulators
from oms_ops.connectors.state import record_failure
from pipelines.defs.channels.resources import ChannelConnectorsResource
from pipelines.resources import PostgresResource

GROUP = "channels"


def _skipped(context, exc: Exception) -> dg.MaterializeResult:
    context.log.warning(str(exc))
    return dg.MaterializeResult(metadata={"skipped": str(exc)})


def _failed(postgres: PostgresResource, feed: str, exc: Exception) -> dg.Failure:
    with postgres.connection() as conn:
        record_failure(conn, feed, str(exc))
    return dg.Failure(description=str(exc), metadata={"feed": feed, "error": str(exc)})


def _ingest(context, postgres, channels, system: str, channel: str, run) -> dg.MaterializeResult:
    try:
        with channels.client(system) as client, postgres.connection() as conn:
            res = run(conn, client)
    except NotConfigured as exc:
        return _skipped(context, exc)
    except ConnectorError as exc:
        raise _failed(postgres, channel, exc) from exc
    context.log.info("%s: %s", channel, res.metadata())
    return dg.MaterializeResult(
        metadata={
            **res.metadata(),
            "cursor": dg.MetadataValue.json(res.cursor or {}),
            "notes": dg.MetadataValue.json(res.notes),
        }
    )


@dg.asset(
    group_name=GROUP,
    kinds={"python", "postgres"},
    description="Ozon FBS postings: v4 list by in_process_at watermark → raw.channel_orders → orders.",
)
def ozon_orders(
    context: dg.AssetExecutionContext, postgres: PostgresResource, channels: ChannelConnectorsResource
) -> dg.MaterializeResult:
    return _ingest(context, postgres, channels, "ozon", "ozon", lambda c, cl: ozon.ingest_ozon(c, cl))


@dg.asset(
    group_name=GROUP,
    kinds={"python", "postgres"},
    description="Wildberries assembly tasks: orders/new + orders by next cursor → orders; WB cancellations.",
)
def wildberries_orders(
    context: dg.AssetExecutionContext, postgres: PostgresResource, channels: ChannelConnectorsResource
) -> dg.MaterializeResult:
    return _ingest(
        context,
        postgres,
        channels,
        "wildberries",
        "wildberries",
        lambda c, cl: wildberries.ingest_wildberries(c, cl),
    )


@dg.asset(
    group_name=GROUP,
    kinds={"python", "postgres"},
    description="Web store (Shopify REST) orders by updated_at window with Link paging, plus webhook "
    "deliveries already stored by the receiver → orders.",
)
def webstore_orders(
    context: dg.AssetExecutionContext, postgres: PostgresResource, channels: ChannelConnectorsResource
) -> dg.MaterializeResult:
    return _ingest(
        context, postgres, channels, "shopify", "webstore", lambda c, cl: webstore.ingest_webstore(c, cl)
    )


@dg.asset(
    group_name=GROUP,
    kinds={"python", "postgres"},
    description="POS end-of-day CSV files from the drop folder → orders of the offline channel.",
)
def offline_orders(
    context: dg.AssetExecutionContext, postgres: PostgresResource, channels: ChannelConnectorsResource
) -> dg.MaterializeResult:
    try:
        drop_dir = channels.settings().endpoint("pos").get("drop_dir")
    except NotConfigured as exc:
        return _skipped(context, exc)
    with postgres.connection() as conn:
        res = pos.ingest_pos(conn, drop_dir)
    files = [f.__dict__ for f in res.files if not f.skipped]
    return dg.MaterializeResult(
        metadata={
            "files": len(files),
            "receipts": sum(f["receipts"] for f in files),
            "quarantined": sum(f["quarantined"] for f in files),
            "file_details": dg.MetadataValue.json(files),
            **{f"normalized_{k}": v for k, v in (res.normalized.as_dict() if res.normalized else {}).items()},
        }
    )


@dg.asset(
    group_name=GROUP,
    kinds={"python", "postgres"},
    description="Call-centre orders submitted with `oms callcentre submit`: anything still pending → orders.",
)
def callcentre_orders(context: dg.AssetExecutionContext, postgres: PostgresResource) -> dg.MaterializeResult:
    with postgres.connection() as conn:
        res = normalize_pending(conn, callcentre.CHANNEL)
    return dg.MaterializeResult(metadata={f"normalized_{k}": v for k, v in res.as_dict().items()})


ORDER_ASSETS = [ozon_orders, wildberries_orders, webstore_orders, offline_orders, callcentre_orders]
#: asset name → the feed name its freshness is measured on
ORDER_FEEDS = {
    "ozon_orders": "ozon",
    "wildberries_orders": "wildberries",
    "webstore_orders": "webstore",
    "offline_orders": "offline",
    "callcentre_orders": "callcentre",
}


@dg.asset(
    group_name=GROUP,
    kinds={"python", "postgres"},
    description="Reference data, products, channel listings and location mappings (and initial stock) "
    "from the simulated world's manifest.",
)
def channel_mappings(
    context: dg.AssetExecutionContext, postgres: PostgresResource, channels: ChannelConnectorsResource
) -> dg.MaterializeResult:
    settings = channels.settings()
    if not settings.manifest:
        return _skipped(
            context, NotConfigured("no simulators manifest: fill connectors.channel_* for real systems")
        )
    with postgres.connection() as conn:
        res = seed_from_simulators(conn, settings.manifest, channels.business_config(), initial_stock=False)
    return dg.MaterializeResult(
        metadata={
            "products": dg.MetadataValue.json(res.products),
            "listings": res.listings,
            "locations": res.locations,
            "notes": dg.MetadataValue.json(res.notes),
        }
    )


# -- stock ------------------------------------------------------------------------------------------------------
def _asset_name(location_code: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", location_code.lower()).strip("_")


def stock_asset(wms_code: str, location_code: str) -> dg.AssetsDefinition:
    @dg.asset(
        name=_asset_name(location_code),
        key_prefix=["stock"],
        group_name="stock",
        kinds={"python", "postgres"},
        deps=[channel_mappings],
        description=f"WMS stock snapshot of {wms_code} applied to {location_code} (ledger adjustments).",
        tags={"location": location_code},
    )
    def _stock(
        context: dg.AssetExecutionContext, postgres: PostgresResource, channels: ChannelConnectorsResource
    ) -> dg.MaterializeResult:
        try:
            with channels.client("wms") as client, postgres.connection() as conn:
                mapped = state.external_location_id(conn, "wms", location_code)
                result = wms.sync_location(conn, client, mapped or wms_code, location_code)
        except NotConfigured as exc:
            return _skipped(context, exc)
        except ConnectorError as exc:
            raise dg.Failure(description=str(exc)) from exc
        return dg.MaterializeResult(
            metadata={
                "status": result.status,
                "adjusted": len(result.adjusted),
                "unchanged": result.unchanged,
                "quarantined": len(result.quarantined),
                "released_orders": len(result.released_orders),
                "snapshot": result.snapshot_id,
            }
        )

    return _stock


STOCK_ASSETS = [stock_asset(code, loc) for code, loc in LOCATION_MAP.items()]
STOCK_FEEDS = {_asset_name(loc): f"wms:{code}" for code, loc in LOCATION_MAP.items()}
