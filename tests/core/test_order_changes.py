"""Changing accepted orders (oms_ops.changes): each change, its event, refusals naming the line and limit,
nothing half-applied, stock and reservation invariants after every change."""

from __future__ import annotations

from decimal import Decimal

import pytest

from oms_ops import fulfillment
from oms_ops.allocation import allocate_batch
from oms_ops.changes import (
    AddLine,
    RemoveLine,
    SetContact,
    SetDelivery,
    SetQuantity,
    change_order,
)
from oms_ops.errors import ChangeRefused, InsufficientStock
from oms_ops.invariants import check_invariants
from oms_ops.services import changes as service
from tests.core.test_alloc_support import (
    NOW,
    active_reservations,
    place,
    receive,
    sample_config,
    seed_reference,
)

SKUS = {"MUG": 400, "KETTLE": 1500, "CABLE": 100}
POD = "WH-MSK-POD"


@pytest.fixture
def cfg(conn):
    config = sample_config()
    seed_reference(conn, config, SKUS)
    receive(conn, POD, {"MUG": 5, "KETTLE": 3})
    return config


def allocated(conn, cfg, lines):
    oid = place(conn, lines)
    allocate_batch(conn, [oid], config=cfg, now=NOW)
    assert state(conn, oid) == "allocated"
    return oid


def state(conn, oid):
    return conn.execute("SELECT state FROM oms.orders WHERE order_id = %s", (oid,)).fetchone()[0]


def line(conn, oid, no):
    return conn.execute(
        """SELECT qty - qty_cancelled, state FROM oms.order_lines WHERE order_id = %s AND line_no = %s""",
        (oid, no),
    ).fetchone()


def reserved(conn, sku, loc=POD):
    row = conn.execute(
        "SELECT reserved FROM oms.stock WHERE location_code = %s AND sku = %s", (loc, sku)
    ).fetchone()
    return row[0] if row else 0


def change_events(conn, oid):
    return conn.execute(
        """SELECT entity, from_state, to_state, data->>'change', reason FROM oms.order_events
           WHERE order_id = %s AND data ? 'change' AND from_state IS NOT NULL ORDER BY event_id""",
        (oid,),
    ).fetchall()


def snapshot(conn, oid):
    """Everything a refused change must leave as it was."""
    return (
        conn.execute("SELECT * FROM oms.orders WHERE order_id = %s", (oid,)).fetchone(),
        conn.execute("SELECT * FROM oms.order_lines WHERE order_id = %s ORDER BY line_id", (oid,)).fetchall(),
        conn.execute("SELECT * FROM oms.reservations ORDER BY reservation_id").fetchall(),
        conn.execute("SELECT * FROM oms.stock ORDER BY location_code, sku").fetchall(),
        conn.execute("SELECT count(*) FROM oms.order_events").fetchone(),
        conn.execute("SELECT count(*) FROM oms.inventory_ledger").fetchone(),
    )


def test_increase_reserves_the_extra_units_with_an_event(conn, cfg):
    oid = allocated(conn, cfg, [("MUG", 2)])
    res = change_order(conn, oid, [SetQuantity(1, 4)], config=cfg, actor="ops:anna", reason="customer called")
    assert res.state == "allocated" and state(conn, oid) == "allocated"
    assert line(conn, oid, 1) == (4, "allocated")
    assert reserved(conn, "MUG") == 4
    assert sum(r[3] for r in active_reservations(conn, oid)) == 4
    ev = change_events(conn, oid)
    assert ev[0][:4] == ("order_line", "allocated", "allocated", "quantity")
    assert "quantity 2 → 4" in ev[0][4] and "customer called" in ev[0][4]
    assert res.total_after == Decimal("4000.00")
    assert check_invariants(conn) == []


def test_increase_beyond_stock_is_refused_whole_naming_line_and_free_stock(conn, cfg):
    oid = allocated(conn, cfg, [("MUG", 2), ("KETTLE", 1)])
    before = snapshot(conn, oid)
    with pytest.raises(InsufficientStock) as exc:
        change_order(conn, oid, [SetQuantity(2, 2), SetQuantity(1, 9)], config=cfg, actor="ops")
    msg = str(exc.value)
    assert "line 1 (MUG)" in msg and "asked 9" in msg and f"{POD} 3" in msg
    assert ("MUG", POD, 3) in {(s.sku, s.location, s.available) for s in exc.value.shortfalls}
    assert snapshot(conn, oid) == before  # the kettle's increase did not stay either
    assert check_invariants(conn) == []


