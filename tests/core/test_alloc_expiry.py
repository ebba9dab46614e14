"""Expired holds never block stock: allocation (batch, backorders, reroute) releases an unpaid order's expired
reservation standing on stock it needs — as the sweeper would, in the same transaction — with two allocators
racing for it; errors that name every line; the sample configuration's rank rule for Moscow couriers."""

from __future__ import annotations

import threading
import time
from datetime import timedelta

import pytest

from oms_ops.allocation import (
    allocate_backorders,
    allocate_batch,
    expire_reservations,
    latest_decision,
    reroute,
)
from oms_ops.db import connect
from oms_ops.errors import InsufficientStock
from oms_ops.reservations import consume_reservations
from tests.core.test_alloc_support import (
    NOW,
    active_reservations,
    order_state,
    place,
    receive,
    sample_config,
    seed_reference,
    stock,
    violations,
)
from tests.core.test_allocation_concurrency import _deadlocks

SKUS = {"KETTLE": 1500, "MUG": 400}
LATER = NOW + timedelta(minutes=31)  # web store holds of unpaid orders last 30 minutes


@pytest.fixture
def cfg(conn):
    config = sample_config()
    seed_reference(conn, config, SKUS)
    return config


def unpaid_hold(conn, cfg, lines, **fields) -> int:
    """An unpaid web-store order allocated at NOW: its reservations expire at NOW + 30 min."""
    oid = place(conn, lines, paid=False, **fields)
    assert allocate_batch(conn, [oid], config=cfg, now=NOW).allocated == [oid]
    return oid


def trail(conn, order_id):
    """What expiring an order wrote, without ids and actors: events, then ledger entries."""
    events = conn.execute(
        """SELECT entity, from_state, to_state, reason, data FROM oms.order_events
           WHERE order_id = %s AND reason LIKE 'reservation expired%%' ORDER BY event_id""",
        (order_id,),
    ).fetchall()
    ledger = conn.execute(
        """SELECT kind, on_hand_delta, reserved_delta, reason FROM oms.inventory_ledger
           WHERE order_id = %s AND kind = 'release' ORDER BY entry_id""",
        (order_id,),
    ).fetchall()
    hold = conn.execute(
        "SELECT hold_code, hold_reason FROM oms.orders WHERE order_id = %s", (order_id,)
    ).fetchone()
    return events, ledger, hold


def test_an_expired_hold_is_free_stock_and_is_released_as_the_sweeper_would(conn, cfg):
    receive(conn, "WH-MSK-POD", {"MUG": 2, "KETTLE": 2})
    swept = unpaid_hold(conn, cfg, [("KETTLE", 2)])  # its twin, expired by the sweeper
    held = unpaid_hold(conn, cfg, [("MUG", 2)])
    buyer = place(conn, [("MUG", 2)])
    assert allocate_batch(conn, [buyer], config=cfg, now=NOW + timedelta(minutes=29)).backordered == [buyer]

    # the sweeper has not run yet: allocation itself lets the expired hold go
    result = allocate_backorders(conn, config=cfg, now=LATER)

    assert result.allocated == [buyer] and result.expired == [held]
    assert [r[1:] for r in active_reservations(conn, buyer)] == [("WH-MSK-POD", "MUG", 2)]
    assert order_state(conn, held) == ("on_hold", ["new"])
    assert conn.execute("SELECT state FROM oms.reservations WHERE order_id = %s", (held,)).fetchall() == [
        ("expired",)
    ]
    assert stock(conn)[("WH-MSK-POD", "MUG")] == (2, 2)
    # exactly what the sweeper writes for the same situation
    assert expire_reservations(conn, now=LATER) == 1
    assert trail(conn, held) == trail(conn, swept)
    assert trail(conn, held)[2] == ("payment_timeout", "reservation expired: payment not received")
    assert violations(conn) == []


