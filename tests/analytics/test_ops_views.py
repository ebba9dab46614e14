"""The live ops views build on Postgres — through their Dagster asset, which runs
``dbt build --target postgres --select ops`` — and show the right rows."""

from __future__ import annotations

from decimal import Decimal

import dagster as dg
import psycopg
from dagster_dbt import DbtCliResource

from oms_ops.allocation import allocate_batch
from oms_ops.business_config import load_business_config
from oms_ops.fulfillment import create_shipment, pack, record_pick
from oms_ops.inventory import receive_stock
from oms_ops.orders import accept_orders
from oms_ops.platform.dbt_env import DBT_PROJECT_DIR
from pipelines.defs.analytics.assets import ops_dbt_views
from pipelines.resources import PostgresResource
from tests.analytics.history import ACTOR, WAREHOUSE, add_orders, ts

STORE = "ST-MSK-1"


def test_ops_views_show_backlog_risk_stock_quarantine_and_waiting_parcels(
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
    assert checks and all(c.passed for c in checks)

    cur = conn.cursor(row_factory=psycopg.rows.dict_row)
    backlog = {
        (r["order_status"], r["channel_code"]): r
        for r in cur.execute("SELECT * FROM ops.ops_backlog_by_state")
    }
    assert backlog[("backordered", "wildberries")]["orders"] == 1  # O5
    assert backlog[("shipped", "webstore")]["orders"] == 2  # O4 and the waiting parcel
    assert all(r["age_bucket"] == "> 3d" for k, r in backlog.items() if k[0] == "backordered")

    risk = {r["order_id"]: r["risk"] for r in cur.execute("SELECT * FROM ops.ops_orders_at_risk")}
    assert risk[history.orders["O5"]] == "ship_by_missed"  # backordered since 1 Feb
    assert risk[history.orders["O4"]] == "promise_missed"  # in transit, promised for 4 Feb
    assert history.orders["O1"] not in risk and history.orders["O3"] not in risk  # delivered / cancelled

    parcels = cur.execute("SELECT * FROM ops.ops_shipments_awaiting_pickup").fetchall()
    assert [(p["shipment_id"], p["carrier_code"], p["shipment_status"]) for p in parcels] == [
        (parcel, "cdek", "created")
    ]

    quarantine = cur.execute("SELECT * FROM ops.ops_quarantine_open").fetchall()
    assert [q["quarantine_id"] for q in quarantine] == bad.quarantined
    assert "aliexpress" in quarantine[0]["reason"]

    # ATS: the same answer as the business configuration's own rules (BusinessConfig.safety_stock_for)
    stock = {
        (r["location_code"], r["sku"]): (r["on_hand"], r["reserved"])
        for r in cur.execute("SELECT location_code, sku, on_hand, reserved FROM oms.stock")
    }
    expected = {}
    for channel in config.channels:
        for location in config.channel_pool(channel.code):
            for (loc, sku), (on_hand, reserved) in stock.items():
                if loc == location:
                    safety = config.safety_stock_for(channel.code, loc, sku)
                    expected[(channel.code, loc, sku)] = (safety, max(on_hand - reserved - safety, 0))
    rows = cur.execute(
        "SELECT channel_code, location_code, sku, safety_stock, ats FROM ops.ops_stock_availability"
    )
    actual = {(r["channel_code"], r["location_code"], r["sku"]): (r["safety_stock"], r["ats"]) for r in rows}
    assert actual == expected
    assert actual[("webstore", STORE, "SKU-A")] == (2, 3)  # the last two units on a shop floor are walk-ins'
    assert actual[("ozon", WAREHOUSE, "PROMO-1")] == (3, 3)  # promo class: three units held back
    assert ("ozon", STORE, "SKU-A") not in actual  # a store is not in the marketplace's pool
    by_channel = {
        (r["channel_code"], r["sku"]): r["ats"] for r in cur.execute("SELECT * FROM ops.ops_ats_by_channel")
    }
    assert by_channel[("webstore", "SKU-A")] == actual[("webstore", WAREHOUSE, "SKU-A")][1] + 3
