"""Returns: RMA quantity validation, the announcement to the warehouse, receive, inspect (restock / write-off),
refund, exchange — one at a time and in batches — and the in-flight read model."""

from __future__ import annotations

from decimal import Decimal

import pytest

from oms_ops import fulfillment as ff
from oms_ops import outbox, returns
from oms_ops.errors import IllegalTransition, ValidationFailed
from oms_ops.invariants import check_invariants
from oms_ops.returns import ReturnLineRequest as R
from oms_ops.services import returns as svc
from tests.core import factories as f


@pytest.fixture
def delivered(conn):
    f.world(conn)
    oid, sid = f.shipped_order(conn, [("SKU-1", 3), ("SKU-2", 1)])
    ff.hand_over(conn, [sid], actor="t")
    ff.mark_delivered(conn, [sid], actor="t")
    return conn, oid, f.line_ids(conn, oid)


def test_request_validates_every_line_against_shipped_minus_returned(delivered):
    conn, oid, (l1, l2) = delivered
    returns.request_return(conn, oid, [R(l1, 2, "size_fit")], actor="cs")
    with pytest.raises(ValidationFailed) as exc:
        returns.request_return(
            conn, oid, [R(l1, 2, "size_fit"), R(l2, 0, "defective"), R(999, 1, "nope")], actor="cs"
        )
    assert exc.value.problems == [
        f"line {l2}: quantity must be > 0, got 0",
        f"line 999: not a line of order {oid}",
        "line 999: unknown reason code 'nope'",
        f"line {l1}: return 2 exceeds returnable 1",
    ]
    assert conn.execute("SELECT count(*) FROM oms.returns").fetchone()[0] == 1
    assert returns.returnable(conn, oid) == {l1: 1, l2: 1}


def test_request_is_idempotent_by_channel_return_id(delivered):
    conn, oid, (l1, _) = delivered
    a = returns.request_return(conn, oid, [R(l1, 1, "defective")], actor="ozon", channel_return_id="OZ-R-1")
    b = returns.request_return(conn, oid, [R(l1, 1, "defective")], actor="ozon", channel_return_id="OZ-R-1")
    assert a.created and not b.created and a.return_id == b.return_id


def test_unshipped_lines_cannot_be_returned(conn):
    f.world(conn)
    oid = f.allocated_order(conn)
    with pytest.raises(ValidationFailed, match="exceeds returnable 0"):
        returns.request_return(conn, oid, [R(f.line_ids(conn, oid)[0], 1, "changed_mind")], actor="cs")


def test_receive_inspect_restock_and_write_off_then_refund(delivered):
    conn, oid, (l1, l2) = delivered
    rma = returns.request_return(
        conn, oid, [R(l1, 2, "changed_mind"), R(l2, 1, "damaged_in_transit")], actor="cs"
    )
    rl = dict(conn.execute("SELECT line_id, return_line_id FROM oms.return_lines").fetchall())
    with pytest.raises(IllegalTransition, match="requested -> inspected"):
        returns.inspect_return(conn, rma.return_id, "restock", actor="wh")
    returns.receive_return(conn, rma.return_id, location_code="WH-SPB", actor="wh", received={rl[l1]: 1})
    with pytest.raises(ValidationFailed, match="disposition must be"):
        returns.inspect_return(conn, rma.return_id, {rl[l1]: "restock"}, actor="wh")
    restocked = returns.inspect_return(
        conn, rma.return_id, {rl[l1]: "restock", rl[l2]: "write_off"}, actor="wh"
    )
    assert restocked == [("SKU-1", 1)]
    assert f.stock_row(conn, "WH-SPB", "SKU-1") == (11, 0)
    assert f.stock_row(conn, "WH-SPB", "SKU-2") == (10, 0)  # written off: never back in stock
    assert conn.execute(
        "SELECT kind, on_hand_delta, reference FROM oms.inventory_ledger WHERE kind = 'return_restock'"
    ).fetchall() == [("return_restock", 1, rma.rma_number)]
    assert conn.execute(
        "SELECT line_id, qty_returned, state FROM oms.order_lines ORDER BY line_id"
    ).fetchall() == [(l1, 1, "delivered"), (l2, 1, "returned")]
    refund_id = returns.refund_return(conn, rma.return_id, actor="cs")
    assert conn.execute(
        "SELECT amount, return_id FROM oms.refunds WHERE refund_id = %s", (refund_id,)
    ).fetchone() == (Decimal("200.00"), rma.return_id)
    assert returns.refund_return(conn, rma.return_id, actor="cs") == refund_id  # repeat: same refund
    assert conn.execute("SELECT count(*) FROM oms.outbox WHERE effect = 'payment.refund'").fetchone()[0] == 1
    assert f.state(conn, "returns", "return_id", rma.return_id) == "closed"
    assert check_invariants(conn) == []


