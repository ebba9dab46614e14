"""Cancelling a shipment before hand-over (oms_ops.shipment_cancel): units back at a location and reserved
again, or stock untouched and the lines open for the allocator; refusals after hand-over changing nothing;
events, outbox, invariants; the order ships again in a new parcel."""

from __future__ import annotations

import pytest

from oms_ops import fulfillment as ff
from oms_ops.allocation import allocate_batch
from oms_ops.errors import NotFound, ValidationFailed
from oms_ops.fulfillment import ShipRequest, ship_in_full
from oms_ops.invariants import check_invariants
from oms_ops.services import shipment_cancel as service
from oms_ops.shipment_cancel import cancel_shipment, order_state_after_cancel
from tests.core import factories as f
from tests.core.test_alloc_support import NOW, place, receive, sample_config, seed_reference

WH = "WH-MSK"


@pytest.fixture
def world(conn):
    f.world(conn)
    return conn


def lines(conn, oid):
    return conn.execute(
        "SELECT line_no, state, qty_shipped FROM oms.order_lines WHERE order_id = %s ORDER BY line_no", (oid,)
    ).fetchall()


def active(conn, oid):
    return conn.execute(
        """SELECT l.line_no, r.location_code, r.qty FROM oms.reservations r JOIN oms.order_lines l USING (line_id)
           WHERE r.order_id = %s AND r.state = 'active' ORDER BY 1, 2""",
        (oid,),
    ).fetchall()


def shipment(conn, sid):
    return conn.execute(
        "SELECT state, cancelled_at IS NOT NULL, cancel_location_code FROM oms.shipments WHERE shipment_id = %s",
        (sid,),
    ).fetchone()


def events(conn, oid):
    return conn.execute(
        """SELECT entity, from_state, to_state, reason FROM oms.order_events
           WHERE order_id = %s ORDER BY event_id""",
        (oid,),
    ).fetchall()


def snapshot(conn):
    """Everything a refused cancel must leave as it was."""
    return [
        conn.execute(q).fetchall()
        for q in (
            "SELECT * FROM oms.orders ORDER BY order_id",
            "SELECT * FROM oms.order_lines ORDER BY line_id",
            "SELECT * FROM oms.shipments ORDER BY shipment_id",
            "SELECT * FROM oms.reservations ORDER BY reservation_id",
            "SELECT * FROM oms.stock ORDER BY location_code, sku",
            "SELECT count(*) FROM oms.order_events",
            "SELECT count(*) FROM oms.inventory_ledger",
            "SELECT count(*) FROM oms.outbox",
        )
    ]


def test_cancel_with_location_puts_units_back_and_reserves_them_again(world):
    conn = world
    oid, sid = f.shipped_order(conn, [("SKU-1", 2), ("SKU-2", 1)])
    ff.mark_label_printed(conn, [sid], actor="cdek")
    assert f.order_state(conn, oid) == "shipped"
    assert f.stock_row(conn, WH, "SKU-1") == (8, 0)

    res = cancel_shipment(conn, sid, location_code=WH, actor="ops:anna", reason="customer changed address")

    assert res.order_state == "allocated" and f.order_state(conn, oid) == "allocated"
    assert shipment(conn, sid) == ("cancelled", True, WH)
    assert f.stock_row(conn, WH, "SKU-1") == (10, 2) and f.stock_row(conn, WH, "SKU-2") == (10, 1)
    assert active(conn, oid) == [(1, WH, 2), (2, WH, 1)]
    assert lines(conn, oid) == [(1, "allocated", 0), (2, "allocated", 0)]
    ledger = conn.execute(
        """SELECT sku, on_hand_delta, reserved_delta, reference FROM oms.inventory_ledger
           WHERE order_id = %s AND kind = 'ship_cancel' ORDER BY sku""",
        (oid,),
    ).fetchall()
    number = res.shipment_number
    assert ledger == [("SKU-1", 2, 2, number), ("SKU-2", 1, 1, number)]
    ev = events(conn, oid)
    cancelled = [e for e in ev if e[0] == "shipment" and e[2] == "cancelled"]
    assert len(cancelled) == 1 and cancelled[0][1] == "label_printed"
    assert "customer changed address" in cancelled[0][3] and number in cancelled[0][3]
    assert ("order", "shipped", "allocated") in {e[:3] for e in ev}
    assert [e[1:3] for e in ev if e[0] == "order_line"][-2:] == [("shipped", "allocated")] * 2
    effect = conn.execute(
        "SELECT effect, payload->>'shipment_number' FROM oms.outbox WHERE idempotency_key = %s",
        (f"carrier.cancel_shipment:{number}",),
    ).fetchone()
    assert effect == ("carrier.cancel_shipment", number) and res.carrier_cancel
    assert conn.execute("SELECT shipped_at FROM oms.orders WHERE order_id = %s", (oid,)).fetchone()[0] is None
    assert check_invariants(conn) == []

    # the floor ships it again: a new parcel, the order shipped once more
    again = ship_in_full(conn, [ShipRequest(oid, WH, "cdek")], actor="floor")
    new = again.shipments[(oid, WH)]
    assert new.created and new.shipment_id != sid
    assert f.order_state(conn, oid) == "shipped"
    assert f.stock_row(conn, WH, "SKU-1") == (8, 0)
    assert check_invariants(conn) == []


