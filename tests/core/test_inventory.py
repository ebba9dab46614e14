"""Stock documents: receipts, adjustments, write-offs and WMS snapshots — all through the ledger."""

from __future__ import annotations

import threading
import time
from datetime import timedelta

import pytest

from oms_ops import inventory, stock_counts
from oms_ops.db import connect
from oms_ops.errors import ValidationFailed
from oms_ops.fulfillment import start_picking
from oms_ops.invariants import check_invariants
from tests.core import factories as f


@pytest.fixture
def conn0(conn):
    f.world(conn, qty=0)
    return conn


def ledger(conn, kind=None):
    return conn.execute(
        """SELECT location_code, sku, kind, on_hand_delta, reserved_delta, reference FROM oms.inventory_ledger
           WHERE %(k)s::text IS NULL OR kind = %(k)s ORDER BY entry_id""",
        {"k": kind},
    ).fetchall()


def test_receipt_books_ledger_and_is_idempotent_by_reference(conn0):
    conn = conn0
    r = inventory.receive_stock(
        conn, "WH-MSK", [("SKU-1", 5), ("SKU-2", 3), ("SKU-1", 2)], reference="PO-1", actor="wms"
    )
    assert r.applied and r.entries == 2
    assert f.stock_row(conn, "WH-MSK", "SKU-1") == (7, 0)
    assert ledger(conn) == [
        ("WH-MSK", "SKU-1", "receipt", 7, 0, "PO-1"),
        ("WH-MSK", "SKU-2", "receipt", 3, 0, "PO-1"),
    ]
    again = inventory.receive_stock(conn, "WH-MSK", {"SKU-1": 5}, reference="PO-1", actor="wms")
    assert not again.applied and f.stock_row(conn, "WH-MSK", "SKU-1") == (7, 0)
    assert check_invariants(conn) == []


def test_receipt_reports_every_bad_line_and_applies_nothing(conn0):
    conn = conn0
    with pytest.raises(ValidationFailed) as exc:
        inventory.receive_stock(
            conn,
            "WH-MSK",
            [("SKU-1", 5), ("NOPE", 1), ("SKU-2", 0), ("SKU-3", -1)],
            reference="PO-2",
            actor="wms",
        )
    assert exc.value.problems == [
        "NOPE: unknown sku",
        "SKU-2: received quantity must be > 0, got 0",
        "SKU-3: received quantity must be > 0, got -1",
    ]
    assert ledger(conn) == [] and conn.execute("SELECT count(*) FROM oms.stock_documents").fetchone()[0] == 0


def test_adjust_below_reserved_is_refused_naming_each_sku(conn0):
    conn = conn0
    f.stock(conn, "WH-MSK", {"SKU-1": 5, "SKU-2": 5})
    f.allocated_order(conn, [("SKU-1", 4), ("SKU-2", 4)])
    with pytest.raises(ValidationFailed) as exc:
        inventory.adjust_stock(
            conn,
            "WH-MSK",
            {"SKU-1": -2, "SKU-2": -3, "SKU-3": 1},
            reference="ADJ-1",
            reason="count",
            actor="ops",
        )
    assert exc.value.problems == [
        "SKU-1: on_hand 5-2 = 3 would be below reserved 4",
        "SKU-2: on_hand 5-3 = 2 would be below reserved 4",
    ]
    inventory.adjust_stock(
        conn, "WH-MSK", {"SKU-1": -1, "SKU-3": 4}, reference="ADJ-2", reason="count", actor="ops"
    )
    assert f.stock_row(conn, "WH-MSK", "SKU-1") == (4, 4) and f.stock_row(conn, "WH-MSK", "SKU-3") == (4, 0)
    assert check_invariants(conn) == []


def test_write_off_only_free_stock(conn0):
    conn = conn0
    f.stock(conn, "WH-MSK", {"SKU-1": 5})
    f.allocated_order(conn, [("SKU-1", 3)])
    with pytest.raises(ValidationFailed, match="exceeds free stock 2"):
        inventory.write_off(conn, "WH-MSK", {"SKU-1": 3}, reference="WO-1", reason="damaged", actor="ops")
    inventory.write_off(conn, "WH-MSK", {"SKU-1": 2}, reference="WO-1", reason="damaged", actor="ops")
    assert f.stock_row(conn, "WH-MSK", "SKU-1") == (3, 3)
    assert ledger(conn, "write_off") == [("WH-MSK", "SKU-1", "write_off", -2, 0, "WO-1")]


