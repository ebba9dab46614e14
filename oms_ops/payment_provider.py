"""Payments the OMS takes itself, through the payment provider (YooKassa): links, refunds, notifications, polls.

Which payments are the OMS's: those it asked the provider for — payment links of prepaid orders still unpaid
on channels of kind ``callcentre`` (the call centre, partner systems placing orders through the public API),
and links for the difference when a paid order grew. A
marketplace collects its buyer's money and refunds it itself; the web store's checkout took its customers'
money: refunds of such orders are *not* sent to the provider, they are recorded as the channel's refund and
the effect log says so (:func:`deliver_refund`).

The provider's word is the only truth: a notification is never applied as posted (it is not signed) — the
payment or refund is read back with GET and that is applied (:func:`handle_notification`); the poll
(:func:`poll_open`) does the same for whatever is still open, so a lost notification delays, never loses,
a payment. Everything is idempotent: payments by (provider, provider payment id), refunds by our key, and
every POST to the provider carries the outbox item's idempotency key as ``Idempotence-Key``.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from oms_ops.connectors.http import ApiError, ConnectorError
from oms_ops.connectors.yookassa import (
    PAYMENT_STATES,
    REFUND_STATES,
    SYSTEM,
    YooKassaClient,
    cancellation_text,
    money,
    refusal,
)
from oms_ops.db import run_in_transaction
from oms_ops.errors import NotFound, ValidationFailed
from oms_ops.outbox import OutboxItem, enqueue
from oms_ops.payments import PaymentReport, RefundReport, record_payments, record_refund_status

log = logging.getLogger("oms.payment_provider")
PROVIDER = SYSTEM
#: order states in which an unpaid order still wants its payment link (accepted, not finished or cancelled)
LINK_STATES = ("new", "allocated", "partially_allocated", "backordered")
OPEN_LINK_STATES = ("pending", "waiting_for_capture")
#: receipt defaults (54-ФЗ): VAT 20 % (code 1 = без НДС … 4 = 20/120), goods paid in full in advance
VAT_CODE = 1
ClientFactory = Callable[[], YooKassaClient]


def _parse_ts(value: str | None) -> datetime | None:
    if not value:
        return None
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


# -- links --------------------------------------------------------------------------------------------------
def request_payment_link(
    conn: psycopg.Connection,
    *,
    order_id: int,
    amount: Decimal,
    purpose: str,
    actor: str,
    idempotency_key: str,
    note: str | None = None,
) -> int | None:
    """Ask for a payment link (call INSIDE a transaction): a payment_links row plus an outbox
    'payment.create' under the same key. The same key again returns the existing link, enqueues nothing."""
    if amount is None or Decimal(amount) <= 0:
        raise ValidationFailed(f"payment link amount must be > 0, got {amount!r}")
    row = conn.execute(
        """INSERT INTO oms.payment_links (order_id, purpose, amount, currency, note, idempotency_key, created_by)
           SELECT o.order_id, %s, %s, o.currency, %s, %s, %s FROM oms.orders o WHERE o.order_id = %s
           ON CONFLICT (idempotency_key) DO NOTHING RETURNING link_id""",
        (purpose, amount, note, idempotency_key, actor, order_id),
    ).fetchone()
    if row is None:
        found = conn.execute(
            "SELECT link_id FROM oms.payment_links WHERE idempotency_key = %s", (idempotency_key,)
        ).fetchone()
        return found[0] if found else None
    enqueue(
        conn,
        "payment.create",
        {
            "link_id": row[0],
            "order_id": order_id,
            "amount": Decimal(amount),
            "purpose": purpose,
            "note": note,
        },
        idempotency_key,
    )
    return row[0]


def charge_difference(
    conn: psycopg.Connection, *, order_id: int, amount: Decimal, actor: str, idempotency_key: str, note: str
) -> int | None:
    """A paid order grew (oms_ops/changes.py): a link for the difference when the OMS took the payment
    through the provider (call INSIDE a transaction). An order paid elsewhere (a marketplace, the web store's
    checkout) gets none: its channel charges its customer. Returns the link id or None."""
    ours = conn.execute(
        """SELECT 1 FROM oms.payments WHERE order_id = %s AND provider = %s
             AND state IN ('paid', 'partially_refunded') LIMIT 1""",
        (order_id, PROVIDER),
    ).fetchone()
    if ours is None:
        return None
    return request_payment_link(
        conn,
        order_id=order_id,
        amount=amount,
        purpose="difference",
        actor=actor,
        idempotency_key=idempotency_key,
        note=note,
    )


def new_link(conn: psycopg.Connection, order_id: int, *, actor: str) -> int:
    """A new payment link for an order that still waits for its money (one transaction): ops send it when the
    first one expired, was declined or was refused. Refused (ValidationFailed, naming why) for an order the OMS
    does not take payment for, one paid or cancelled, or one whose link is still open."""

    def run(c: psycopg.Connection) -> int:
        row = c.execute(
            """SELECT o.state, o.payment_method, o.payment_status, o.total_amount, ch.kind, o.order_number
               FROM oms.orders o JOIN oms.channels ch USING (channel_code) WHERE o.order_id = %s
               FOR UPDATE OF o""",
            (order_id,),
        ).fetchone()
        if row is None:
            raise NotFound("order", [order_id])
        state, method, status, total, kind, number = row
        problems = []
        if kind == "marketplace":
            problems.append(f"{number}: a marketplace order is paid to the marketplace, not through a link")
        if method != "prepaid":
            problems.append(f"{number}: payment method {method}, not prepaid")
        if status not in ("pending", "failed"):
            problems.append(f"{number}: payment is {status}, nothing left to pay")
        if state in ("cancelled", "delivered", "picked_up", "returned_to_sender"):
            problems.append(f"{number}: order is {state}")
        if total <= 0:
            problems.append(f"{number}: nothing to pay (total {total})")
        open_link = c.execute(
            """SELECT link_id, status FROM oms.payment_links WHERE order_id = %s AND purpose = 'order'
                 AND status IN ('requested', 'pending', 'waiting_for_capture') ORDER BY link_id LIMIT 1""",
            (order_id,),
        ).fetchone()
        if open_link is not None:
            problems.append(f"{number}: payment link {open_link[0]} is still {open_link[1]}")
        if problems:
            raise ValidationFailed(problems)
        return request_payment_link(
            c,
            order_id=order_id,
            amount=total,
            purpose="order",
            actor=actor,
            idempotency_key=f"payment.create:order:{order_id}:{uuid.uuid4().hex}",
            note="new link sent by ops",
        )

    return run_in_transaction(conn, run)


def enqueue_due_links(conn: psycopg.Connection, *, actor: str = "payments", limit: int = 500) -> list[int]:
    """Links for accepted orders the OMS takes payment for and that have none yet (one transaction):
    channels of kind ``callcentre`` (the call centre, and the seller's own systems placing orders through the
    public API), prepaid, payment still pending, no payment recorded. Web store orders are left alone: the
    store's own checkout takes their money, and a second link could charge a customer twice. Set-based and
    idempotent (the key is per order): the worker runs it every few seconds."""

    def run(c: psycopg.Connection) -> list[int]:
        rows = c.execute(
            """SELECT o.order_id, o.total_amount FROM oms.orders o JOIN oms.channels ch USING (channel_code)
               WHERE ch.kind = 'callcentre' AND o.payment_method = 'prepaid' AND o.payment_status = 'pending'
                 AND o.state = ANY(%s) AND o.total_amount > 0
                 AND NOT EXISTS (SELECT 1 FROM oms.payments p WHERE p.order_id = o.order_id)
                 AND NOT EXISTS (SELECT 1 FROM oms.payment_links l WHERE l.order_id = o.order_id
                                   AND l.purpose = 'order')
               ORDER BY o.order_id LIMIT %s FOR UPDATE OF o SKIP LOCKED""",
            (list(LINK_STATES), limit),
        ).fetchall()
        return [
            request_payment_link(
                c,
                order_id=oid,
                amount=total,
                purpose="order",
                actor=actor,
                idempotency_key=f"payment.create:order:{oid}",
            )
            for oid, total in rows
        ]

    return run_in_transaction(conn, run)


def _receipt(conn, order: dict, amount: Decimal, purpose: str) -> dict | None:
    """The 54-ФЗ receipt: the order's lines and delivery when they add up to the amount, else one line for the
    amount (a difference, a partial refund). None without an e-mail or phone to send it to."""
    customer = {
        k: v for k, v in (("email", order["customer_email"]), ("phone", order["customer_phone"])) if v
    }
    if "phone" in customer:
        customer["phone"] = "".join(ch for ch in customer["phone"] if ch.isdigit())
    if not customer:
        return None
    items = []
    if purpose == "order":
        for name, sku, qty, price in conn.execute(
            """SELECT coalesce(name, sku), sku, qty - qty_cancelled, unit_price FROM oms.order_lines
               WHERE order_id = %s AND qty > qty_cancelled ORDER BY line_no""",
            (order["order_id"],),
        ).fetchall():
            items.append(_item(f"{name}"[:128] or sku, qty, price, "commodity"))
        if order["shipping_amount"]:
            items.append(_item("Доставка", 1, order["shipping_amount"], "service"))
    total = sum((Decimal(i["amount"]["value"]) * i["quantity"] for i in items), Decimal(0))
    if not items or total != amount:
        what = {"difference": "Доплата по заказу", "refund": "Возврат по заказу"}.get(
            purpose, "Оплата заказа"
        )
        items = [_item(f"{what} {order['order_number']}", 1, amount, "commodity")]
    return {"customer": customer, "items": items}


def _item(description: str, qty: int, price: Decimal, subject: str) -> dict:
    return {
        "description": description,
        "quantity": qty,
        "amount": money(price),
        "vat_code": VAT_CODE,
        "payment_subject": subject,
        "payment_mode": "full_prepayment",
    }


def _order(conn, order_id: int) -> dict:
    return (
        conn.cursor(row_factory=dict_row)
        .execute(
            """SELECT o.order_id, o.order_number, o.channel_code, ch.kind AS channel_kind, o.state, o.currency,
                      o.payment_status, o.customer_email, o.customer_phone, o.shipping_amount, o.total_amount
               FROM oms.orders o JOIN oms.channels ch USING (channel_code) WHERE o.order_id = %s""",
            (order_id,),
        )
        .fetchone()
    )


def _set_link(conn, link_id: int, **values: Any) -> None:
    assignments = sql.SQL(", ").join(
        sql.SQL("{} = {}").format(sql.Identifier(c), sql.Placeholder(c)) for c in sorted(values)
    )
    conn.execute(
        sql.SQL("UPDATE oms.payment_links SET {}, updated_at = now() WHERE link_id = %(link_id)s").format(
            assignments
        ),
        {**values, "link_id": link_id},
    )


def deliver_payment_link(conn: psycopg.Connection, client: ClientFactory, item: OutboxItem):
    """The 'payment.create' effect: POST /payments with the item's key; the link and a pending payment are
    recorded. A refusal (the receipt, the amount) marks the link failed with the provider's words (outcome
    ``refused``, kept for ops, not retried). Returns ``(outcome, note, result)`` for the effect log."""
    link = (
        conn.cursor(row_factory=dict_row)
        .execute("SELECT * FROM oms.payment_links WHERE idempotency_key = %s", (item.idempotency_key,))
        .fetchone()
    )
    if link is None:
        raise ValueError(f"payment link {item.idempotency_key} not found")
    if link["provider_payment_id"]:
        return (
            "sent",
            "the provider had already created this payment",
            {"payment_id": link["provider_payment_id"]},
        )
    order = _order(conn, link["order_id"])
    if link["purpose"] == "order" and (
        order["state"] == "cancelled" or order["payment_status"] not in ("pending", "failed")
    ):
        with conn.transaction():
            _set_link(conn, link["link_id"], status="skipped", error=f"order is {order['state']} / "
                      f"{order['payment_status']}: no payment wanted any more")  # fmt: skip
        return "skipped", "the order no longer waits for this payment", None
    amount = Decimal(link["amount"])
    receipt = _receipt(conn, order, amount, link["purpose"])
    if receipt is None:
        why = "no customer e-mail or phone to send the 54-FZ receipt to"
        with conn.transaction():
            _set_link(conn, link["link_id"], status="failed", error=why)
        return "refused", why, None
    what = "Доплата по заказу" if link["purpose"] == "difference" else "Заказ"
    api = client()
    body = {
        "amount": money(amount, link["currency"]),
        "capture": True,
        "confirmation": {"type": "redirect", "return_url": api.return_url},
        "description": f"{what} {order['order_number']}"[:128],
        "metadata": {
            "order_id": str(order["order_id"]),
            "order_number": order["order_number"],
            "link_id": str(link["link_id"]),
            "purpose": link["purpose"],
            **({"note": link["note"][:200]} if link["note"] else {}),
        },
        "receipt": receipt,
    }
    try:
        obj = api.create_payment(body, key=item.idempotency_key)
    except ConnectorError as exc:
        why = refusal(exc)
        if why is None:
            raise
        with conn.transaction():
            _set_link(conn, link["link_id"], status="failed", error=why[:2000])
        return "refused", why, None

    def record(c: psycopg.Connection) -> None:
        _set_link(
            c,
            link["link_id"],
            provider_payment_id=obj["id"],
            confirmation_url=(obj.get("confirmation") or {}).get("confirmation_url"),
            status=obj["status"],
            error=None,
        )
        apply_payment(c, obj)

    run_in_transaction(conn, record)
    return (
        "sent",
        None,
        {
            "payment_id": obj["id"],
            "confirmation_url": (obj.get("confirmation") or {}).get("confirmation_url"),
        },
    )


def apply_payment(conn: psycopg.Connection, obj: dict, *, actor: str = "yookassa") -> str | None:
    """Apply a payment as the provider *read back* reports it (never a notification's body). Payments the
    OMS did not ask for are ignored (None); else the link's status and oms.payments follow."""
    link = conn.execute(
        "SELECT link_id, order_id, status FROM oms.payment_links WHERE provider = %s AND provider_payment_id = %s",
        (PROVIDER, obj.get("id")),
    ).fetchone()
    if link is None:
        return None
    link_id, order_id, _ = link
    status = obj.get("status")
    state = PAYMENT_STATES.get(status)
    if state is None:
        raise ValueError(f"YooKassa payment {obj.get('id')}: unknown status {status!r}")
    at = _parse_ts(obj.get("captured_at")) if state == "paid" else None
    _set_link(conn, link_id, status=status, error=cancellation_text(obj))
    method = (obj.get("payment_method") or {}).get("type")
    record_payments(
        conn,
        [
            PaymentReport(
                PROVIDER,
                obj["id"],
                state,
                Decimal(obj["amount"]["value"]),
                currency=obj["amount"].get("currency", "RUB"),
                order_id=order_id,
                method=method,
                occurred_at=at,
            )
        ],
        actor=actor,
    )
    return state


# -- refunds ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Refund:
    refund_id: int
    order_id: int
    amount: Decimal
    currency: str
    reason: str | None
    state: str
    provider: str | None
    provider_refund_id: str | None
    provider_payment_id: str | None


def _choose_payment(conn, r: _Refund) -> str | None:
    """The provider payment this refund goes against: the oldest of the order's provider payments with enough
    left (paid less what other refunds took), else the one with most left (the provider refuses what is
    too much, and ops see its words). None: the OMS took no payment for this order."""
    rows = conn.execute(
        """SELECT p.provider_payment_id, p.amount - coalesce((
                  SELECT sum(r.amount) FROM oms.refunds r
                  WHERE r.provider = p.provider AND r.provider_payment_id = p.provider_payment_id
                    AND r.refund_id <> %s AND r.state IN ('requested', 'pending', 'succeeded')), 0) AS left_
           FROM oms.payments p
           WHERE p.order_id = %s AND p.provider = %s AND p.state IN ('paid', 'partially_refunded', 'refunded')
           ORDER BY p.payment_id""",
        (r.refund_id, r.order_id, PROVIDER),
    ).fetchall()
    if not rows:
        return None
    enough = [pid for pid, left in rows if left >= r.amount]
    return enough[0] if enough else max(rows, key=lambda x: x[1])[0]


def _not_ours_note(order: dict) -> str:
    if order["channel_kind"] == "marketplace":
        why = f"the marketplace {order['channel_code']} took the buyer's money and refunds its buyer itself"
    elif order["channel_kind"] == "webstore":
        why = f"the order was paid through the {order['channel_code']} store's own checkout, which refunds it"
    else:
        why = f"the OMS took no {PROVIDER} payment for this order (paid through {order['channel_code']})"
    return f"not sent to a payment provider: {why}; recorded as the channel's refund"


def deliver_refund(conn: psycopg.Connection, client: ClientFactory, item: OutboxItem):
    """The 'payment.refund' effect. Returns ``(outcome, note, result)`` for the effect log.

    * the order was paid through the provider → POST /refunds against that payment with the item's key:
      succeeded → recorded succeeded; pending → recorded pending (the poll follows it to the end);
      a refusal (more than is left, a payment not refundable) → recorded failed with the provider's words;
    * a payment the OMS did not take → recorded succeeded as the channel's refund, and the note says it was
      not sent to any provider."""
    row = conn.execute(
        """SELECT refund_id, order_id, amount, currency, reason, state, provider, provider_refund_id,
                  provider_payment_id FROM oms.refunds WHERE idempotency_key = %s""",
        (item.idempotency_key,),
    ).fetchone()
    if row is None:
        raise ValueError(f"refund {item.idempotency_key} not found")
    r = _Refund(*row)
    result = {"refund_id": r.refund_id, "amount": str(r.amount)}
    if r.state in ("succeeded", "failed"):
        return "recorded", f"refund already {r.state}", result
    order = _order(conn, r.order_id)
    payment_id = r.provider_payment_id or _choose_payment(conn, r)
    if payment_id is None:
        note = _not_ours_note(order)
        report = RefundReport(
            status="succeeded",
            idempotency_key=item.idempotency_key,
            provider=f"channel:{order['channel_code']}",
            provider_refund_id=item.idempotency_key,
        )
        record_refund_status(conn, [report], actor="outbox")
        return "recorded", note, {**result, "sent_to_provider": False}
    if r.provider_payment_id is None:  # chosen once: a replay sends the same body under the same key
        with conn.transaction():
            conn.execute(
                "UPDATE oms.refunds SET provider = %s, provider_payment_id = %s WHERE refund_id = %s",
                (PROVIDER, payment_id, r.refund_id),
            )
    body: dict[str, Any] = {
        "payment_id": payment_id,
        "amount": money(r.amount, r.currency),
        "description": (r.reason or f"Возврат по заказу {order['order_number']}")[:250],
    }
    receipt = _receipt(conn, order, Decimal(r.amount), "refund")
    if receipt is not None:
        body["receipt"] = receipt
    try:
        obj = client().create_refund(body, key=item.idempotency_key)
    except ConnectorError as exc:
        why = refusal(exc)
        if why is None:
            raise
        report = RefundReport(
            status="failed", idempotency_key=item.idempotency_key, provider=PROVIDER, reason=f"refused: {why}"
        )
        record_refund_status(conn, [report], actor="outbox")
        return "refused", f"{PROVIDER} refused the refund: {why}", {**result, "payment_id": payment_id}
    status = apply_refund(conn, obj, idempotency_key=item.idempotency_key)
    note = "pending at the provider: the poll follows it to the end" if status == "pending" else None
    return (
        "sent",
        note,
        {**result, "payment_id": payment_id, "provider_refund_id": obj["id"], "status": status},
    )


def apply_refund(
    conn: psycopg.Connection, obj: dict, *, idempotency_key: str | None = None, actor: str = "yookassa"
) -> str | None:
    """Apply a refund as the provider read back reports it. Refunds the OMS did not send are ignored (None)."""
    if idempotency_key is None:
        found = conn.execute(
            "SELECT 1 FROM oms.refunds WHERE provider = %s AND provider_refund_id = %s",
            (PROVIDER, obj.get("id")),
        ).fetchone()
        if found is None:
            return None
    state = REFUND_STATES.get(obj.get("status"))
    if state is None:
        raise ValueError(f"YooKassa refund {obj.get('id')}: unknown status {obj.get('status')!r}")
    report = RefundReport(
        status=state,
        idempotency_key=idempotency_key,
        provider=PROVIDER,
        provider_refund_id=obj["id"],
        reason=cancellation_text(obj) if state == "failed" else None,
    )
    record_refund_status(conn, [report], actor=actor)
    return state


# -- incoming -----------------------------------------------------------------------------------------------
def handle_notification(conn: psycopg.Connection, client: YooKassaClient, body: bytes) -> str:
    """One notification from the provider. Its body is not trusted (YooKassa does not sign them): only the
    object's id is taken, the object is read back with GET and that is applied. Returns what happened:
    ``applied``, ``unknown`` (not ours, or the provider does not know it: nothing changes), ``ignored`` (not
    a notification). Raises ConnectorError when the provider cannot be asked (the receiver answers 503 and
    YooKassa retries)."""
    try:
        doc = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        return "ignored"
    if not isinstance(doc, dict) or doc.get("type") != "notification":
        return "ignored"
    event = str(doc.get("event") or "")
    obj_id = (doc.get("object") or {}).get("id") if isinstance(doc.get("object"), dict) else None
    if not isinstance(obj_id, str) or not obj_id or len(obj_id) > 64:
        return "ignored"
    try:
        if event.startswith("payment."):
            obj = client.get_payment(obj_id)
            done = run_in_transaction(conn, lambda c: apply_payment(c, obj))
        elif event.startswith("refund."):
            obj = client.get_refund(obj_id)
            done = run_in_transaction(conn, lambda c: apply_refund(c, obj))
        else:
            return "ignored"
    except ApiError as exc:
        if exc.status == 404:
            log.warning("yookassa notification %s for %s: the provider does not know it", event, obj_id)
            return "unknown"
        raise
    if done is None:
        log.warning("yookassa notification %s for %s: not a payment or refund of ours", event, obj_id)
        return "unknown"
    return "applied"


def poll_open(conn: psycopg.Connection, client: YooKassaClient, *, limit: int = 100) -> dict[str, int]:
    """The safety net: read back the links still open and the refunds still pending, apply what changed.
    A payment waiting for capture (a shop set up for two-stage payments) is captured in full."""
    out = {"payments": 0, "refunds": 0, "captured": 0}
    links = conn.execute(
        """SELECT provider_payment_id, status FROM oms.payment_links
           WHERE provider = %s AND status = ANY(%s) AND provider_payment_id IS NOT NULL
           ORDER BY updated_at LIMIT %s""",
        (PROVIDER, list(OPEN_LINK_STATES), limit),
    ).fetchall()
    for pid, before in links:
        obj = client.get_payment(pid)
        if obj.get("status") == "waiting_for_capture":
            obj = client.capture(pid, key=f"capture:{pid}"[:64])
            out["captured"] += 1
        if obj.get("status") != before:
            run_in_transaction(conn, lambda c, o=obj: apply_payment(c, o))
            out["payments"] += 1
        else:
            conn.execute(
                "UPDATE oms.payment_links SET updated_at = now() WHERE provider_payment_id = %s", (pid,)
            )
    refunds = conn.execute(
        """SELECT provider_refund_id FROM oms.refunds WHERE provider = %s AND state = 'pending'
             AND provider_refund_id IS NOT NULL ORDER BY updated_at LIMIT %s""",
        (PROVIDER, limit),
    ).fetchall()
    for (rid,) in refunds:
        obj = client.get_refund(rid)
        if obj.get("status") != "pending":
            run_in_transaction(conn, lambda c, o=obj: apply_refund(c, o))
            out["refunds"] += 1
    return out


# -- reads --------------------------------------------------------------------------------------------------
def order_payments(conn: psycopg.Connection, order_id: int) -> dict[str, list[dict]]:
    """An order's payment links, payments and refunds (the Lookup page, the OMS API's lookups)."""
    cur = conn.cursor(row_factory=dict_row)
    return {
        "links": cur.execute(
            """SELECT link_id, purpose, amount, currency, status, confirmation_url, provider_payment_id, note,
                      error, created_at, updated_at
               FROM oms.payment_links WHERE order_id = %s ORDER BY link_id""",
            (order_id,),
        ).fetchall(),
        "payments": cur.execute(
            """SELECT payment_id, provider, provider_payment_id, method, amount, currency, state, paid_at
               FROM oms.payments WHERE order_id = %s ORDER BY payment_id""",
            (order_id,),
        ).fetchall(),
        "refunds": cur.execute(
            """SELECT refund_id, amount, currency, state, reason, provider, provider_payment_id,
                      provider_refund_id, failure_reason, requested_at, completed_at
               FROM oms.refunds WHERE order_id = %s ORDER BY refund_id""",
            (order_id,),
        ).fetchall(),
    }