def test_cancel_without_location_leaves_stock_untouched_and_reopens_the_lines(world):
    conn = world
    oid, sid = f.shipped_order(conn, [("SKU-1", 2)])
    ledger_before = conn.execute("SELECT count(*) FROM oms.inventory_ledger").fetchone()[0]

    res = service.cancel_shipment(
        conn, sid, location_code=None, actor="ops", reason="parcel lost on the floor"
    )

    assert res.order_state == "new" and res.location_code is None and res.reservations == []
    assert shipment(conn, sid) == ("cancelled", True, None)
    assert f.stock_row(conn, WH, "SKU-1") == (8, 0)  # untouched
    assert conn.execute("SELECT count(*) FROM oms.inventory_ledger").fetchone()[0] == ledger_before
    assert active(conn, oid) == []
    assert lines(conn, oid) == [(1, "new", 0)]
    assert check_invariants(conn) == []


def test_reallocation_after_a_cancel_without_location_ships_a_new_parcel(conn):
    cfg = sample_config()
    seed_reference(conn, cfg, {"MUG": 400})
    pod = "WH-MSK-POD"
    receive(conn, pod, {"MUG": 5})
    oid = place(conn, [("MUG", 2)])
    allocate_batch(conn, [oid], config=cfg, now=NOW)
    first = ship_in_full(conn, [ShipRequest(oid, pod)], actor="floor").shipments[(oid, pod)]
    assert f.order_state(conn, oid) == "shipped" and f.stock_row(conn, pod, "MUG") == (3, 0)

    service.cancel_shipment(conn, first.shipment_number, location_code=None, actor="ops", reason="lost")
    assert f.order_state(conn, oid) == "new"
    out = allocate_batch(conn, [oid], config=cfg, now=NOW)
    assert [o.outcome for o in out.outcomes] == ["allocated"]
    assert f.stock_row(conn, pod, "MUG") == (3, 2)  # the 2 units come from what is left on the shelf
    second = ship_in_full(conn, [ShipRequest(oid, pod)], actor="floor").shipments[(oid, pod)]
    assert second.created and second.shipment_id != first.shipment_id
    assert f.order_state(conn, oid) == "shipped" and f.stock_row(conn, pod, "MUG") == (1, 0)
    assert check_invariants(conn) == []


def test_cancel_after_hand_over_is_refused_and_changes_nothing(world):
    conn = world
    oid, sid = f.shipped_order(conn, [("SKU-1", 2)])
    ff.hand_over(conn, [sid], actor="cdek")
    number = conn.execute(
        "SELECT shipment_number FROM oms.shipments WHERE shipment_id = %s", (sid,)
    ).fetchone()[0]
    before = snapshot(conn)
    with pytest.raises(ValidationFailed) as exc:
        cancel_shipment(conn, sid, location_code=WH, actor="ops", reason="too late")
    msg = str(exc.value)
    assert number in msg and "is handed_over" in msg and "created, label_printed" in msg
    assert snapshot(conn) == before