def test_snapshot_writes_adjustments_for_the_differences(conn0):
    conn = conn0
    f.stock(conn, "WH-MSK", {"SKU-1": 10, "SKU-2": 4})
    res = stock_counts.apply_wms_snapshot(
        conn, "WH-MSK", {"SKU-1": 7, "SKU-2": 4, "SKU-3": 9}, snapshot_id="S1"
    )
    assert res.status == "applied" and res.unchanged == 1
    assert res.adjusted == [("SKU-1", 10, 7), ("SKU-3", 0, 9)]
    assert ledger(conn, "adjustment") == [
        ("WH-MSK", "SKU-1", "adjustment", -3, 0, "S1"),
        ("WH-MSK", "SKU-3", "adjustment", 9, 0, "S1"),
    ]
    assert f.stock_row(conn, "WH-MSK", "SKU-1") == (7, 0) and f.stock_row(conn, "WH-MSK", "SKU-3") == (9, 0)
    # re-delivery is a no-op, even after stock moved on
    f.stock(conn, "WH-MSK", {"SKU-1": 1})
    assert (
        stock_counts.apply_wms_snapshot(conn, "WH-MSK", {"SKU-1": 7}, snapshot_id="S1").status == "duplicate"
    )
    assert f.stock_row(conn, "WH-MSK", "SKU-1") == (8, 0)
    assert check_invariants(conn) == []


def test_full_snapshot_zeroes_skus_not_listed(conn0):
    conn = conn0
    f.stock(conn, "WH-MSK", {"SKU-1": 10, "SKU-2": 4})
    res = stock_counts.apply_wms_snapshot(conn, "WH-MSK", {"SKU-1": 10}, snapshot_id="S1", full=True)
    assert res.adjusted == [("SKU-2", 4, 0)]


def test_stale_snapshot_is_not_applied_and_kept_in_quarantine(conn0):
    conn = conn0
    stock_counts.apply_wms_snapshot(conn, "WH-MSK", {"SKU-1": 5}, snapshot_id="S2", taken_at=f.T0)
    res = stock_counts.apply_wms_snapshot(
        conn, "WH-MSK", {"SKU-1": 9}, snapshot_id="S1", taken_at=f.T0 - timedelta(hours=1)
    )
    assert res.status == "stale" and len(res.quarantine_ids) == 1
    assert f.stock_row(conn, "WH-MSK", "SKU-1") == (5, 0)


def test_snapshot_bad_rows_are_quarantined_and_the_rest_applied(conn0):
    conn = conn0
    res = stock_counts.apply_wms_snapshot(
        conn,
        "WH-MSK",
        [("SKU-1", 5), ("NOPE", 1), ("SKU-2", -1), ("SKU-3", 2), ("SKU-3", 3)],
        snapshot_id="S1",
    )
    assert res.adjusted == [("SKU-1", 0, 5)]
    assert dict(res.quarantined) == {
        "NOPE": "unknown sku",
        "SKU-2": "count must be a non-negative integer, got -1",
        "SKU-3": "sku listed 2 times in one snapshot",
    }
    rows = conn.execute(
        "SELECT source, external_id, payload->>'sku' FROM raw.quarantine ORDER BY 1, 3"
    ).fetchall()
    assert rows == [("wms", "S1", "NOPE"), ("wms", "S1", "SKU-2"), ("wms", "S1", "SKU-3")]


def test_snapshot_for_unknown_location_is_rejected_whole(conn0):
    res = stock_counts.apply_wms_snapshot(conn0, "WH-NOPE", {"SKU-1": 5}, snapshot_id="S1")
    assert res.status == "rejected" and len(res.quarantine_ids) == 1
    assert conn0.execute("SELECT count(*) FROM oms.inventory_ledger").fetchone()[0] == 0


def test_snapshot_below_reserved_releases_newest_unpicked_orders(conn0):
    conn = conn0
    f.stock(conn, "WH-MSK", {"SKU-1": 10, "SKU-2": 10})
    old = f.allocated_order(conn, [("SKU-1", 4)])
    mid = f.allocated_order(conn, [("SKU-1", 3), ("SKU-2", 2)])
    new = f.allocated_order(conn, [("SKU-1", 2)])
    assert f.stock_row(conn, "WH-MSK", "SKU-1") == (10, 9)
    # 6 counted: 3 reserved units too many → release newest orders until it fits: new (2), then mid (3)
    res = stock_counts.apply_wms_snapshot(conn, "WH-MSK", {"SKU-1": 6}, snapshot_id="S1")
    assert res.status == "applied" and res.released_orders == sorted([mid, new])
    assert f.stock_row(conn, "WH-MSK", "SKU-1") == (6, 4)
    assert f.stock_row(conn, "WH-MSK", "SKU-2") == (10, 0)  # mid's other reservation went too
    assert f.order_state(conn, old) == "allocated"
    assert f.order_state(conn, new) == "new" and f.order_state(conn, mid) == "new"
    reason = conn.execute(
        "SELECT reason, data->>'snapshot_id' FROM oms.order_events WHERE order_id = %s AND entity = 'order' "
        "ORDER BY event_id DESC LIMIT 1",
        (new,),
    ).fetchone()
    assert reason == ("stock_shortage", "S1")
    assert check_invariants(conn) == []