def test_exchange_creates_linked_replacement_order(delivered):
    conn, oid, (l1, _) = delivered
    rma = returns.request_return(conn, oid, [R(l1, 1, "size_fit")], actor="cs", kind="exchange")
    returns.receive_return(conn, rma.return_id, location_code="WH-MSK", actor="wh")
    returns.inspect_return(conn, rma.return_id, "restock", actor="wh")
    new_id = returns.exchange_return(conn, rma.return_id, actor="cs", replacement=[("SKU-3", 1)])
    assert returns.exchange_return(conn, rma.return_id, actor="cs") == new_id
    row = conn.execute(
        "SELECT parent_order_id, state, payment_status, total_amount FROM oms.orders WHERE order_id = %s",
        (new_id,),
    ).fetchone()
    assert row == (oid, "new", "paid", Decimal("100.00"))
    assert conn.execute("SELECT sku, qty FROM oms.order_lines WHERE order_id = %s", (new_id,)).fetchall() == [
        ("SKU-3", 1)
    ]
    assert conn.execute("SELECT exchange_order_id FROM oms.returns").fetchone()[0] == new_id


def test_cancelled_rma_frees_the_quantity(delivered):
    conn, oid, (l1, _) = delivered
    rma = returns.request_return(conn, oid, [R(l1, 3, "other")], actor="cs")
    returns.cancel_return(conn, rma.return_id, reason="customer kept it", actor="cs")
    assert returns.returnable(conn, oid)[l1] == 3
    with pytest.raises(IllegalTransition):
        returns.receive_return(conn, rma.return_id, location_code="WH-MSK", actor="wh")


def test_returned_to_sender_units_are_not_returnable_again(conn):
    f.world(conn)
    oid, sid = f.shipped_order(conn)
    ff.hand_over(conn, [sid], actor="t")
    ff.mark_not_delivered(conn, [sid], reason="refused", actor="t")
    ff.return_to_sender(conn, sid, restock=True, actor="t")
    assert returns.returnable(conn, oid) == {f.line_ids(conn, oid)[0]: 0}


def test_units_in_transit_are_not_returnable_yet(conn):
    f.world(conn)
    oid, sid = f.shipped_order(conn)
    (line,) = f.line_ids(conn, oid)
    ff.hand_over(conn, [sid], actor="t")
    with pytest.raises(ValidationFailed, match="exceeds returnable 0"):
        returns.request_return(conn, oid, [R(line, 1, "changed_mind")], actor="cs")
    ff.mark_delivered(conn, [sid], actor="t")
    assert returns.returnable(conn, oid) == {line: 2}


# -- the warehouse announcement, batches and the in-flight read model ------------------------------------------


def test_request_announces_the_return_to_the_location_that_shipped_it(delivered):
    conn, oid, (l1, l2) = delivered
    rma = returns.request_return(conn, oid, [R(l1, 2, "size_fit"), R(l2, 1, "defective")], actor="cs")
    effect, key, payload = conn.execute(
        "SELECT effect, idempotency_key, payload FROM oms.outbox WHERE effect = 'wms.announce_return'"
    ).fetchone()
    assert key == f"wms.announce_return:{rma.rma_number}"
    assert payload["location_code"] == "WH-MSK" and payload["return_id"] == rma.return_id
    assert payload["lines"] == [{"sku": "SKU-1", "qty": 2}, {"sku": "SKU-2", "qty": 1}]
    again = returns.request_return(conn, oid, [R(l1, 1, "size_fit")], actor="cs")
    assert conn.execute("SELECT count(*) FROM oms.outbox WHERE effect = %s", (effect,)).fetchone()[0] == 2
    assert again.rma_number != rma.rma_number


def _two_returns(conn, oid, l1):
    a = returns.request_return(conn, oid, [R(l1, 1, "size_fit")], actor="cs")
    b = returns.request_return(conn, oid, [R(l1, 2, "changed_mind")], actor="cs")
    rl = dict(conn.execute("SELECT return_id, return_line_id FROM oms.return_lines").fetchall())
    return a, b, rl


def test_receiving_many_reports_every_problem_and_receives_nothing_until_all_are_right(delivered):
    conn, oid, (l1, _) = delivered
    a, b, rl = _two_returns(conn, oid, l1)
    bad = [
        svc.ReturnReceipt(a.return_id, "WH-NOWHERE"),
        svc.ReturnReceipt(b.return_id, "WH-MSK", {rl[b.return_id]: 5, 999: 1}),
    ]
    with pytest.raises(ValidationFailed) as exc:
        svc.receive_returns(conn, bad, actor="wh")
    assert exc.value.problems == [
        f"{a.rma_number}: unknown location 'WH-NOWHERE'",
        f"return line {rl[b.return_id]}: received must be 0..2, got 5",
        f"return line 999: not part of return {b.return_id}",
    ]
    assert conn.execute("SELECT DISTINCT state FROM oms.returns").fetchall() == [("requested",)]
    good = [
        svc.ReturnReceipt(a.return_id, "WH-MSK"),
        svc.ReturnReceipt(b.return_id, "WH-MSK", reference="RR-7"),
    ]
    assert svc.receive_returns(conn, good, actor="wh", chunk=1) == [a.return_id, b.return_id]
    assert svc.receive_returns(conn, good, actor="wh") == []  # the same receipts again: nothing happens
    assert conn.execute(
        "SELECT data FROM oms.order_events WHERE entity = 'return' AND to_state = 'received' ORDER BY entity_id"
    ).fetchall() == [(None,), ({"receipt": "RR-7"},)]