def test_decrease_releases_the_surplus_reservation(conn, cfg):
    oid = allocated(conn, cfg, [("MUG", 4)])
    assert reserved(conn, "MUG") == 4
    res = service.change_quantity(conn, oid, 1, 1, actor="ops", config=cfg)
    assert res.released_units == 3 and reserved(conn, "MUG") == 1
    assert line(conn, oid, 1) == (1, "allocated") and state(conn, oid) == "allocated"
    assert conn.execute(
        "SELECT qty, qty_cancelled FROM oms.order_lines WHERE order_id = %s", (oid,)
    ).fetchone() == (4, 3)
    # the order was paid: the value that went away is refunded
    assert conn.execute("SELECT amount FROM oms.refunds WHERE order_id = %s", (oid,)).fetchone()[
        0
    ] == Decimal("3000.00")
    assert check_invariants(conn) == []


@pytest.mark.parametrize(
    ("qty", "words"),
    [(0, "must be at least 1"), (-2, "must be at least 1"), (10_001, "limits.max_line_quantity (10000)")],
)
def test_quantity_out_of_bounds_names_line_and_limit(conn, cfg, qty, words):
    oid = allocated(conn, cfg, [("MUG", 2)])
    before = snapshot(conn, oid)
    with pytest.raises(ChangeRefused) as exc:
        change_order(conn, oid, [SetQuantity(1, qty)], config=cfg, actor="ops")
    assert f"order {oid} line 1 (MUG): quantity {qty}" in str(exc.value) and words in str(exc.value)
    assert snapshot(conn, oid) == before


def test_add_line_is_reserved_and_max_order_lines_is_enforced(conn, cfg):
    oid = allocated(conn, cfg, [("MUG", 1)])
    res = service.add_line(conn, oid, "KETTLE", 2, actor="ops", config=cfg)
    assert state(conn, oid) == "allocated" and reserved(conn, "KETTLE") == 2
    assert line(conn, oid, 2) == (2, "allocated")
    assert res.total_after == Decimal("3000.00")
    created = conn.execute(
        """SELECT from_state, to_state, data->>'sku' FROM oms.order_events
           WHERE order_id = %s AND entity = 'order_line' AND from_state IS NULL""",
        (oid,),
    ).fetchall()
    assert created == [(None, "new", "KETTLE")]
    tight = cfg.model_copy(update={"limits": cfg.limits.model_copy(update={"max_order_lines": 2})})
    before = snapshot(conn, oid)
    with pytest.raises(ChangeRefused, match=r"3 open lines, more than limits.max_order_lines \(2\)"):
        change_order(conn, oid, [AddLine("MUG", 1, Decimal("10"))], config=tight, actor="ops")
    with pytest.raises(ChangeRefused, match="unknown sku 'NOPE'"):
        change_order(conn, oid, [AddLine("NOPE", 1, Decimal("10"))], config=cfg, actor="ops")
    assert snapshot(conn, oid) == before
    assert check_invariants(conn) == []


def test_add_line_without_stock_is_refused(conn, cfg):
    oid = allocated(conn, cfg, [("MUG", 1)])
    before = snapshot(conn, oid)
    with pytest.raises(InsufficientStock, match=r"line 2 \(CABLE\): asked 1.*none anywhere"):
        change_order(conn, oid, [AddLine("CABLE", 1, Decimal("490"))], config=cfg, actor="ops")
    assert snapshot(conn, oid) == before


def test_remove_line_releases_it_and_the_last_line_cannot_go(conn, cfg):
    oid = allocated(conn, cfg, [("MUG", 2), ("KETTLE", 1)])
    service.remove_line(conn, oid, 2, actor="ops", config=cfg)
    assert line(conn, oid, 2) == (0, "cancelled") and reserved(conn, "KETTLE") == 0
    assert state(conn, oid) == "allocated"
    assert ("order_line", "cancelled", "cancelled", "removed") in [e[:4] for e in change_events(conn, oid)]
    before = snapshot(conn, oid)
    with pytest.raises(ChangeRefused, match="cancel the order instead"):
        change_order(conn, oid, [RemoveLine(1)], config=cfg, actor="ops")
    with pytest.raises(ChangeRefused, match=f"order {oid} line 2 \\(KETTLE\\) is cancelled"):
        change_order(conn, oid, [SetQuantity(2, 1)], config=cfg, actor="ops")
    assert snapshot(conn, oid) == before
    assert check_invariants(conn) == []


