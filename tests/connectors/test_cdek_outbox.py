"""CDEK (OAuth, booking, documents, tracking) driven by the outbox drain, and the drain's failure handling."""

from __future__ import annotations

import pytest

from oms_ops import outbox, read_model
from oms_ops.channels import callcentre
from oms_ops.connectors import cdek
from oms_ops.services.allocation import allocate
from oms_ops.services.clients import Clients
from oms_ops.services.outbox import drain_outbox
from oms_ops.services.shipping import ship_reserved
from simulators.callcentre import generate_callcentre_orders
from tests.connectors.conftest import FakeTime, count, settings_of


@pytest.fixture
def shipped(world, business_config, policy):
    """Call-centre orders allocated and shipped; their carrier bookings wait in the outbox."""

    def factory(**kw):
        conn, stack, settings = world(only=["cdek", "wms"], n_skus=40, **kw)
        orders = generate_callcentre_orders(5, 30, catalog=stack.catalog, messy_share=0.0)
        for o in orders:  # courier deliveries only: every shipment goes with a carrier
            o["delivery"]["method"] = "courier"
        callcentre.submit_orders(conn, orders)
        allocate(conn, business_config)
        res = ship_reserved(conn)
        assert res.shipments > 0
        clients = Clients(settings, policy=policy, rate=None)
        return conn, stack, clients

    return factory


def _cdek_shipments(conn):
    return [
        r[0]
        for r in conn.execute(
            "SELECT shipment_id FROM oms.shipments WHERE carrier_code = 'cdek' ORDER BY shipment_id"
        ).fetchall()
    ]


def test_booking_documents_and_tracking_end_to_end(shipped):
    conn, stack, clients = shipped()
    with clients:
        res = drain_outbox(conn, clients)
        sids = _cdek_shipments(conn)
        assert sids and res.failed == 0
        assert count(
            conn,
            "SELECT count(*) FROM connectors.effect_log WHERE effect = 'carrier.create_shipment' "
            "AND outcome = 'sent'",
        ) == len(sids)
        sim = stack["cdek"]
        assert len(sim.orders) == len(sids)
        client = clients.get("cdek")
        stack.advance(10)
        first = cdek.sync_bookings(conn, client)
        assert first["registered"] == len(sids) and first["prints_requested"] == 2 * len(sids)
        stack.advance(10)
        second = cdek.sync_bookings(conn, client)
        assert second["documents"] == 2 * len(sids) and second["labels_printed"] == len(sids)
        pdf = cdek.document(conn, sids[0], "label")
        assert pdf.startswith(b"%PDF") and cdek.document(conn, sids[0], "waybill").startswith(b"%PDF")
        assert {
            r[0] for r in conn.execute("SELECT state FROM oms.shipments WHERE shipment_id = ANY(%s)", (sids,))
        } == {"label_printed"}
        assert all(
            r[0]
            for r in conn.execute(
                "SELECT tracking_number FROM oms.shipments WHERE shipment_id = ANY(%s)", (sids,)
            )
        )
        stack.advance(12 * 24 * 3600)
        tr = cdek.poll_tracking(conn, client).tracking
        assert tr.inserted > 0
        states = dict(
            conn.execute(
                "SELECT state, count(*) FROM oms.shipments WHERE shipment_id = ANY(%s) GROUP BY 1", (sids,)
            ).fetchall()
        )
        assert set(states) <= {"delivered", "not_delivered"} and states.get("delivered")
        again = cdek.poll_tracking(conn, client)  # delivered bookings are final: not polled again
        assert again.tracking.inserted == 0 and again.reconciled == again.errors == 0
        assert cdek.sync_bookings(conn, client) == {
            "registered": 0,
            "invalid": 0,
            "prints_requested": 0,
            "documents": 0,
            "labels_printed": 0,
            "reconciled": 0,
            "given_up": 0,
            "errors": 0,
        }


def test_token_is_cached_until_it_expires_and_refreshed_on_401(make_stack, policy):
    fake = FakeTime()
    stack = make_stack(only=["cdek"], protocol_time=fake)
    policy.clock = fake
    client = cdek.CdekClient(
        stack.urls["cdek"], "sim-cdek-account", "sim-cdek-secure-password", policy=policy, rate=None
    )
    for _ in range(3):
        assert client.find_by_number("nothing") is None
    assert client.token_requests == 1
    fake.advance(3600)  # past expires_in (3599 s)
    client.find_by_number("nothing")
    assert client.token_requests == 2
    stack["cdek"].tokens.clear()  # the server forgot our token (restart): 401 → new token, one retry
    client.find_by_number("nothing")
    assert client.token_requests == 3