def test_inspecting_two_returns_of_one_order_line_in_one_batch_counts_both(delivered):
    conn, oid, (l1, _) = delivered
    a, b, rl = _two_returns(conn, oid, l1)
    svc.receive_returns(conn, [svc.ReturnReceipt(a.return_id, "WH-SPB")], actor="wh")
    both = [svc.ReturnInspection(a.return_id, "restock"), svc.ReturnInspection(b.return_id, "restock")]
    with pytest.raises(IllegalTransition) as exc:  # one is not received yet: the whole batch is refused
        svc.inspect_returns(conn, both, actor="wh")
    assert exc.value.refused == [("return", b.return_id, "requested", "inspected")]
    assert conn.execute("SELECT state FROM oms.returns WHERE return_id = %s", (a.return_id,)).fetchone() == (
        "received",
    )
    svc.receive_returns(conn, [svc.ReturnReceipt(b.return_id, "WH-SPB")], actor="wh")
    res = svc.inspect_returns(
        conn,
        [
            svc.ReturnInspection(a.return_id, "restock"),
            svc.ReturnInspection(b.return_id, {rl[b.return_id]: "write_off"}),
        ],
        actor="wh",
    )
    assert res.inspected == [a.return_id, b.return_id] and res.restocked == [(a.return_id, "SKU-1", 1)]
    assert conn.execute(
        "SELECT qty_returned, state FROM oms.order_lines WHERE line_id = %s", (l1,)
    ).fetchone() == (
        3,
        "returned",
    )
    assert f.stock_row(conn, "WH-SPB", "SKU-1") == (11, 0)
    assert check_invariants(conn) == []


def test_refunding_many_refuses_returns_not_inspected_and_repeats_harmlessly(delivered):
    conn, oid, (l1, _) = delivered
    a, b, _ = _two_returns(conn, oid, l1)
    svc.receive_returns(conn, [svc.ReturnReceipt(r.return_id, "WH-MSK") for r in (a, b)], actor="wh")
    svc.inspect_returns(conn, [svc.ReturnInspection(a.return_id, "restock")], actor="wh")
    with pytest.raises(IllegalTransition) as exc:
        svc.refund_returns(conn, [a.return_id, b.return_id], actor="cs")
    assert exc.value.refused == [("return", b.return_id, "received", "closed")]
    assert conn.execute("SELECT count(*) FROM oms.refunds").fetchone()[0] == 0
    svc.inspect_returns(conn, [svc.ReturnInspection(b.return_id, "restock")], actor="wh")
    first = svc.refund_inspected(conn, actor="returns")
    assert sorted(first.refunds) == [a.return_id, b.return_id] and len(first.refund_ids) == 2
    assert conn.execute("SELECT return_id, amount FROM oms.refunds ORDER BY return_id").fetchall() == [
        (a.return_id, Decimal("100.00")),
        (b.return_id, Decimal("200.00")),
    ]
    assert svc.refund_returns(conn, [a.return_id, b.return_id], actor="cs").refunds == first.refunds
    assert svc.refund_inspected(conn, actor="returns").refunds == {}
    assert conn.execute("SELECT count(*) FROM oms.outbox WHERE effect = 'payment.refund'").fetchone()[0] == 2


def test_returns_in_flight_show_their_stage(delivered):
    conn, oid, (l1, l2) = delivered
    a = returns.request_return(conn, oid, [R(l1, 1, "size_fit")], actor="cs")
    b = returns.request_return(conn, oid, [R(l2, 1, "size_fit")], actor="cs")
    stages = {r["rma_number"]: (r["stage"], r["location_code"]) for r in svc.in_flight(conn)}
    assert stages == {a.rma_number: ("requested", "WH-MSK"), b.rma_number: ("requested", "WH-MSK")}
    (item,) = outbox.claim(conn, effects=["wms.announce_return"], limit=1)
    outbox.complete(conn, [item.outbox_id])  # the warehouse was told about the first one
    svc.receive_returns(conn, [svc.ReturnReceipt(b.return_id, "WH-SPB", {})], actor="wh")
    rows = {r["rma_number"]: r for r in svc.in_flight(conn)}
    assert (rows[a.rma_number]["stage"], rows[b.rma_number]["stage"]) == ("in transit", "received")
    assert rows[b.rma_number]["location_code"] == "WH-SPB" and rows[b.rma_number]["units_received"] == 1
    svc.cancel_return(conn, a.return_id, reason="kept", actor="cs")
    assert [r["rma_number"] for r in svc.in_flight(conn)] == [b.rma_number]
