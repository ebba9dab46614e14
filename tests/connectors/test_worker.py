"""The always-on worker against the simulators over HTTP and the real Postgres: one cycle takes an order from
the channel to a reservation and its ATS to the other channels; notifications wake it without a timer;
a heartbeat and a journal record what it did; two workers at once double nothing."""

from __future__ import annotations

import threading
import time

import dagster as dg

from oms_ops.channels.rawstore import store_payloads
from oms_ops.db import connect
from oms_ops.services.clients import Clients
from oms_ops.worker import Cadence, Worker
from pipelines.defs.operations.sensors import worker_journal_sensor
from pipelines.resources import PostgresResource
from tests.connectors.conftest import count, settings_of

ASLEEP = Cadence(poll=3600, normalize=3600, allocate=3600, ats=3600, outbox=3600, wms=3600, ship=3600)


def _worker(db_url, stack, **kw) -> Worker:
    return Worker(db_url, Clients(settings_of(stack), rate=None), **kw)


def test_one_cycle_takes_orders_from_the_channels_to_reservations_and_ats(db_url, world):
    conn, stack, _ = world(only=["ozon", "wildberries", "shopify", "wms"], rate=1.0)
    stack.advance(1800)
    worker = _worker(db_url, stack, ship=False)
    try:
        worker.run_once(conn)
    finally:
        worker.close()
    assert count(conn, "SELECT count(*) FROM oms.orders") > 0
    assert count(conn, "SELECT count(*) FROM raw.pending_orders") == 0
    assert count(conn, "SELECT count(*) FROM oms.orders WHERE state = 'new'") == 0  # all allocated or held
    assert count(conn, "SELECT count(*) FROM oms.reservations WHERE state = 'active'") > 0
    assert count(conn, "SELECT count(*) FROM connectors.ats_push_state WHERE status = 'pushed'") > 0
    assets = {r[0] for r in conn.execute("SELECT DISTINCT asset FROM oms.worker_journal")}
    assert {"ozon_orders", "allocation", "ats_pushes"} <= assets
    beat = conn.execute("SELECT cycles, lag_seconds, last_error FROM oms.worker_heartbeats").fetchone()
    assert beat[0] == 1 and beat[1] is not None and beat[2] is None
    # Dagster sees the fast lane's work as materializations of the same assets
    ctx = dg.build_sensor_context(cursor=None, resources={"postgres": PostgresResource(database_url=db_url)})
    result = worker_journal_sensor(ctx)
    keys = {e.asset_key.to_user_string() for e in result.asset_events}
    assert {"ozon_orders", "allocation", "ats_pushes"} <= keys
    assert all(e.metadata["lane"].value == "worker" for e in result.asset_events)
    again = dg.build_sensor_context(
        cursor=result.cursor, resources={"postgres": PostgresResource(database_url=db_url)}
    )
    assert isinstance(worker_journal_sensor(again), dg.SkipReason)


def test_a_notification_wakes_the_worker_without_waiting_for_its_timers(db_url, world):
    conn, stack, _ = world(only=["shopify", "wms"], rate=1.0)
    stack.advance(600)
    order = stack["shopify"].rendered_orders()[0]
    worker = _worker(db_url, stack, cadence=ASLEEP, ship=False)
    thread = threading.Thread(target=worker.run_forever, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 60
        while not count(conn, "SELECT count(*) FROM oms.worker_heartbeats") and time.monotonic() < deadline:
            time.sleep(0.1)
        ext = str(order["id"])
        with conn.transaction():  # a webhook delivery: stored raw, queued for the normaliser
            store_payloads(conn, "webstore", [(ext, order)])
        while time.monotonic() < deadline:
            state = conn.execute("SELECT state FROM oms.orders WHERE external_id = %s", (ext,)).fetchone()
            if state and state[0] != "new":
                break
            time.sleep(0.1)
        # every timer is an hour away: only the notifications (queued, then orders) can have moved it
        assert state is not None and state[0] in (
            "allocated",
            "backordered",
            "on_hold",
            "partially_allocated",
        )
    finally:
        worker.stopping = True
        thread.join(timeout=30)
        worker.close()
    assert not thread.is_alive()


def test_two_workers_at_once_double_nothing(db_url, world):
    conn, stack, _ = world(only=["ozon", "wildberries", "wms"], rate=1.0)
    stack.advance(1800)
    workers = [_worker(db_url, stack, ship=True) for _ in range(2)]
    errors: list[BaseException] = []

    def run(w: Worker) -> None:
        try:
            with connect(db_url) as c:
                w.run_once(c)
            w.close()
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(w,)) for w in workers]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert errors == []
    expected = len(stack["ozon"].rendered_postings()) + len(
        stack["wildberries"].orders
    )  # one WB order = one unit
    got = count(conn, "SELECT count(*) FROM oms.orders")
    assert got == count(conn, "SELECT count(DISTINCT (channel_code, external_id)) FROM oms.orders")
    assert 0 < got <= expected
    assert count(conn, "SELECT count(*) FROM oms.shipments") == count(
        conn, "SELECT count(DISTINCT (order_id, location_code)) FROM oms.shipments"
    )