def test_change_of_delivery_reroutes(conn, cfg):
    receive(conn, "ST-MSK-1", {"MUG": 5})  # 2 of them kept for walk-in customers (safety stock)
    oid = allocated(conn, cfg, [("MUG", 2)])
    assert {r[1] for r in active_reservations(conn, oid)} == {POD}
    res = service.change_delivery(conn, oid, "store_pickup", "ST-MSK-1", actor="ops", config=cfg)
    assert res.rerouted and state(conn, oid) == "allocated"
    assert {r[1] for r in active_reservations(conn, oid)} == {"ST-MSK-1"}  # click & collect from the shelf
    assert reserved(conn, "MUG") == 0
    row = conn.execute(
        "SELECT delivery_method, pickup_location_code FROM oms.orders WHERE order_id = %s", (oid,)
    ).fetchone()
    assert row == ("store_pickup", "ST-MSK-1")
    kinds = [
        r[0]
        for r in conn.execute(
            "SELECT kind FROM oms.allocation_decisions WHERE order_id = %s ORDER BY 1", (oid,)
        )
    ]
    assert "reroute" in kinds
    assert ("order", "allocated", "allocated", "delivery") in [e[:4] for e in change_events(conn, oid)]
    with pytest.raises(ChangeRefused, match="unknown or inactive pickup location 'NOWHERE'"):
        change_order(conn, oid, [SetDelivery("pickup_point", "NOWHERE")], config=cfg, actor="ops")
    assert check_invariants(conn) == []


def test_contact_changes_until_shipment_and_nothing_changes_after(conn, cfg):
    oid = allocated(conn, cfg, [("MUG", 1)])
    service.change_contact(
        conn, oid, {"address": "ул. Ленина, 5", "customer_phone": "+79150000000"}, actor="ops", config=cfg
    )
    assert (
        conn.execute("SELECT address FROM oms.orders WHERE order_id = %s", (oid,)).fetchone()[0]
        == "ул. Ленина, 5"
    )
    fulfillment.record_pick(conn, oid, POD, actor="test")
    fulfillment.pack(conn, oid, POD, actor="test")
    fulfillment.create_shipment(conn, oid, POD, carrier_code="cdek", actor="test")
    assert state(conn, oid) == "shipped"
    before = snapshot(conn, oid)
    with pytest.raises(ChangeRefused) as exc:
        change_order(conn, oid, [SetContact({"address": "x"}), SetQuantity(1, 2)], config=cfg, actor="ops")
    assert "contact can change only before it ships" in str(exc.value)
    assert "lines and delivery can change only before picking" in str(exc.value)
    assert snapshot(conn, oid) == before


def test_cancelled_order_cannot_change(conn, cfg):
    from oms_ops.orders import cancel_orders

    oid = allocated(conn, cfg, [("MUG", 1)])
    cancel_orders(conn, [oid], reason="test", actor="test")
    with pytest.raises(ChangeRefused, match=f"order {oid} is cancelled"):
        change_order(conn, oid, [SetQuantity(1, 2)], config=cfg, actor="ops")


def test_cli_changes_an_order_and_names_the_refusal(conn, cfg, db_url, monkeypatch):
    import json

    from typer.testing import CliRunner

    from oms_ops import cli

    oid = allocated(conn, cfg, [("MUG", 2)])
    number = conn.execute("SELECT order_number FROM oms.orders WHERE order_id = %s", (oid,)).fetchone()[0]
    monkeypatch.setenv("OMS_DATABASE_URL", db_url)
    ok = CliRunner().invoke(cli.app, ["order", "change", "qty", number, "1", "3", "--reason", "phone call"])
    assert ok.exit_code == 0, ok.output
    assert json.loads(ok.output)["applied"] == ["line 1 (MUG) quantity 2 → 3"]
    assert line(conn, oid, 1) == (3, "allocated")
    bad = CliRunner().invoke(cli.app, ["order", "change", "qty", str(oid), "1", "0"])
    assert bad.exit_code == 1 and f"order {oid} line 1 (MUG): quantity 0 must be at least 1" in bad.output
    assert line(conn, oid, 1) == (3, "allocated")