def test_a_timed_out_booking_is_booked_once(shipped, policy):
    conn, stack, clients = shipped()
    sim = stack["cdek"]
    sim.faults.set([{"kind": "timeout", "count": 1, "delay": 1.0, "path": "/v2/orders", "method": "POST"}])
    policy.read_timeout = 0.3
    with clients:
        res = drain_outbox(conn, clients, effects=("carrier.create_shipment",))
    assert res.failed == 0 and res.dead == 0
    numbers = [o.number for o in sim.orders.values() if o.active]
    assert sorted(numbers) == sorted(set(numbers))  # every shipment number booked exactly once
    assert len(numbers) == len(_cdek_shipments(conn))


def test_failed_deliveries_back_off_then_go_dead(shipped, policy):
    conn, stack, clients = shipped()
    stack["cdek"].faults.set([{"kind": "server_error", "probability": 1.0, "status": 500}])
    policy.attempts = 2
    with clients:
        first = drain_outbox(
            conn, clients, effects=("carrier.create_shipment",), max_attempts=2, backoff_seconds=60
        )
        assert first.failed == len(_cdek_shipments(conn)) > 0
        row = conn.execute("""SELECT state, last_error, next_attempt_at > now() + interval '50 seconds'
                              FROM oms.outbox WHERE effect = 'carrier.create_shipment' LIMIT 1""").fetchone()
        assert row[0] == "failed" and row[2]
        assert row[1].startswith(
            "ConnectorError: CDEK API: POST /v2/oauth/token failed after 2 attempts: HTTP 500"
        )
        conn.execute("UPDATE oms.outbox SET next_attempt_at = now() WHERE state = 'failed'")
        second = drain_outbox(conn, clients, effects=("carrier.create_shipment",), max_attempts=2)
        assert second.dead == first.failed
        assert count(conn, "SELECT count(*) FROM oms.outbox WHERE state = 'dead'") == first.failed


def test_a_drain_killed_after_the_call_does_not_book_twice(shipped, monkeypatch):
    conn, stack, clients = shipped()
    real = outbox.complete
    calls = {"n": 0}

    def dying_complete(c, ids):
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("killed between the carrier call and the commit")
        return real(c, ids)

    monkeypatch.setattr(outbox, "complete", dying_complete)
    with clients:
        with pytest.raises(RuntimeError):
            drain_outbox(conn, clients, effects=("carrier.create_shipment",))
        booked = len(stack["cdek"].orders)
        assert booked == 1
        conn.execute(
            "UPDATE oms.outbox SET next_attempt_at = now() WHERE state = 'in_flight'"
        )  # lease ran out
        drain_outbox(conn, clients, effects=("carrier.create_shipment",))
    assert len(stack["cdek"].orders) == len(_cdek_shipments(conn))  # the first one was not booked again
    assert count(conn, "SELECT count(*) FROM connectors.carrier_bookings") == len(_cdek_shipments(conn))
    assert (
        count(
            conn,
            "SELECT count(*) FROM oms.outbox WHERE effect = 'carrier.create_shipment' AND state <> 'done'",
        )
        == 0
    )


def test_invalid_booking_is_quarantined_for_ops(shipped):
    conn, stack, clients = shipped()
    conn.execute("""UPDATE oms.outbox SET payload = jsonb_set(payload, '{service_code}', '"999"')
                    WHERE effect = 'carrier.create_shipment'""")
    with clients:
        drain_outbox(conn, clients, effects=("carrier.create_shipment",))
        stack.advance(10)
        res = cdek.sync_bookings(conn, clients.get("cdek"))
    assert res["invalid"] == len(_cdek_shipments(conn)) and res["registered"] == 0
    reason = conn.execute(
        "SELECT reason FROM raw.quarantine WHERE source = 'carrier:cdek' LIMIT 1"
    ).fetchone()[0]
    assert "v2_tariff_not_found" in reason


