"""Customer notifications: what happens to an order is told to its customer by SMS and e-mail.

Why from the event log: every state change is already an ``oms.order_events`` row written in the change's own
transaction, so the notifications read that log (a cursor in ``oms.notification_scan``) instead of every
service calling a "notify" function — a new way to ship or cancel cannot forget the customer, and nothing is
sent inside the transaction that might roll back. Which events notify, in which words and by which channel
is policy (``notifications:`` in ``config/business.yaml``):

========================  ========================================================================
trigger                   event
========================  ========================================================================
``order_accepted``        an order is created (``order``: NULL → new)
``shipped``               a parcel is handed to the carrier (``shipment`` → handed_over): carrier, tracking
``ready_for_pickup``      a parcel waits at the pickup point / store (``shipment`` → ready_for_pickup)
``delivered``             the order is delivered or picked up (``order`` → delivered | picked_up)
``cancelled``             the order is cancelled (``order`` → cancelled)
``refund_succeeded``      money went back (``refund`` → succeeded): the refund's amount
========================  ========================================================================

:func:`plan` turns new events into ``oms.notifications`` rows — one per (order, event, channel), so a replay
never makes a second one — rendered from the templates, or ``suppressed`` with the reason (no contact, an
invalid phone or e-mail, opted out) so one bad row never stops the batch. Orders of marketplaces are not
notified (Ozon and Wildberries tell their own buyers). An SMS that falls in the quiet hours of the customer's
time zone stays ``queued`` until they end. :func:`release_due` hands due rows to the outbox (effect
``notify.customer``, key ``notify.customer:notification:<id>``); the drain sends them
(``oms_ops/services/notifications.py``) and :func:`record_sms_statuses` follows the gateway's delivery reports.
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from datetime import time as dtime
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import psycopg

from oms_ops import outbox
from oms_ops.business_config import BusinessConfig, NotificationPolicy
from oms_ops.db import run_in_transaction
from oms_ops.errors import NotFound, ValidationFailed
from oms_ops.outbox import dumps

EFFECT = "notify.customer"
CHANNELS = ("sms", "email")
STATUSES = ("queued", "sent", "delivered", "failed", "suppressed")
#: an event committed late (a long transaction took its id earlier) is still found if it is this recent
LOOKBACK = timedelta(minutes=10)
LOOKBACK_IDS = 5000
PHONE_RE = re.compile(r"^7\d{10}$")
EMAIL_RE = re.compile(
    r"^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)+$"
)
#: what the customer is told a carrier is called when the configuration has no name for it
CARRIER_FALLBACK = {"self": "курьер магазина"}


def outbox_key(notification_id: int, resend: int = 0) -> str:
    base = f"{EFFECT}:notification:{notification_id}"
    return f"{base}:resend:{resend}" if resend else base


def message_id(key: str, sender: str) -> str:
    """The e-mail ``Message-ID`` of an outbox key: the same effect delivered twice carries the same id, a
    resend (another key) a related one (``…notification.12.resend.1@…``)."""
    domain = sender.rpartition("@")[2] or "oms.local"
    return f"<{re.sub(r'[^A-Za-z0-9.-]', '.', key)}@{domain}>"


# -- pure rules ---------------------------------------------------------------------------------------------------
def normalize_phone(value: str | None) -> str | None:
    """A Russian mobile number as the gateway wants it (``7XXXXXXXXXX``), or None if it is not one. Accepts
    ``+7 (999) 123-45-67``, ``8 999 123 45 67``, ``9991234567``."""
    if not value:
        return None
    digits = re.sub(r"\D", "", value)
    if len(digits) == 10 and digits.startswith("9"):
        digits = "7" + digits
    elif len(digits) == 11 and digits.startswith("8"):
        digits = "7" + digits[1:]
    return digits if PHONE_RE.match(digits) and digits[1] == "9" else None


def normalize_email(value: str | None) -> str | None:
    if not value:
        return None
    value = value.strip()
    return value.lower() if len(value) <= 254 and EMAIL_RE.match(value) else None


def format_amount(amount: Decimal | float | str | None, currency: str = "RUB") -> str:
    """``1 234,50 ₽`` (Russian grouping and decimal comma; whole roubles without kopecks)."""
    if amount is None:
        return ""
    value = Decimal(str(amount)).quantize(Decimal("0.01"))
    whole, _, frac = f"{value:,.2f}".partition(".")
    text = whole.replace(",", "\u00a0") + ("" if frac == "00" else "," + frac)
    return f"{text}\u00a0{'₽' if currency == 'RUB' else currency}"


def quiet_until(now: datetime, tz: ZoneInfo, start: dtime, end: dtime) -> datetime | None:
    """When the quiet hours holding an SMS at ``now`` end (UTC), or None if ``now`` is not in them."""
    local = now.astimezone(tz)
    t = local.time()
    inside = (start <= t or t < end) if start > end else (start <= t < end)
    if not inside:
        return None
    day = local.date() if t < end else local.date() + timedelta(days=1)
    return datetime.combine(day, end, tzinfo=tz).astimezone(UTC)


@dataclass(frozen=True)
class EventRow:
    """One order event that may notify, with what the templates need."""

    event_id: int
    order_id: int
    trigger: str
    order_number: str
    channel_code: str
    channel_kind: str
    customer_name: str | None
    phone: str | None
    email: str | None
    region: str | None
    amount: Decimal | None
    currency: str
    carrier_code: str | None
    tracking_number: str | None
    pickup_point: str | None


@dataclass(frozen=True)
class Planned:
    event_id: int
    order_id: int
    trigger: str
    channel: str
    recipient: str | None
    subject: str | None
    body: str
    body_html: str | None
    status: str
    reason: str | None
    #: quiet hours: not handed to the outbox before this time (None: at once)
    not_before: datetime | None


def _region_tz(policy: NotificationPolicy, config: BusinessConfig, region: str | None) -> ZoneInfo:
    if region:
        key = region.strip().casefold()
        for r in config.regions:
            if key in {r.code.casefold(), r.name.casefold(), *(a.casefold() for a in r.aliases)}:
                if r.code in policy.region_timezones:
                    return ZoneInfo(policy.region_timezones[r.code])
                break
    return ZoneInfo(policy.default_timezone)


def _channels_for(policy: NotificationPolicy, phone: str | None, email: str | None) -> list[str]:
    """The channels of one notification: those the policy asks for that the order has a contact for (an
    invalid contact still counts: it is suppressed with the reason, visibly, rather than skipped)."""
    has = {"sms": bool(phone and phone.strip()), "email": bool(email and email.strip())}
    mode = policy.channels
    if mode == "both":
        return [c for c in CHANNELS if has[c]]
    if mode in ("sms_only", "email_only"):
        return [mode.removesuffix("_only")]
    first, second = ("sms", "email") if mode == "sms_first" else ("email", "sms")
    return [first] if has[first] or not has[second] else [second]


def _render_html(text: str) -> str:
    paragraphs = [p for p in text.split("\n\n") if p.strip()]
    return "".join(f"<p>{html.escape(p).replace(chr(10), '<br>')}</p>" for p in paragraphs)


def decide(
    ev: EventRow,
    config: BusinessConfig,
    now: datetime,
    opted_out: Mapping[str, str | None] | None = None,
) -> list[Planned]:
    """The notifications of one event (pure). ``opted_out``: channel → reason for the channels this order or
    customer opted out of. An event the policy does not notify about (a marketplace order, a trigger without
    a template, notifications off) gives nothing."""
    policy = config.notifications
    tpl = policy.templates.get(ev.trigger)
    if not policy.enabled or tpl is None or not tpl.enabled:
        return []
    if ev.channel_kind in policy.skip_channel_kinds or ev.channel_code in policy.skip_channels:
        return []
    carrier_name = next((c.name for c in config.carriers if c.code == ev.carrier_code), None)
    values = {
        "order_number": ev.order_number,
        "shop_name": policy.shop_name,
        "customer_name": (ev.customer_name or "").strip() or "покупатель",
        "carrier": carrier_name or CARRIER_FALLBACK.get(ev.carrier_code or "", ev.carrier_code or ""),
        "tracking_number": ev.tracking_number or "—",
        "pickup_point": ev.pickup_point or "—",
        "amount": format_amount(ev.amount, ev.currency),
    }
    opted_out = opted_out or {}
    out: list[Planned] = []
    for channel in _channels_for(policy, ev.phone, ev.email):
        text = tpl.sms if channel == "sms" else tpl.email_body
        if text is None:
            continue
        body = text.format(**values)
        subject = (tpl.email_subject or "{order_number}").format(**values) if channel == "email" else None
        raw = ev.phone if channel == "sms" else ev.email
        recipient = normalize_phone(raw) if channel == "sms" else normalize_email(raw)
        status, reason, not_before = "queued", None, None
        if not raw:
            status, reason = "suppressed", f"no {'phone' if channel == 'sms' else 'e-mail'} on the order"
        elif recipient is None:
            status, reason = (
                "suppressed",
                f"invalid {'phone number' if channel == 'sms' else 'e-mail address'}",
            )
            recipient = raw.strip()[:254]
        elif channel in opted_out:
            status, reason = (
                "suppressed",
                f"opted out{': ' + opted_out[channel] if opted_out[channel] else ''}",
            )
        elif channel == "sms" and policy.quiet_hours is not None:
            tz = _region_tz(policy, config, ev.region)
            q = policy.quiet_hours
            until = quiet_until(now, tz, q.start, q.end)
            if until is not None:
                not_before = until
                reason = f"quiet hours: held until {q.end.strftime('%H:%M')} {tz.key}"
        out.append(
            Planned(
                ev.event_id, ev.order_id, ev.trigger, channel, recipient, subject, body,
                _render_html(body) if channel == "email" else None, status, reason, not_before,
            )
        )  # fmt: skip
    return out


# -- the scan: events → notifications ---------------------------------------------------------------------------
_EVENTS_SQL = """
SELECT e.event_id, e.order_id,
       CASE WHEN e.entity = 'order' AND e.from_state IS NULL THEN 'order_accepted'
            WHEN e.entity = 'order' AND e.to_state IN ('delivered', 'picked_up') THEN 'delivered'
            WHEN e.entity = 'order' THEN 'cancelled'
            WHEN e.entity = 'shipment' AND e.to_state = 'handed_over' THEN 'shipped'
            WHEN e.entity = 'shipment' THEN 'ready_for_pickup'
            ELSE 'refund_succeeded' END AS trigger,
       o.order_number, o.channel_code, ch.kind, o.customer_name, o.customer_phone, o.customer_email, o.region,
       CASE WHEN e.entity = 'refund' THEN r.amount ELSE o.total_amount END,
       coalesce(r.currency, o.currency),
       s.carrier_code, s.tracking_number,
       CASE WHEN pl.location_code IS NOT NULL THEN pl.name || ', ' || pl.city END
