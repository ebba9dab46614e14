"""Payments through YooKassa end to end, against real Postgres and the simulator over loopback: payment links,
the customer paying, notifications read back, the poll, refunds sent once, partial, refused, not sent for
payments the OMS did not take, and the difference of a grown paid order."""

from __future__ import annotations

from decimal import Decimal

import httpx
import pytest

from oms_ops import returns
from oms_ops.allocation import allocate_batch
from oms_ops.changes import SetQuantity, change_order
from oms_ops.channels.webhooks import WebhookServer
from oms_ops.connectors.yookassa import YooKassaClient
from oms_ops.errors import ValidationFailed
from oms_ops.orders import accept_orders
from oms_ops.payments import request_refund
from oms_ops.returns import ReturnLineRequest as R
from oms_ops.services import payments as svc
from tests.core import factories as f
from tests.core.test_alloc_support import NOW, order_dict, receive, sample_config, seed_reference
from tests.payments.conftest import (
    callcentre_order,
    delivered,
    drain,
    link_of,
    paid_order,
    pay_through_link,
    payment_status,
    provider_refunds,
    refund_row,
    yk,
)


def effect_log(conn, key: str) -> tuple:
    return conn.execute(
        "SELECT outcome, note FROM connectors.effect_log WHERE idempotency_key = %s", (key,)
    ).fetchone()


def refund_key(conn, refund_id: int) -> str:
    return conn.execute(
        "SELECT idempotency_key FROM oms.refunds WHERE refund_id = %s", (refund_id,)
    ).fetchone()[0]


def test_a_call_centre_order_gets_a_payment_link_once(world, sims, clients):
    conn = world
    oid = callcentre_order(conn)
    marketplace = f.order(conn, channel_code="ozon", payment_status="pending")
    paid_web = f.order(conn)  # the web store's checkout took the money
    first = svc.run(conn, clients)
    assert first["links_requested"] == 1 and svc.run(conn, clients) == {}
    drain(conn, clients)
    link = link_of(conn, oid)
    assert link["status"] == "pending" and link["amount"] == Decimal("200.00")
    assert link["url"].startswith(sims.urls["yookassa"] + "/checkout/")
    payment = yk(sims, "/_sim/yookassa/payments")["payments"]
    assert [p["metadata"]["order_id"] for p in payment] == [str(oid)]
    assert payment[0]["confirmation"]["confirmation_url"] == link["url"]
    assert not link_of(conn, marketplace) and not link_of(conn, paid_web)
    shown = svc.order_payments(conn, oid)
    assert shown["links"][0]["confirmation_url"] == link["url"]
    assert [p["state"] for p in shown["payments"]] == ["pending"]


def test_the_customer_pays_and_the_notification_is_read_back(world, sims, clients, db_url):
    conn = world
    oid = callcentre_order(conn)
    f.reserve(conn, oid, "WH-MSK")
    conn.execute(
        "UPDATE oms.reservations SET expires_at = now() + interval '1 hour' WHERE order_id = %s", (oid,)
    )
    svc.run(conn, clients)
    drain(conn, clients)
    pid = link_of(conn, oid)["payment_id"]

    def client():
        return YooKassaClient.from_endpoint(clients.settings.endpoint("yookassa"))

    with WebhookServer(db_url, "unused-secret", yookassa=client) as receiver:
        sims["yookassa"].notification_url = receiver.yookassa_url
        # forged: the body says succeeded, the provider says pending → nothing changes
        forged = httpx.post(
            receiver.yookassa_url,
            json={
                "type": "notification",
                "event": "payment.succeeded",
                "object": {"id": pid, "status": "succeeded"},
            },
        )
        assert forged.status_code == 200 and forged.json()["result"] == "applied"
        assert payment_status(conn, oid) == "pending" and link_of(conn, oid)["status"] == "pending"
        unknown = httpx.post(
            receiver.yookassa_url,
            json={"type": "notification", "event": "payment.succeeded", "object": {"id": "no-such-payment"}},
        )
        assert unknown.json()["result"] == "unknown"
        assert conn.execute("SELECT count(*) FROM raw.quarantine").fetchone()[0] == 0
        yk(sims, f"/_sim/yookassa/payments/{pid}/pay", "POST")
        sims.advance(1)  # the simulator delivers payment.succeeded
        assert sims["yookassa"].delivered[-1] == {"event": "payment.succeeded", "id": pid, "ok": True}
    assert payment_status(conn, oid) == "paid" and link_of(conn, oid)["status"] == "succeeded"
    assert (
        conn.execute(
            "SELECT count(*) FROM oms.reservations WHERE order_id = %s AND expires_at IS NOT NULL", (oid,)
        ).fetchone()[0]
        == 0
    )
    assert conn.execute("SELECT state, amount FROM oms.payments WHERE order_id = %s", (oid,)).fetchall() == [
        ("paid", Decimal("200.00"))
    ]


