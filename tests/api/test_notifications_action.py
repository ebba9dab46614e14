"""The API actions of customer notifications (the Lookup page's resend button): run as the signed-in ops user,
refused for managers; a suppressed notification cannot be resent (400 naming it and its status)."""

from __future__ import annotations

from datetime import UTC, datetime

from oms_ops import notifications as nt
from oms_ops.business_config import load_business_config
from tests.api.conftest import sign_in
from tests.api.test_change_actions import post
from tests.core import factories as f

NOON = datetime(2025, 11, 26, 9, 0, tzinfo=UTC)


def test_ops_resend_and_opt_out_through_the_api_and_managers_may_not(client, conn):
    f.world(conn)
    good = f.order(conn, customer_phone="+79161234567", customer_email=None)
    bad = f.order(conn, customer_phone="12", customer_email=None)
    nt.plan(conn, load_business_config(), now=NOON)
    [sent] = nt.list_notifications(conn, order_id=good)
    nt.mark(conn, sent["notification_id"], "sent", provider_id="000000-10000001", attempt=True)
    [suppressed] = nt.list_notifications(conn, order_id=bad)
    body = {"notification_id": sent["notification_id"]}
    assert post(client, "notifications.resend", sign_in(client, "maria"), body).status_code == 403
    token = sign_in(client, "olga")
    res = post(client, "notifications.resend", token, body)
    assert res.status_code == 200, res.text
    assert res.json()["result"]["outbox_key"] == nt.outbox_key(sent["notification_id"], 1)
    refused = post(client, "notifications.resend", token, {"notification_id": suppressed["notification_id"]})
    assert refused.status_code == 400 and refused.json()["error"] == "refused"
    assert f"notification {suppressed['notification_id']} is suppressed" in refused.json()["detail"]
    opt = post(
        client, "notifications.opt_out", token, {"order_id": good, "channel": "sms", "reason": "asked"}
    )
    assert opt.status_code == 200, opt.text
    assert conn.execute("SELECT created_by, channel FROM oms.notification_opt_outs").fetchone() == (
        "dashboard:olga",
        "sms",
    )
