"""The lookup page's customer notifications panel: the order's SMS / e-mail with their status, recipients
masked for managers (who get no button), and ops resend one through the OMS API (the dashboards' login only
reads)."""

from __future__ import annotations

from datetime import UTC, datetime

from oms_ops import notifications as nt
from tests.core import factories as f
from tests.dashboards.conftest import MANAGER, OPS, frame, page

NOON = datetime(2025, 11, 26, 9, 0, tzinfo=UTC)


def _lookup(conn, oid, user):
    number = conn.execute("SELECT order_number FROM oms.orders WHERE order_id = %s", (oid,)).fetchone()[0]
    at = page("lookup", user).run()
    at.selectbox(key="lookup_mode").select("Order number").run()
    at.text_input(key="lookup_text").input(number).run()
    assert not at.exception
    return at


def _sent_sms(conn) -> tuple[int, int]:
    f.world(conn)
    oid = f.order(conn, customer_phone="+7 916 123-45-67", customer_email=None)
    nt.plan(conn, _config(), now=NOON)
    [nid] = [n["notification_id"] for n in nt.list_notifications(conn, order_id=oid)]
    # the gateway accepted it (the drain's bookkeeping; the delivery itself is tested in tests/notifications)
    nt.mark(conn, nid, "sent", provider_id="000000-10000001", provider_status="100", attempt=True)
    return oid, nid


def _config():
    from oms_ops.business_config import load_business_config

    return load_business_config()


def test_managers_see_the_notification_masked_and_no_button(dash_url, conn):
    oid, _ = _sent_sms(conn)
    at = _lookup(conn, oid, MANAGER)
    table = frame(at, "recipient", "status")
    assert list(table["recipient"]) == ["+7 *** ***-**-67"] and list(table["status"]) == ["sent"]
    assert list(table["text"]) == ["***"]
    assert not [b for b in at.button if b.key == "notification_resend"]


def test_ops_resend_a_notification_from_the_lookup_page(dash_url, conn):
    oid, nid = _sent_sms(conn)
    at = _lookup(conn, oid, OPS)
    table = frame(at, "recipient", "status")
    assert list(table["recipient"]) == ["79161234567"] and "принят" in table["text"][0]
    at.button(key="notification_resend").click().run()
    assert not at.exception
    assert any(f"Notification {nid} queued again" in s.value for s in at.success)
    status, key = conn.execute(
        "SELECT status, outbox_key FROM oms.notifications WHERE notification_id = %s", (nid,)
    ).fetchone()
    assert status == "queued" and key == nt.outbox_key(nid, 1)
    assert (
        conn.execute("SELECT count(*) FROM oms.outbox WHERE idempotency_key = %s", (key,)).fetchone()[0] == 1
    )
