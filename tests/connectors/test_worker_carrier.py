"""The worker follows the carrier itself: its ``carrier`` step registers CDEK bookings, stores labels and polls
tracking, so hand-over and delivery reach the order without waiting for the 5-minute tracking schedule; a
second process running the same step at the same moment skips instead of doubling requests."""

from __future__ import annotations

from oms_ops.channels import callcentre
from oms_ops.db import connect
from oms_ops.services import carrier
from oms_ops.services.allocation import allocate
from oms_ops.services.clients import Clients
from oms_ops.services.shipping import ship_reserved
from oms_ops.worker import Worker
from simulators.callcentre import generate_callcentre_orders
from tests.connectors.conftest import count, settings_of


def _step(worker: Worker, name: str):
    return next(s for s in worker.steps if s.name == name)


def test_the_worker_takes_carrier_parcels_to_delivered(db_url, world, business_config):
    conn, stack, _ = world(only=["cdek", "wms"], n_skus=40)
    orders = generate_callcentre_orders(5, 30, catalog=stack.catalog, messy_share=0.0)
    for o in orders:
        o["delivery"]["method"] = "courier"
    callcentre.submit_orders(conn, orders)
    allocate(conn, business_config)
    assert ship_reserved(conn).shipments > 0
    worker = Worker(db_url, Clients(settings_of(stack), rate=None), ship=False)
    try:
        worker._run(conn, _step(worker, "outbox"))  # the bookings reach CDEK
        for _ in range(3):  # registration, print forms, PDFs
            stack.advance(10)
            worker._run(conn, _step(worker, "carrier"))
        stack.advance(12 * 24 * 3600)  # the parcels travel to their customers
        worker._run(conn, _step(worker, "carrier"))
    finally:
        worker.close()
    states = dict(
        conn.execute(
            "SELECT state, count(*) FROM oms.shipments WHERE carrier_code = 'cdek' GROUP BY 1"
        ).fetchall()
    )
    assert set(states) <= {"delivered", "not_delivered"} and states.get("delivered"), states
    assert count(conn, "SELECT count(*) FROM oms.orders WHERE delivered_at IS NOT NULL") > 0
    assets = {r[0] for r in conn.execute("SELECT DISTINCT asset FROM oms.worker_journal")}
    assert {"carrier_documents", "carrier_tracking"} <= assets


def test_one_tracking_poll_at_a_time(db_url, world):
    conn, stack, settings = world(only=["cdek"])
    with connect(db_url) as other, Clients(settings, rate=None) as clients:
        other.execute("SELECT pg_advisory_lock(hashtext('oms.carrier'), hashtext('tracking'))")
        try:
            assert carrier.poll_tracking(conn, clients) == {"skipped_busy": 1}
            assert "skipped_busy" not in carrier.sync_documents(conn, clients)  # a different lock
        finally:
            other.execute("SELECT pg_advisory_unlock(hashtext('oms.carrier'), hashtext('tracking'))")
        assert "skipped_busy" not in carrier.poll_tracking(conn, clients)
