"""Returns: RMA quantity validation, receive, inspect (restock / write-off), refund, exchange."""

from __future__ import annotations

from decimal import Decimal

import pytest

from oms_ops import fulfillment as ff
from oms_ops import returns
from oms_ops.errors import IllegalTransition, ValidationFailed
from oms_ops.invariants import check_invariants
from oms_ops.returns import ReturnLineRequest as R
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