def test_refunds_and_notifications_are_recorded_once(shipped, business_config):
    conn, stack, clients = shipped()
    oid = conn.execute("SELECT order_id FROM oms.orders WHERE state = 'shipped' LIMIT 1").fetchone()[0]
    from oms_ops.payments import request_refund

    with conn.transaction():
        conn.execute("UPDATE oms.orders SET payment_status = 'paid' WHERE order_id = %s", (oid,))
        request_refund(
            conn, order_id=oid, amount=100, reason="goodwill", actor="test", idempotency_key="refund:t:1"
        )
    with clients:
        res = drain_outbox(conn, clients, effects=("payment.refund",))
        assert res.done == 1
        assert (
            conn.execute("SELECT state FROM oms.refunds WHERE idempotency_key = 'refund:t:1'").fetchone()[0]
            == "succeeded"
        )
        assert drain_outbox(conn, clients, effects=("payment.refund",)).claimed == 0
    assert (
        conn.execute(
            "SELECT outcome FROM connectors.effect_log WHERE idempotency_key = 'refund:t:1'"
        ).fetchone()[0]
        == "recorded"
    )


# -- a carrier that lost its bookings -------------------------------------------------------------------------


def _restart_without_state(make_stack, stack, policy):
    """CDEK restarts having lost every booking (the simulator runs without persistence): a new process on a
    new port, the same seed — so it hands out the very UUIDs it issued before."""
    stack.stop()
    fresh = make_stack(only=["cdek"], n_skus=40)
    return fresh, Clients(settings_of(fresh), policy=policy, rate=None)


def _bookings(conn):
    return {
        r[0]: r[1:]
        for r in conn.execute(
            """SELECT shipment_id, carrier_uuid, previous_carrier_uuid, request_state, reconcile_count,
                      reconcile_reason, final
               FROM connectors.carrier_bookings ORDER BY shipment_id"""
        ).fetchall()
    }


def test_bookings_a_restarted_carrier_lost_are_booked_again_and_parcels_move_on(shipped, make_stack, policy):
    conn, stack, clients = shipped()
    with clients:
        drain_outbox(conn, clients, effects=("carrier.create_shipment",))
        client = clients.get("cdek")
        stack.advance(10)
        cdek.sync_bookings(conn, client)
        stack.advance(10)
        assert cdek.sync_bookings(conn, client)["labels_printed"] > 0
    sids = _cdek_shipments(conn)
    before = _bookings(conn)
    old_tracking = dict(
        conn.execute(
            "SELECT shipment_id, tracking_number FROM oms.shipments WHERE shipment_id = ANY(%s)", (sids,)
        ).fetchall()
    )
    assert all(old_tracking.values())

    stack, clients = _restart_without_state(make_stack, stack, policy)
    sim = stack["cdek"]
    with clients:
        client = clients.get("cdek")
        # someone else's booking takes the first UUID the restarted CDEK hands out: the one our first
        # shipment's booking had — the uuid now names another order
        foreign = client.create_order(
            {**cdek.build_order_request(conn, _payload(conn, sids[0]), fallback_phone="+70000000000"),
             "number": "FOREIGN-1"}
        )[0]  # fmt: skip
        assert foreign == before[sids[0]][0]

        polled = cdek.poll_tracking(conn, client)  # not a 404 retried for ever: every booking is re-created
        assert polled.reconciled == len(sids) and polled.errors == polled.given_up == 0
        after = _bookings(conn)
        for sid in sids:
            uuid, previous, state, count_, reason, final = after[sid]
            assert (previous, state, count_, final) == (before[sid][0], "ACCEPTED", 1, False)
            assert uuid != foreign
        assert "now names order FOREIGN-1" in after[sids[0]][4]
        # the others: unknown, or their uuid was handed out again to a booking re-created before them
        assert all(
            "does not know booking" in after[s][4] or "now names order SHP-" in after[s][4] for s in sids[1:]
        )
        # CDEK has each shipment number booked once, under the uuid we store now
        active = {o.number: o.uuid for o in sim.orders.values() if o.active}
        assert {s: active[n] for s, n in _numbers(conn, sids).items()} == {s: after[s][0] for s in sids}
        assert (
            conn.execute(
                "SELECT count(*) FROM connectors.shipment_documents WHERE shipment_id = ANY(%s)", (sids,)
            ).fetchone()[0]
            == 0
        )  # the old labels name bookings that are gone
        assert cdek.poll_tracking(conn, client).reconciled == 0  # re-created once, not again

        stack.advance(10)
        first = cdek.sync_bookings(conn, client)
        assert first["registered"] == len(sids) and first["errors"] == 0
        stack.advance(10)
        second = cdek.sync_bookings(conn, client)
        assert second["documents"] == 2 * len(sids)
        new_tracking = dict(
            conn.execute(
                "SELECT shipment_id, tracking_number FROM oms.shipments WHERE shipment_id = ANY(%s)", (sids,)
            ).fetchall()
        )
        assert all(new_tracking.values())
        assert cdek.document(conn, sids[0], "label").startswith(b"%PDF")

        stack.advance(12 * 24 * 3600)  # the parcels move on to the customer
        cdek.poll_tracking(conn, client)
    states = dict(
        conn.execute(
            "SELECT state, count(*) FROM oms.shipments WHERE shipment_id = ANY(%s) GROUP BY 1", (sids,)
        ).fetchall()
    )
    assert set(states) <= {"delivered", "not_delivered"} and states.get("delivered")
    issues = {r["shipment_id"]: r for r in read_model.carrier_booking_issues(conn)}
    assert set(issues) == set(sids)
    assert issues[sids[0]]["reconcile_count"] == 1 and issues[sids[0]]["previous_carrier_uuid"] == foreign
    assert issues[sids[0]]["previous_tracking_number"] == old_tracking[sids[0]]
    assert not issues[sids[0]]["polling_stopped"] and issues[sids[0]]["last_error"] is None


