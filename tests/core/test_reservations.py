"""Partial release of reservations (``release_quantities``): shrink or close, ledger, all problems at once."""

from __future__ import annotations

import pytest

from oms_ops.errors import ValidationFailed
from oms_ops.invariants import check_invariants
from oms_ops.reservations import release_quantities
from tests.core import factories as f


@pytest.fixture
def conn1(conn):
    f.world(conn)
    return conn


def reservations(conn, order_id):
    return conn.execute(
        "SELECT reservation_id, qty, state, closed_at IS NOT NULL FROM oms.reservations WHERE order_id = %s "
        "ORDER BY reservation_id",
        (order_id,),
    ).fetchall()


def release(conn, **kwargs):
    with conn.transaction():
        conn.execute("SELECT 1 FROM oms.orders ORDER BY order_id FOR UPDATE")
        return release_quantities(conn, actor="ops", **kwargs)


def test_release_quantities_shrinks_or_closes_reservations_with_ledger_entries(conn1):
    conn = conn1
    oid = f.allocated_order(conn, [("SKU-1", 5), ("SKU-2", 2)])
    other = f.allocated_order(conn, [("SKU-1", 1)], location="WH-SPB")
    a, b = (r[0] for r in reservations(conn, oid))
    assert release(conn, reservation_qty=[(a, 2), (b, 2), (a, 1)], reason="rebalance") == 2
    assert reservations(conn, oid) == [(a, 2, "active", False), (b, 2, "released", True)]
    assert f.stock_row(conn, "WH-MSK", "SKU-1") == (10, 2)
    assert f.stock_row(conn, "WH-MSK", "SKU-2") == (10, 0)
    assert conn.execute(
        """SELECT sku, kind, on_hand_delta, reserved_delta, reservation_id, reason FROM oms.inventory_ledger
           WHERE kind = 'release' ORDER BY entry_id"""
    ).fetchall() == [("SKU-1", "release", 0, -3, a, "rebalance"), ("SKU-2", "release", 0, -2, b, "rebalance")]
    assert [r[1:3] for r in reservations(conn, other)] == [(1, "active")]
    assert f.stock_row(conn, "WH-SPB", "SKU-1") == (10, 1)
    assert check_invariants(conn) == []


def test_release_quantities_of_missing_units_takes_them_off_the_shelf(conn1):
    conn = conn1
    oid = f.allocated_order(conn, [("SKU-1", 4)])
    ((rid, *_),) = reservations(conn, oid)
    release(
        conn,
        reservation_qty=[(rid, 3)],
        reason="short pick",
        missing=True,
        reference="pick:7",
        reasons={rid: "not_found"},
    )
    assert reservations(conn, oid) == [(rid, 1, "active", False)]
    assert f.stock_row(conn, "WH-MSK", "SKU-1") == (7, 1)
    assert conn.execute(
        "SELECT kind, on_hand_delta, reserved_delta, reference, reason FROM oms.inventory_ledger "
        "WHERE reservation_id = %s ORDER BY entry_id",
        (rid,),
    ).fetchall() == [("reservation", 0, 4, "test", None), ("pick", -3, -3, "pick:7", "not_found")]


def test_release_quantities_reports_every_problem_and_changes_nothing(conn1):
    conn = conn1
    oid = f.allocated_order(conn, [("SKU-1", 2), ("SKU-2", 1)])
    a, b = (r[0] for r in reservations(conn, oid))
    done = f.allocated_order(conn, [("SKU-3", 1)])
    ((closed, *_),) = reservations(conn, done)
    release(conn, reservation_qty=[(closed, 1)], reason="setup")
    ledger_before = conn.execute("SELECT count(*) FROM oms.inventory_ledger").fetchone()[0]
    with pytest.raises(ValidationFailed) as exc:
        release(conn, reservation_qty=[(a, 3), (b, 1), (closed, 1), (999999, 1)], reason="x")
    line_a = f.line_ids(conn, oid)[0]
    assert exc.value.problems == [
        f"reservation {a}, order {oid} line {line_a} (SKU-1) at WH-MSK: release 3, only 2 reserved",
        f"reservation {closed}: is released, not active",
        "reservation 999999: not found",
    ]
    with pytest.raises(ValidationFailed, match="quantity must be an integer > 0, got 0"):
        release(conn, reservation_qty=[(a, 0)], reason="x")
    assert reservations(conn, oid) == [(a, 2, "active", False), (b, 1, "active", False)]
    assert conn.execute("SELECT count(*) FROM oms.inventory_ledger").fetchone()[0] == ledger_before
    assert release(conn, reservation_qty=[], reason="nothing") == 0
    assert check_invariants(conn) == []