FROM oms.order_events e
JOIN oms.orders o ON o.order_id = e.order_id
JOIN oms.channels ch ON ch.channel_code = o.channel_code
LEFT JOIN oms.shipments s ON e.entity = 'shipment' AND s.shipment_id = e.entity_id
LEFT JOIN oms.refunds r ON e.entity = 'refund' AND r.refund_id = e.entity_id
LEFT JOIN oms.locations pl ON pl.location_code = coalesce(s.pickup_location_code, o.pickup_location_code)
WHERE e.event_id > %(floor)s
  AND (e.event_id > %(cursor)s
       OR (e.event_id > %(cursor)s - %(lookback_ids)s AND e.created_at > now() - %(lookback)s))
  AND ((e.entity = 'order' AND (e.from_state IS NULL OR e.to_state IN ('delivered', 'picked_up', 'cancelled')))
       OR (e.entity = 'shipment' AND e.to_state IN ('handed_over', 'ready_for_pickup'))
       OR (e.entity = 'refund' AND e.to_state = 'succeeded'))
ORDER BY e.event_id
LIMIT %(limit)s
"""


@dataclass
class PlanResult:
    events: int = 0
    created: int = 0
    by_status: dict[str, int] = field(default_factory=dict)
    released: int = 0

    def metadata(self) -> dict[str, Any]:
        return {
            "events": self.events,
            "created": self.created,
            "by_status": dict(self.by_status),
            "released": self.released,
        }


def _opt_outs(conn: psycopg.Connection, events: Sequence[EventRow]) -> dict[int, dict[str, str | None]]:
    """order_id → {channel: reason} of the opt-outs that cover each event's order or customer."""
    if not events:
        return {}
    rows = conn.execute(
        """SELECT order_id, phone, email, channel, reason FROM oms.notification_opt_outs
           WHERE order_id = ANY(%s) OR phone = ANY(%s) OR email = ANY(%s)""",
        (
            sorted({e.order_id for e in events}),
            sorted({p for e in events if (p := normalize_phone(e.phone))}),
            sorted({m for e in events if (m := normalize_email(e.email))}),
        ),
    ).fetchall()
    out: dict[int, dict[str, str | None]] = {}
    for e in events:
        phone, email = normalize_phone(e.phone), normalize_email(e.email)
        for order_id, o_phone, o_email, channel, reason in rows:
            if order_id == e.order_id or (o_phone and o_phone == phone) or (o_email and o_email == email):
                for c in (channel,) if channel else CHANNELS:
                    out.setdefault(e.order_id, {})[c] = reason
    return out


