"""The read model of operations: the ``ops`` views (built at start-up, rebuilt and tested by their Dagster
asset) and ``oms_ops.read_model``, the one way pages, pushers and checks read them.

Every database a test gets is a clone of a template prepared like production start-up (migrations, then
``build_ops_views``), so the views a test reads were created by the code that creates them, never by the test.
"""

from __future__ import annotations

import random
from dataclasses import astuple
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import dagster as dg
import psycopg
import pytest
from dagster_dbt import DbtCliResource

from oms_ops import read_model
from oms_ops.allocation import allocate_batch
from oms_ops.analytics.dbt import build_ops_views
from oms_ops.business_config import load_business_config, sync_reference_data
from oms_ops.channels.ats import AtsItem
from oms_ops.channels.rawstore import insert_payloads
from oms_ops.connectors.state import record_failure, record_success, set_cursor
from oms_ops.fulfillment import create_shipment, pack, record_pick
from oms_ops.inventory import receive_stock
from oms_ops.orders import accept_orders
from oms_ops.platform.dbt_env import DBT_PROJECT_DIR
from oms_ops.services.setup import seed_from_simulators
from pipelines.defs.analytics.assets import ops_dbt_views
from pipelines.resources import PostgresResource
from simulators.catalog import generate_catalog, product_record
from simulators.network import describe_network
from tests.analytics.history import ACTOR, WAREHOUSE, add_orders, ts

STORE = "ST-MSK-1"
PUSHED_CHANNELS = ("ozon", "wildberries", "webstore")


def _spec_ats(conn: psycopg.Connection, channel: str, config) -> list[AtsItem]:
    """ATS as the business configuration's own Python defines it (``channel_pool``, ``safety_stock_for``):
    the specification the SQL view must equal."""
    pool = config.channel_pool(channel)
    rows = conn.execute(
        """SELECT cl.location_code, l.sku, coalesce(s.on_hand, 0), coalesce(s.reserved, 0), cl.external_id,
                  l.offer_id, l.product_id, l.chrt_id, l.inventory_item_id
           FROM connectors.channel_listings l
           JOIN connectors.channel_locations cl ON cl.system = l.channel_code AND cl.active
           LEFT JOIN oms.stock s ON s.location_code = cl.location_code AND s.sku = l.sku
           WHERE l.channel_code = %s AND l.active AND cl.location_code = ANY(%s)
           ORDER BY cl.location_code, l.sku""",
        (channel, pool),
    ).fetchall()
    return [
        AtsItem(
            channel, loc, sku, max(0, on_hand - reserved - config.safety_stock_for(channel, loc, sku)), *ids
        )
        for loc, sku, on_hand, reserved, *ids in rows
    ]


