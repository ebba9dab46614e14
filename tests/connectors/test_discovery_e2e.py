"""Discovery against the simulated accounts: on a fresh database, every channel with discovery reads its
warehouses and listings through its own endpoints, and the ids the connectors then use are exactly the
accounts' ids (the simulators' manifest is only the yardstick here, never the source)."""

from __future__ import annotations

from oms_ops.channels import registry
from oms_ops.services import discovery
from oms_ops.services.clients import Clients
from oms_ops.services.setup import LOCATION_MAP, seed_from_simulators
from tests.connectors.conftest import settings_of

#: the catalog export's id of each discovering channel's listing, per SKU (the yardstick)
EXPECTED_KEYS = {
    "ozon": ("offer_id", "product_id", "channel_sku"),
    "wildberries": ("channel_sku", "chrt_id"),
    "webstore": ("product_id", "variant_id", "inventory_item_id"),
}


def _yardstick(manifest: dict, code: str) -> dict[str, tuple]:
    listing = registry.channel(code).listing
    cols = ("offer_id", "product_id", "channel_sku", "chrt_id", "variant_id", "inventory_item_id", "barcode")
    out = {}
    for p in manifest["catalog"]["products"]:
        row = dict(zip(cols, listing(p), strict=True))
        out[p["sku"]] = tuple(row[k] for k in EXPECTED_KEYS[code])
    return out


def test_a_fresh_database_takes_every_channel_id_from_discovery(conn, make_stack, business_config):
    stack = make_stack(only=["ozon", "wildberries", "shopify"], n_skus=25)
    manifest = stack.manifest()
    res = seed_from_simulators(conn, manifest, business_config, initial_stock=False)
    assert set(res.discovered) == set(EXPECTED_KEYS), res.notes
    for code in EXPECTED_KEYS:
        rep = res.discovered[code]
        assert rep["listings"] == rep["listings_matched"] == 25, (code, rep)
        got = {
            r[0]: r[1:]
            for r in conn.execute(
                f"SELECT sku, {', '.join(EXPECTED_KEYS[code])} FROM connectors.channel_listings "  # noqa: S608
                "WHERE channel_code = %s AND active",
                (code,),
            ).fetchall()
        }
        assert got == _yardstick(manifest, code), code
    # every channel warehouse/location of the network is mapped onto the OMS location it stands for
    for code in EXPECTED_KEYS:
        key = registry.channel(code).network_key
        expected = {
            str(loc[key]): LOCATION_MAP[loc["code"]]
            for loc in manifest["network"]["locations"]
            if loc.get(key) not in (None, "")
        }
        got = dict(
            conn.execute(
                "SELECT external_id, location_code FROM connectors.channel_locations WHERE system = %s",
                (code,),
            ).fetchall()
        )
        assert got == expected, code
    # discovering again changes nothing and keeps an operator's correction
    first_ext = next(iter(expected))
    discovery.map_location(conn, "webstore", first_ext, None, "ops.anna")
    with Clients(settings_of(stack)) as clients:
        again = discovery.discover_all(conn, clients, business_config)
    assert {c: r.error for c, r in again.items()} == dict.fromkeys(EXPECTED_KEYS)
    locs = dict(
        conn.execute(
            "SELECT external_id, location_code FROM connectors.channel_locations WHERE system = 'webstore'"
        ).fetchall()
    )
    assert first_ext not in locs and len(locs) == len(expected) - 1