def plan(
    conn: psycopg.Connection, config: BusinessConfig, *, limit: int = 2000, now: datetime | None = None
) -> PlanResult:
    """Turn the order events since the last scan into notifications (one transaction), then hand the due
    ones to the outbox (:func:`release_due`). Safe to run by several workers at once (the scan row is
    locked) and again over the same events (``UNIQUE (order_id, event_id, channel)``)."""
    res = PlanResult()
    with conn.transaction():
        cursor, floor = conn.execute(
            "SELECT last_event_id, floor_event_id FROM oms.notification_scan FOR UPDATE"
        ).fetchone()
        rows = conn.execute(
            _EVENTS_SQL,
            {
                "floor": floor,
                "cursor": cursor,
                "lookback_ids": LOOKBACK_IDS,
                "lookback": LOOKBACK,
                "limit": limit,
            },
        ).fetchall()
        events = [EventRow(*r) for r in rows]
        at = now or conn.execute("SELECT now()").fetchone()[0]
        opted = _opt_outs(conn, events)
        planned = [p for ev in events for p in decide(ev, config, at, opted.get(ev.order_id))]
        if planned:
            doc = dumps(
                [
                    {
                        "o": p.order_id, "e": p.event_id, "t": p.trigger, "c": p.channel, "r": p.recipient,
                        "s": p.subject, "b": p.body, "st": p.status, "re": p.reason, "nb": p.not_before,
                    }
                    for p in planned
                ]
            )  # fmt: skip
            created = conn.execute(
                """INSERT INTO oms.notifications (order_id, event_id, trigger, channel, recipient, template,
                       subject, body, status, reason, not_before)
                   SELECT v.o, v.e, v.t, v.c, v.r, v.t, v.s, v.b, v.st, v.re, coalesce(v.nb, now())
                   FROM json_to_recordset(%s::json) AS v(o bigint, e bigint, t text, c text, r text, s text,
                        b text, st text, re text, nb timestamptz)
                   ON CONFLICT (order_id, event_id, channel) DO NOTHING
                   RETURNING status""",
                (doc,),
            ).fetchall()
            res.created = len(created)
            for (status,) in created:
                res.by_status[status] = res.by_status.get(status, 0) + 1
        res.events = len(events)
        newest = max((e.event_id for e in events), default=cursor)
        if len(events) < limit:  # everything committed so far was seen
            newest = max(
                newest, conn.execute("SELECT coalesce(max(event_id), 0) FROM oms.order_events").fetchone()[0]
            )
        conn.execute(
            "UPDATE oms.notification_scan SET last_event_id = greatest(last_event_id, %s), scanned_at = now()",
            (newest,),
        )
    res.released = release_due(conn)
    return res