def test_the_asset_rebuilds_the_views_and_their_tests_pass_on_live_data(
    history, conn, db_url, tmp_path, monkeypatch
):
    config = load_business_config()
    # a parcel booked with the carrier but not collected yet
    waiting = add_orders(conn, 1, start=300)[0]
    allocate_batch(conn, config=config, actor=ACTOR, now=ts("2025-02-02 06:00:00"))
    record_pick(conn, waiting, WAREHOUSE, actor=ACTOR)
    pack(conn, waiting, WAREHOUSE, actor=ACTOR)
    parcel = create_shipment(conn, waiting, WAREHOUSE, carrier_code="cdek", actor=ACTOR).shipment_id
    # bad input: an order from a channel the OMS does not know
    bad = accept_orders(
        conn,
        [
            {
                "channel_code": "aliexpress",
                "external_id": "AX-1",
                "placed_at": ts("2025-02-02 08:00:00"),
                "delivery_method": "courier",
                "lines": [{"sku": "SKU-A", "qty": 1, "unit_price": Decimal("10")}],
            }
        ],
        actor=ACTOR,
    )
    assert len(bad.quarantined) == 1
    # store stock and a promo SKU exercise the per-kind and per-class safety stock
    with conn.transaction():
        conn.execute(
            "INSERT INTO oms.products (sku, name, weight_g, price) VALUES ('PROMO-1', 'Promo', 100, 10)"
        )
    receive_stock(conn, STORE, {"SKU-A": 5, "PROMO-1": 2}, reference="RCPT-ST", actor=ACTOR)
    receive_stock(conn, WAREHOUSE, {"PROMO-1": 6}, reference="RCPT-PROMO", actor=ACTOR)

    monkeypatch.setenv("DBT_TARGET_PATH", str(tmp_path / "target"))
    result = dg.materialize(
        [ops_dbt_views],
        resources={
            "postgres": PostgresResource(database_url=db_url),
            "dbt": DbtCliResource(project_dir=str(DBT_PROJECT_DIR), profiles_dir=str(DBT_PROJECT_DIR)),
        },
    )
    assert result.success
    checks = result.get_asset_check_evaluations()
    assert len(checks) > 20 and all(c.passed for c in checks)

    backlog = {(r["order_status"], r["age_bucket"]): r for r in read_model.backlog(conn)}
    assert backlog[("backordered", "> 3d")]["orders"] == 1  # O5
    assert backlog[("backordered", "> 3d")]["is_awaiting_shipment"]
    # shipped means handed to the carrier (as in the KPIs): O4 is in transit; the waiting parcel's order is in
    # state shipped (every unit is in a parcel) but still has to leave, so it is backlog, not "on its way"
    assert backlog[("shipped", "> 3d")]["orders"] == 1
    assert not backlog[("shipped", "> 3d")]["is_awaiting_shipment"]
    assert backlog[("awaiting_handover", "> 3d")]["orders"] == 1
    assert backlog[("awaiting_handover", "> 3d")]["is_awaiting_shipment"]
    assert [r["order_status"] for r in read_model.backlog(conn, channel="wildberries")] == ["backordered"]

    risk = {r["order_id"]: r for r in read_model.orders_at_risk(conn)}
    assert risk[history.orders["O5"]]["risk"] == "ship_by_missed"  # backordered since 1 Feb
    assert risk[history.orders["O4"]]["risk"] == "promise_missed"  # in transit, promised for 4 Feb
    assert risk[history.orders["O4"]]["hours_left"] < 0
    assert (risk[waiting]["risk"], risk[waiting]["order_status"]) == ("ship_by_missed", "awaiting_handover")
    assert history.orders["O1"] not in risk and history.orders["O3"] not in risk  # delivered / cancelled
    past = read_model.orders_past_sla(conn)
    # past their ship-by and not handed over: O5 (backordered) and the waiting parcel's order; O4 has shipped
    assert past["by_channel"] == {"wildberries": 1, "webstore": 1} and past["count"] == 2
    assert past["by_state"] == {"backordered": 1, "awaiting_handover": 1}

    (parcel_row,) = read_model.shipments_awaiting_pickup(conn)
    assert (parcel_row["shipment_id"], parcel_row["carrier_code"], parcel_row["shipment_status"]) == (
        parcel,
        "cdek",
        "created",
    )
    assert parcel_row["has_label"] is False

    quarantine = read_model.open_quarantine(conn)
    assert [q["quarantine_id"] for q in quarantine] == bad.quarantined
    assert "aliexpress" in quarantine[0]["reason"]
    (summary,) = read_model.quarantine_summary(conn)
    assert (summary["source"], summary["open_rows"], summary["new_last_hour"]) == (
        quarantine[0]["source"],
        1,
        1,
    )

    # ATS: the same answer as the business configuration's own rules (BusinessConfig.safety_stock_for)
    stock = {
        (r[0], r[1]): (r[2], r[3])
        for r in conn.execute("SELECT location_code, sku, on_hand, reserved FROM oms.stock").fetchall()
    }
    expected = {}
    for channel in config.channels:
        for location in config.channel_pool(channel.code):
            for (loc, sku), (on_hand, reserved) in stock.items():
                if loc == location:
                    safety = config.safety_stock_for(channel.code, loc, sku)
                    expected[(channel.code, loc, sku)] = (safety, max(on_hand - reserved - safety, 0))
    actual = {
        (r["channel_code"], r["location_code"], r["sku"]): (r["safety_stock"], r["ats"])
        for r in read_model.availability(conn)
    }
    assert actual == expected
    assert actual[("webstore", STORE, "SKU-A")] == (2, 3)  # the last two units on a shop floor are walk-ins'
    assert actual[("ozon", WAREHOUSE, "PROMO-1")] == (3, 3)  # promo class: three units held back
    assert ("ozon", STORE, "SKU-A") not in actual  # a store is not in the marketplace's pool
    assert {r["location_code"] for r in read_model.availability(conn, channel="ozon", sku="SKU-A")} == {
        WAREHOUSE
    }
    by_channel = {(r["channel_code"], r["sku"]): r["ats"] for r in read_model.ats_by_channel(conn)}
    assert by_channel[("webstore", "SKU-A")] == actual[("webstore", WAREHOUSE, "SKU-A")][1] + 3


