"""Pick, pack, ship, track, deliver, pickup, not delivered / returned to sender."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest

from oms_ops import fulfillment as ff
from oms_ops.errors import IllegalTransition, InsufficientStock, ValidationFailed
from oms_ops.fulfillment import TrackingEvent
from oms_ops.invariants import check_invariants
from tests.core import factories as f


@pytest.fixture
def conn1(conn):
    f.world(conn)
    return conn


def lines_of(conn, oid):
    return conn.execute(
        """SELECT line_no, sku, qty, state, qty_shipped, qty_cancelled, split_from_line_id IS NOT NULL
           FROM oms.order_lines WHERE order_id = %s ORDER BY line_no""",
        (oid,),
    ).fetchall()


def test_full_pick_pack_ship_flow_with_events_outbox_and_stamps(conn1):
    conn = conn1
    oid = f.allocated_order(conn, [("SKU-1", 2), ("SKU-2", 1)])
    pick = ff.record_pick(conn, oid, "WH-MSK", actor="picker")
    assert pick.created and pick.short == [] and [x[1:] for x in pick.lines] == [(2, 2), (1, 1)]
    assert f.order_state(conn, oid) == "picking"
    assert {r[3] for r in lines_of(conn, oid)} == {"picked"}
    ff.pack(conn, oid, "WH-MSK", actor="packer", packages=2)
    assert f.order_state(conn, oid) == "packed"
    sh = ff.create_shipment(conn, oid, "WH-MSK", carrier_code="cdek", actor="shipper", service_code="136")
    assert sh.created and sh.lines == ((f.line_ids(conn, oid)[0], 2), (f.line_ids(conn, oid)[1], 1))
    assert f.order_state(conn, oid) == "shipped"
    assert f.stock_row(conn, "WH-MSK", "SKU-1") == (8, 0)
    assert [r[3:5] for r in lines_of(conn, oid)] == [("shipped", 2), ("shipped", 1)]
    assert f.events(conn, oid) == [
        (None, "new"),
        ("new", "allocated"),
        ("allocated", "picking"),
        ("picking", "packed"),
        ("packed", "shipped"),
    ]
    stamps = conn.execute(
        """SELECT allocated_at IS NOT NULL, picking_started_at IS NOT NULL, picked_at IS NOT NULL,
                  packed_at IS NOT NULL, first_shipped_at IS NOT NULL, shipped_at IS NOT NULL
           FROM oms.orders WHERE order_id = %s""",
        (oid,),
    ).fetchone()
    assert all(stamps)
    box = dict(conn.execute("SELECT effect, payload FROM oms.outbox ORDER BY outbox_id").fetchall())
    assert box["carrier.create_shipment"]["shipment_number"] == sh.shipment_number
    assert (
        box["carrier.create_shipment"]["weight_g"] == 1500 and box["carrier.create_shipment"]["packages"] == 2
    )
    assert (
        conn.execute(
            "SELECT idempotency_key FROM oms.outbox WHERE effect = 'carrier.create_shipment'"
        ).fetchone()[0]
        == f"carrier.create_shipment:{sh.shipment_number}"
    )
    ledger = conn.execute(
        "SELECT kind, on_hand_delta, reserved_delta FROM oms.inventory_ledger "
        "WHERE kind = 'ship' ORDER BY entry_id"
    ).fetchall()
    assert ledger == [("ship", -2, -2), ("ship", -1, -1)]
    assert check_invariants(conn) == []


def test_repeated_steps_are_idempotent(conn1):
    conn = conn1
    oid = f.allocated_order(conn)
    p1 = ff.record_pick(conn, oid, "WH-MSK", actor="t")
    p2 = ff.record_pick(conn, oid, "WH-MSK", actor="t")
    assert p2.pick_id == p1.pick_id and not p2.created
    assert ff.pack(conn, oid, "WH-MSK", actor="t") == ff.pack(conn, oid, "WH-MSK", actor="t")
    s1 = ff.create_shipment(conn, oid, "WH-MSK", carrier_code="cdek", actor="t")
    s2 = ff.create_shipment(conn, oid, "WH-MSK", carrier_code="cdek", actor="t")
    assert s2.shipment_id == s1.shipment_id and not s2.created
    assert (
        conn.execute("SELECT count(*) FROM oms.outbox WHERE effect = 'carrier.create_shipment'").fetchone()[0]
        == 1
    )
    assert check_invariants(conn) == []


def test_pick_problems_are_all_reported(conn1):
    conn = conn1
    oid = f.allocated_order(conn, [("SKU-1", 2), ("SKU-2", 1)])
    l1, l2 = f.line_ids(conn, oid)
    with pytest.raises(InsufficientStock) as exc:
        ff.record_pick(conn, oid, "WH-MSK", {l1: 3, l2: -1, 999: 1}, actor="t")
    # the over-pick is a stock refusal: it names the SKU, both quantities and the location
    assert [(s.sku, s.requested, s.available, s.location, s.line_id) for s in exc.value.shortfalls] == [
        ("SKU-1", 3, 2, "WH-MSK", l1)
    ]
    assert exc.value.problems == [
        f"order {oid} line {l1} (SKU-1) at WH-MSK: pick 3, only 2 reserved",
        f"line {l2}: picked quantity must be an integer >= 0, got -1",
        "line 999: not reserved at WH-MSK for order " + str(oid),
    ]
    assert conn.execute("SELECT count(*) FROM oms.picks").fetchone()[0] == 0
    with pytest.raises(ValidationFailed, match="nothing reserved at WH-SPB"):
        ff.record_pick(conn, oid, "WH-SPB", actor="t")


def test_pick_of_unallocated_order_is_an_illegal_transition(conn1):
    oid = f.order(conn1)
    with pytest.raises(IllegalTransition, match="new -> picking"):
        ff.record_pick(conn1, oid, "WH-MSK", actor="t")


def test_short_pick_adjusts_stock_records_discrepancy_and_backorders_the_rest(conn1):
    conn = conn1
    oid = f.allocated_order(conn, [("SKU-1", 5), ("SKU-2", 1)])
    l1, l2 = f.line_ids(conn, oid)
    res = ff.record_pick(conn, oid, "WH-MSK", {l1: 3}, actor="picker", reasons={l1: "not_found"})
    assert res.short == [(l1, 2)] and len(res.backorder_lines) == 1
    pl = conn.execute(
        "SELECT line_id, qty_expected, qty_picked, qty_short, discrepancy_reason FROM oms.pick_lines "
        "ORDER BY line_id"
    ).fetchall()
    assert pl == [(l1, 5, 3, 2, "not_found"), (l2, 1, 1, 0, None)]
    # the 2 missing units were never on the shelf: on_hand and reserved both drop by 2
    assert f.stock_row(conn, "WH-MSK", "SKU-1") == (8, 3)
    assert conn.execute(
        "SELECT on_hand_delta, reserved_delta, reason FROM oms.inventory_ledger WHERE kind = 'pick'"
    ).fetchall() == [(-2, -2, "not_found")]
    assert lines_of(conn, oid) == [
        (1, "SKU-1", 5, "picked", 0, 2, False),
        (2, "SKU-2", 1, "picked", 0, 0, False),
        (3, "SKU-1", 2, "backordered", 0, 0, True),
    ]
    ff.pack(conn, oid, "WH-MSK", actor="t")
    ff.create_shipment(conn, oid, "WH-MSK", carrier_code="cdek", actor="t")
    # the first shipment leaves; the rest waits for stock: partially_shipped, then backordered
    assert f.events(conn, oid)[-2:] == [("packed", "partially_shipped"), ("partially_shipped", "backordered")]
    assert conn.execute(
        "SELECT first_shipped_at IS NOT NULL, shipped_at IS NULL FROM oms.orders WHERE order_id = %s", (oid,)
    ).fetchone() == (True, True)
    assert check_invariants(conn) == []
    # the backordered line is allocated later and shipped: the order completes
    f.reserve(conn, oid, "WH-SPB")
    assert f.order_state(conn, oid) == "allocated"
    ff.record_pick(conn, oid, "WH-SPB", actor="t")
    ff.pack(conn, oid, "WH-SPB", actor="t")
    ff.create_shipment(conn, oid, "WH-SPB", carrier_code="cdek", actor="t")
    assert f.order_state(conn, oid) == "shipped"
    assert check_invariants(conn) == []


def test_short_pick_with_cancel_policy_refunds_the_missing_units(conn1):
    conn = conn1
    oid = f.allocated_order(conn, [("SKU-1", 2)])
    (l1,) = f.line_ids(conn, oid)
    res = ff.record_pick(conn, oid, "WH-MSK", {l1: 0}, actor="t", short_policy="cancel")
    assert res.backorder_lines == [] and len(res.refunds) == 1
    assert lines_of(conn, oid) == [(1, "SKU-1", 2, "cancelled", 0, 2, False)]
    assert f.order_state(conn, oid) == "cancelled"
    assert conn.execute("SELECT amount FROM oms.refunds").fetchone()[0] == Decimal("200.00")
    assert conn.execute("SELECT state FROM oms.picks").fetchone()[0] == "cancelled"
    assert check_invariants(conn) == []


def test_short_pick_of_everything_backorders_the_order(conn1):
    conn = conn1
    oid = f.allocated_order(conn, [("SKU-1", 2)])
    (l1,) = f.line_ids(conn, oid)
    ff.record_pick(conn, oid, "WH-MSK", {l1: 0}, actor="t")
    assert f.order_state(conn, oid) == "backordered"
    assert f.stock_row(conn, "WH-MSK", "SKU-1") == (8, 0)
    assert check_invariants(conn) == []


def test_split_order_ships_in_two_shipments(conn1):
    conn = conn1
    oid = f.order(conn, [("SKU-1", 1), ("SKU-2", 1)])
    l1, l2 = f.line_ids(conn, oid)
    f.reserve(conn, oid, "WH-MSK", {l1: 1})
    f.reserve(conn, oid, "WH-SPB", {l2: 1})
    for loc in ("WH-MSK", "WH-SPB"):
        ff.record_pick(conn, oid, loc, actor="t")
        ff.pack(conn, oid, loc, actor="t")
    assert f.order_state(conn, oid) == "packed"
    a = ff.create_shipment(conn, oid, "WH-MSK", carrier_code="cdek", actor="t")
    assert f.order_state(conn, oid) == "partially_shipped"
    b = ff.create_shipment(conn, oid, "WH-SPB", carrier_code="cdek", actor="t")
    assert f.order_state(conn, oid) == "shipped"
    ff.hand_over(conn, [a.shipment_id, b.shipment_id], actor="t")
    ff.mark_delivered(conn, [a.shipment_id], actor="t")
    assert f.order_state(conn, oid) == "shipped"
    ff.mark_delivered(conn, [b.shipment_id], actor="t")
    assert f.order_state(conn, oid) == "delivered"
    assert {r[3] for r in lines_of(conn, oid)} == {"delivered"}
    assert check_invariants(conn) == []


def test_tracking_events_are_idempotent_and_move_the_shipment(conn1):
    conn = conn1
    oid, sid = f.shipped_order(conn)
    ff.record_carrier_booking(
        conn, sid, carrier_shipment_id="uuid-1", tracking_number="1000001", actor="cdek"
    )
    t = f.T0 + timedelta(days=1)
    evs = [
        TrackingEvent("cdek", "CREATED", t, tracking_number="1000001"),
        TrackingEvent(
            "cdek", "RECEIVED_AT_SHIPMENT_WAREHOUSE", t + timedelta(hours=1), tracking_number="1000001"
        ),
        TrackingEvent("cdek", "SENT_TO_TRANSIT_CITY", t + timedelta(hours=5), tracking_number="1000001"),
    ]
    r1 = ff.record_tracking_events(conn, evs)
    assert r1.inserted == 3 and [a[2] for a in r1.applied] == ["handed_over", "in_transit"]
    r2 = ff.record_tracking_events(conn, evs)
    assert r2.inserted == 0 and r2.duplicates == 3 and r2.applied == []
    assert f.state(conn, "shipments", "shipment_id", sid) == "in_transit"
    handed = conn.execute(
        "SELECT handed_over_at FROM oms.shipments WHERE shipment_id = %s", (sid,)
    ).fetchone()[0]
    assert handed == t + timedelta(hours=1)  # the carrier's time, not ours
    # an older event arriving late is kept but not applied
    late = ff.record_tracking_events(
        conn, [TrackingEvent("cdek", "ACCEPTED_AT_PICK_UP_POINT", t, shipment_id=sid)]
    )
    assert late.inserted == 1 and late.ignored == [
        (sid, "ACCEPTED_AT_PICK_UP_POINT", "older than the last applied event")
    ]
    done = ff.record_tracking_events(
        conn, [TrackingEvent("cdek", "DELIVERED", t + timedelta(days=1), tracking_number="1000001")]
    )
    assert [a[2] for a in done.applied] == ["delivered"]
    assert f.order_state(conn, oid) == "delivered"
    assert conn.execute("SELECT delivered_at FROM oms.orders WHERE order_id = %s", (oid,)).fetchone()[
        0
    ] == t + timedelta(days=1)
    unknown = ff.record_tracking_events(conn, [TrackingEvent("cdek", "DELIVERED", t, tracking_number="nope")])
    assert len(unknown.quarantined) == 1


def test_tracking_skips_missed_states_forward_only(conn1):
    conn = conn1
    _, other = f.shipped_order(conn)
    res = ff.record_tracking_events(
        conn, [TrackingEvent("cdek", "DELIVERED", f.T0 + timedelta(days=2), shipment_id=other)]
    )
    assert [a[1:] for a in res.applied] == [("created", "handed_over"), ("handed_over", "delivered")]
    late = ff.record_tracking_events(
        conn, [TrackingEvent("cdek", "NOT_DELIVERED", f.T0 + timedelta(days=3), shipment_id=other)]
    )
    assert late.ignored == [(other, "NOT_DELIVERED", "delivered -> not_delivered not allowed")]
    oid, sid = f.shipped_order(conn, delivery_method="pickup_point", pickup_location_code="ST-MSK-1")
    res = ff.record_tracking_events(
        conn,
        [
            TrackingEvent("cdek", "ACCEPTED_AT_PICK_UP_POINT", f.T0 + timedelta(days=2), shipment_id=sid),
            TrackingEvent("cdek", "DELIVERED", f.T0 + timedelta(days=3), shipment_id=sid),
        ],
    )
    assert [a[1:] for a in res.applied] == [
        ("created", "ready_for_pickup"),
        ("ready_for_pickup", "picked_up"),
    ]
    assert f.order_state(conn, oid) == "picked_up"
    assert f.events(conn, oid)[-2:] == [("shipped", "ready_for_pickup"), ("ready_for_pickup", "picked_up")]


def test_store_pickup_with_self_carrier(conn1):
    conn = conn1
    f.stock(conn, "ST-MSK-1", {"SKU-1": 3})
    oid, sid = f.shipped_order(
        conn,
        location="ST-MSK-1",
        carrier="self",
        delivery_method="store_pickup",
        pickup_location_code="ST-MSK-1",
    )
    assert (
        conn.execute("SELECT count(*) FROM oms.outbox WHERE effect = 'carrier.create_shipment'").fetchone()[0]
        == 0
    )
    ff.mark_ready_for_pickup(conn, [sid], actor="store")
    assert f.order_state(conn, oid) == "ready_for_pickup"
    ff.mark_picked_up(conn, [sid], actor="store")
    assert f.order_state(conn, oid) == "picked_up"
    assert conn.execute(
        "SELECT ready_for_pickup_at IS NOT NULL, delivered_at IS NOT NULL FROM oms.orders "
        "WHERE order_id = %s",
        (oid,),
    ).fetchone() == (True, True)


def test_illegal_shipment_move_changes_nothing(conn1):
    conn = conn1
    _, sid = f.shipped_order(conn)
    _, sid2 = f.shipped_order(conn)
    ff.hand_over(conn, [sid2], actor="t")
    with pytest.raises(IllegalTransition) as exc:
        ff.mark_picked_up(conn, [sid, sid2], actor="t")
    assert exc.value.refused == [
        ("shipment", sid, "created", "picked_up"),
        ("shipment", sid2, "handed_over", "picked_up"),
    ]
    assert f.state(conn, "shipments", "shipment_id", sid2) == "handed_over"


@pytest.mark.parametrize("restock", [True, False])
def test_not_delivered_then_returned_to_sender(conn1, restock):
    conn = conn1
    oid, sid = f.shipped_order(conn, [("SKU-1", 2)])
    ff.hand_over(conn, [sid], actor="t")
    ff.mark_not_delivered(conn, [sid], reason="no one home", actor="t")
    assert f.order_state(conn, oid) == "not_delivered"
    back = ff.return_to_sender(conn, sid, restock=restock, actor="t")
    assert f.order_state(conn, oid) == "returned_to_sender"
    assert lines_of(conn, oid)[0][3] == "returned"
    assert f.stock_row(conn, "WH-MSK", "SKU-1") == ((10, 0) if restock else (8, 0))
    assert back == ([("SKU-1", 2)] if restock else [])
    assert check_invariants(conn) == []