def release_due(conn: psycopg.Connection, *, limit: int = 1000) -> int:
    """Hand queued notifications whose time has come (quiet hours over) to the outbox (one transaction).
    Returns how many."""
    with conn.transaction():
        rows = conn.execute(
            """WITH due AS (
                   SELECT notification_id FROM oms.notifications
                   WHERE status = 'queued' AND outbox_key IS NULL AND not_before <= now()
                   ORDER BY notification_id LIMIT %s FOR UPDATE SKIP LOCKED)
               UPDATE oms.notifications n
               SET outbox_key = %s || n.notification_id,
                   reason = CASE WHEN n.reason LIKE 'quiet hours:%%' THEN NULL ELSE n.reason END,
                   updated_at = now()
               FROM due WHERE n.notification_id = due.notification_id
               RETURNING n.notification_id, n.order_id, n.channel, n.trigger, n.outbox_key""",
            (limit, f"{EFFECT}:notification:"),
        ).fetchall()
        outbox.enqueue_many(
            conn,
            [
                (EFFECT, {"notification_id": nid, "order_id": oid, "channel": ch, "template": trig}, key)
                for nid, oid, ch, trig, key in rows
            ],
        )
    return len(rows)


# -- delivery bookkeeping (the drain calls these around the gateway call) ------------------------------------------
@dataclass(frozen=True)
class Notification:
    notification_id: int
    order_id: int
    channel: str
    recipient: str | None
    subject: str | None
    body: str
    status: str
    reason: str | None
    outbox_key: str | None
    provider_id: str | None
    attempts: int
    order_number: str
    customer_phone: str | None
    customer_email: str | None


