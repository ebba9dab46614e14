"""Seeding from the simulators' manifest: mappings, products and stock, idempotent."""

from __future__ import annotations

import json

from oms_ops.services.clients import connector_settings as load_settings
from oms_ops.services.setup import LOCATION_MAP, seed_from_simulators
from tests.connectors.conftest import count


def test_seed_maps_every_location_and_sku_and_is_idempotent(conn, make_stack, business_config, tmp_path):
    stack = make_stack(only=["wms", "ozon"], n_skus=25)
    manifest = tmp_path / "simulators.json"
    stack.write_manifest(manifest)
    res = seed_from_simulators(conn, manifest, business_config)
    assert res.products["inserted"] == 25 and res.listings == 75
    assert set(res.stock) == set(LOCATION_MAP.values()) and set(res.stock.values()) == {"applied"}
    wms = dict(
        conn.execute(
            "SELECT external_id, location_code FROM connectors.channel_locations WHERE system = 'wms'"
        ).fetchall()
    )
    assert wms == LOCATION_MAP
    ozon = {
        r[0]
        for r in conn.execute("SELECT location_code FROM connectors.channel_locations WHERE system = 'ozon'")
    }
    assert ozon == {"WH-MSK-POD", "WH-SPB-SHU", "WH-EKB"}
    snapshot = {k: v for k, v in stack["wms"].on_hand["MSK1"].items()}
    stock = dict(
        conn.execute("SELECT sku, on_hand FROM oms.stock WHERE location_code = 'WH-MSK-POD'").fetchall()
    )
    assert {k: v for k, v in snapshot.items() if v} == {k: v for k, v in stock.items() if v}
    ledger = count(conn, "SELECT count(*) FROM oms.inventory_ledger")
    again = seed_from_simulators(conn, manifest, business_config)
    assert again.products == {"inserted": 0, "updated": 0, "unchanged": 25}
    assert (
        set(again.stock.values()) == {"applied"}
        and count(conn, "SELECT count(*) FROM oms.inventory_ledger") == ledger
    )


def test_environment_overrides_the_manifest(tmp_path, make_stack):
    stack = make_stack(only=["ozon"])
    path = tmp_path / "m.json"
    path.write_text(json.dumps(stack.manifest()))
    s = load_settings(
        {
            "OMS_SIMULATORS_MANIFEST": str(path),
            "OMS_OZON_URL": "https://api-seller.ozon.ru",
            "OMS_OZON_API_KEY": "real",
        }
    )
    ep = s.endpoint("ozon")
    assert ep.base_url == "https://api-seller.ozon.ru" and ep.get("api_key") == "real"
    assert ep.get("client_id") == stack.credentials["ozon"]["client_id"]  # not overridden: from the manifest
    empty = load_settings({"OMS_HOME": str(tmp_path / "nothing")})
    assert not empty.configured("ozon")
