"""The outbox drain: deliver the effects the domain wrote to ``oms.outbox``, exactly once in effect.

Claimed with ``oms_ops.outbox.claim`` (``FOR UPDATE SKIP LOCKED`` + a lease, so parallel drains never take the
same row and a dead drain's rows come back), dispatched by effect, then:

* success → the outcome is written to ``connectors.effect_log`` (keyed by the idempotency key) and the outbox
  row completed, in one transaction;
* failure → ``outbox.fail``: retried later with exponential back-off, ``dead`` after ``max_attempts`` (ops see
  it with its last error).

Exactly once: before calling out, the drain looks for the key in ``effect_log`` (a drain that died after the
call but before completing the row does not call again); and every call is itself idempotent on the far side
for the window in between — CDEK dedupes by ``number`` (= our shipment number), WB cancels / supply moves
are no-ops the second time, refunds are recorded by their idempotency key.

Effects handled:

| effect | what happens |
|---|---|
| ``carrier.create_shipment`` | carrier ``cdek``: ``cdek.book_shipment``; another carrier (own courier): no API, recorded as skipped |
| ``carrier.cancel_shipment`` | a shipment cancelled before hand-over: carrier ``cdek``: ``cdek.cancel_booking`` (``DELETE /v2/orders/{uuid}``; a refusal is outcome ``refused``, kept for ops, not retried); another carrier: recorded as skipped |
| ``channel.order_status`` | the channel record's status pusher (``Channel.push_status``; Wildberries: cancel / add to today's supply); a channel without one is marked done with a note |
| ``payment.refund`` | ``services.payments.deliver``: an order paid through YooKassa → ``POST /v3/refunds`` against its payment (Idempotence-Key = the outbox key; succeeded / pending — polled to the end — / a refusal recorded ``failed`` with the provider's words, outcome ``refused``); a payment the OMS did not take (marketplace, the web store's checkout) → not sent anywhere, recorded as the channel's refund and the note says so |
| ``payment.create`` | ``services.payments.deliver``: ``POST /v3/payments`` for an ``oms.payment_links`` row (the order, or the difference after a paid order grew); the link (``confirmation_url``) and a pending payment are recorded; a refusal marks the link ``failed`` (outcome ``refused``) |
| ``notify.customer`` | a notification of ``oms.notifications`` (payload ``notification_id``): sent by SMS or e-mail by ``services.notifications.deliver`` (a refusal for good is outcome ``failed``, kept, not retried); older notices without one: recorded (``effect_log``) and logged |
| ``wms.announce_return`` | ``connectors.wms.deliver_return_announcement``: the RMA posted to the WMS warehouse of the expected location; a location without WMS (or no WMS configured): skipped with a note |
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg

from oms_ops import outbox
from oms_ops.channels import registry
from oms_ops.connectors.cdek import book_shipment, cancel_booking
from oms_ops.connectors.config import NotConfigured
from oms_ops.connectors.http import ConnectorError
from oms_ops.connectors.wms import deliver_return_announcement
from oms_ops.db import run_in_transaction
from oms_ops.errors import NotFound, OmsError, ValidationFailed
from oms_ops.outbox import jsonb
from oms_ops.services.clients import Clients
from oms_ops.services.notifications import deliver as deliver_notification
from oms_ops.services.payments import deliver as deliver_payment

log = logging.getLogger("oms.services.outbox")
HANDLED = (
    "carrier.create_shipment",
    "carrier.cancel_shipment",
    "channel.order_status",
    "payment.refund",
    "payment.create",
    "notify.customer",
    "wms.announce_return",
)
DEFAULT_FALLBACK_PHONE = "+70000000000"


@dataclass
class DrainResult:
    claimed: int = 0
    done: int = 0
    already_done: int = 0
    failed: int = 0
    dead: int = 0
    by_effect: Counter = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)

    def metadata(self) -> dict[str, Any]:
        return {
            "claimed": self.claimed,
            "done": self.done,
            "already_done": self.already_done,
            "failed": self.failed,
            "dead": self.dead,
            "by_effect": dict(self.by_effect),
        }


def drain_outbox(
    conn: psycopg.Connection,
    clients: Clients,
    *,
    effects: tuple[str, ...] = HANDLED,
    limit: int = 1000,
    batch: int = 100,
    max_attempts: int = 8,
    backoff_seconds: float = 30.0,
    fallback_phone: str = DEFAULT_FALLBACK_PHONE,
    actor: str = "outbox",
) -> DrainResult:
    """Deliver up to ``limit`` due effects."""
    res = DrainResult()
    while res.claimed < limit:
        items = outbox.claim(conn, effects=list(effects), limit=min(batch, limit - res.claimed))
        if not items:
            break
        res.claimed += len(items)
        for item in items:
            if conn.execute(
                "SELECT 1 FROM connectors.effect_log WHERE idempotency_key = %s", (item.idempotency_key,)
            ).fetchone():
                outbox.complete(conn, [item.outbox_id])
                res.already_done += 1
                continue
            try:
                outcome, note, result = _dispatch(
                    conn, clients, item, fallback_phone=fallback_phone, actor=actor
                )
            except (ConnectorError, NotConfigured, OmsError, KeyError, ValueError, TypeError) as exc:
                error = f"{type(exc).__name__}: {exc}"
                state = outbox.fail(
                    conn, item.outbox_id, error, max_attempts=max_attempts, backoff_seconds=backoff_seconds
                )
                res.errors.append(f"{item.effect} {item.idempotency_key}: {error}")
                if state == "dead":
                    res.dead += 1
                    log.error(
                        "outbox %s (%s) is dead after %d attempts: %s",
                        item.outbox_id,
                        item.effect,
                        item.attempts,
                        error,
                    )
                else:
                    res.failed += 1
                continue
            with conn.transaction():
                conn.execute(
                    """INSERT INTO connectors.effect_log (idempotency_key, effect, outbox_id, outcome, note, result)
                       VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (idempotency_key) DO NOTHING""",
                    (item.idempotency_key, item.effect, item.outbox_id, outcome, note, jsonb(result)),
                )
                outbox.complete(conn, [item.outbox_id])
            res.done += 1
            res.by_effect[item.effect] += 1
    return res


def _dispatch(conn, clients: Clients, item: outbox.OutboxItem, *, fallback_phone: str, actor: str):
    p = item.payload
    if item.effect == "carrier.create_shipment":
        carrier = p.get("carrier_code")
        if carrier == "cdek":
            result = book_shipment(conn, clients.get("cdek"), p, fallback_phone=fallback_phone)
            if result.get("cancelled"):
                return "skipped", "the shipment was cancelled before it was booked", result
            return "sent", "duplicate booking found by number" if result["duplicate"] else None, result
        return "skipped", f"no API for carrier {carrier!r}: booked by the carrier's own process", None
    if item.effect == "carrier.cancel_shipment":
        carrier = p.get("carrier_code")
        if carrier == "cdek":
            return cancel_booking(conn, clients.get("cdek"), p)
        return "skipped", f"no API for carrier {carrier!r}: the carrier is told by its own process", None
    if item.effect == "channel.order_status":
        return _channel_status(conn, clients, p)
    if item.effect in ("payment.refund", "payment.create"):
        # through YooKassa when the OMS took the payment; else recorded as the channel's (oms_ops/payment_provider.py)
        return deliver_payment(conn, clients, item)
    if item.effect == "notify.customer" and "notification_id" in p:
        # a customer notification (oms_ops/notifications.py): SMS gateway or mail server
        return deliver_notification(conn, clients, item)
    if item.effect == "notify.customer":
        log.info("notify customer: order %s template %s", p.get("order_id"), p.get("template"))
        return "recorded", "no notification gateway integrated: recorded", p
    if item.effect == "wms.announce_return":
        return deliver_return_announcement(conn, clients, p)
    raise ValueError(f"effect {item.effect!r} is not handled by this drain")


def _channel_status(conn, clients: Clients, p: dict):
    channel = registry.find(p.get("channel_code") or "")
    if channel is None or channel.push_status is None:
        return (
            "skipped",
            f"no order-status call for channel {p.get('channel_code')!r} in this integration",
            None,
        )
    return channel.push_status(conn, clients.get(channel.system), p)


RETRYABLE_OUTBOX_STATES = ("failed", "dead")


def retry_outbox(conn: psycopg.Connection, outbox_ids: Sequence[int], *, actor: str) -> list[int]:
    """Make failed / dead outbox effects due now with a fresh attempt budget (one transaction).

    The idempotency key is unchanged, so a retry can never make the effect happen twice. Rows in any
    other state (pending, in flight, done) refuse the whole call (ValidationFailed naming each); unknown
    ids raise NotFound. Returns the ids retried. ``actor`` is kept in ``last_error`` as an audit note.
    """
    ids = sorted(set(outbox_ids))

    def run(c: psycopg.Connection) -> list[int]:
        rows = dict(
            c.execute(
                "SELECT outbox_id, state FROM oms.outbox WHERE outbox_id = ANY(%s) ORDER BY outbox_id FOR UPDATE",
                (ids,),
            ).fetchall()
        )
        missing = [i for i in ids if i not in rows]
        if missing:
            raise NotFound("outbox", missing)
        wrong = [
            f"outbox {i} is {s}: only failed or dead effects can be retried"
            for i, s in sorted(rows.items())
            if s not in RETRYABLE_OUTBOX_STATES
        ]
        if wrong:
            raise ValidationFailed(wrong)
        c.execute(
            """UPDATE oms.outbox SET state = 'pending', attempts = 0, next_attempt_at = now(),
                      last_error = left('retried by ' || %s || ' after: ' || coalesce(last_error, ''), 2000)
               WHERE outbox_id = ANY(%s)""",
            (actor, ids),
        )
        return ids

    return run_in_transaction(conn, run)