def load(conn: psycopg.Connection, notification_id: int) -> Notification:
    row = conn.execute(
        """SELECT n.notification_id, n.order_id, n.channel, n.recipient, n.subject, n.body, n.status, n.reason,
                  n.outbox_key, n.provider_id, n.attempts, o.order_number, o.customer_phone, o.customer_email
           FROM oms.notifications n JOIN oms.orders o USING (order_id) WHERE n.notification_id = %s""",
        (notification_id,),
    ).fetchone()
    if row is None:
        raise NotFound("notification", [notification_id])
    return Notification(*row)


def opted_out_reason(conn: psycopg.Connection, n: Notification) -> str | None:
    """The reason of an opt-out covering this notification now (asked after it was planned), else None."""
    row = conn.execute(
        """SELECT coalesce(reason, '') FROM oms.notification_opt_outs
           WHERE (channel IS NULL OR channel = %(ch)s)
             AND (order_id = %(o)s OR phone = %(p)s OR email = %(m)s)
           ORDER BY opt_out_id LIMIT 1""",
        {
            "ch": n.channel,
            "o": n.order_id,
            "p": normalize_phone(n.customer_phone),
            "m": normalize_email(n.customer_email),
        },
    ).fetchone()
    return None if row is None else row[0]


def mark(
    conn: psycopg.Connection,
    notification_id: int,
    status: str,
    *,
    reason: str | None = None,
    provider_id: str | None = None,
    provider_status: str | None = None,
    attempt: bool = False,
) -> None:
    """Record what a delivery attempt did (own transaction): status, reason, the gateway's id and code."""
    if status not in STATUSES:
        raise ValidationFailed(f"unknown notification status {status!r}")
    with conn.transaction():
        conn.execute(
            """UPDATE oms.notifications SET status = %(s)s, reason = %(r)s,
                   provider_id = coalesce(%(pid)s, provider_id),
                   provider_status = coalesce(%(ps)s, provider_status),
                   attempts = attempts + %(a)s,
                   sent_at = CASE WHEN %(s)s = 'sent' THEN now() ELSE sent_at END,
                   delivered_at = CASE WHEN %(s)s = 'delivered' THEN now() ELSE delivered_at END,
                   failed_at = CASE WHEN %(s)s = 'failed' THEN now() ELSE failed_at END,
                   updated_at = now()
               WHERE notification_id = %(id)s""",
            {
                "s": status,
                "r": reason,
                "pid": provider_id,
                "ps": provider_status,
                "a": 1 if attempt else 0,
                "id": notification_id,
            },
        )


