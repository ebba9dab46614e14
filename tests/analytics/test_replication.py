"""Replication Postgres → ClickHouse: complete, incremental, idempotent, and safe against late commits."""

from __future__ import annotations

import psycopg
import pytest

from oms_ops.analytics.replication import (
    DEFAULT_SPECS,
    LOCK_KEY,
    ReplicationError,
    ReplicationInterrupted,
    load_state,
    replicate_all,
    replicate_table,
    spec_by_name,
)
from oms_ops.db import connect
from oms_ops.fulfillment import mark_delivered
from tests.analytics.history import ACTOR, ts


def pg_count(conn, table: str) -> int:
    return conn.execute(f"SELECT count(*) FROM oms.{table}").fetchone()[0]  # noqa: S608 - names from the specs


def ch_final_count(ch, table: str) -> int:
    return ch.command(f"SELECT count() FROM `{table}` FINAL")  # noqa: S608 - names come from the specs


def test_first_run_copies_every_table_and_a_second_run_copies_nothing(history, conn, ch_client):
    first = {r.table: r for r in replicate_all(conn, ch_client)}
    assert set(first) == {s.name for s in DEFAULT_SPECS}
    for spec in DEFAULT_SPECS:
        assert ch_final_count(ch_client, spec.name) == pg_count(conn, spec.table), spec.name
        assert first[spec.name].full_copy
    assert first["orders"].rows_copied == 5 and first["order_events"].rows_copied > 0

    second = {r.table: r for r in replicate_all(conn, ch_client)}
    for spec in DEFAULT_SPECS:
        if spec.mode != "snapshot":  # reference tables without change columns are copied whole each time
            assert second[spec.name].rows_copied == 0, spec.name
        assert ch_final_count(ch_client, spec.name) == pg_count(conn, spec.table), spec.name
    # watermarks are persisted next to the data
    assert (
        load_state(ch_client, ch_client.database, "order_events")["wm"]
        == conn.execute("SELECT max(event_id) FROM oms.order_events").fetchone()[0]
    )


def test_values_and_types_survive_the_trip(history, conn, ch_client):
    replicate_all(conn, ch_client)
    pg = conn.execute(
        """SELECT order_id, order_number, channel_code, placed_at, total_amount, promised_at, state
           FROM oms.orders ORDER BY order_id"""
    ).fetchall()
    ch = ch_client.query(
        """SELECT order_id, order_number, channel_code, placed_at, total_amount, promised_at, state
           FROM orders FINAL ORDER BY order_id"""
    ).result_rows
    assert [(r[0], r[1], r[2], r[3].replace(tzinfo=None), r[4], r[5], r[6]) for r in pg] == [
        (r[0], r[1], r[2], r[3].replace(tzinfo=None), r[4], r[5], r[6]) for r in ch
    ]
    locations = ch_client.query(
        "SELECT locations FROM allocation_decisions FINAL WHERE length(locations) > 0 LIMIT 1"
    ).result_rows
    assert locations == [(["WH-MSK-POD"],)]
    # customer personal data stays in the system of record
    columns = set(ch_client.query("SELECT * FROM orders LIMIT 0").column_names)
    assert not columns & {"customer_name", "customer_phone", "customer_email", "address"}


def test_a_changed_row_replaces_its_previous_copy(history, conn, ch_client):
    replicate_all(conn, ch_client)
    o4 = history.shipments["O4"][0]
    mark_delivered(conn, [o4], actor=ACTOR, at=ts("2025-02-06 12:00:00"))

    results = {r.table: r for r in replicate_all(conn, ch_client)}
    assert results["shipments"].rows_copied == 1
    assert results["orders"].rows_copied == 1
    rows = ch_client.query(
        "SELECT state, delivered_at FROM shipments FINAL WHERE shipment_id = {s:Int64}", parameters={"s": o4}
    ).result_rows
    assert [(r[0], r[1].isoformat()) for r in rows] == [("delivered", "2025-02-06T12:00:00")]
    assert ch_final_count(ch_client, "shipments") == pg_count(conn, "shipments")


