"""The return leg against the WMS simulator over HTTP: a requested return is announced to the warehouse through
the outbox, the warehouse reports the parcel in its receipt feed, the connector receives and inspects it
through the returns services, and the refund closes it. Duplicates change nothing; receipts that do not fit
the OMS are quarantined without stopping the page."""

from __future__ import annotations

from decimal import Decimal

import pytest

from oms_ops import fulfillment as ff
from oms_ops.connectors import wms
from oms_ops.connectors.state import get_cursor, set_cursor
from oms_ops.invariants import check_invariants
from oms_ops.services import returns as svc
from oms_ops.services.clients import Clients
from oms_ops.services.outbox import drain_outbox
from tests.connectors.conftest import count
from tests.core import factories as f

LOCATION, WAREHOUSE = "WH-MSK-POD", "MSK1"  # seeded mapping (connectors.channel_locations, system 'wms')


@pytest.fixture
def returns_world(world, policy):
    """A seeded database and a WMS simulator; ``make(damaged_share)`` → (conn, stack, settings, client)."""
    made = []

    def make(damaged_share: float = 0.0):
        conn, stack, settings = world(
            only=["wms"], options={"wms": {"transit_scale": 0.01, "damaged_share": damaged_share}}
        )
        client = wms.WmsClient.from_endpoint(settings.endpoint("wms"), policy=policy)
        made.append(client)
        return conn, stack, settings, client

    yield make
    for c in made:
        c.close()


def _skus_in_stock(stack, n: int, at_least: int = 3) -> list[str]:
    on_hand = stack["wms"].on_hand[WAREHOUSE]
    return [p.sku for p in stack.catalog if on_hand[p.sku] >= at_least][:n]


def _delivered_order(conn, lines: list[tuple[str, int]]) -> tuple[int, list[int]]:
    """An order shipped from the Podolsk warehouse and delivered, through the real operations."""
    oid, sid = f.shipped_order(conn, lines, location=LOCATION)
    ff.hand_over(conn, [sid], actor="test")
    ff.mark_delivered(conn, [sid], actor="test")
    return oid, f.line_ids(conn, oid)


def _announce(conn, settings, policy):
    with Clients(settings, policy=policy) as clients:
        return drain_outbox(conn, clients, effects=("wms.announce_return",))


def _on_hand(conn, sku: str) -> int:
    return f.stock_row(conn, LOCATION, sku)[0]


def test_requested_return_is_announced_received_inspected_and_refunded(returns_world, policy):
    conn, stack, settings, client = returns_world(damaged_share=0.0)
    sku_a, sku_b = _skus_in_stock(stack, 2)
    oid, (l1, l2) = _delivered_order(conn, [(sku_a, 2), (sku_b, 1)])
    rma = svc.request_return(conn, oid, [(l1, 2, "changed_mind"), (l2, 1, "size_fit")], actor="cs")
    before = {s: _on_hand(conn, s) for s in (sku_a, sku_b)}

    drained = _announce(conn, settings, policy)
    assert drained.by_effect["wms.announce_return"] == 1, drained.errors
    announced = stack["wms"].returns[rma.rma_number]
    assert announced["warehouse"] == WAREHOUSE and announced["status"] == "expected"
    assert sorted((ln["sku"], ln["qty"]) for ln in announced["lines"]) == sorted([(sku_a, 2), (sku_b, 1)])
    assert svc.in_flight(conn)[0]["stage"] == "in transit"

    assert svc.sync_return_receipts(conn, client).receipts == 0  # still on its way
    assert f.state(conn, "returns", "return_id", rma.return_id) == "requested"

    stack.advance(2 * 3600)  # transit × 0.01: the parcel is at the dock
    sync = svc.sync_return_receipts(conn, client)
    assert (sync.receipts, sync.received, sync.inspected, sync.quarantined) == (1, 1, 1, 0), sync.errors
    assert sync.units_restocked == 3 and sync.units_written_off == 0
    row = conn.execute(
        "SELECT state, location_code, received_at IS NOT NULL FROM oms.returns WHERE return_id = %s",
        (rma.return_id,),
    ).fetchone()
    assert row == ("inspected", LOCATION, True)
    assert conn.execute(
        "SELECT sku, qty_received, disposition FROM oms.return_lines ORDER BY return_line_id"
    ).fetchall() == [(sku_a, 2, "restock"), (sku_b, 1, "restock")]
    assert {s: _on_hand(conn, s) for s in (sku_a, sku_b)} == {
        sku_a: before[sku_a] + 2,
        sku_b: before[sku_b] + 1,
    }
    receipt_id = stack["wms"].returns[rma.rma_number]["receipt_id"]
    assert (
        conn.execute(
            "SELECT data->>'receipt' FROM oms.order_events WHERE entity = 'return' AND to_state = 'received'"
        ).fetchone()[0]
        == receipt_id
    )
    assert get_cursor(conn, wms.RETURNS_CURSOR) == {"after": "1"}

    refunded = svc.refund_inspected(conn, actor="returns")
    assert list(refunded.refunds) == [rma.return_id]
    price = dict(
        conn.execute("SELECT sku, unit_price FROM oms.order_lines WHERE order_id = %s", (oid,)).fetchall()
    )
    assert (
        conn.execute("SELECT amount FROM oms.refunds WHERE return_id = %s", (rma.return_id,)).fetchone()[0]
        == 2 * price[sku_a] + price[sku_b]
    )
    assert f.state(conn, "returns", "return_id", rma.return_id) == "closed"
    assert svc.in_flight(conn) == []
    assert svc.sync_return_receipts(conn, client).receipts == 0  # the cursor is past it
    assert check_invariants(conn) == []


