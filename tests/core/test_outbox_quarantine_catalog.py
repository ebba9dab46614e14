"""Outbox delivery bookkeeping, quarantine, catalog upsert."""

from __future__ import annotations

from decimal import Decimal

import pytest

from oms_ops import catalog, outbox, quarantine


def test_enqueue_is_idempotent_by_key(conn):
    with conn.transaction():
        a = outbox.enqueue(conn, "ats.push", {"sku": "A", "qty": Decimal("1.5")}, "ats:A:1")
        b = outbox.enqueue(conn, "ats.push", {"sku": "A"}, "ats:A:1")
        n = outbox.enqueue_many(
            conn,
            [("ats.push", {"x": 1}, "k1"), ("ats.push", {"x": 2}, "k2"), ("ats.push", {"x": 1}, "ats:A:1")],
        )
    assert a is not None and b is None and n == 2
    assert conn.execute("SELECT payload FROM oms.outbox WHERE outbox_id = %s", (a,)).fetchone()[0] == {
        "sku": "A",
        "qty": "1.5",
    }
    with pytest.raises(ValueError, match="unknown outbox effect"):
        outbox.enqueue(conn, "carrier.teleport", {}, "k3")


def test_claim_complete_fail_and_dead(conn):
    with conn.transaction():
        outbox.enqueue_many(conn, [("ats.push", {"n": i}, f"k{i}") for i in range(3)])
        outbox.enqueue(conn, "erp.export", {}, "erp-1")
    got = outbox.claim(conn, effects=["ats.push"], limit=2)
    assert [g.idempotency_key for g in got] == ["k0", "k1"] and all(g.attempts == 1 for g in got)
    assert [g.idempotency_key for g in outbox.claim(conn, effects=["ats.push"])] == ["k2"]  # k0/k1 leased
    assert outbox.complete(conn, [got[0].outbox_id]) == 1
    assert outbox.fail(conn, got[1].outbox_id, "503", max_attempts=1) == "dead"
    state = dict(conn.execute("SELECT idempotency_key, state FROM oms.outbox").fetchall())
    assert state == {"k0": "done", "k1": "dead", "k2": "in_flight", "erp-1": "pending"}
    # an expired lease makes the row due again (the drainer died)
    conn.execute(
        "UPDATE oms.outbox SET next_attempt_at = now() - interval '1 s' WHERE idempotency_key = 'k2'"
    )
    assert [g.attempts for g in outbox.claim(conn, effects=["ats.push"])] == [2]


def test_quarantine_list_and_resolve(conn):
    with conn.transaction():
        ids = quarantine.quarantine_many(conn, [("ozon", "1", {"a": 1}, "bad"), ("wms", None, None, "worse")])
    assert [q.source for q in quarantine.list_open(conn)] == ["ozon", "wms"]
    assert quarantine.resolve(conn, [ids[0]], state="discarded", actor="ops") == 1
    assert [q.quarantine_id for q in quarantine.list_open(conn, source="wms")] == [ids[1]]
    with pytest.raises(Exception, match="replayed"):
        quarantine.resolve(conn, ids, state="open", actor="ops")


def test_upsert_products_counts_and_quarantines_invalid_rows(conn):
    rows = [
        {"sku": "A", "name": "A", "weight_g": 100, "price": "10.00"},
        {"sku": "B", "name": "B", "weight_g": 200, "price": "20.00", "length_cm": "10.5"},
        {"sku": "C", "name": "C", "weight_g": -1, "price": "1"},
    ]
    r = catalog.upsert_products(conn, rows)
    assert (r.inserted, r.updated, r.unchanged, len(r.quarantined)) == (2, 0, 0, 1)
    r2 = catalog.upsert_products(conn, [rows[0], dict(rows[1], price="25.00")])
    assert (r2.inserted, r2.updated, r2.unchanged) == (0, 1, 1)
    assert conn.execute("SELECT price, length_cm FROM oms.products WHERE sku = 'B'").fetchone() == (
        Decimal("25.00"),
        Decimal("10.5"),
    )
    assert "weight_g" in conn.execute("SELECT reason FROM raw.quarantine").fetchone()[0]


def test_upsert_many_products_in_one_call(conn):
    r = catalog.upsert_products(
        conn, ({"sku": f"S{i}", "name": f"P{i}", "weight_g": i, "price": i} for i in range(5000))
    )
    assert r.inserted == 5000