def sms_awaiting_status(conn: psycopg.Connection, *, limit: int = 500) -> list[str]:
    """The gateway ids of SMS sent and not yet delivered or failed, oldest first."""
    return [
        r[0]
        for r in conn.execute(
            """SELECT provider_id FROM oms.notifications
               WHERE channel = 'sms' AND status = 'sent' AND provider_id IS NOT NULL
               ORDER BY notification_id LIMIT %s""",
            (limit,),
        ).fetchall()
    ]


def record_sms_statuses(conn: psycopg.Connection, reports: Iterable[tuple[str, int, str]]) -> dict[str, int]:
    """Apply the gateway's delivery reports ``(sms_id, status_code, status_text)`` — polled or from a callback
    — in one statement: 103 → delivered, 104–108/150 → failed with the text, others recorded as the last
    code. A report for a notification already delivered or failed changes nothing."""
    reports = list(reports)
    if not reports:
        return {"delivered": 0, "failed": 0, "pending": 0}
    doc = dumps([{"i": i, "c": c, "t": t} for i, c, t in reports])
    rows = conn.execute(
        """WITH v AS (SELECT * FROM json_to_recordset(%s::json) AS v(i text, c int, t text))
           UPDATE oms.notifications n
           SET provider_status = v.c::text,
               status = CASE WHEN v.c = 103 THEN 'delivered'
                             WHEN v.c IN (104, 105, 106, 107, 108, 150) THEN 'failed' ELSE n.status END,
               reason = CASE WHEN v.c IN (104, 105, 106, 107, 108, 150) THEN v.t ELSE n.reason END,
               delivered_at = CASE WHEN v.c = 103 THEN now() ELSE n.delivered_at END,
               failed_at = CASE WHEN v.c IN (104, 105, 106, 107, 108, 150) THEN now() ELSE n.failed_at END,
               updated_at = now()
           FROM v WHERE n.channel = 'sms' AND n.provider_id = v.i AND n.status = 'sent'
           RETURNING n.status""",
        (doc,),
    ).fetchall()
    out = {"delivered": 0, "failed": 0, "pending": 0}
    for (status,) in rows:
        out["pending" if status == "sent" else status] += 1
    return out


# -- ops: list, resend, opt out ---------------------------------------------------------------------------------
COLUMNS = (
    "notification_id", "order_id", "order_number", "trigger", "channel", "recipient", "status", "reason",
    "provider_id", "provider_status", "attempts", "subject", "body", "created_at", "not_before", "sent_at",
    "delivered_at", "failed_at",
)  # fmt: skip


def list_notifications(
    conn: psycopg.Connection, *, order_id: int | None = None, status: str | None = None, limit: int = 200
) -> list[dict[str, Any]]:
    """The notification log, newest first (one order's, or all; optionally of one status)."""
    rows = conn.execute(
        """SELECT n.notification_id, n.order_id, o.order_number, n.trigger, n.channel, n.recipient, n.status,
                  n.reason, n.provider_id, n.provider_status, n.attempts, n.subject, n.body, n.created_at,
                  n.not_before, n.sent_at, n.delivered_at, n.failed_at
           FROM oms.notifications n JOIN oms.orders o USING (order_id)
           WHERE (%(o)s::bigint IS NULL OR n.order_id = %(o)s) AND (%(s)s::text IS NULL OR n.status = %(s)s)
           ORDER BY n.notification_id DESC LIMIT %(l)s""",
        {"o": order_id, "s": status, "l": limit},
    ).fetchall()
    return [dict(zip(COLUMNS, r, strict=True)) for r in rows]