def test_a_booking_lost_before_registration_is_booked_again(shipped, make_stack, policy):
    conn, stack, clients = shipped()
    with clients:
        drain_outbox(conn, clients, effects=("carrier.create_shipment",))
    sids = _cdek_shipments(conn)
    stack, clients = _restart_without_state(make_stack, stack, policy)
    with clients:
        client = clients.get("cdek")
        stack.advance(10)
        res = cdek.sync_bookings(conn, client)
        assert res["reconciled"] == len(sids) and res["registered"] == 0
        stack.advance(10)
        assert cdek.sync_bookings(conn, client)["registered"] == len(sids)
    assert len({o.number for o in stack["cdek"].orders.values()}) == len(sids)


@pytest.mark.parametrize("registered", [False, True], ids=["before registration", "after registration"])
def test_a_lost_booking_that_cannot_be_booked_again_goes_to_ops_and_is_not_polled_again(
    shipped, make_stack, policy, registered
):
    conn, stack, clients = shipped()
    with clients:
        drain_outbox(conn, clients, effects=("carrier.create_shipment",))
        if registered:
            stack.advance(10)
            cdek.sync_bookings(conn, clients.get("cdek"))
    sids = _cdek_shipments(conn)
    # the booking requests were purged from the outbox (retention): nothing to book the shipments again with
    conn.execute("DELETE FROM oms.outbox WHERE effect = 'carrier.create_shipment'")
    stack, clients = _restart_without_state(make_stack, stack, policy)
    with clients:
        client = clients.get("cdek")
        if registered:
            res = cdek.poll_tracking(conn, client)
            assert (res.given_up, res.reconciled) == (len(sids), 0)
        else:
            res = cdek.sync_bookings(conn, client)
            assert (res["given_up"], res["reconciled"]) == (len(sids), 0)
        calls = client.calls
        # neither registration, nor print forms, nor tracking ask CDEK about them again
        assert cdek.sync_bookings(conn, client)["given_up"] == 0
        assert cdek.poll_tracking(conn, client).given_up == 0
        assert client.calls == calls
    issues = read_model.carrier_booking_issues(conn)
    assert len(issues) == len(sids) and all(i["polling_stopped"] for i in issues)
    assert "no booking request kept" in issues[0]["last_error"]
    reasons = [
        r[0]
        for r in conn.execute("SELECT reason FROM raw.quarantine WHERE source = 'carrier:cdek'").fetchall()
    ]
    assert len(reasons) == len(sids) and "not re-created" in reasons[0]


def _payload(conn, sid):
    return conn.execute(
        """SELECT o.payload FROM oms.outbox o JOIN oms.shipments s
               ON o.idempotency_key = 'carrier.create_shipment:' || s.shipment_number
           WHERE s.shipment_id = %s""",
        (sid,),
    ).fetchone()[0]


def _numbers(conn, sids):
    return dict(
        conn.execute(
            "SELECT shipment_id, shipment_number FROM oms.shipments WHERE shipment_id = ANY(%s)", (sids,)
        ).fetchall()
    )
