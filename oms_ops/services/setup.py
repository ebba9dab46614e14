"""Seed the OMS from the simulated world: reference data, products, channel mappings, initial stock.

``seed_from_simulators(conn, manifest_or_stack, config)`` is idempotent (run it again after a simulator
restart; nothing is duplicated) and does, in order:

1. ``business_config.sync_reference_data`` — channels and locations from the business configuration;
2. the catalog the simulators sell (the manifest's ``catalog.products``, a seller's catalog export with every
   system's ids) into ``oms.products`` through ``catalog.upsert_products``;
3. channel ids: a channel with discovery (``Channel.discover``: Ozon, Wildberries, the web store) is asked
   for its warehouses and listings through its own endpoints, exactly as on first contact with a real
   account (``services.discovery``); a channel without it takes its ids from the catalog export
   (``Channel.listing``, ``Channel.network_key``);
4. ``connectors.channel_locations`` — the simulators' network (WMS codes, CDEK shipment points, POS store
   codes) mapped onto OMS locations by ``LOCATION_MAP``; ``connectors.pickup_point_hubs`` — carrier
   pickup-point hubs → own pickup points;
5. initial cursors at the simulated clock's start (``Channel.start_cursor``), so the first poll reads the
   world from its beginning;
6. the initial stock: a WMS snapshot per mapped location (when the WMS is reachable).

The mapping is data in Postgres, not code: for the real systems, fill the same tables (SQL, or this function
with your own ``location_map``) and nothing else changes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg

from oms_ops.business_config import BusinessConfig, load_business_config, sync_reference_data
from oms_ops.catalog import upsert_products
from oms_ops.channels import registry
from oms_ops.connectors.config import ConnectorSettings, load_manifest, settings_from_manifest
from oms_ops.connectors.state import get_cursor, set_cursor
from oms_ops.connectors.wms import WmsClient, sync_all
from oms_ops.services import discovery
from oms_ops.services.clients import Clients

#: simulator network code (= WMS warehouse / POS store code) → OMS location (config/business.yaml)
LOCATION_MAP: dict[str, str] = {
    "MSK1": "WH-MSK-POD",
    "SPB1": "WH-SPB-SHU",
    "EKB1": "WH-EKB",
    "MSK-S01": "ST-MSK-1",
    "MSK-S02": "ST-MSK-2",
    "SPB-S01": "ST-SPB-1",
    "KZN-S01": "ST-KZN-1",
}
#: carrier pickup-point hub (city code in "MSK123") → the seller's own pickup point in that city
PICKUP_HUBS: dict[str, str] = {"MSK": "PP-MSK-1", "HMK": "PP-MSK-2", "SPB": "PP-SPB-1", "NSK": "PP-NSK-1"}


@dataclass
class SeedResult:
    products: dict[str, int] = field(default_factory=dict)
    listings: int = 0
    locations: int = 0
    stock: dict[str, str] = field(default_factory=dict)  # location → snapshot status
    discovered: dict[str, dict] = field(default_factory=dict)  # channel → discovery report
    notes: list[str] = field(default_factory=list)


def _manifest(source: Any) -> dict:
    if isinstance(source, Mapping):
        return dict(source)
    if isinstance(source, str | Path):
        return load_manifest(source)
    if hasattr(source, "manifest"):  # simulators.SimulatorStack
        return source.manifest()
    raise TypeError(
        f"expected a manifest dict, a path to simulators.json or a SimulatorStack, got {type(source)}"
    )


def seed_from_simulators(
    conn: psycopg.Connection,
    manifest_or_stack: Any,
    config: BusinessConfig,
    *,
    location_map: Mapping[str, str] = LOCATION_MAP,
    pickup_hubs: Mapping[str, str] = PICKUP_HUBS,
    initial_stock: bool = True,
    wms_client=None,
    discover: bool = True,
    client_kw: Mapping[str, Any] | None = None,
) -> SeedResult:
    manifest = _manifest(manifest_or_stack)
    res = SeedResult()
    sync_reference_data(conn, config)
    known_locations = {loc.code for loc in config.locations}
    catalog = list((manifest.get("catalog") or {}).get("products") or [])
    if not catalog:
        res.notes.append("the manifest carries no catalog products: products and listings left as they are")
    up = upsert_products(
        conn,
        [
            {
                k: p[k]
                for k in ("sku", "name", "weight_g", "price", "barcode", "length_cm", "width_cm", "height_cm")
            }
            for p in catalog
        ],
    )
    res.products = {"inserted": up.inserted, "updated": up.updated, "unchanged": up.unchanged}
    settings = settings_from_manifest(manifest)
    # channels with discovery read their ids from their own accounts (after the products exist, below);
    # the rest from the catalog export
    discovering = [
        c for c in registry.CHANNELS if discover and c.discover is not None and settings.configured(c.system)
    ]
    listings = []
    for channel in registry.CHANNELS:
        if channel.listing is None or channel in discovering:
            continue
        for p in catalog:
            row = channel.listing(p)
            if row is not None:
                listings.append((channel.code, p["sku"], *row))
    locs = []
    for loc in (manifest.get("network") or {}).get("locations") or []:
        oms_code = location_map.get(loc["code"])
        if oms_code is None or oms_code not in known_locations:
            res.notes.append(f"network location {loc['code']} is not mapped to an OMS location")
            continue
        system = "pos" if loc.get("kind") == "store" else None
        locs.append(("wms", oms_code, loc["code"]))
        if system:
            locs.append(("pos", oms_code, loc["code"]))
        for sys_name, key in (
            *((c.code, c.network_key) for c in registry.CHANNELS if c.network_key and c not in discovering),
            ("cdek", "cdek_shipment_point"),
        ):
            if loc.get(key) not in (None, ""):
                locs.append((sys_name, oms_code, str(loc[key])))
    hubs = [(h, code) for h, code in pickup_hubs.items() if code in known_locations]
    with conn.transaction(), conn.cursor() as cur:
        cur.executemany(
            """INSERT INTO connectors.channel_listings (channel_code, sku, offer_id, product_id, channel_sku, chrt_id,
                                                       variant_id, inventory_item_id, barcode)
               VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)
               ON CONFLICT (channel_code, sku) DO UPDATE SET offer_id = excluded.offer_id,
                   product_id = excluded.product_id, channel_sku = excluded.channel_sku, chrt_id = excluded.chrt_id,
                   variant_id = excluded.variant_id, inventory_item_id = excluded.inventory_item_id,
                   barcode = excluded.barcode, active = true, updated_at = now()""",
            listings,
        )
        cur.executemany(
            """INSERT INTO connectors.channel_locations (system, location_code, external_id) VALUES (%s, %s, %s)
               ON CONFLICT (system, location_code) DO UPDATE SET external_id = excluded.external_id, active = true,
                   updated_at = now()""",
            locs,
        )
        cur.executemany(
            """INSERT INTO connectors.pickup_point_hubs (hub, location_code) VALUES (%s, %s)
               ON CONFLICT (hub) DO UPDATE SET location_code = excluded.location_code""",
            hubs,
        )
        start = (manifest.get("clock") or {}).get("start")
        if start:
            since = datetime.fromisoformat(start.replace("Z", "+00:00")).astimezone(UTC) - timedelta(hours=1)
            for name, value in (c.start_cursor(since) for c in registry.CHANNELS if c.start_cursor):
                if get_cursor(conn, name) is None:
                    set_cursor(conn, name, value)
    res.listings = len(listings)
    res.locations = len(locs)
    if discovering:
        with Clients(settings, **(client_kw or {})) as clients:
            for channel in discovering:
                rep = discovery.discover(conn, channel, clients.get(channel.system), config)
                res.discovered[channel.code] = rep.as_dict()
                res.listings += rep.listings_matched
                res.locations += rep.locations_mapped
                if rep.error:
                    res.notes.append(f"{channel.code}: discovery failed: {rep.error}")
                res.notes += [f"{channel.code}: location {u}" for u in rep.unmapped]
                if rep.unmatched:
                    res.notes.append(f"{channel.code}: {len(rep.unmatched)} listed item(s) match no SKU")
    if initial_stock:
        res.stock = _initial_stock(conn, settings, wms_client)
    return res


def _initial_stock(conn: psycopg.Connection, settings: ConnectorSettings, client) -> dict[str, str]:
    if client is None:
        if not settings.configured("wms"):
            return {}
        client = WmsClient.from_endpoint(settings.endpoint("wms"))
        try:
            return {loc: r.status for loc, r in sync_all(conn, client).items()}
        finally:
            client.close()
    return {loc: r.status for loc, r in sync_all(conn, client).items()}


def seed_demo(database_url: str | None, manifest: Path) -> None:
    """Business configuration, products, channel listings and initial stock from the simulated world
    (idempotent): what ``oms up``/``oms demo`` run once the simulators are up."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        seed_from_simulators(conn, manifest, load_business_config())