def test_a_receipt_seen_twice_changes_nothing(returns_world, policy):
    conn, stack, settings, client = returns_world()
    (sku,) = _skus_in_stock(stack, 1)
    oid, (line,) = _delivered_order(conn, [(sku, 2)])
    rma = svc.request_return(conn, oid, [(line, 2, "changed_mind")], actor="cs")
    _announce(conn, settings, policy)
    stack.advance(2 * 3600)
    # the feed repeats the record inside the page
    stack["wms"].faults.add(
        {"kind": "duplicate", "count": 1, "path": "/wms/v1/returns/receipts", "share": 1.0}
    )
    first = svc.sync_return_receipts(conn, client)
    assert (first.received, first.inspected, first.duplicates) == (1, 1, 1), first.errors

    def snapshot():
        return (
            count(conn, "SELECT count(*) FROM oms.order_events WHERE entity = 'return'"),
            count(conn, "SELECT count(*) FROM oms.inventory_ledger WHERE kind = 'return_restock'"),
            count(conn, "SELECT count(*) FROM raw.quarantine"),
            _on_hand(conn, sku),
            count(conn, "SELECT qty_returned FROM oms.order_lines WHERE line_id = %s", line),
        )

    after_first = snapshot()
    again = svc.sync_return_receipts(conn, client)
    with conn.transaction():
        set_cursor(conn, wms.RETURNS_CURSOR, {"after": None})  # and the whole feed once more from the start
    replay = svc.sync_return_receipts(conn, client)
    assert (again.received + replay.received, again.inspected + replay.inspected) == (0, 0)
    assert (again.receipts, replay.receipts, replay.duplicates, replay.quarantined) == (0, 1, 1, 0)
    assert snapshot() == after_first
    assert f.state(conn, "returns", "return_id", rma.return_id) == "inspected"


