"""Channel mappings panel of the operations page: what discovery could not map is shown first, and ops map it
through the OMS API's actions (which call migration 0015's checking functions; the dashboards' login only
reads)."""

from __future__ import annotations

import dataclasses

from streamlit.testing.v1 import AppTest

import dashboards.mappings_panel  # noqa: F401 - imported here so the script below finds it
from oms_ops.business_config import load_business_config, sync_reference_data
from oms_ops.catalog import upsert_products
from oms_ops.channels import registry
from oms_ops.channels.base import Discovery, ExternalListing, ExternalLocation
from oms_ops.services import discovery
from tests.dashboards.conftest import MANAGER, OPS, signed_in, texts

SCRIPT = "from dashboards.mappings_panel import mappings_panel\nmappings_panel()\n"
ACCOUNT = Discovery(
    locations=[ExternalLocation("101", "Склад Подольск"), ExternalLocation("105", "Склад Тверь")],
    listings=[
        ExternalListing("A-1", offer_id="A-1", product_id=11, channel_sku=111),
        ExternalListing("Z-9", offer_id="Z-9", product_id=99, channel_sku=999),
    ],
)


def panel(user) -> AppTest:
    return signed_in(AppTest.from_string(SCRIPT, default_timeout=30), user)


def _discovered(conn) -> None:
    config = load_business_config()
    sync_reference_data(conn, config)
    upsert_products(conn, [{"sku": s, "name": s, "weight_g": 1, "price": 1} for s in ("A-1", "C-3")])
    channel = dataclasses.replace(registry.channel("ozon"), discover=lambda client: ACCOUNT)
    discovery.discover(conn, channel, None, config)


def test_ops_map_an_unmapped_warehouse_and_an_unmatched_item(dash_url, conn):
    _discovered(conn)
    at = panel(OPS).run()
    assert not at.exception, at.exception
    assert "1 channel location(s) are not mapped: they receive no stock." in texts(at)
    at.selectbox(key="map_loc_pick").set_value("ozon · Склад Тверь (105)").run()
    at.selectbox(key="map_loc_target").set_value("WH-KZN").run()
    at.button(key="map_loc_save").click().run()
    assert not at.exception, at.exception
    assert any("ozon 105 → WH-KZN" in s.value for s in at.success), texts(at)
    at.selectbox(key="map_item_pick").set_value("ozon · Z-9 ·  (999)").run()
    at.text_input(key="map_item_sku").set_value("C-3").run()
    at.button(key="map_item_save").click().run()
    assert any("ozon item 999 → C-3" in s.value for s in at.success), texts(at)
    assert dict(
        conn.execute("SELECT external_id, location_code FROM connectors.channel_locations").fetchall()
    ) == {"101": "WH-MSK-POD", "105": "WH-KZN"}
    assert conn.execute(
        "SELECT sku, reviewed_by FROM connectors.discovered_listings WHERE item_key = '999'"
    ).fetchone() == ("C-3", "dashboard:olga")


def test_a_wrong_mapping_is_refused_with_the_reason(dash_url, conn):
    _discovered(conn)
    at = panel(OPS).run()
    at.selectbox(key="map_item_pick").set_value("ozon · Z-9 ·  (999)").run()
    at.text_input(key="map_item_sku").set_value("NOPE").run()
    at.button(key="map_item_save").click().run()
    assert not at.exception, at.exception
    assert any("SKU NOPE is not in the catalog" in e.value for e in at.error), texts(at)


def test_managers_do_not_see_the_panel(dash_url, conn):
    at = panel(MANAGER).run()
    assert "The manager role cannot open this page." in texts(at)
