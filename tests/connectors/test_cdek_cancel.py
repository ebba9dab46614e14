"""A shipment cancelled before hand-over tells CDEK through the outbox (``carrier.cancel_shipment``): the CDEK
order is deleted in the simulator, once; a shipment cancelled before its booking was sent is never booked; a
CDEK refusal is kept for ops (booking issues, quarantine, timeline) and not retried; a failing CDEK is
retried."""

from __future__ import annotations

import pytest

from oms_ops import read_model
from oms_ops.channels import callcentre
from oms_ops.connectors import cdek
from oms_ops.invariants import check_invariants
from oms_ops.services import shipment_cancel
from oms_ops.services.allocation import allocate
from oms_ops.services.clients import Clients
from oms_ops.services.outbox import drain_outbox
from oms_ops.services.shipping import ship_reserved
from simulators.callcentre import generate_callcentre_orders
from tests.connectors.conftest import count

CANCEL = ("carrier.create_shipment", "carrier.cancel_shipment")


@pytest.fixture
def shipped(world, business_config, policy):
    """Call-centre courier orders allocated and shipped with CDEK; their bookings wait in the outbox."""

    def factory():
        conn, stack, settings = world(only=["cdek", "wms"], n_skus=40)
        orders = generate_callcentre_orders(3, 31, catalog=stack.catalog, messy_share=0.0)
        for o in orders:
            o["delivery"]["method"] = "courier"
        callcentre.submit_orders(conn, orders)
        allocate(conn, business_config)
        assert ship_reserved(conn).shipments > 0
        return conn, stack, Clients(settings, policy=policy, rate=None)

    return factory


def _one_cdek_shipment(conn):
    return conn.execute(
        """SELECT shipment_id, shipment_number, location_code FROM oms.shipments
           WHERE carrier_code = 'cdek' ORDER BY shipment_id LIMIT 1"""
    ).fetchone()


def _effect(conn, number):
    return conn.execute(
        """SELECT o.state, e.outcome, e.note FROM oms.outbox o
           LEFT JOIN connectors.effect_log e USING (idempotency_key)
           WHERE o.idempotency_key = %s""",
        (f"carrier.cancel_shipment:{number}",),
    ).fetchone()


def test_cancel_deletes_the_cdek_booking_once(shipped):
    conn, stack, clients = shipped()
    sim = stack["cdek"]
    with clients:
        drain_outbox(conn, clients, effects=CANCEL)
        cdek.sync_bookings(conn, clients.get("cdek"))  # registered at CDEK (status CREATED)
        sid, number, location = _one_cdek_shipment(conn)
        uuid = conn.execute(
            "SELECT carrier_uuid FROM connectors.carrier_bookings WHERE shipment_id = %s", (sid,)
        ).fetchone()[0]

        shipment_cancel.cancel_shipment(
            conn, number, location_code=location, actor="ops", reason="customer cancelled delivery"
        )
        res = drain_outbox(conn, clients, effects=CANCEL)
        assert res.done == 1 and res.failed == 0
        assert _effect(conn, number) == ("done", "sent", None)
        assert sim.orders[uuid].removed and sim.orders[uuid].last_code == "REMOVED"
        booking = conn.execute(
            "SELECT cancelled_at IS NOT NULL, final, last_error FROM connectors.carrier_bookings WHERE shipment_id = %s",
            (sid,),
        ).fetchone()
        assert booking == (True, True, None)
        reasons = [
            r[0]
            for r in conn.execute(
                "SELECT reason FROM oms.order_events WHERE entity = 'shipment' AND entity_id = %s ORDER BY event_id",
                (sid,),
            )
        ]
        assert any(f"CDEK booking {uuid} deleted" in r for r in reasons)

        # idempotent: nothing more to drain; asked again, the booking is known to be cancelled
        assert drain_outbox(conn, clients, effects=CANCEL).claimed == 0
        again = cdek.cancel_booking(
            conn, clients.get("cdek"), {"shipment_id": sid, "shipment_number": number}
        )
        assert again[0] == "sent" and "cancelled already" in again[1]
        # the cancelled booking is no longer registered, printed or re-created by the carrier step
        assert cdek.sync_bookings(conn, clients.get("cdek"))["reconciled"] == 0
    assert check_invariants(conn) == []