RESENDABLE = ("sent", "delivered", "failed")


def resend(conn: psycopg.Connection, notification_id: int, *, actor: str) -> dict[str, Any]:
    """Send a notification again (one transaction): a new outbox effect with its own key (``…:resend:N``), so
    the gateway sees a new message and the e-mail a new, related ``Message-ID``. Only sent, delivered or
    failed ones: a queued one is on its way, a suppressed one has no valid recipient (fix the order's
    contact; the next event notifies)."""

    def run(c: psycopg.Connection) -> dict[str, Any]:
        row = c.execute(
            "SELECT status, order_id, channel FROM oms.notifications WHERE notification_id = %s FOR UPDATE",
            (notification_id,),
        ).fetchone()
        if row is None:
            raise NotFound("notification", [notification_id])
        status, order_id, channel = row
        if status not in RESENDABLE:
            raise ValidationFailed(
                f"notification {notification_id} is {status}: only {', '.join(RESENDABLE)} ones can be resent"
            )
        n = c.execute(
            "SELECT count(*) FROM oms.outbox WHERE idempotency_key LIKE %s",
            (f"{outbox_key(notification_id)}:resend:%",),
        ).fetchone()[0]
        key = outbox_key(notification_id, n + 1)
        c.execute(
            """UPDATE oms.notifications SET status = 'queued', reason = %s, outbox_key = %s, provider_id = NULL,
                      provider_status = NULL, not_before = now(), updated_at = now()
               WHERE notification_id = %s""",
            (f"resent by {actor}", key, notification_id),
        )
        outbox.enqueue(
            c, EFFECT, {"notification_id": notification_id, "order_id": order_id, "channel": channel}, key
        )
        return {"notification_id": notification_id, "outbox_key": key, "status": "queued"}

    return run_in_transaction(conn, run)


def opt_out(
    conn: psycopg.Connection,
    *,
    actor: str,
    order_id: int | None = None,
    phone: str | None = None,
    email: str | None = None,
    channel: str | None = None,
    reason: str | None = None,
) -> int:
    """Record that a customer (phone or e-mail) or one order is not to be notified (on ``channel``, or at
    all). Notifications planned but not sent yet are suppressed when the drain reaches them. Returns the
    opt-out's id (the existing one when it is already recorded)."""
    problems = []
    if sum(v is not None for v in (order_id, phone, email)) != 1:
        problems.append("give exactly one of order_id, phone, email")
    p = normalize_phone(phone) if phone is not None else None
    m = normalize_email(email) if email is not None else None
    if phone is not None and p is None:
        problems.append("phone: not a Russian mobile number")
    if email is not None and m is None:
        problems.append("email: not an e-mail address")
    if channel is not None and channel not in CHANNELS:
        problems.append(f"channel: expected one of {', '.join(CHANNELS)}")
    if problems:
        raise ValidationFailed(problems)

    def run(c: psycopg.Connection) -> int:
        row = c.execute(
            """INSERT INTO oms.notification_opt_outs (order_id, phone, email, channel, reason, created_by)
               VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING RETURNING opt_out_id""",
            (order_id, p, m, channel, reason, actor),
        ).fetchone()
        if row is not None:
            return row[0]
        return c.execute(
            """SELECT opt_out_id FROM oms.notification_opt_outs
               WHERE order_id IS NOT DISTINCT FROM %s AND phone IS NOT DISTINCT FROM %s
                 AND email IS NOT DISTINCT FROM %s AND channel IS NOT DISTINCT FROM %s""",
            (order_id, p, m, channel),
        ).fetchone()[0]

    return run_in_transaction(conn, run)