def test_a_hold_that_has_not_expired_or_whose_order_got_paid_still_blocks(conn, cfg):
    receive(conn, "WH-MSK-POD", {"MUG": 2})
    held = unpaid_hold(conn, cfg, [("MUG", 2)])
    buyer = place(conn, [("MUG", 2)])
    assert allocate_batch(conn, [buyer], config=cfg, now=NOW + timedelta(minutes=29)).backordered == [buyer]
    conn.execute("UPDATE oms.orders SET payment_status = 'paid' WHERE order_id = %s", (held,))

    result = allocate_backorders(conn, config=cfg, now=LATER)

    assert result.expired == [] and order_state(conn, buyer)[0] == "backordered"
    assert order_state(conn, held)[0] == "allocated"
    # paid in the meantime: the expiry is cleared, as the sweeper does
    assert conn.execute(
        "SELECT expires_at FROM oms.reservations WHERE order_id = %s", (held,)
    ).fetchone() == (None,)
    assert violations(conn) == []


def test_reroute_uses_stock_under_an_expired_hold(conn, cfg):
    receive(conn, "WH-MSK-POD", {"KETTLE": 2})
    receive(conn, "WH-SPB-SHU", {"KETTLE": 2})
    held = unpaid_hold(conn, cfg, [("KETTLE", 2)], region="Санкт-Петербург")
    assert [r[1] for r in active_reservations(conn, held)] == ["WH-SPB-SHU"]
    moved = place(conn, [("KETTLE", 2)])
    allocate_batch(conn, [moved], config=cfg, now=NOW)

    result = reroute(
        conn,
        moved,
        config=cfg,
        actor="ops",
        reason="Podolsk conveyor down",
        exclude_locations=["WH-MSK-POD"],
        now=LATER,
    )

    assert result.allocated == [moved] and result.expired == [held]
    assert [r[1] for r in active_reservations(conn, moved)] == ["WH-SPB-SHU"]
    assert order_state(conn, held)[0] == "on_hold"
    assert violations(conn) == []


@pytest.mark.parametrize(("on_hand", "served"), [(3, 1), (4, 2)])
def test_two_allocators_racing_for_stock_under_an_expired_hold_never_oversell(
    conn, cfg, db_url, on_hand, served
):
    receive(conn, "WH-MSK-POD", {"MUG": on_hand})
    held = unpaid_hold(conn, cfg, [("MUG", 2)])
    buyers = [place(conn, [("MUG", 2)]) for _ in range(2)]
    deadlocks_before = _deadlocks(conn)
    results: dict[int, object] = {}

    def allocate(order_id: int) -> None:
        try:
            with connect(db_url) as own:
                results[order_id] = allocate_batch(own, [order_id], config=cfg, now=LATER)
        except Exception as exc:  # noqa: BLE001 - reported to the test thread
            results[order_id] = exc

    def waiting() -> int:
        return conn.execute(
            """SELECT count(*) FROM pg_stat_activity
               WHERE datname = current_database() AND wait_event_type = 'Lock'"""
        ).fetchone()[0]

    # a WMS-like writer holds the stock row, so both allocators are in flight at once: the first locks the
    # expired order and waits for the row, the second skips that order (SKIP LOCKED) and waits for the row
    threads = [threading.Thread(target=allocate, args=(b,)) for b in buyers]
    with connect(db_url) as blocker, blocker.transaction():
        blocker.execute(
            "SELECT 1 FROM oms.stock WHERE location_code = 'WH-MSK-POD' AND sku = 'MUG' FOR UPDATE"
        )
        for n, t in enumerate(threads, start=1):
            t.start()
            deadline = time.monotonic() + 20
            while waiting() < n and time.monotonic() < deadline:
                time.sleep(0.02)
            assert waiting() == n, "the allocators did not meet at the stock row"
    for t in threads:
        t.join(timeout=30)
        assert not t.is_alive()

    assert not [r for r in results.values() if isinstance(r, Exception)], results
    allocated = [b for b in buyers if results[b].allocated == [b]]
    assert len(allocated) == served
    assert sum(len(r.expired) for r in results.values()) == 1  # released once, by one of them
    assert order_state(conn, held)[0] == "on_hold"
    assert conn.execute(
        "SELECT count(*) FROM oms.order_events WHERE order_id = %s AND entity = 'order' AND to_state = 'on_hold'",
        (held,),
    ).fetchone() == (1,)
    assert stock(conn)[("WH-MSK-POD", "MUG")] == (on_hand, 2 * served)
    assert _deadlocks(conn) - deadlocks_before == 0
    assert violations(conn) == []