@pytest.fixture
def seeded(conn):
    """The simulated world's catalog, channel listings and location mappings (connectors' seed), stock
    received at every mapped location, reservations made by the allocator — and the business config synced."""
    config = load_business_config()
    catalog = [product_record(p) for p in generate_catalog(11, 60)]
    manifest = {"seed": 11, "catalog": {"n_skus": 60, "products": catalog}, "network": describe_network()}
    seed_from_simulators(conn, manifest, config, initial_stock=False)
    rng = random.Random(7)
    skus = [r[0] for r in conn.execute("SELECT sku FROM oms.products ORDER BY sku").fetchall()]
    mapped = [
        r[0]
        for r in conn.execute(
            "SELECT DISTINCT location_code FROM connectors.channel_locations WHERE system = 'wms' ORDER BY 1"
        ).fetchall()
    ]
    for n, loc in enumerate(mapped):
        # every location holds about two thirds of the catalog, many SKUs at a few units (safety stock bites)
        qty = {s: rng.choice([1, 2, 3, 4, 7, 25]) for s in skus if rng.random() < 0.66}
        receive_stock(conn, loc, qty, reference=f"RCPT-{n}", actor="test")
    return config, skus, mapped


def test_ats_targets_are_exactly_what_the_pusher_computes(conn, seeded):
    config, skus, mapped = seeded
    # a promo SKU listed on Ozon (per-class safety stock), stocked at one warehouse
    with conn.transaction():
        conn.execute(
            "INSERT INTO oms.products (sku, name, weight_g, price) VALUES ('PROMO-9', 'Promo', 100, 10)"
        )
        conn.execute(
            """INSERT INTO connectors.channel_listings (channel_code, sku, offer_id, product_id)
               VALUES ('ozon', 'PROMO-9', 'OFFER-PROMO-9', 990001)"""
        )
    receive_stock(conn, "WH-MSK-POD", {"PROMO-9": 5}, reference="RCPT-PROMO", actor="test")
    # orders reserve stock through the allocator
    placed = datetime.now(UTC) - timedelta(hours=1)
    orders = [
        {
            "channel_code": "webstore",
            "external_id": f"ATS-{i}",
            "placed_at": placed,
            "delivery_method": "courier",
            "region": "Москва",
            "city": "Москва",
            "address": "ул. Тверская, 1",
            "payment_status": "paid",
            "lines": [{"sku": skus[i * 3 % len(skus)], "qty": 1 + i % 2, "unit_price": Decimal("100")}],
        }
        for i in range(20)
    ]
    accept_orders(conn, orders, actor="test")
    allocate_batch(conn, config=config, actor="test")
    assert conn.execute("SELECT count(*) FROM oms.reservations WHERE state = 'active'").fetchone()[0] > 5
    # a delisted SKU and a warehouse a marketplace no longer ships from are not pushed
    with conn.transaction():
        conn.execute(
            "UPDATE connectors.channel_listings SET active = false WHERE channel_code = 'ozon' AND sku = %s",
            (skus[0],),
        )
        conn.execute(
            """UPDATE connectors.channel_locations SET active = false
               WHERE system = 'wildberries' AND location_code = 'WH-EKB'"""
        )

    for channel in PUSHED_CHANNELS:
        pusher = _spec_ats(conn, channel, config)
        view = [AtsItem(*astuple(t)) for t in read_model.ats_targets(conn, channel)]
        assert view == pusher, channel
        assert pusher, channel
    # the data set exercises what the definition has to get right
    ozon = {(t.location, t.sku): t for t in read_model.ats_targets(conn, "ozon")}
    assert ozon[("WH-MSK-POD", "PROMO-9")].qty == 2  # 5 on hand − 3 held back for promo
    assert all(sku != skus[0] for _, sku in ozon)
    assert {loc for loc, _ in ozon} <= set(config.channel_pool("ozon"))
    webstore = read_model.ats_targets(conn, "webstore")
    assert any(t.location.startswith("ST-") for t in webstore)  # the web store sells store stock too
    assert any(t.qty == 0 for t in webstore) and any(t.qty > 0 for t in webstore)
    assert "WH-EKB" not in {t.location for t in read_model.ats_targets(conn, "wildberries")}


def test_orders_at_risk_use_the_sla_when_nothing_allocated_them(conn):
    config = load_business_config()
    sync_reference_data(conn, config)
    with conn.transaction():
        conn.execute("INSERT INTO oms.products (sku, name, weight_g, price) VALUES ('SKU-R', 'R', 100, 10)")
    now = datetime.now(UTC)

    def order(ext: str, channel: str, hours_ago: float, **fields) -> int:
        res = accept_orders(
            conn,
            [
                {
                    "channel_code": channel,
                    "external_id": ext,
                    "placed_at": now - timedelta(hours=hours_ago),
                    "delivery_method": "courier",
                    "lines": [{"sku": "SKU-R", "qty": 1, "unit_price": Decimal("10")}],
                    **fields,
                }
            ],
            actor="test",
        )
        return res.accepted[0]

    late = order("R-LATE", "webstore", 30)  # web store courier: ship within 24 h → 6 h late
    soon = order("R-SOON", "ozon", 21)  # Ozon: 24 h → due in 3 h, within the 4 h threshold
    fresh = order("R-FRESH", "wildberries", 1)  # Wildberries: 36 h → 35 h left
    promised = order("R-PROMISE", "wildberries", 1, promised_at=now - timedelta(days=2))

    assert read_model.at_risk_hours(conn) == 4.0
    risk = {r["order_id"]: r for r in read_model.orders_at_risk(conn)}
    assert risk[late]["risk"] == "ship_by_missed" and -6.1 <= risk[late]["hours_left"] <= -5.9
    assert risk[soon]["risk"] == "ship_by_due_soon" and 2.9 <= risk[soon]["hours_left"] <= 3.1
    assert risk[promised]["risk"] == "promise_missed"
    assert fresh not in risk
    assert [r["order_id"] for r in read_model.orders_at_risk(conn)][0] == promised  # most urgent first
    past = read_model.orders_past_sla(conn)
    assert (past["count"], past["by_channel"], past["by_state"]) == (1, {"webstore": 1}, {"new": 1})
    assert (
        past["oldest"][0]["order"]
        == conn.execute("SELECT order_number FROM oms.orders WHERE order_id = %s", (late,)).fetchone()[0]
    )