def test_snapshot_below_reserved_of_orders_in_picking_quarantines_that_sku(conn0):
    conn = conn0
    f.stock(conn, "WH-MSK", {"SKU-1": 10, "SKU-2": 10})
    oid = f.allocated_order(conn, [("SKU-1", 5)])
    start_picking(conn, [oid], actor="wms")
    res = stock_counts.apply_wms_snapshot(conn, "WH-MSK", {"SKU-1": 3, "SKU-2": 8}, snapshot_id="S1")
    assert res.adjusted == [("SKU-2", 10, 8)] and res.released_orders == []
    assert res.quarantined[0][0] == "SKU-1" and "below reserved 5" in res.quarantined[0][1]
    assert f.stock_row(conn, "WH-MSK", "SKU-1") == (10, 5)
    assert f.order_state(conn, oid) == "picking"
    assert check_invariants(conn) == []


def test_snapshot_passes_over_an_order_another_transaction_holds(conn0, db_url):
    """The snapshot locks the orders that give way BEFORE any stock row, and skips one that is busy: the old
    order (stock rows, then victims) waited here for a transaction that might be waiting for those rows."""
    conn = conn0
    f.stock(conn, "WH-MSK", {"SKU-1": 10})
    old = f.allocated_order(conn, [("SKU-1", 3)])
    new = f.allocated_order(conn, [("SKU-1", 3)])
    conn.execute("SET lock_timeout = '500ms'")  # waiting for the busy order fails the test instead of hanging
    with connect(db_url) as other, other.transaction():
        other.execute("SELECT 1 FROM oms.orders WHERE order_id = %s FOR UPDATE", (new,))  # e.g. a cancel
        res = stock_counts.apply_wms_snapshot(conn, "WH-MSK", {"SKU-1": 4}, snapshot_id="S1")
    assert res.status == "applied" and res.released_orders == [old]
    assert f.order_state(conn, new) == "allocated" and f.order_state(conn, old) == "new"
    assert f.stock_row(conn, "WH-MSK", "SKU-1") == (4, 3)
    assert check_invariants(conn) == []


def test_snapshot_waits_for_a_busy_order_when_no_other_can_give_way(conn0, db_url):
    conn = conn0
    f.stock(conn, "WH-MSK", {"SKU-1": 10})
    oid = f.allocated_order(conn, [("SKU-1", 5)])
    pid = conn.info.backend_pid
    done: dict = {}
    with connect(db_url) as other, connect(db_url) as watch:
        with other.transaction():
            other.execute("SELECT 1 FROM oms.orders WHERE order_id = %s FOR UPDATE", (oid,))
            worker = threading.Thread(
                target=lambda: done.update(
                    res=stock_counts.apply_wms_snapshot(conn, "WH-MSK", {"SKU-1": 2}, snapshot_id="S1")
                )
            )
            worker.start()
            # the last attempt waits for the order (holding no stock row yet); let it go once it does
            for _ in range(3000):
                waiting = watch.execute(
                    "SELECT wait_event_type = 'Lock' FROM pg_stat_activity WHERE pid = %s", (pid,)
                ).fetchone()[0]
                if waiting or not worker.is_alive():
                    break
                time.sleep(0.01)
        worker.join(timeout=30)
    assert done["res"].released_orders == [oid]
    assert f.stock_row(conn, "WH-MSK", "SKU-1") == (2, 0) and f.order_state(conn, oid) == "new"
    assert check_invariants(conn) == []


def test_ledger_is_append_only(conn0):
    conn = conn0
    f.stock(conn, "WH-MSK", {"SKU-1": 1})
    import psycopg

    with pytest.raises(psycopg.errors.RestrictViolation, match="append-only"):
        conn.execute("UPDATE oms.inventory_ledger SET on_hand_delta = 5")
    with pytest.raises(psycopg.errors.RestrictViolation):
        conn.execute("DELETE FROM oms.inventory_ledger")


def test_stock_check_constraints_make_oversell_impossible(conn0):
    conn = conn0
    f.stock(conn, "WH-MSK", {"SKU-1": 1})
    import psycopg

    with pytest.raises(psycopg.errors.CheckViolation):
        conn.execute("UPDATE oms.stock SET reserved = 2 WHERE sku = 'SKU-1' AND location_code = 'WH-MSK'")
    with pytest.raises(psycopg.errors.CheckViolation):
        conn.execute("UPDATE oms.stock SET on_hand = -1 WHERE sku = 'SKU-1' AND location_code = 'WH-MSK'")