# -- errors that name everything ------------------------------------------------------------------------------


def test_a_backordered_order_names_every_short_line_with_where_it_is_free(conn, cfg):
    receive(conn, "WH-MSK-POD", {"MUG": 1})
    receive(conn, "WH-KZN", {"MUG": 2, "KETTLE": 1})
    oid = place(conn, [("MUG", 3), ("KETTLE", 2)], channel="ozon")  # FBS: one warehouse, Ozon keeps 1 back

    (out,) = allocate_batch(conn, config=cfg, now=NOW).outcomes

    assert out.outcome == "backordered"
    assert [(s.sku, s.requested, s.available, s.locations) for s in out.short] == [
        ("MUG", 3, 1, (("WH-KZN", 1),)),
        ("KETTLE", 2, 0, ()),
    ]
    assert "MUG needs 3, 1 available (WH-KZN 1)" in out.reason
    assert "KETTLE needs 2, 0 available (none free at the candidate locations)" in out.reason
    short = latest_decision(conn, oid)["short_lines"]
    assert [(s["sku"], s["requested"], s["available"], s["locations"]) for s in short] == [
        ("MUG", 3, 1, {"WH-KZN": 1}),
        ("KETTLE", 2, 0, {}),
    ]


def test_shipping_more_than_is_reserved_names_every_line(conn, cfg):
    receive(conn, "WH-MSK-POD", {"MUG": 5, "KETTLE": 5})
    oid = place(conn, [("MUG", 2), ("KETTLE", 1)])
    allocate_batch(conn, config=cfg, now=NOW)
    mug, kettle = (r[0] for r in active_reservations(conn, oid))
    with pytest.raises(InsufficientStock) as exc, conn.transaction():
        consume_reservations(
            conn,
            line_qty=[(mug, "WH-MSK-POD", 3), (kettle, "WH-MSK-POD", 1), (kettle, "WH-SPB-SHU", 1)],
            actor="wms",
            reason="x",
        )
    assert [
        (s.order_id, s.line_id, s.sku, s.location, s.requested, s.available) for s in exc.value.shortfalls
    ] == [
        (oid, mug, "MUG", "WH-MSK-POD", 3, 2),
        (oid, kettle, "KETTLE", "WH-SPB-SHU", 1, 0),
    ]
    assert exc.value.problems == [
        f"order {oid} line {mug} (MUG) at WH-MSK-POD: ship 3, only 2 reserved",
        f"order {oid} line {kettle} (KETTLE) at WH-SPB-SHU: ship 1, only 0 reserved",
    ]
    assert stock(conn)[("WH-MSK-POD", "MUG")] == (5, 2)


# -- the sample configuration ---------------------------------------------------------------------------------


def test_moscow_couriers_drain_podolsk_then_top_up_from_a_moscow_store(conn, cfg):
    receive(conn, "WH-MSK-POD", {"KETTLE": 1, "MUG": 5})
    receive(conn, "ST-MSK-1", {"KETTLE": 5, "MUG": 5})
    receive(conn, "WH-SPB-SHU", {"KETTLE": 10, "MUG": 10})
    topped = place(conn, [("KETTLE", 2)])
    whole = place(conn, [("MUG", 3)])

    result = allocate_batch(conn, config=cfg, now=NOW).by_order()

    # not St Petersburg (holds everything) nor the store alone: Podolsk's unit, then the store's
    assert sorted(result[topped].locations) == ["ST-MSK-1", "WH-MSK-POD"]
    assert "moscow_courier (rank)" in result[topped].reason
    assert result[whole].locations == ("WH-MSK-POD",)  # the store holds it all too, Podolsk ranks first
    assert latest_decision(conn, topped)["shipments"][1]["carrier"] == "own_courier"
    assert violations(conn) == []