def test_unknown_rma_and_a_cancelled_return_are_quarantined_without_stopping_the_page(returns_world, policy):
    conn, stack, settings, client = returns_world()
    sku_a, sku_b = _skus_in_stock(stack, 2)
    oid, (l1, l2) = _delivered_order(conn, [(sku_a, 1), (sku_b, 1)])
    kept = svc.request_return(conn, oid, [(l1, 1, "changed_mind")], actor="cs")
    withdrawn = svc.request_return(conn, oid, [(l2, 1, "changed_mind")], actor="cs")
    _announce(conn, settings, policy)
    svc.cancel_return(conn, withdrawn.return_id, reason="customer kept it", actor="cs")
    # a parcel the OMS never heard of (another system's RMA)
    client.announce_return("RMA-X-1", WAREHOUSE, [{"sku": sku_a, "qty": 1}])
    stack.advance(2 * 3600)

    sync = svc.sync_return_receipts(conn, client)
    assert (sync.receipts, sync.received, sync.inspected, sync.quarantined) == (3, 1, 1, 2)
    assert f.state(conn, "returns", "return_id", kept.return_id) == "inspected"
    assert f.state(conn, "returns", "return_id", withdrawn.return_id) == "cancelled"
    reasons = dict(
        conn.execute(
            "SELECT payload->>'rma', reason FROM raw.quarantine WHERE source = %s AND state = 'open'",
            (wms.RETURNS_SOURCE,),
        ).fetchall()
    )
    assert reasons == {
        "RMA-X-1": "unknown RMA 'RMA-X-1'",
        withdrawn.rma_number: f"{withdrawn.rma_number} is cancelled, but the warehouse received a parcel for it",
    }
    with conn.transaction():
        set_cursor(conn, wms.RETURNS_CURSOR, {"after": None})
    again = svc.sync_return_receipts(conn, client)
    assert again.quarantined == 0 and again.duplicates == 3  # quarantined once, not on every read
    assert count(conn, "SELECT count(*) FROM raw.quarantine") == 2


def test_damaged_units_are_written_off_and_still_refunded(returns_world, policy):
    conn, stack, settings, client = returns_world(damaged_share=1.0)
    (sku,) = _skus_in_stock(stack, 1)
    oid, (line,) = _delivered_order(conn, [(sku, 2)])
    rma = svc.request_return(conn, oid, [(line, 2, "defective")], actor="cs")
    before = _on_hand(conn, sku)
    _announce(conn, settings, policy)
    stack.advance(2 * 3600)
    sync = svc.sync_return_receipts(conn, client)
    assert (sync.inspected, sync.units_written_off, sync.units_restocked) == (1, 2, 0)
    assert conn.execute("SELECT qty_received, disposition FROM oms.return_lines").fetchone() == (
        2,
        "write_off",
    )
    assert _on_hand(conn, sku) == before  # a written-off unit never re-enters stock
    assert count(conn, "SELECT count(*) FROM oms.inventory_ledger WHERE kind = 'return_restock'") == 0
    assert conn.execute(
        "SELECT qty_returned, state FROM oms.order_lines WHERE line_id = %s", (line,)
    ).fetchone() == (
        2,
        "returned",
    )
    refund = svc.refund_inspected(conn, actor="returns")
    assert list(refund.refunds) == [rma.return_id]
    assert conn.execute(
        "SELECT amount FROM oms.refunds WHERE refund_id = %s", (refund.refund_ids[0],)
    ).fetchone()[0] == 2 * Decimal("100.00")
    assert check_invariants(conn) == []


def test_a_garbled_page_is_read_again_and_what_stays_unreadable_is_quarantined(returns_world, policy):
    conn, stack, settings, client = returns_world()
    sku_a, sku_b = _skus_in_stock(stack, 2)
    oid, (l1, l2) = _delivered_order(conn, [(sku_a, 1), (sku_b, 1)])
    first = svc.request_return(conn, oid, [(l1, 1, "changed_mind")], actor="cs")
    _announce(conn, settings, policy)
    stack.advance(2 * 3600)
    path = "/wms/v1/returns/receipts"
    stack["wms"].faults.add({"kind": "malformed", "count": 1, "path": path, "share": 1.0})
    once = svc.sync_return_receipts(conn, client)  # garbled once: the second read is clean
    assert (once.received, once.quarantined) == (1, 0), once.errors
    assert f.state(conn, "returns", "return_id", first.return_id) == "inspected"

    second = svc.request_return(conn, oid, [(l2, 1, "changed_mind")], actor="cs")
    _announce(conn, settings, policy)
    stack.advance(2 * 3600)
    stack["wms"].faults.add({"kind": "malformed", "count": 2, "path": path, "share": 1.0})
    twice = svc.sync_return_receipts(conn, client)
    assert (twice.received, twice.quarantined) == (0, 1)
    (reason,) = conn.execute("SELECT reason FROM raw.quarantine").fetchone()
    assert reason.startswith(f"{second.rma_number}: line 0 ({sku_b}): ")
    assert f.state(conn, "returns", "return_id", second.return_id) == "requested"
