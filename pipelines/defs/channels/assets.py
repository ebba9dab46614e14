"""Channel order assets (one per channel of the registry), WMS stock assets (one per location), the WMS's
inbound supply and the channel mappings.

Each asset calls one service (``oms_ops.services``) and reports what it did as metadata; the business logic
(cursors, crash safety, normalisation) lives there. A system that is not configured (no variables, no
simulators' manifest) makes its asset succeed with ``skipped`` in the metadata, so a partial setup still runs.
"""

import re

import dagster as dg

from oms_ops.channels import registry
from oms_ops.channels.base import Channel
from oms_ops.connectors.config import NotConfigured
from oms_ops.connectors.http import ConnectorError
from oms_ops.services import discovery, intake, stock
from oms_ops.services import supply as supply_service
from oms_ops.services.setup import LOCATION_MAP, seed_from_simulators
from pipelines.defs.channels.resources import ChannelConnectorsResource
from pipelines.resources import PostgresResource

GROUP = "channels"


def _skipped(context, exc: Exception) -> dg.MaterializeResult:
    context.log.warning(str(exc))
    return dg.MaterializeResult(metadata={"skipped": str(exc)})


def order_asset(channel: Channel) -> dg.AssetsDefinition:
    """The order feed of one channel: poll (or, without a feed, sweep what is queued) → orders."""

    @dg.asset(
        name=channel.asset_name,
        group_name=GROUP,
        kinds={"python", "postgres"},
        description=channel.feed or f"{channel.title} orders.",
        tags={"channel": channel.code},
    )
    def _orders(
        context: dg.AssetExecutionContext, postgres: PostgresResource, channels: ChannelConnectorsResource
    ) -> dg.MaterializeResult:
        try:
            with channels.clients() as clients, postgres.connection() as conn:
                res = intake.poll(conn, channel.code, clients)
        except NotConfigured as exc:
            return _skipped(context, exc)
        except ConnectorError as exc:
            raise dg.Failure(
                description=str(exc), metadata={"feed": channel.code, "error": str(exc)}
            ) from exc
        context.log.info("%s: %s", channel.code, res.metadata())
        meta = {
            k: dg.MetadataValue.json(v) if isinstance(v, list | dict) else v
            for k, v in res.metadata().items()
        }
        return dg.MaterializeResult(
            metadata={
                **meta,
                "cursor": dg.MetadataValue.json(res.cursor or {}),
                "notes": dg.MetadataValue.json(res.notes),
            }
        )

    return _orders


ORDER_ASSETS = [order_asset(c) for c in registry.CHANNELS]
#: asset name → the channel it ingests
ORDER_CHANNELS = {c.asset_name: c for c in registry.CHANNELS}


def order_asset_of(code: str) -> dg.AssetsDefinition:
    """The order asset of channel ``code``."""
    name = registry.channel(code).asset_name
    return next(a for a in ORDER_ASSETS if a.key.path[-1] == name)


@dg.asset(
    group_name=GROUP,
    kinds={"python", "postgres"},
    description="Channel ids of warehouses and items: each channel with discovery (Ozon, Wildberries, the web "
    "store) is asked for its account's warehouses and listings and they are mapped onto OMS locations and SKUs "
    "(unmapped ones on Operations → Channel mappings). With the simulated world's manifest, also reference data, "
    "products and location mappings of the WMS, POS and carrier.",
)
def channel_mappings(
    context: dg.AssetExecutionContext, postgres: PostgresResource, channels: ChannelConnectorsResource
) -> dg.MaterializeResult:
    settings = channels.settings()
    if settings.manifest:
        with postgres.connection() as conn:
            res = seed_from_simulators(
                conn, settings.manifest, channels.business_config(), initial_stock=False
            )
        return dg.MaterializeResult(
            metadata={
                "products": dg.MetadataValue.json(res.products),
                "listings": res.listings,
                "locations": res.locations,
                "discovered": dg.MetadataValue.json(res.discovered),
                "notes": dg.MetadataValue.json(res.notes),
            }
        )
    with channels.clients() as clients, postgres.connection() as conn:
        found = discovery.discover_all(conn, clients, channels.business_config())
    reports = {code: r.as_dict() if not isinstance(r, str) else {"skipped": r} for code, r in found.items()}
    errors = [f"{code}: {r['error']}" for code, r in reports.items() if r.get("error")]
    if errors:
        raise dg.Failure(
            description="; ".join(errors), metadata={"discovered": dg.MetadataValue.json(reports)}
        )
    return dg.MaterializeResult(metadata={"discovered": dg.MetadataValue.json(reports)})


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
            with channels.clients() as clients, postgres.connection() as conn:
                result = stock.sync_location(conn, clients, location_code, wms_code=wms_code)
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


# -- inbound supply ------------------------------------------------------------------------------------------------
@dg.asset(
    name="wms_inbound_supply",
    group_name="stock",
    kinds={"python", "postgres"},
    deps=[channel_mappings],
    description=(
        "Purchase orders and transfers on their way (the WMS's inbound feed) → oms.supplies; goods the WMS "
        "received are counted in and the orders promised from them allocated first; promise dates of waiting "
        "order lines computed again (docs/allocation.md, 'Incoming supply and promise dates')."
    ),
)
def wms_inbound_supply(
    context: dg.AssetExecutionContext, postgres: PostgresResource, channels: ChannelConnectorsResource
) -> dg.MaterializeResult:
    config = channels.business_config()
    try:
        with channels.client("wms") as client, postgres.connection() as conn:
            meta = supply_service.sync_wms(conn, client, config)
    except NotConfigured as exc:
        # without a WMS the supplies imported from files still promise: compute them again
        context.log.warning(str(exc))
        with postgres.connection() as conn:
            meta = {"skipped": str(exc), **supply_service.recompute(conn, config).metadata()}
    except ConnectorError as exc:
        raise dg.Failure(description=str(exc), metadata={"feed": "wms:inbound", "error": str(exc)}) from exc
    return dg.MaterializeResult(metadata=meta)