def test_shipment_cancelled_before_its_booking_was_sent_is_never_booked(shipped):
    conn, stack, clients = shipped()
    sid, number, _ = _one_cdek_shipment(conn)
    shipment_cancel.cancel_shipment(conn, sid, location_code=None, actor="ops", reason="packed by mistake")
    with clients:
        res = drain_outbox(conn, clients, effects=CANCEL)
    assert res.failed == 0
    assert number not in {o.number for o in stack["cdek"].orders.values()}
    create = conn.execute(
        "SELECT outcome, note FROM connectors.effect_log WHERE idempotency_key = %s",
        (f"carrier.create_shipment:{number}",),
    ).fetchone()
    assert create == ("skipped", "the shipment was cancelled before it was booked")
    assert _effect(conn, number)[:2] == ("done", "skipped")
    assert count(conn, "SELECT count(*) FROM connectors.carrier_bookings WHERE shipment_id = %s", sid) == 0


def test_a_cdek_refusal_is_kept_for_ops_and_not_retried(shipped):
    conn, stack, clients = shipped()
    with clients:
        drain_outbox(conn, clients, effects=CANCEL)
        cdek.sync_bookings(conn, clients.get("cdek"))
        sid, number, location = _one_cdek_shipment(conn)
        # CDEK took the parcel into delivery, but the OMS has not polled it yet: it still looks cancellable
        stack.advance(3 * 24 * 3600)
        shipment_cancel.cancel_shipment(conn, sid, location_code=location, actor="ops", reason="late call")
        res = drain_outbox(conn, clients, effects=CANCEL)
    assert res.failed == 0 and res.dead == 0
    state, outcome, note = _effect(conn, number)
    assert (state, outcome) == ("done", "refused") and "v2_entity_invalid" in note
    issues = {i["shipment_id"]: i for i in read_model.carrier_booking_issues(conn)}
    assert "cancellation refused by CDEK" in issues[sid]["last_error"]
    assert (
        count(
            conn,
            "SELECT count(*) FROM raw.quarantine WHERE source = 'carrier:cdek' AND reason LIKE %s",
            f"%{number}: cancellation refused%",
        )
        == 1
    )
    assert (
        count(
            conn,
            """SELECT count(*) FROM oms.order_events WHERE entity = 'shipment' AND entity_id = %s
           AND reason LIKE 'cancellation refused by CDEK%%'""",
            sid,
        )
        == 1
    )


def test_a_failing_cdek_is_retried_until_the_booking_is_deleted(shipped, policy):
    conn, stack, clients = shipped()
    sim = stack["cdek"]
    with clients:
        drain_outbox(conn, clients, effects=CANCEL)
        sid, number, location = _one_cdek_shipment(conn)
        shipment_cancel.cancel_shipment(conn, sid, location_code=location, actor="ops", reason="retry me")
        sim.faults.set([{"kind": "server_error", "probability": 1.0, "status": 500, "method": "DELETE"}])
        policy.attempts = 2
        first = drain_outbox(conn, clients, effects=CANCEL)
        assert first.failed == 1 and _effect(conn, number)[:2] == ("failed", None)
        sim.faults.set([])
        conn.execute("UPDATE oms.outbox SET next_attempt_at = now() WHERE state = 'failed'")
        second = drain_outbox(conn, clients, effects=CANCEL)
        assert second.done == 1 and _effect(conn, number)[:2] == ("done", "sent")
    uuid = conn.execute(
        "SELECT carrier_uuid FROM connectors.carrier_bookings WHERE shipment_id = %s", (sid,)
    ).fetchone()[0]
    assert sim.orders[uuid].removed