def test_a_pending_payment_is_polled_to_its_end(world, sims, clients):
    conn = world
    paid_id = callcentre_order(conn)
    lost_id = callcentre_order(conn)
    svc.run(conn, clients)
    drain(conn, clients)
    yk(sims, f"/_sim/yookassa/payments/{link_of(conn, paid_id)['payment_id']}/pay", "POST")
    assert svc.run(conn, clients)["polled"]["payments"] == 1
    assert payment_status(conn, paid_id) == "paid"
    sims.advance(3601)  # the other one was never paid: it expires at the provider
    svc.run(conn, clients)
    assert link_of(conn, lost_id)["status"] == "canceled"
    assert "expired_on_confirmation" in link_of(conn, lost_id)["error"]
    assert payment_status(conn, lost_id) == "failed"


def test_refund_of_a_return_goes_to_the_provider_once_even_when_the_outbox_replays(world, sims, clients):
    conn = world
    oid, pid = paid_order(conn, sims, clients, lines=[("SKU-1", 3)])
    delivered(conn, oid)
    line = f.line_ids(conn, oid)[0]
    rma = returns.request_return(conn, oid, [R(line, 1, "changed_mind")], actor="cs")
    rl = conn.execute("SELECT return_line_id FROM oms.return_lines").fetchone()[0]
    returns.receive_return(conn, rma.return_id, location_code="WH-MSK", actor="wh", received={rl: 1})
    returns.inspect_return(conn, rma.return_id, {rl: "restock"}, actor="wh")
    # the provider's first answer is lost: the client retries with the same Idempotence-Key
    httpx.post(
        sims.urls["yookassa"] + "/_sim/faults",
        json={"kind": "server_error", "count": 1, "path": "/v3/refunds"},
    )
    refund_id = returns.refund_return(conn, rma.return_id, actor="cs")
    assert drain(conn, clients, "payment.refund").done == 1
    key = refund_key(conn, refund_id)
    # a drain that died after the call but before its record: the effect comes back and is sent again
    conn.execute("DELETE FROM connectors.effect_log WHERE idempotency_key = %s", (key,))
    conn.execute(
        "UPDATE oms.outbox SET state = 'pending', next_attempt_at = now() WHERE idempotency_key = %s", (key,)
    )
    conn.execute(
        "UPDATE oms.refunds SET state = 'requested', completed_at = NULL WHERE refund_id = %s", (refund_id,)
    )
    assert drain(conn, clients, "payment.refund").done == 1
    sent = provider_refunds(sims)
    assert len(sent) == 1 and sent[0]["payment_id"] == pid and sent[0]["amount"]["value"] == "100.00"
    state, provider, provider_refund_id, _ = refund_row(conn, refund_id)
    assert (state, provider, provider_refund_id) == ("succeeded", "yookassa", sent[0]["id"])
    assert payment_status(conn, oid) == "partially_refunded"
    assert effect_log(conn, key)[0] == "sent"


def test_partial_refunds_then_one_over_the_captured_amount_is_refused_and_visible(world, sims, clients):
    conn = world
    oid, pid = paid_order(conn, sims, clients, lines=[("SKU-1", 3)])  # 300.00
    ids = []
    for n, amount in enumerate(("100.00", "150.00", "80.00")):
        with conn.transaction():
            ids.append(
                request_refund(
                    conn,
                    order_id=oid,
                    amount=Decimal(amount),
                    reason="goodwill",
                    actor="cs",
                    idempotency_key=f"refund:test:{oid}:{n}",
                )  # fmt: skip
            )
        drain(conn, clients, "payment.refund")
    assert [refund_row(conn, i)[0] for i in ids] == ["succeeded", "succeeded", "failed"]
    reason = refund_row(conn, ids[2])[3]
    assert "exceeds the amount available for refund (50.00)" in reason
    outcome, note = effect_log(conn, f"refund:test:{oid}:2")
    assert outcome == "refused" and "exceeds" in note
    assert [r["amount"]["value"] for r in provider_refunds(sims)] == ["100.00", "150.00"]
    assert payment_status(conn, oid) == "partially_refunded"
    why = conn.execute(
        "SELECT reason FROM oms.order_events WHERE entity = 'refund' AND entity_id = %s AND to_state = 'failed'",
        (ids[2],),
    ).fetchone()[0]
    assert "exceeds" in why  # the order's timeline says why


def test_a_pending_refund_is_polled_until_it_succeeds(world, sims, clients):
    conn = world
    sims["yookassa"].refund_pending_share = 1.0
    oid, _ = paid_order(conn, sims, clients)
    with conn.transaction():
        rid = request_refund(
            conn,
            order_id=oid,
            amount=Decimal("200.00"),
            reason="cancelled",
            actor="cs",
            idempotency_key="refund:p",
        )
    drain(conn, clients, "payment.refund")
    assert refund_row(conn, rid)[0] == "pending" and payment_status(conn, oid) == "paid"
    sims.advance(61)
    assert svc.run(conn, clients)["polled"]["refunds"] == 1
    assert refund_row(conn, rid)[0] == "succeeded" and payment_status(conn, oid) == "refunded"


