"""Channel discovery: matching a channel account's warehouses and items onto OMS locations and SKUs, keeping
operators' decisions, and the dashboards' role mapping through the SECURITY DEFINER functions only.

The account's content is given as a ``Discovery`` here (the real endpoints are exercised end to end in
tests/connectors/test_discovery_e2e.py against the simulators)."""

from __future__ import annotations

import dataclasses

import psycopg
import pytest

from oms_ops.business_config import load_business_config, sync_reference_data
from oms_ops.catalog import upsert_products
from oms_ops.channels import registry
from oms_ops.channels.base import Discovery, ExternalListing, ExternalLocation
from oms_ops.services import discovery


@pytest.fixture
def shop(conn):
    config = load_business_config()
    sync_reference_data(conn, config)
    upsert_products(
        conn,
        [
            {"sku": s, "name": s, "weight_g": 100, "price": 10, "barcode": b}
            for s, b in (("A-1", "4600000000011"), ("B-2", "4600000000028"), ("C-3", "4600000000035"))
        ],
    )
    return config


def _channel(account: Discovery):
    return dataclasses.replace(registry.channel("ozon"), discover=lambda client: account)


def _locations(conn, system="ozon"):
    return dict(
        conn.execute(
            "SELECT external_id, location_code FROM connectors.channel_locations WHERE system = %s", (system,)
        ).fetchall()
    )


def _listings(conn):
    return {
        r[0]: r[1:]
        for r in conn.execute(
            "SELECT sku, offer_id, product_id, channel_sku, barcode FROM connectors.channel_listings "
            "WHERE channel_code = 'ozon'"
        ).fetchall()
    }


ACCOUNT = Discovery(
    locations=[
        ExternalLocation("101", "Склад Подольск"),  # exact name
        ExternalLocation("102", "склад шушары"),  # the same name, other case
        ExternalLocation("103", "Склад Екатеринбург"),  # similar: "Склад Екатеринбург (Кольцово)"
        ExternalLocation("104", "Магазин Авиапарк"),  # an external name of ST-MSK-2 in the business config
        ExternalLocation("105", "Склад Тверь"),  # nothing like it
        ExternalLocation("106", "ПВЗ Марьино"),  # a pickup point holds no stock: never a match
    ],
    listings=[
        ExternalListing("A-1", "4600000000011", offer_id="A-1", product_id=11, channel_sku=111),
        ExternalListing(
            "old-article", "4600000000028", offer_id="old-article", product_id=22, channel_sku=222
        ),
        ExternalListing("Z-9", "0000", offer_id="Z-9", product_id=99, channel_sku=999),
    ],
)


def test_discovery_maps_by_name_external_name_similarity_and_barcode(conn, shop):
    rep = discovery.discover(conn, _channel(ACCOUNT), None, shop)
    assert rep.error is None
    assert _locations(conn) == {"101": "WH-MSK-POD", "102": "WH-SPB-SHU", "103": "WH-EKB", "104": "ST-MSK-2"}
    assert rep.locations == 6 and rep.locations_mapped == 4
    assert {u.split(" (")[0] for u in rep.unmapped} == {"Склад Тверь", "ПВЗ Марьино"}
    assert _listings(conn) == {
        "A-1": ("A-1", 11, 111, "4600000000011"),
        "B-2": ("old-article", 22, 222, "4600000000028"),  # by barcode
    }
    rules = dict(conn.execute("SELECT item_key, match_rule FROM connectors.discovered_listings").fetchall())
    assert rules == {"111": "article", "222": "barcode", "999": None}
    assert rep.unmatched == ["999"]
    runs = conn.execute(
        "SELECT locations, locations_mapped, listings, listings_matched, error FROM connectors.discovery_runs"
    ).fetchall()
    assert runs == [(6, 4, 3, 2, None)]
    assert discovery.discovered(conn, "ozon") and not discovery.discovered(conn, "wildberries")


