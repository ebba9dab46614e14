"""Customer notifications end to end: order events → oms.notifications → outbox → the SMS gateway and the
mail server simulators over loopback, and back (delivery statuses)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx

from oms_ops import fulfillment as ff
from oms_ops import notifications as nt
from oms_ops.orders import cancel_orders
from oms_ops.services import notifications as svc
from oms_ops.services.outbox import drain_outbox
from tests.core import factories as f
from tests.notifications.conftest import NOON, mailbox, notifications, sms_sent


def _outbox(conn, order_id):
    return conn.execute(
        """SELECT idempotency_key, state, attempts, last_error, next_attempt_at FROM oms.outbox
           WHERE effect = 'notify.customer' AND (payload->>'order_id')::bigint = %s ORDER BY outbox_id""",
        (order_id,),
    ).fetchall()


def test_order_accepted_sms_is_sent_once_even_when_the_scan_and_the_drain_replay(
    world, sims, clients, config
):
    conn = world
    oid = f.order(conn, customer_phone="+7 (916) 123-45-67")
    res = nt.plan(conn, config, now=NOON)
    assert res.created == 1 and res.released == 1
    drained = drain_outbox(conn, clients, effects=("notify.customer",))
    assert drained.done == 1, drained.errors
    [n] = notifications(conn, oid)
    assert n["status"] == "sent" and n["channel"] == "sms" and n["recipient"] == "79161234567"
    number = conn.execute("SELECT order_number FROM oms.orders WHERE order_id = %s", (oid,)).fetchone()[0]
    assert number in n["body"] and "принят" in n["body"]
    # the scan runs again over the same events (a second worker, a reset cursor): nothing new
    conn.execute("UPDATE oms.notification_scan SET last_event_id = 0")
    assert nt.plan(conn, config, now=NOON).created == 0
    # the drain died after the gateway call, before it recorded the effect: the effect comes back
    conn.execute("DELETE FROM connectors.effect_log WHERE effect = 'notify.customer'")
    conn.execute(
        "UPDATE oms.outbox SET state = 'pending', next_attempt_at = now() WHERE effect = 'notify.customer'"
    )
    again = drain_outbox(conn, clients, effects=("notify.customer",))
    assert again.done == 1
    outcome = conn.execute(
        "SELECT note FROM connectors.effect_log WHERE effect = 'notify.customer'"
    ).fetchone()[0]
    assert "already sent" in outcome
    assert len(sms_sent(sims, "79161234567")) == 1


def test_the_worker_creates_and_sends_notifications_once(world, sims, clients, config, db_url):
    from oms_ops.worker import Worker

    conn = world
    oid = f.order(conn, customer_phone="+79161112233", customer_email=None)
    worker = Worker(db_url, clients, ship=False)
    worker.steps = [s for s in worker.steps if s.name in ("notifications", "outbox")]
    for step in worker.steps:
        step.background = False
    # quiet hours depend on the wall clock here: let the policy have none for this test
    policy = config.notifications.model_copy(update={"quiet_hours": None})
    cfg = config.model_copy(update={"notifications": policy})
    import oms_ops.worker as w

    original = w.load_business_config
    w.load_business_config = lambda path=None: cfg
    try:
        worker.run_once(conn)
        worker.run_once(conn)
    finally:
        w.load_business_config = original
    assert [n["status"] for n in notifications(conn, oid)] == ["sent"]
    assert len(sms_sent(sims, "79161112233")) == 1
    journal = conn.execute(
        "SELECT asset, metadata FROM oms.worker_journal WHERE metadata->>'step' = 'notifications'"
    ).fetchall()  # journalled under the Dagster asset doing the same work
    assert journal and journal[0][0] == "customer_notifications" and journal[0][1]["created"] == 1


def test_email_reaches_the_mail_server_with_message_id_subject_and_body(world, sims, clients, config):
    conn = world
    oid = f.order(conn, customer_phone=None, customer_email="Ivan.Petrov@Example.ru", customer_name="Иван")
    nt.plan(conn, config, now=NOON)
    assert drain_outbox(conn, clients, effects=("notify.customer",)).done == 1
    [n] = notifications(conn, oid)
    key = nt.outbox_key(n["notification_id"])
    sender = svc.client_of(clients, "smtp").sender
    [msg] = mailbox(sims, to="ivan.petrov@example.ru")
    assert msg["message_id"] == nt.message_id(key, sender) == n["provider_id"]
    number = conn.execute("SELECT order_number FROM oms.orders WHERE order_id = %s", (oid,)).fetchone()[0]
    assert msg["subject"] == f"Заказ {number} принят"
    assert "Здравствуйте, Иван!" in msg["text"] and number in msg["text"] and "200" in msg["text"]
    assert "<p>Здравствуйте, Иван!</p>" in msg["html"]
    assert n["status"] == "sent"


def test_a_wrong_smtp_password_is_refused_and_the_effect_retried(world, sims, clients, config):
    conn = world
    clients.put(
        "smtp",
        svc.EmailClient(
            clients.settings.endpoint("smtp").base_url,
            username="oms",
            password="wrong",
            sender="shop@oms.local",
        ),
    )
    oid = f.order(conn, customer_phone=None, customer_email="buyer@example.ru")
    nt.plan(conn, config, now=NOON)
    res = drain_outbox(conn, clients, effects=("notify.customer",))
    assert res.failed == 1 and "AUTH refused (535)" in res.errors[0]
    [n] = notifications(conn, oid)
    assert n["status"] == "failed" and "AUTH refused" in n["reason"]
    assert mailbox(sims) == []
    assert httpx.get(sims.urls["smtp"] + "/_sim/state").json()["auth_failures"] >= 1
    [(_, state, attempts, _, next_at)] = _outbox(conn, oid)
    assert state == "failed" and attempts == 1 and next_at > datetime.now(UTC)


def test_quiet_hours_hold_the_sms_until_morning_and_email_goes_at_once(world, sims, clients, config):
    conn = world
    oid = f.order(conn, customer_phone="+79161230000", customer_email="night@example.ru")
    night = datetime.now(UTC).astimezone(nt.ZoneInfo("Europe/Moscow")).replace(hour=23, minute=30)
    res = nt.plan(conn, config, now=night.astimezone(UTC))
    assert res.created == 2 and res.released == 1
    sms, email = sorted(notifications(conn, oid), key=lambda n: n["channel"] != "sms")
    assert sms["status"] == "queued" and sms["reason"] == "quiet hours: held until 09:00 Europe/Moscow"
    morning = (night + timedelta(days=1)).replace(hour=9, minute=0, second=0, microsecond=0)
    assert sms["not_before"] == morning.astimezone(UTC)
    assert drain_outbox(conn, clients, effects=("notify.customer",)).done == 1
    assert sms_sent(sims) == [] and len(mailbox(sims)) == 1
    # the morning comes (the row's time is moved, not the clock): the SMS is handed over and sent
    conn.execute(
        "UPDATE oms.notifications SET not_before = now() - interval '1 second' WHERE channel = 'sms'"
    )
    assert nt.release_due(conn) == 1
    assert drain_outbox(conn, clients, effects=("notify.customer",)).done == 1
    assert len(sms_sent(sims, "79161230000")) == 1
    assert {n["status"] for n in notifications(conn, oid)} == {"sent"}


def test_an_invalid_phone_is_suppressed_with_the_reason_and_the_batch_goes_on(world, sims, clients, config):
    conn = world
    bad = f.order(conn, customer_phone="12-34", customer_email="not-an-email")
    good = f.order(conn, customer_phone="+79165550000", customer_email=None)
    res = nt.plan(conn, config, now=NOON)
    assert res.created == 3 and res.by_status == {"suppressed": 2, "queued": 1}
    reasons = {n["channel"]: (n["status"], n["reason"]) for n in notifications(conn, bad)}
    assert reasons == {
        "sms": ("suppressed", "invalid phone number"),
        "email": ("suppressed", "invalid e-mail address"),
    }
    assert drain_outbox(conn, clients, effects=("notify.customer",)).done == 1
    assert [n["status"] for n in notifications(conn, good)] == ["sent"]
    assert [m["to"] for m in sms_sent(sims)] == ["79165550000"]


def test_no_balance_fails_with_the_gateway_text_and_is_retried_with_backoff(world, sims, clients, config):
    conn = world
    httpx.post(sims.urls["sms"] + "/_sim/sms/balance", json={"balance": 0})
    oid = f.order(conn, customer_phone="+79160000001", customer_email=None)
    nt.plan(conn, config, now=NOON)
    res = drain_outbox(conn, clients, effects=("notify.customer",), backoff_seconds=30)
    assert res.failed == 1
    [n] = notifications(conn, oid)
    assert n["status"] == "failed" and n["reason"] == "Не хватает средств на лицевом счету"
    [(_, state, attempts, last_error, next_at)] = _outbox(conn, oid)
    assert state == "failed" and attempts == 1 and "status_code 201" in last_error
    assert next_at > datetime.now(UTC) + timedelta(seconds=20)  # back-off: not due again at once
    assert drain_outbox(conn, clients, effects=("notify.customer",)).claimed == 0
    # money on the account; the back-off has run out (the row's time is moved): the retry sends it
    httpx.post(sims.urls["sms"] + "/_sim/sms/balance", json={"balance": 100})
    conn.execute("UPDATE oms.outbox SET next_attempt_at = now() WHERE effect = 'notify.customer'")
    assert drain_outbox(conn, clients, effects=("notify.customer",)).done == 1
    [n] = notifications(conn, oid)
    assert n["status"] == "sent" and n["reason"] is None and n["attempts"] == 2
    assert len(sms_sent(sims)) == 1


def test_delivery_status_103_is_recorded_and_a_failure_keeps_its_text(world, sims, clients, config):
    conn = world
    oid = f.order(conn, customer_phone="+79160000002", customer_email=None)
    nt.plan(conn, config, now=NOON)
    drain_outbox(conn, clients, effects=("notify.customer",))
    assert svc.poll_sms_statuses(conn, clients) == {"delivered": 0, "failed": 0, "pending": 1}
    sims.advance(30)  # the gateway's clock: the message reaches the phone
    assert svc.poll_sms_statuses(conn, clients) == {"delivered": 1, "failed": 0, "pending": 0}
    [n] = notifications(conn, oid)
    assert n["status"] == "delivered" and n["delivered_at"] is not None
    assert conn.execute("SELECT provider_status FROM oms.notifications").fetchone()[0] == "103"
    # a message the operator could not deliver: failed with the gateway's words
    sims["sms"].fail_share = 1.0
    oid2 = f.order(conn, customer_phone="+79160000003", customer_email=None)
    nt.plan(conn, config, now=NOON)
    drain_outbox(conn, clients, effects=("notify.customer",))
    sims.advance(30)
    assert svc.poll_sms_statuses(conn, clients)["failed"] == 1
    [n2] = notifications(conn, oid2)
    assert n2["status"] == "failed" and n2["reason"].startswith("Не может быть доставлено")


def test_marketplace_orders_are_not_notified(world, sims, clients, config):
    conn = world
    oid = f.order(conn, channel_code="ozon", customer_phone="+79160000004", customer_email="m@example.ru")
    cancel_orders(conn, [oid], reason="buyer cancelled", actor="test")
    res = nt.plan(conn, config, now=NOON)
    assert res.events == 2 and res.created == 0
    assert notifications(conn, oid) == [] and _outbox(conn, oid) == []


def test_opt_outs_of_a_customer_and_of_an_order_are_respected(world, sims, clients, config):
    conn = world
    nt.opt_out(conn, actor="ops:test", phone="8 916 000-00-05", channel="sms", reason="asked by phone")
    first = f.order(conn, customer_phone="+79160000005", customer_email="opt@example.ru")
    nt.plan(conn, config, now=NOON)
    by_channel = {n["channel"]: n for n in notifications(conn, first)}
    assert by_channel["sms"]["status"] == "suppressed"
    assert by_channel["sms"]["reason"] == "opted out: asked by phone"
    assert by_channel["email"]["status"] == "queued"
    # an order opted out after its notification was planned: the drain suppresses it instead of sending
    nt.opt_out(conn, actor="ops:test", order_id=first, channel="email")
    assert drain_outbox(conn, clients, effects=("notify.customer",)).done == 1
    by_channel = {n["channel"]: n for n in notifications(conn, first)}
    assert by_channel["email"]["status"] == "suppressed" and by_channel["email"]["reason"] == "opted out"
    assert mailbox(sims) == [] and sms_sent(sims) == []


def test_shipped_ready_for_pickup_cancelled_and_refund_say_what_happened(world, sims, clients, config):
    conn = world
    oid, sid = f.shipped_order(conn, [("SKU-1", 1)], customer_email=None, customer_phone="+79160000006")
    # the carrier's booking gave the parcel its tracking number
    conn.execute("UPDATE oms.shipments SET tracking_number = '1234567890' WHERE shipment_id = %s", (sid,))
    ff.hand_over(conn, [sid], actor="cdek")
    pick_oid, pick_sid = f.shipped_order(
        conn, [("SKU-2", 1)], carrier="self", delivery_method="store_pickup",
        pickup_location_code="ST-MSK-1", customer_email=None, customer_phone="+79160000007",
    )  # fmt: skip
    ff.mark_ready_for_pickup(conn, [pick_sid], actor="store")
    cancelled = f.order(conn, customer_email=None, customer_phone="+79160000008")
    cancel_orders(conn, [cancelled], reason="customer asked", actor="test")
    nt.plan(conn, config, now=NOON)
    bodies = {
        (n["order_id"], n["trigger"]): n["body"]
        for o in (oid, pick_oid, cancelled)
        for n in notifications(conn, o)
    }
    assert "СДЭК" in bodies[(oid, "shipped")] or "cdek" in bodies[(oid, "shipped")].lower()
    assert "трек-номер 1234567890" in bodies[(oid, "shipped")]
    assert "ST-MSK-1, Москва" in bodies[(pick_oid, "ready_for_pickup")]
    assert "отменён" in bodies[(cancelled, "cancelled")]
    assert drain_outbox(conn, clients, effects=("notify.customer",)).done == len(bodies)