def test_unknown_shipment_and_bad_arguments_are_refused_naming_them(world):
    conn = world
    with pytest.raises(NotFound, match="shipment not found: 999999"):
        cancel_shipment(conn, 999999, location_code=WH, actor="ops", reason="x")
    with pytest.raises(NotFound, match="SHP-NOPE"):
        service.cancel_shipment(conn, "SHP-NOPE", location_code=None, actor="ops", reason="x")
    _, sid = f.shipped_order(conn, [("SKU-1", 1)])
    before = snapshot(conn)
    with pytest.raises(ValidationFailed) as exc:
        cancel_shipment(conn, sid, location_code="NOWHERE", actor="ops", reason=" ")
    assert "unknown location 'NOWHERE'" in str(exc.value) and "a reason is required" in str(exc.value)
    assert snapshot(conn) == before


def test_partly_shipped_order_keeps_its_other_parcel_and_ships_the_rest_again(world):
    conn = world
    oid = f.order(conn, [("SKU-1", 2), ("SKU-2", 1)])
    lids = f.line_ids(conn, oid)
    f.reserve(conn, oid, "WH-MSK", {lids[0]: 2})
    f.reserve(conn, oid, "WH-SPB", {lids[1]: 1})
    out = ship_in_full(
        conn, [ShipRequest(oid, "WH-MSK", "cdek"), ShipRequest(oid, "WH-SPB", "courier")], actor="t"
    )
    msk, spb = out.shipments[(oid, "WH-MSK")], out.shipments[(oid, "WH-SPB")]
    ff.hand_over(conn, [msk.shipment_id], actor="cdek")
    assert f.order_state(conn, oid) == "shipped"

    res = cancel_shipment(
        conn, spb.shipment_id, location_code="WH-SPB", actor="ops", reason="courier no-show"
    )
    assert res.order_state == "allocated"
    assert lines(conn, oid) == [(1, "shipped", 2), (2, "allocated", 0)]
    assert check_invariants(conn) == []
    # the own courier has no API, but the cancel is still told to the drain (recorded as skipped there)
    assert res.carrier_cancel

    again = ship_in_full(conn, [ShipRequest(oid, "WH-SPB", "courier")], actor="t").shipments[(oid, "WH-SPB")]
    assert again.created
    ff.hand_over(conn, [again.shipment_id], actor="courier")
    ff.mark_delivered(conn, [msk.shipment_id, again.shipment_id], actor="t")
    # the cancelled parcel does not hold the order back from delivered
    assert f.order_state(conn, oid) == "delivered"
    assert check_invariants(conn) == []


def test_store_handover_shipment_writes_no_carrier_effect(world):
    conn = world
    f.stock(conn, "ST-MSK-1", {"SKU-1": 3})
    _, sid = f.shipped_order(conn, [("SKU-1", 1)], location="ST-MSK-1", carrier="self")
    res = cancel_shipment(conn, sid, location_code="ST-MSK-1", actor="ops", reason="customer will come later")
    assert not res.carrier_cancel
    assert (
        conn.execute("SELECT count(*) FROM oms.outbox WHERE effect = 'carrier.cancel_shipment'").fetchone()[0]
        == 0
    )
    assert f.stock_row(conn, "ST-MSK-1", "SKU-1") == (3, 1)


