"""accept_orders, holds, cancellation, raw payloads, quarantine replay."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import psycopg
import pytest

from oms_ops import orders
from oms_ops.errors import IllegalTransition, ValidationFailed
from oms_ops.invariants import check_invariants
from oms_ops.orders import NormalizedOrder, accept_orders, cancel_orders, hold_orders, release_holds
from tests.core import factories as f


@pytest.fixture
def world(conn):
    f.world(conn)
    return conn


def test_accept_creates_orders_lines_and_creation_events(world):
    conn = world
    d1 = f.order_dict([("SKU-1", 2), ("SKU-2", 1)], promised_at=f.T0.replace(day=28))
    d2 = f.order_dict([("SKU-3", 1)], shipping_amount=Decimal("250.00"))
    res = accept_orders(conn, [d1, NormalizedOrder.model_validate(d2)], actor="test")
    assert res.counts == {"accepted": 2, "on_hold": 0, "duplicates": 0, "quarantined": 0}
    oid = res.ids[("webstore", d1["external_id"])]
    row = conn.execute(
        """SELECT state, total_amount, order_number, latest_promised_at = promised_at, payment_status
           FROM oms.orders WHERE order_id = %s""",
        (oid,),
    ).fetchone()
    assert row[0] == "new" and row[1] == Decimal("300.00") and row[2].startswith("ORD-") and row[3]
    assert row[4] == "paid"
    lines = conn.execute(
        "SELECT line_no, sku, qty, state FROM oms.order_lines WHERE order_id = %s ORDER BY 1", (oid,)
    ).fetchall()
    assert lines == [(1, "SKU-1", 2, "new"), (2, "SKU-2", 1, "new")]
    total2 = conn.execute(
        "SELECT total_amount FROM oms.orders WHERE order_id = %s", (res.ids[("webstore", d2["external_id"])],)
    ).fetchone()[0]
    assert total2 == Decimal("350.00")
    assert f.events(conn, oid) == [(None, "new")]


def test_duplicate_accept_changes_nothing(world):
    conn = world
    d = f.order_dict()
    first = accept_orders(conn, [d], actor="test")
    before = conn.execute("SELECT count(*), max(updated_at) FROM oms.orders").fetchone()
    n_events = conn.execute("SELECT count(*) FROM oms.order_events").fetchone()[0]
    changed = dict(d, customer_name="Someone Else")
    again = accept_orders(conn, [d, changed], actor="test")
    assert again.ids == {} and again.duplicates == [("webstore", d["external_id"])] * 2
    assert conn.execute("SELECT count(*), max(updated_at) FROM oms.orders").fetchone() == before
    assert conn.execute("SELECT count(*) FROM oms.order_events").fetchone()[0] == n_events
    assert (
        conn.execute(
            "SELECT customer_name FROM oms.orders WHERE order_id = %s", (first.accepted[0],)
        ).fetchone()[0]
        == d["customer_name"]
    )


def test_duplicate_within_one_batch_is_accepted_once(world):
    d = f.order_dict()
    res = accept_orders(world, [d, dict(d)], actor="test")
    assert len(res.ids) == 1 and res.duplicates == [("webstore", d["external_id"])]


def test_unknown_sku_puts_order_on_hold_with_reason_and_event(world):
    conn = world
    res = accept_orders(conn, [f.order_dict([("SKU-1", 1), ("NOPE-2", 1), ("NOPE-1", 3)])], actor="test")
    oid = res.accepted[0]
    assert res.on_hold == [oid]
    st, code, reason = conn.execute(
        "SELECT state, hold_code, hold_reason FROM oms.orders WHERE order_id = %s", (oid,)
    ).fetchone()
    assert (st, code) == ("on_hold", "unknown_sku") and reason == "unknown sku: NOPE-1, NOPE-2"
    assert f.events(conn, oid) == [(None, "new"), ("new", "on_hold")]
    # releasing while the catalog still lacks the SKUs is refused, naming them
    with pytest.raises(ValidationFailed, match="NOPE-1, NOPE-2"):
        release_holds(conn, [oid], reason="try", actor="ops")
    f.product(conn, "NOPE-1")
    assert orders.release_resolved_unknown_sku_holds(conn, actor="ops") == []
    f.product(conn, "NOPE-2")
    assert orders.release_resolved_unknown_sku_holds(conn, actor="ops") == [oid]
    assert f.order_state(conn, oid) == "new"
    assert (
        conn.execute("SELECT hold_reason FROM oms.orders WHERE order_id = %s", (oid,)).fetchone()[0] is None
    )


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"lines": [{"sku": "SKU-1", "qty": 0, "unit_price": "1"}]}, "lines.0.qty"),
        ({"lines": [{"sku": "SKU-1", "qty": 1, "unit_price": "-1"}]}, "lines.0.unit_price"),
        ({"lines": []}, "lines"),
        ({"placed_at": None}, "placed_at"),
        ({"placed_at": "2025-11-26T10:00:00"}, "placed_at"),  # naive time: ambiguous
        ({"channel_code": "nochannel"}, "unknown channel 'nochannel'"),
        ({"delivery_method": "pickup_point"}, "pickup_location_code is required"),
        ({"delivery_method": "store_pickup", "pickup_location_code": "ST-NOPE"}, "unknown pickup location"),
        ({"fulfilment_location_code": "WH-NOPE"}, "unknown fulfilment location 'WH-NOPE'"),
        ({"delivery_method": "teleport"}, "delivery_method"),
    ],
)
def test_invalid_order_goes_to_quarantine_and_the_rest_is_accepted(world, change, reason):
    conn = world
    good = f.order_dict()
    bad = f.order_dict()
    bad.update(change)
    res = accept_orders(conn, [bad, good], actor="test")
    assert list(res.ids) == [("webstore", good["external_id"])]
    assert len(res.quarantined) == 1
    src, ext, why, payload = conn.execute(
        "SELECT source, external_id, reason, payload FROM raw.quarantine WHERE quarantine_id = %s",
        (res.quarantined[0],),
    ).fetchone()
    assert src == "accept_orders" and ext == bad["external_id"] and reason in why
    assert payload["external_id"] == bad["external_id"]
    assert (
        conn.execute(
            "SELECT count(*) FROM oms.orders WHERE external_id = %s", (bad["external_id"],)
        ).fetchone()[0]
        == 0
    )


def test_missing_required_field_is_quarantined(world):
    d = f.order_dict()
    del d["external_id"]
    res = accept_orders(world, [d], actor="test")
    assert res.ids == {} and len(res.quarantined) == 1
    assert "external_id: Field required" in res.rejected[0][1]


def test_inactive_channel_is_quarantined(world):
    f.channel(world, "pos", "store", active=False)
    res = accept_orders(world, [f.order_dict(channel_code="pos")], actor="test")
    assert res.rejected[0][1] == "channel 'pos' is inactive"


def test_replay_quarantined_after_fix(world):
    conn = world
    bad = f.order_dict(channel_code="callcentre")
    res = accept_orders(conn, [bad], actor="test")
    qid = res.quarantined[0]
    again = orders.replay_quarantined_orders(conn, [qid], actor="ops")
    assert (
        again.ids == {}
        and conn.execute("SELECT state FROM raw.quarantine WHERE quarantine_id = %s", (qid,)).fetchone()[0]
        == "open"
    )
    assert conn.execute("SELECT count(*) FROM raw.quarantine").fetchone()[0] == 1  # no new row
    f.channel(conn, "callcentre", "callcentre")
    done = orders.replay_quarantined_orders(conn, [qid], actor="ops")
    assert list(done.ids) == [("callcentre", bad["external_id"])]
    assert conn.execute(
        "SELECT state, resolved_by FROM raw.quarantine WHERE quarantine_id = %s", (qid,)
    ).fetchone() == ("replayed", "ops")


def test_bulk_accept_thousands_in_one_call(world):
    conn = world
    batch = [f.order_dict([("SKU-1", 1), ("SKU-2", 2)]) for _ in range(3000)]
    batch[10]["lines"][0]["qty"] = -1
    batch[20]["lines"][1]["sku"] = "UNKNOWN"
    res = accept_orders(conn, batch, actor="bulk")
    assert res.counts == {"accepted": 2999, "on_hold": 1, "duplicates": 0, "quarantined": 1}
    assert conn.execute("SELECT count(*) FROM oms.order_lines").fetchone()[0] == 2999 * 2
    assert conn.execute("SELECT count(*) FROM oms.order_events").fetchone()[0] == 2999 + 1
    again = accept_orders(conn, batch, actor="bulk")
    assert again.counts == {"accepted": 0, "on_hold": 0, "duplicates": 2999, "quarantined": 1}


def statements(monkeypatch) -> list[str]:
    """Record every statement the code under test sends through ``Connection.execute``."""
    sent: list[str] = []
    execute = psycopg.Connection.execute

    def spy(self, query, params=None, **kwargs):
        sent.append(query.as_string(self) if isinstance(query, psycopg.sql.Composable) else str(query))
        return execute(self, query, params, **kwargs)

    monkeypatch.setattr(psycopg.Connection, "execute", spy)
    return sent


@pytest.mark.parametrize("n", [1, 400])
def test_accept_costs_the_same_statements_whatever_the_batch_size(world, monkeypatch, n):
    """Orders, lines and creation events go in ONE statement over the batch COPYed into staging tables (no
    per-row statements, no per-row array parameters): channels, pickup locations, known SKUs, the staging
    tables, then the insert, then emptying the staging tables."""
    conn = world
    batch = [f.order_dict([("SKU-1", 1), ("SKU-2", 2), ("SKU-3", 1)]) for _ in range(n)]
    sent = statements(monkeypatch)
    res = accept_orders(conn, batch, actor="bulk")
    assert len(res.ids) == n
    assert len(sent) == 8
    assert "INSERT INTO oms.orders" in sent[5] and "_accept_lines" in sent[5]


def test_accept_keeps_every_value_exactly(world):
    conn = world
    d = f.order_dict(
        [("SKU-2", 1), ("SKU-1", 3)],
        customer_name='Анна "Ли" \\ O\'Brien\nвторая строка',
        address="ул. Льва Толстого, 16; кв. 5 — «подъезд 2»",
        placed_at=datetime(2025, 11, 26, 9, 30, 15, 123456, tzinfo=timezone(timedelta(hours=3))),
        promised_at=datetime(2025, 11, 28, 23, 59, tzinfo=UTC),
        lat=55.733842,
        lon=37.588144,
        shipping_amount=Decimal("199.99"),
        channel_order_number=None,
    )
    d["lines"] = [
        {"sku": "SKU-2", "qty": 1, "unit_price": Decimal("0.01"), "line_no": 7, "name": "Ёлка ✓"},
        {"sku": "SKU-1", "qty": 3, "unit_price": Decimal("1234.56"), "line_no": 2},
    ]
    oid = accept_orders(conn, [d], actor="test").accepted[0]
    row = conn.execute(
        """SELECT customer_name, address, placed_at, promised_at, latest_promised_at, lat, lon,
                  shipping_amount, total_amount, channel_order_number
           FROM oms.orders WHERE order_id = %s""",
        (oid,),
    ).fetchone()
    assert row == (
        d["customer_name"],
        d["address"],
        d["placed_at"],
        d["promised_at"],
        d["promised_at"],
        55.733842,
        37.588144,
        Decimal("199.99"),
        Decimal("3903.68"),
        None,
    )
    lines = conn.execute(
        "SELECT line_no, sku, qty, unit_price, name FROM oms.order_lines WHERE order_id = %s ORDER BY line_id",
        (oid,),
    ).fetchall()
    assert lines == [(7, "SKU-2", 1, Decimal("0.01"), "Ёлка ✓"), (2, "SKU-1", 3, Decimal("1234.56"), None)]
    data = conn.execute("SELECT data FROM oms.order_events WHERE order_id = %s", (oid,)).fetchone()[0]
    assert data == {"channel_code": "webstore", "external_id": d["external_id"], "lines": 2}


def test_raw_orders_are_idempotent_on_payload_hash(world):
    conn = world
    ids = orders.record_raw_orders(conn, "ozon", [("P-1", {"a": 1, "b": [1, 2]}), ("P-2", {"a": 2})])
    assert len(ids) == 2
    assert orders.record_raw_orders(conn, "ozon", [("P-1", {"b": [1, 2], "a": 1})]) == []  # same content
    assert len(orders.record_raw_orders(conn, "ozon", [("P-1", {"a": 1, "b": [1, 3]})])) == 1  # changed
    d = f.order_dict(raw_id=ids[0])
    accept_orders(conn, [d], actor="test")
    queued = {r[0] for r in conn.execute("SELECT raw_id FROM raw.pending_orders WHERE channel_code = 'ozon'")}
    assert ids[0] not in queued and set(ids[1:]) <= queued  # accepted: off the normaliser's queue


# ---- holds and cancellation ------------------------------------------------------------------------------
def test_hold_releases_reservations_and_release_goes_back_to_new(world):
    conn = world
    oid = f.allocated_order(conn, [("SKU-1", 3)])
    assert f.stock_row(conn, "WH-MSK", "SKU-1") == (10, 3)
    hold_orders(conn, [oid], reason="fraud check", actor="ops", code="fraud")
    assert f.order_state(conn, oid) == "on_hold"
    assert f.stock_row(conn, "WH-MSK", "SKU-1") == (10, 0)
    assert (
        conn.execute("SELECT state FROM oms.order_lines WHERE order_id = %s", (oid,)).fetchone()[0] == "new"
    )
    release_holds(conn, [oid], reason="ok", actor="ops")
    assert f.events(conn, oid)[-2:] == [("allocated", "on_hold"), ("on_hold", "new")]
    assert check_invariants(conn) == []


def test_cancel_releases_reservations_refunds_paid_and_tells_channel(world):
    conn = world
    oid = f.allocated_order(conn, [("SKU-1", 3), ("SKU-2", 1)], shipping_amount=Decimal("50.00"))
    res = cancel_orders(conn, [oid], reason="customer request", actor="ops")
    assert res.cancelled == [oid] and len(res.refunds) == 1
    assert f.order_state(conn, oid) == "cancelled"
    assert f.stock_row(conn, "WH-MSK", "SKU-1") == (10, 0)
    assert conn.execute(
        "SELECT array_agg(DISTINCT state), sum(qty_cancelled) FROM oms.order_lines WHERE order_id = %s",
        (oid,),
    ).fetchone() == (["cancelled"], 4)
    amount = conn.execute(
        "SELECT amount FROM oms.refunds WHERE refund_id = %s", (res.refunds[0],)
    ).fetchone()[0]
    assert amount == Decimal("450.00")
    effects = sorted(r[0] for r in conn.execute("SELECT idempotency_key FROM oms.outbox").fetchall())
    assert effects == [f"channel.order_status:{oid}:cancelled", f"refund:cancel:{oid}"]
    assert conn.execute(
        "SELECT cancelled_at IS NOT NULL, cancel_reason FROM oms.orders WHERE order_id = %s", (oid,)
    ).fetchone() == (True, "customer request")
    assert check_invariants(conn) == []


def test_cancel_refuses_whole_batch_listing_every_illegal_order(world):
    conn = world
    ok = f.allocated_order(conn)
    s1, _ = f.shipped_order(conn)
    s2, _ = f.shipped_order(conn)
    with pytest.raises(IllegalTransition) as exc:
        cancel_orders(conn, [ok, s1, s2], reason="x", actor="ops")
    assert {r[1] for r in exc.value.refused} == {s1, s2}
    assert all(r[2:] == ("shipped", "cancelled") for r in exc.value.refused)
    assert f.order_state(conn, ok) == "allocated"
    assert f.stock_row(conn, "WH-MSK", "SKU-1")[1] == 2  # ok's reservation untouched


def test_cancel_partially_shipped_cancels_only_the_remainder(world):
    conn = world
    oid = f.order(conn, [("SKU-1", 2), ("SKU-2", 1)])
    lids = f.line_ids(conn, oid)
    f.reserve(conn, oid, "WH-MSK", {lids[0]: 2})
    f.reserve(conn, oid, "WH-SPB", {lids[1]: 1})
    from oms_ops import fulfillment as ff

    ff.record_pick(conn, oid, "WH-MSK", actor="t")
    ff.pack(conn, oid, "WH-MSK", actor="t")
    ff.create_shipment(conn, oid, "WH-MSK", carrier_code="cdek", actor="t")
    assert f.order_state(conn, oid) == "partially_shipped"
    res = cancel_orders(conn, [oid], reason="rest not needed", actor="ops")
    assert res.remainder_cancelled == [oid]
    assert f.order_state(conn, oid) == "shipped"
    assert conn.execute(
        "SELECT line_no, state, qty_shipped, qty_cancelled FROM oms.order_lines WHERE order_id = %s "
        "ORDER BY 1",
        (oid,),
    ).fetchall() == [(1, "shipped", 2, 0), (2, "cancelled", 0, 1)]
    assert f.stock_row(conn, "WH-SPB", "SKU-2") == (10, 0)
    assert conn.execute("SELECT amount FROM oms.refunds").fetchone()[0] == Decimal("100.00")
    assert check_invariants(conn) == []


def test_hold_from_picking_is_refused(world):
    conn = world
    oid = f.allocated_order(conn)
    from oms_ops import fulfillment as ff

    ff.start_picking(conn, [oid], actor="t")
    with pytest.raises(IllegalTransition, match="picking -> on_hold"):
        hold_orders(conn, [oid], reason="x", actor="ops")
    assert f.order_state(conn, oid) == "picking"


def test_concurrent_accepts_of_the_same_orders_create_each_once(world, db_url):
    import threading

    from oms_ops.db import connect

    batch = [f.order_dict([("SKU-1", 1)]) for _ in range(300)]
    results = []

    def run():
        with connect(db_url) as c:
            results.append(accept_orders(c, batch, actor="race"))

    threads = [threading.Thread(target=run) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(len(r.ids) for r in results) == 300
    assert sum(len(r.duplicates) for r in results) == 600
    assert world.execute("SELECT count(*), count(DISTINCT external_id) FROM oms.orders").fetchone() == (
        300,
        300,
    )
    assert world.execute("SELECT count(*) FROM oms.order_events").fetchone()[0] == 300