def test_crash_after_a_batch_then_rerun_copies_every_row_once(history, conn, ch_client):
    events = spec_by_name("order_events")
    with pytest.raises(ReplicationInterrupted):
        replicate_table(conn, ch_client, events, batch_rows=10, fail_after_batches=2)
    assert ch_client.command("SELECT count() FROM order_events") == 20
    assert load_state(ch_client, ch_client.database, "order_events") == {}  # watermark not advanced

    result = replicate_table(conn, ch_client, events, batch_rows=10)
    total = pg_count(conn, "order_events")
    assert result.rows_copied == total and result.batches == -(-total // 10)
    assert ch_final_count(ch_client, "order_events") == total
    assert ch_client.command("SELECT uniqExact(event_id) FROM order_events FINAL") == total


def test_an_id_committed_after_a_larger_one_is_not_skipped(history, conn, db_url, ch_client):
    """Transaction A takes event id n, B takes n+1 and commits first: a naive `id > max(id)` watermark would
    skip n forever. The watermark waits until every transaction in flight at the snapshot has finished."""
    events = spec_by_name("order_events")
    replicate_table(conn, ch_client, events)
    insert = """INSERT INTO oms.order_events (order_id, entity, entity_id, from_state, to_state, actor)
                VALUES (1, 'order', 1, 'delivered', 'delivered', 'late-commit-test') RETURNING event_id"""
    with connect(db_url) as slow:
        with slow.transaction():
            early = slow.execute(insert).fetchone()[0]
            late = conn.execute(insert).fetchone()[0]  # autocommit: visible at once
            assert late > early
            first = replicate_table(conn, ch_client, events)
            assert first.rows_copied == 1  # only the committed one
            state = load_state(ch_client, ch_client.database, "order_events")
            assert state["wm"] < early and state["pending_hi"] == late
        # `slow` commits here
        replicate_table(conn, ch_client, events)
    ids = {r[0] for r in ch_client.query("SELECT event_id FROM order_events FINAL").result_rows}
    assert {early, late} <= ids
    assert load_state(ch_client, ch_client.database, "order_events") == {"wm": late}


def test_an_update_committed_late_is_not_skipped(history, conn, db_url, ch_client):
    """updated_at is the START of the writing transaction: a transaction that began before a replication run
    and commits after it must still be copied by the next run."""
    orders = spec_by_name("orders")
    replicate_table(conn, ch_client, orders)
    with connect(db_url) as slow:
        with slow.transaction():
            slow.execute(
                "UPDATE oms.orders SET hold_reason = 'slow writer', updated_at = now() WHERE order_id = %s",
                (history.orders["O5"],),
            )
            conn.execute(
                "UPDATE oms.orders SET hold_reason = 'fast writer', updated_at = now() WHERE order_id = %s",
                (history.orders["O4"],),
            )
            replicate_table(conn, ch_client, orders)
        replicate_table(conn, ch_client, orders)
    rows = dict(ch_client.query("SELECT order_id, hold_reason FROM orders FINAL").result_rows)
    assert rows[history.orders["O5"]] == "slow writer"
    assert rows[history.orders["O4"]] == "fast writer"


def test_a_column_added_in_postgres_is_added_and_backfilled(history, conn, ch_client):
    products = spec_by_name("products")
    replicate_table(conn, ch_client, products)
    with conn.transaction():
        conn.execute("ALTER TABLE oms.products ADD COLUMN brand text")
        conn.execute("UPDATE oms.products SET brand = 'ACME'")  # no updated_at bump: needs the re-copy
    result = replicate_table(conn, ch_client, products)
    assert result.full_copy and result.schema_changes == ["added column brand"]
    assert ch_client.query("SELECT DISTINCT brand FROM products FINAL").result_rows == [("ACME",)]


def test_runs_are_serialised(history, conn, db_url, ch_client):
    with psycopg.connect(db_url, autocommit=True) as other:
        other.execute("SELECT pg_advisory_lock(%s)", (LOCK_KEY,))
        with pytest.raises(ReplicationError, match="lock"):
            replicate_all(conn, ch_client)