def test_sync_state_joins_feed_health_and_cursors(conn):
    record_success(conn, "ozon", 12)
    set_cursor(conn, "ozon:postings", {"since": "2025-03-01T00:00:00+00:00"})
    record_success(conn, "wildberries", 3)
    record_failure(conn, "wildberries", "Wildberries API: 503 Service Unavailable")
    set_cursor(conn, "wildberries:orders", {"next": 17})
    set_cursor(conn, "webstore:orders", {"watermark": "2025-03-01T00:00:00+00:00", "run": None})  # never ran
    record_success(conn, "wms:MSK1", 40)

    feeds = {r["feed"]: r for r in read_model.sync_state(conn)}
    assert set(feeds) == {"ozon", "wildberries", "webstore", "wms:MSK1"}
    ozon = feeds["ozon"]
    assert (ozon["cursor_name"], ozon["cursor_value"], ozon["last_fetched"], ozon["is_failing"]) == (
        "ozon:postings",
        {"since": "2025-03-01T00:00:00+00:00"},
        12,
        False,
    )
    assert 0 <= ozon["success_age_seconds"] < 60
    assert feeds["wildberries"]["is_failing"] and "503" in feeds["wildberries"]["last_error"]
    assert feeds["webstore"]["last_success_at"] is None and feeds["webstore"]["cursors"] == 1
    assert feeds["wms:MSK1"]["cursor_name"] is None and feeds["wms:MSK1"]["total_fetched"] == 40

    fresh = read_model.feed_freshness(conn, "wildberries")
    assert 0 <= fresh["age_seconds"] < 60 and "503" in fresh["last_error"] and fresh["last_error_at"]
    assert read_model.feed_freshness(conn, "offline") == {
        "last_success_at": None,
        "age_seconds": None,
        "last_error_at": None,
        "last_error": None,
    }


def test_normaliser_queue_ingest_and_quarantine_per_channel(conn):
    sync_reference_data(conn, load_business_config())
    with conn.transaction():
        insert_payloads(conn, "ozon", [(f"P-{i}", {"posting_number": f"P-{i}"}) for i in range(3)])
    rejected = accept_orders(
        conn, [{"external_id": "JUNK-1"}, {"external_id": "JUNK-2"}], actor="test", source="ozon"
    )
    assert len(rejected.quarantined) == 2

    queued = read_model.normalisation_backlog(conn, "ozon")
    assert queued["queued"] == 3 and 0 <= queued["oldest_wait_seconds"] < 60
    assert read_model.normalisation_backlog(conn, "wildberries") == {"queued": 0, "oldest_wait_seconds": 0.0}
    ingest = {r["channel_code"]: r for r in read_model.channel_ingest(conn)}
    assert (ingest["ozon"]["received_last_24h"], ingest["ozon"]["queued_payloads"]) == (3, 3)
    assert ingest["ozon"]["open_quarantine"] == 2 and ingest["webstore"]["open_quarantine"] == 0
    assert ingest["ozon"]["last_received_at"] is not None and ingest["webstore"]["last_received_at"] is None
    (ozon,) = read_model.quarantine_summary(conn, "ozon")
    assert (ozon["open_rows"], ozon["new_last_hour"]) == (2, 2)
    assert read_model.quarantine_summary(conn, "wildberries") == []


def test_build_ops_views_recreates_a_missing_view(conn, db_url):
    # a view dropped (e.g. by a migration that changed a column it reads) is back after the next start-up build
    conn.execute("DROP VIEW ops.ops_thresholds")
    with pytest.raises(psycopg.errors.UndefinedTable):
        read_model.at_risk_hours(conn)
    build_ops_views(db_url)
    assert read_model.at_risk_hours(conn) == 4.0
