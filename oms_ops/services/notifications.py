"""Customer notifications, the use cases: the worker's step (events → notifications → outbox, delivery
statuses) and the delivery of one ``notify.customer`` effect through the SMS gateway or the mail server.

Exactly once: the outbox drain skips an effect already in ``connectors.effect_log``; for the window between a
gateway call and that record, :func:`deliver` looks at the notification row first — a message already sent
under this outbox key (its ``sms_id`` / ``Message-ID`` recorded) is not sent again. SMS.ru has no idempotency
key of its own, so this row is what stops a replay from sending a second SMS.

Failures: a refusal that trying again cannot fix (an invalid phone the gateway refuses, a recipient the mail
server refuses) marks the notification ``failed`` with the gateway's text and completes the effect (outcome
``failed``: kept for ops, not retried); anything else (no balance on the SMS account, wrong credentials, the
server down) marks it ``failed`` with the text and raises, so the outbox retries with exponential back-off —
the next successful attempt turns it ``sent``.
"""

from __future__ import annotations

import logging
from typing import Any

import psycopg

from oms_ops import notifications as nt
from oms_ops.business_config import BusinessConfig
from oms_ops.connectors.config import NotConfigured
from oms_ops.connectors.email import EmailClient, MailRefused, build_message
from oms_ops.connectors.http import ConnectorError
from oms_ops.connectors.sms import SmsClient, SmsRefused
from oms_ops.outbox import OutboxItem
from oms_ops.services.clients import Clients

log = logging.getLogger("oms.services.notifications")
#: the ops use cases are the domain's functions themselves (one transaction each): entry points (CLI, API,
#: dashboards) reach them here
list_notifications = nt.list_notifications
resend = nt.resend
opt_out = nt.opt_out
plan = nt.plan
STATUSES = nt.STATUSES
RESENDABLE = nt.RESENDABLE
#: system → its connector (the clients registry builds the channels', the carrier's and the WMS's)
CONNECTORS = {"sms": SmsClient, "smtp": EmailClient}
SYSTEM_OF = {"sms": "sms", "email": "smtp"}


def client_of(clients: Clients, system: str):
    """The SMS or mail client, built from the connector settings on first use and kept in ``clients``."""
    try:
        return clients.get(system)
    except KeyError:  # not one of the registry's factories: ours
        client = CONNECTORS[system].from_endpoint(clients.settings.endpoint(system), **clients.client_kw)
        clients.put(system, client)
        return client


def deliver(conn: psycopg.Connection, clients: Clients, item: OutboxItem) -> tuple[str, str | None, Any]:
    """Deliver one ``notify.customer`` effect of a notification (the outbox drain's dispatch)."""
    n = nt.load(conn, int(item.payload["notification_id"]))
    result = {"notification_id": n.notification_id, "channel": n.channel}
    if n.outbox_key != item.idempotency_key:
        return "skipped", "superseded by a resend", result
    if n.provider_id and n.status in ("sent", "delivered"):
        return "sent", "already sent under this key (replay)", {**result, "provider_id": n.provider_id}
    if n.status == "suppressed":
        return "skipped", n.reason, result
    reason = nt.opted_out_reason(conn, n)
    if reason is not None:
        nt.mark(conn, n.notification_id, "suppressed", reason=f"opted out{': ' + reason if reason else ''}")
        return "skipped", "opted out", result
    try:
        provider_id = _send(clients, n, item.idempotency_key)
    except (SmsRefused, MailRefused) as exc:
        text = exc.status_text if isinstance(exc, SmsRefused) else exc.cause
        code = str(exc.status_code) if isinstance(exc, SmsRefused) else None
        nt.mark(conn, n.notification_id, "failed", reason=text, provider_status=code, attempt=True)
        if exc.permanent:
            return "failed", text, {**result, "status_code": code}
        raise
    except (ConnectorError, NotConfigured) as exc:
        nt.mark(conn, n.notification_id, "failed", reason=str(exc)[:500], attempt=True)
        raise
    nt.mark(
        conn,
        n.notification_id,
        "sent",
        provider_id=provider_id,
        provider_status="100" if n.channel == "sms" else None,
        attempt=True,
    )
    return "sent", None, {**result, "provider_id": provider_id}


def _send(clients: Clients, n: nt.Notification, key: str) -> str:
    if n.channel == "sms":
        return client_of(clients, "sms").send(n.recipient or "", n.body)
    mail: EmailClient = client_of(clients, "smtp")
    msg = build_message(
        sender=mail.sender,
        to=n.recipient or "",
        subject=n.subject or n.order_number,
        text=n.body,
        html=nt._render_html(n.body),
        message_id=nt.message_id(key, mail.sender),
    )
    return mail.send(msg)


def poll_sms_statuses(conn: psycopg.Connection, clients: Clients, *, batch: int = 100) -> dict[str, int]:
    """Ask the gateway how the SMS sent and not yet final are doing (``/sms/status``, ``batch`` ids per call)
    and record the answers."""
    out = {"delivered": 0, "failed": 0, "pending": 0}
    ids = nt.sms_awaiting_status(conn)
    if not ids:
        return out
    client = client_of(clients, "sms")
    for i in range(0, len(ids), batch):
        statuses = client.statuses(ids[i : i + batch])
        with conn.transaction():
            got = nt.record_sms_statuses(
                conn, [(s.sms_id, s.status_code, s.status_text) for s in statuses.values()]
            )
        for k, v in got.items():
            out[k] += v
    return out


def run(conn: psycopg.Connection, clients: Clients, config: BusinessConfig) -> dict[str, Any]:
    """The worker's ``notifications`` step: new events → notifications → outbox (the outbox step sends
    them), then the delivery statuses of SMS sent. Returns what moved (empty when nothing did)."""
    res = nt.plan(conn, config)
    meta: dict[str, Any] = {}
    if res.events or res.released:
        meta.update(res.metadata())
    if clients.settings.configured("sms"):
        try:
            polled = poll_sms_statuses(conn, clients)
        except ConnectorError as exc:  # the next turn asks again
            log.warning("sms status: %s", exc)
            polled = {"error": str(exc)}
        if any(polled.values()):
            meta["sms_status"] = polled
    return meta