def test_operator_decisions_survive_rediscovery_and_delisted_items_leave(conn, shop):
    discovery.discover(conn, _channel(ACCOUNT), None, shop)
    discovery.map_location(conn, "ozon", "105", "WH-KZN", "ops.anna")
    discovery.map_listing(conn, "ozon", "999", "C-3", "ops.anna")
    discovery.map_location(conn, "ozon", "101", None, "ops.anna")  # not this warehouse after all
    assert _locations(conn) == {"102": "WH-SPB-SHU", "103": "WH-EKB", "104": "ST-MSK-2", "105": "WH-KZN"}
    assert _listings(conn)["C-3"] == ("Z-9", 99, 999, "0000")

    # the account changes: the barcode-matched item is gone, a warehouse is renamed
    later = Discovery(
        locations=[*ACCOUNT.locations[:4], ExternalLocation("105", "Склад Тверь-2"), ACCOUNT.locations[5]],
        listings=[ACCOUNT.listings[0], ACCOUNT.listings[2]],
    )
    rep = discovery.discover(conn, _channel(later), None, shop)
    assert _locations(conn) == {"102": "WH-SPB-SHU", "103": "WH-EKB", "104": "ST-MSK-2", "105": "WH-KZN"}
    assert set(_listings(conn)) == {"A-1", "C-3"}
    assert rep.listings_matched == 2 and rep.unmatched == []
    listed = dict(conn.execute("SELECT item_key, listed FROM connectors.discovered_listings").fetchall())
    assert listed == {"111": True, "222": False, "999": True}


def test_mapping_refuses_what_would_break_the_tables(conn, shop):
    discovery.discover(conn, _channel(ACCOUNT), None, shop)
    with pytest.raises(psycopg.errors.UniqueViolation, match="already mapped"):
        discovery.map_location(conn, "ozon", "105", "WH-MSK-POD", "ops.anna")
    with pytest.raises(psycopg.errors.InvalidParameterValue, match="not an OMS warehouse or store"):
        discovery.map_location(conn, "ozon", "105", "PP-MSK-1", "ops.anna")
    with pytest.raises(psycopg.errors.InvalidParameterValue, match="not in the catalog"):
        discovery.map_listing(conn, "ozon", "999", "NOPE", "ops.anna")
    with pytest.raises(psycopg.errors.UniqueViolation, match="already sold"):
        discovery.map_listing(conn, "ozon", "999", "A-1", "ops.anna")
    with pytest.raises(psycopg.errors.InvalidParameterValue, match="no discovered item"):
        discovery.map_listing(conn, "ozon", "12345", "C-3", "ops.anna")
    assert set(_listings(conn)) == {"A-1", "B-2"}


def test_a_failed_read_changes_no_mapping(conn, shop):
    discovery.discover(conn, _channel(ACCOUNT), None, shop)

    def broken(client):
        raise ConnectionError("account unreachable")

    rep = discovery.discover(conn, dataclasses.replace(registry.channel("ozon"), discover=broken), None, shop)
    assert rep.error == "ConnectionError: account unreachable"
    assert len(_locations(conn)) == 4 and set(_listings(conn)) == {"A-1", "B-2"}


def test_dashboards_role_reads_mappings_and_cannot_change_them(conn, shop, db_url):
    """The dashboards' login reads the discovery tables; it can neither write the connectors' tables nor run
    the mapping functions (migration 0016): ops map through the OMS API, which calls them as the OMS."""
    discovery.discover(conn, _channel(ACCOUNT), None, shop)
    conn.execute("DROP ROLE IF EXISTS disc_dash_login")
    conn.execute("CREATE ROLE disc_dash_login LOGIN PASSWORD 'pw' IN ROLE oms_dashboard")
    try:
        with psycopg.connect(db_url, autocommit=True) as dash:
            dash.execute("SET ROLE disc_dash_login")
            assert discovery.location_mappings(dash)
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                discovery.map_location(dash, "ozon", "105", "WH-KZN", "ops.anna")
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                dash.execute(
                    "INSERT INTO connectors.channel_locations (system, location_code, external_id) "
                    "VALUES ('ozon', 'WH-NSK', '1')"
                )
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                dash.execute("UPDATE connectors.discovered_listings SET sku = 'C-3'")
        discovery.map_location(conn, "ozon", "105", "WH-KZN", "ops.anna")  # as the OMS (the API's login)
        assert _locations(conn)["105"] == "WH-KZN"
    finally:
        conn.execute("DROP OWNED BY disc_dash_login")
        conn.execute("DROP ROLE IF EXISTS disc_dash_login")