@pytest.mark.parametrize(
    ("state", "kw", "expected"),
    [
        (
            "shipped",
            {"open_qty": 2, "reserved": 2, "unpacked": 1, "open_picks": 0, "shipped_left": 0},
            "allocated",
        ),
        ("shipped", {"open_qty": 2, "reserved": 0, "unpacked": 0, "open_picks": 0, "shipped_left": 0}, "new"),
        (
            "shipped",
            {"open_qty": 2, "reserved": 0, "unpacked": 0, "open_picks": 0, "shipped_left": 3},
            "backordered",
        ),
        (
            "allocated",
            {"open_qty": 3, "reserved": 1, "unpacked": 1, "open_picks": 0, "shipped_left": 0},
            "partially_allocated",
        ),
        (
            "packed",
            {"open_qty": 3, "reserved": 3, "unpacked": 1, "open_picks": 1, "shipped_left": 0},
            "picking",
        ),
        (
            "packed",
            {"open_qty": 3, "reserved": 1, "unpacked": 0, "open_picks": 1, "shipped_left": 0},
            "packed",
        ),
        (
            "partially_shipped",
            {"open_qty": 3, "reserved": 3, "unpacked": 3, "open_picks": 1, "shipped_left": 1},
            "partially_shipped",
        ),
        (
            "on_hold",
            {"open_qty": 3, "reserved": 0, "unpacked": 0, "open_picks": 0, "shipped_left": 0},
            "on_hold",
        ),
    ],
)
def test_order_state_rule(state, kw, expected):
    assert order_state_after_cancel(state, **kw) == expected


def test_cli_cancels_by_number_and_names_the_refusal(world, db_url, monkeypatch):
    import json

    from typer.testing import CliRunner

    from oms_ops import cli

    conn = world
    oid, sid = f.shipped_order(conn, [("SKU-1", 2)])
    number = conn.execute(
        "SELECT shipment_number FROM oms.shipments WHERE shipment_id = %s", (sid,)
    ).fetchone()[0]
    monkeypatch.setenv("OMS_DATABASE_URL", db_url)
    neither = CliRunner().invoke(cli.app, ["shipment", "cancel", number, "--reason", "x"])
    assert neither.exit_code == 2 and "exactly one of --location" in neither.output
    ok = CliRunner().invoke(cli.app, ["shipment", "cancel", number, "--keep-stock", "--reason", "lost"])
    assert ok.exit_code == 0, ok.output
    out = json.loads(ok.output)
    assert out["shipment_number"] == number and out["order_state"] == "new" and out["location_code"] is None
    assert f.stock_row(conn, WH, "SKU-1") == (8, 0)
    again = CliRunner().invoke(cli.app, ["shipment", "cancel", number, "--location", WH, "--reason", "twice"])
    assert again.exit_code == 1 and f"shipment {number}" in again.output and "is cancelled" in again.output


def test_cancel_while_another_part_is_packed_keeps_the_order_on_the_floor(world):
    conn = world
    oid = f.order(conn, [("SKU-1", 1), ("SKU-2", 1)])
    lids = f.line_ids(conn, oid)
    f.reserve(conn, oid, "WH-MSK", {lids[0]: 1})
    f.reserve(conn, oid, "WH-SPB", {lids[1]: 1})
    ff.record_pick(conn, oid, "WH-MSK", actor="t")
    ff.pack(conn, oid, "WH-MSK", actor="t")
    ff.record_pick(conn, oid, "WH-SPB", actor="t")
    ff.pack(conn, oid, "WH-SPB", actor="t")
    spb = ff.create_shipment(conn, oid, "WH-SPB", carrier_code="cdek", actor="t")
    assert f.order_state(conn, oid) == "partially_shipped"

    res = cancel_shipment(conn, spb.shipment_id, location_code="WH-SPB", actor="ops", reason="wrong box")
    assert res.order_state == "picking"  # WH-MSK's parcel is packed, WH-SPB's units must be picked again
    assert lines(conn, oid) == [(1, "packed", 0), (2, "allocated", 0)]
    assert check_invariants(conn) == []
    out = ship_in_full(
        conn, [ShipRequest(oid, "WH-MSK", "cdek"), ShipRequest(oid, "WH-SPB", "cdek")], actor="t"
    )
    assert len(out.shipments) == 2 and out.skipped == []
    assert f.order_state(conn, oid) == "shipped"
    assert check_invariants(conn) == []