@pytest.mark.parametrize(
    ("channel", "words"),
    [("ozon", "marketplace ozon took the buyer's money"), ("webstore", "store's own checkout")],
)
def test_a_refund_of_a_payment_the_oms_did_not_take_is_not_sent(world, sims, clients, channel, words):
    conn = world
    oid = f.order(conn, channel_code=channel)  # paid in the channel
    with conn.transaction():
        rid = request_refund(
            conn,
            order_id=oid,
            amount=Decimal("50.00"),
            reason="return",
            actor="cs",
            idempotency_key="refund:m",
        )
    drain(conn, clients, "payment.refund")
    assert provider_refunds(sims) == []
    state, provider, _, _ = refund_row(conn, rid)
    assert (state, provider) == ("succeeded", f"channel:{channel}")
    outcome, note = effect_log(conn, "refund:m")
    assert outcome == "recorded" and note.startswith("not sent to a payment provider") and words in note


def test_a_paid_order_that_grows_gets_a_link_for_the_difference(conn, sims, clients):
    cfg = sample_config()
    seed_reference(conn, cfg, {"MUG": 400})
    receive(conn, "WH-MSK-POD", {"MUG": 20})
    placed = accept_orders(
        conn,
        [{**order_dict([("MUG", 2)], channel="callcentre", paid=False), "customer_email": "a@b.ru"}],
        actor="t",
    )
    oid = placed.accepted[0]
    allocate_batch(conn, [oid], config=cfg, now=NOW)
    pay_through_link(conn, sims, clients, oid)
    assert (
        conn.execute(
            "SELECT count(*) FROM oms.reservations WHERE order_id = %s AND state = 'active' AND expires_at IS NULL",
            (oid,),
        ).fetchone()[0]
        == 1
    )  # paid: the unpaid hold no longer runs out
    result = change_order(conn, oid, [SetQuantity(1, 3)], config=cfg, actor="cs", reason="one more", now=NOW)
    assert result.payment_link_id is not None and result.refund_id is None
    drain(conn, clients, "payment.create")
    link = link_of(conn, oid, "difference")
    assert link["amount"] == Decimal("1000.00") and link["status"] == "pending" and link["url"]
    created = next(
        p for p in yk(sims, "/_sim/yookassa/payments")["payments"] if p["id"] == link["payment_id"]
    )
    assert created["metadata"]["order_id"] == str(oid) and created["metadata"]["purpose"] == "difference"
    assert created["amount"]["value"] == "1000.00" and "one more" in created["metadata"]["note"]
    yk(sims, f"/_sim/yookassa/payments/{link['payment_id']}/pay", "POST")
    svc.run(conn, clients)
    assert link_of(conn, oid, "difference")["status"] == "succeeded" and payment_status(conn, oid) == "paid"
    # a marketplace order that grows gets no link: its channel charges its buyer
    other = accept_orders(conn, [order_dict([("MUG", 1)], channel="ozon")], actor="t").accepted[0]
    allocate_batch(conn, [other], config=cfg, now=NOW)
    grown = change_order(conn, other, [SetQuantity(1, 2)], config=cfg, actor="cs", now=NOW)
    assert grown.payment_link_id is None and link_of(conn, other, "difference") == {}


def test_a_provider_refusal_of_a_link_is_kept_for_ops(world, sims, clients):
    conn = world
    oid = f.order(
        conn, channel_code="callcentre", payment_status="pending", customer_phone=None, customer_email=None
    )
    svc.run(conn, clients)
    res = drain(conn, clients, "payment.create")
    assert res.done == 1 and yk(sims, "/_sim/yookassa/payments")["payments"] == []
    link = link_of(conn, oid)
    assert link["status"] == "failed" and "receipt" in link["error"]


def test_ops_ask_for_a_new_link_after_the_first_expired(world, sims, clients):
    conn = world
    oid = callcentre_order(conn)
    svc.run(conn, clients)
    drain(conn, clients)
    with pytest.raises(ValidationFailed, match="is still pending"):
        svc.new_link(conn, oid, actor="dashboard:olga")
    sims.advance(3601)  # never paid: expired at the provider, the poll sees it
    svc.run(conn, clients)
    assert payment_status(conn, oid) == "failed"
    link_id = svc.new_link(conn, oid, actor="dashboard:olga")
    drain(conn, clients, "payment.create")
    again = link_of(conn, oid)
    assert again["link_id"] == link_id and again["status"] == "pending" and again["url"]
    assert len(yk(sims, "/_sim/yookassa/payments")["payments"]) == 2
    marketplace = f.order(conn, channel_code="ozon", payment_status="pending")
    with pytest.raises(ValidationFailed, match="marketplace"):
        svc.new_link(conn, marketplace, actor="dashboard:olga")
