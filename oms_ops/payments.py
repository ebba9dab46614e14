"""Payments and refunds as the payment provider reports them.

Provider callbacks are re-delivered and arrive out of order, so every report is idempotent by the
provider's id — (provider, provider_payment_id) for payments, our idempotency key or (provider,
provider_refund_id) for refunds — and moves the row only along the state machine: a late 'pending' after
'paid' is kept out (listed in ``ignored``), never applied. The order's ``payment_status`` is then derived
from all its payments and succeeded refunds.

``request_refund`` is the one way a refund starts (cancellation, short pick, return): a refunds row plus an
outbox 'payment.refund' effect under the same idempotency key, in the caller's transaction.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

import psycopg

from oms_ops.db import run_in_transaction
from oms_ops.errors import NotFound, ValidationFailed
from oms_ops.outbox import enqueue
from oms_ops.quarantine import quarantine_many
from oms_ops.reservations import clear_expiry
from oms_ops.state_machine import Change, allowed, apply_transitions, record_creations, states

PAYMENT_STATES = states("payment")
REFUND_REPORT_STATES = frozenset({"pending", "succeeded", "failed"})


@dataclass(frozen=True)
class PaymentReport:
    """A payment status from the provider. The order is found by order_id, order_number or
    (channel_code, external_id)."""

    provider: str
    provider_payment_id: str
    status: str
    amount: Decimal
    currency: str = "RUB"
    order_id: int | None = None
    order_number: str | None = None
    channel_code: str | None = None
    external_id: str | None = None
    method: str | None = None
    occurred_at: datetime | None = None


@dataclass
class PaymentResult:
    created: list[int] = field(default_factory=list)
    updated: list[tuple[int, str, str]] = field(default_factory=list)
    unchanged: int = 0
    ignored: list[tuple[str, str]] = field(default_factory=list)  # (provider_payment_id, why)
    quarantined: list[int] = field(default_factory=list)


def _report_payload(r) -> dict:
    return {k: getattr(r, k) for k in r.__dataclass_fields__}


def _resolve_orders(conn: psycopg.Connection, reports) -> dict[int, int | None]:
    """index of report → order_id (None when not found)."""
    ids = sorted({r.order_id for r in reports if r.order_id is not None})
    nums = sorted({r.order_number for r in reports if getattr(r, "order_number", None)})
    keys = sorted(
        {
            (r.channel_code, r.external_id)
            for r in reports
            if getattr(r, "channel_code", None) and getattr(r, "external_id", None)
        }
    )
    rows = conn.execute(
        """SELECT order_id, order_number, channel_code, external_id FROM oms.orders
           WHERE order_id = ANY(%s) OR order_number = ANY(%s)
              OR (channel_code, external_id) IN (SELECT * FROM unnest(%s::text[], %s::text[]))""",
        (ids, nums, [k[0] for k in keys], [k[1] for k in keys]),
    ).fetchall()
    by_id = {r[0] for r in rows}
    by_num = {r[1]: r[0] for r in rows}
    by_key = {(r[2], r[3]): r[0] for r in rows}
    out = {}
    for i, r in enumerate(reports):
        oid = r.order_id if r.order_id in by_id else None
        oid = oid or by_num.get(getattr(r, "order_number", None))
        oid = oid or by_key.get((getattr(r, "channel_code", None), getattr(r, "external_id", None)))
        out[i] = oid
    return out


def record_payments(
    conn: psycopg.Connection, reports: Sequence[PaymentReport], *, actor: str = "payments"
) -> PaymentResult:
    """Apply provider payment reports (one transaction); idempotent by (provider, provider_payment_id).

    Reports for the same payment are applied in occurred_at order; a report older than the last applied one
    or not allowed by the state machine is ignored (listed). Unknown orders / states go to raw.quarantine.
    """
    return run_in_transaction(conn, lambda c: _record_payments(c, list(reports), actor))


def _record_payments(conn, reports: list[PaymentReport], actor) -> PaymentResult:
    res = PaymentResult()
    if not reports:
        return res
    order_of = _resolve_orders(conn, reports)
    bad, good = [], []
    for i, r in enumerate(reports):
        if r.status not in PAYMENT_STATES:
            bad.append((r, f"unknown payment status {r.status!r}"))
        elif order_of[i] is None:
            bad.append((r, "unknown order"))
        elif r.amount is None or Decimal(r.amount) < 0:
            bad.append((r, f"invalid amount {r.amount!r}"))
        else:
            good.append((order_of[i], r))
    if bad:
        res.quarantined = quarantine_many(
            conn,
            [(f"payments:{r.provider}", r.provider_payment_id, _report_payload(r), why) for r, why in bad],
        )
    if not good:
        return res
    conn.execute(
        "SELECT 1 FROM oms.orders WHERE order_id = ANY(%s) ORDER BY order_id FOR UPDATE",
        (sorted({o for o, _ in good}),),
    )
    keys = sorted({(r.provider, r.provider_payment_id) for _, r in good})
    existing = {
        (row[1], row[2]): [row[0], row[3], row[4]]
        for row in conn.execute(
            """SELECT p.payment_id, p.provider, p.provider_payment_id, p.state, p.reported_at FROM oms.payments p
               JOIN unnest(%s::text[], %s::text[]) AS k(pr, id) ON p.provider = k.pr AND p.provider_payment_id = k.id
               ORDER BY p.payment_id FOR UPDATE OF p""",
            ([k[0] for k in keys], [k[1] for k in keys]),
        ).fetchall()
    }
    grouped: dict[tuple[str, str], list[tuple[int, PaymentReport]]] = defaultdict(list)
    for oid, r in good:
        grouped[(r.provider, r.provider_payment_id)].append((oid, r))
    plans: dict[int, list[Change]] = {}
    latest: dict[int, PaymentReport] = {}
    touched_orders: set[int] = set()
    for key in keys:
        items = sorted(
            grouped[key], key=lambda x: (x[1].occurred_at is None, x[1].occurred_at or datetime.min)
        )
        if key not in existing:
            oid, first = items[0]
            pid = conn.execute(
                """INSERT INTO oms.payments (order_id, provider, provider_payment_id, method, amount, currency, state,
                                             reported_at, paid_at)
                   VALUES (%s, %s, %s, %s, %s, %s, %s, %s, CASE WHEN %s = 'paid' THEN coalesce(%s, now()) END)
                   RETURNING payment_id""",
                (
                    oid,
                    first.provider,
                    first.provider_payment_id,
                    first.method,
                    first.amount,
                    first.currency,
                    first.status,
                    first.occurred_at,
                    first.status,
                    first.occurred_at,
                ),
            ).fetchone()[0]
            record_creations(
                conn, "payment", [(oid, pid, first.status)], actor=actor, reason="reported by provider"
            )
            existing[key] = [pid, first.status, first.occurred_at]
            res.created.append(pid)
            touched_orders.add(oid)
            latest[pid] = first
            items = items[1:]
        pid, state, reported_at = existing[key]
        plan = []
        for oid, r in items:
            if r.occurred_at is not None and reported_at is not None and r.occurred_at < reported_at:
                res.ignored.append((r.provider_payment_id, f"older than the last report ({r.status})"))
            elif r.status == state:
                res.unchanged += 1
            elif allowed("payment", state, r.status):
                plan.append(Change(pid, r.status, "reported by provider", at=r.occurred_at))
                state, reported_at = r.status, r.occurred_at or reported_at
                latest[pid] = r
                touched_orders.add(oid)
            else:
                res.ignored.append((r.provider_payment_id, f"payment {state} -> {r.status} not allowed"))
        if plan:
            plans[pid] = plan
    k = 0
    while True:
        batch = [p[k] for _, p in sorted(plans.items()) if k < len(p)]
        if not batch:
            break
        res.updated.extend(apply_transitions(conn, "payment", batch, actor=actor))
        k += 1
    for pid, r in latest.items():
        conn.execute(
            """UPDATE oms.payments SET amount = %s, reported_at = COALESCE(%s, reported_at),
                      method = COALESCE(%s, method) WHERE payment_id = %s""",
            (r.amount, r.occurred_at, r.method, pid),
        )
    refresh_payment_status(conn, sorted(touched_orders))
    paid = [
        r[0]
        for r in conn.execute(
            "SELECT order_id FROM oms.orders WHERE order_id = ANY(%s) AND payment_status = 'paid'",
            (sorted(touched_orders),),
        ).fetchall()
    ]
    clear_expiry(conn, order_ids=paid)  # a paid order's hold no longer runs out (reservations.py)
    return res


def refresh_payment_status(conn: psycopg.Connection, order_ids: Sequence[int]) -> None:
    """Derive orders.payment_status from payments and succeeded refunds (inside a transaction).

    Paid base = Σ payments in paid / partially_refunded / refunded, or — for an order with no payment rows
    whose channel reported it paid (marketplaces collect the money) — its total. Orders with neither
    payments nor refunds keep the status the channel gave them.
    """
    if not order_ids:
        return
    conn.execute(
        """WITH agg AS (
               SELECT o.order_id, o.payment_status AS cur, o.total_amount,
                      (SELECT count(*) FROM oms.payments p WHERE p.order_id = o.order_id) AS n_pay,
                      (SELECT count(*) FROM oms.payments p WHERE p.order_id = o.order_id
                         AND p.state NOT IN ('failed', 'cancelled')) AS n_live,
                      (SELECT coalesce(sum(amount), 0) FROM oms.payments p WHERE p.order_id = o.order_id
                         AND p.state IN ('paid', 'partially_refunded', 'refunded')) AS paid,
                      (SELECT coalesce(sum(amount), 0) FROM oms.payments p WHERE p.order_id = o.order_id
                         AND p.state = 'refunded') AS pay_refunded,
                      (SELECT coalesce(sum(amount), 0) FROM oms.refunds r WHERE r.order_id = o.order_id
                         AND r.state = 'succeeded') AS refunded
               FROM oms.orders o WHERE o.order_id = ANY(%s)),
           base AS (
               SELECT order_id, cur, n_pay, n_live, greatest(refunded, pay_refunded) AS refunded,
                      CASE WHEN n_pay = 0 AND cur IN ('paid', 'partially_refunded', 'refunded') THEN total_amount
                           ELSE paid END AS paid
               FROM agg),
           status AS (
               SELECT order_id, cur,
                      CASE WHEN paid > 0 AND refunded >= paid THEN 'refunded'
                           WHEN refunded > 0 THEN 'partially_refunded'
                           WHEN paid > 0 THEN 'paid'
                           WHEN n_pay > 0 AND n_live = 0 THEN 'failed'
                           WHEN n_pay > 0 THEN 'pending'
                           ELSE cur END AS new
               FROM base)
           UPDATE oms.orders o SET payment_status = s.new, updated_at = now()
           FROM status s WHERE o.order_id = s.order_id AND s.new IS DISTINCT FROM s.cur""",
        (list(order_ids),),
    )


def request_refund(
    conn: psycopg.Connection,
    *,
    order_id: int,
    amount: Decimal,
    reason: str,
    actor: str,
    idempotency_key: str,
    return_id: int | None = None,
) -> int:
    """Start a refund (call INSIDE a transaction): refunds row + outbox 'payment.refund' with the same
    idempotency key. Calling again with the same key returns the existing refund and enqueues nothing."""
    if amount is None or Decimal(amount) <= 0:
        raise ValidationFailed(f"refund amount must be > 0, got {amount!r}")
    row = conn.execute(
        """INSERT INTO oms.refunds (order_id, return_id, amount, currency, reason, idempotency_key)
           SELECT o.order_id, %s, %s, o.currency, %s, %s FROM oms.orders o WHERE o.order_id = %s
           ON CONFLICT (idempotency_key) DO NOTHING RETURNING refund_id, currency""",
        (return_id, amount, reason, idempotency_key, order_id),
    ).fetchone()
    if row is None:
        existing = conn.execute(
            "SELECT refund_id FROM oms.refunds WHERE idempotency_key = %s", (idempotency_key,)
        ).fetchone()
        if existing is None:
            raise NotFound("order", [order_id])
        return existing[0]
    refund_id, currency = row
    record_creations(conn, "refund", [(order_id, refund_id, "requested")], actor=actor, reason=reason)
    payments = conn.execute(
        """SELECT provider, provider_payment_id, amount FROM oms.payments
           WHERE order_id = %s AND state IN ('paid', 'partially_refunded') ORDER BY payment_id""",
        (order_id,),
    ).fetchall()
    order_number = conn.execute(
        "SELECT order_number FROM oms.orders WHERE order_id = %s", (order_id,)
    ).fetchone()[0]
    enqueue(
        conn,
        "payment.refund",
        {
            "refund_id": refund_id,
            "order_id": order_id,
            "order_number": order_number,
            "return_id": return_id,
            "amount": Decimal(amount),
            "currency": currency,
            "reason": reason,
            "payments": [{"provider": p, "provider_payment_id": i, "amount": a} for p, i, a in payments],
        },
        idempotency_key,
    )
    return refund_id


@dataclass(frozen=True)
class RefundReport:
    """A refund status from the provider, found by our idempotency key (sent with the request), our
    refund_id or (provider, provider_refund_id)."""

    status: str
    idempotency_key: str | None = None
    refund_id: int | None = None
    provider: str | None = None
    provider_refund_id: str | None = None
    occurred_at: datetime | None = None
    #: the provider's words for a failed refund (kept in ``refunds.failure_reason`` and the event)
    reason: str | None = None


@dataclass
class RefundResult:
    updated: list[tuple[int, str, str]] = field(default_factory=list)
    unchanged: int = 0
    ignored: list[tuple[int, str]] = field(default_factory=list)
    quarantined: list[int] = field(default_factory=list)


def record_refund_status(
    conn: psycopg.Connection, reports: Sequence[RefundReport], *, actor: str = "payments"
) -> RefundResult:
    """Apply provider refund reports (one transaction); idempotent. A succeeded refund updates the order's
    payment_status (partially_refunded / refunded)."""
    return run_in_transaction(conn, lambda c: _record_refunds(c, list(reports), actor))


def _record_refunds(conn, reports: list[RefundReport], actor) -> RefundResult:
    res = RefundResult()
    if not reports:
        return res
    keys = sorted({r.idempotency_key for r in reports if r.idempotency_key})
    ids = sorted({r.refund_id for r in reports if r.refund_id is not None})
    prov = sorted(
        {(r.provider, r.provider_refund_id) for r in reports if r.provider and r.provider_refund_id}
    )
    rows = conn.execute(
        """SELECT refund_id, idempotency_key, provider, provider_refund_id, order_id, state FROM oms.refunds
           WHERE refund_id = ANY(%s) OR idempotency_key = ANY(%s)
              OR (provider, provider_refund_id) IN (SELECT * FROM unnest(%s::text[], %s::text[]))
           ORDER BY refund_id""",
        (ids, keys, [p[0] for p in prov], [p[1] for p in prov]),
    ).fetchall()
    by_id = {r[0]: r for r in rows}
    by_key = {r[1]: r[0] for r in rows}
    by_prov = {(r[2], r[3]): r[0] for r in rows if r[3]}
    bad, good = [], []
    for r in reports:
        rid = (
            (r.refund_id if r.refund_id in by_id else None)
            or by_key.get(r.idempotency_key)
            or by_prov.get((r.provider, r.provider_refund_id))
        )
        if r.status not in REFUND_REPORT_STATES:
            bad.append((r, f"unknown refund status {r.status!r}"))
        elif rid is None:
            bad.append((r, "unknown refund"))
        else:
            good.append((rid, r))
    if bad:
        res.quarantined = quarantine_many(
            conn,
            [
                (
                    f"refunds:{r.provider or 'unknown'}",
                    r.provider_refund_id or r.idempotency_key,
                    _report_payload(r),
                    why,
                )
                for r, why in bad
            ],
        )
    if not good:
        return res
    orders = sorted({by_id[rid][4] for rid, _ in good})
    conn.execute("SELECT 1 FROM oms.orders WHERE order_id = ANY(%s) ORDER BY order_id FOR UPDATE", (orders,))
    state = {
        r[0]: r[1]
        for r in conn.execute(
            "SELECT refund_id, state FROM oms.refunds WHERE refund_id = ANY(%s) ORDER BY refund_id FOR UPDATE",
            (sorted({rid for rid, _ in good}),),
        ).fetchall()
    }
    plans: dict[int, list[Change]] = defaultdict(list)
    for rid, r in sorted(
        good, key=lambda x: (x[0], x[1].occurred_at is None, x[1].occurred_at or datetime.min)
    ):
        if r.provider and r.provider_refund_id:
            conn.execute(
                """UPDATE oms.refunds SET provider = COALESCE(provider, %s),
                          provider_refund_id = COALESCE(provider_refund_id, %s) WHERE refund_id = %s""",
                (r.provider, r.provider_refund_id, rid),
            )
        if r.status == state[rid]:
            res.unchanged += 1
        elif allowed("refund", state[rid], r.status):
            why = f"reported by provider: {r.reason}" if r.reason else "reported by provider"
            plans[rid].append(Change(rid, r.status, why, at=r.occurred_at))
            state[rid] = r.status
            if r.status == "failed" and r.reason:
                conn.execute(
                    "UPDATE oms.refunds SET failure_reason = %s WHERE refund_id = %s", (r.reason[:2000], rid)
                )
        else:
            res.ignored.append((rid, f"refund {state[rid]} -> {r.status} not allowed"))
    k = 0
    while True:
        batch = [p[k] for _, p in sorted(plans.items()) if k < len(p)]
        if not batch:
            break
        res.updated.extend(apply_transitions(conn, "refund", batch, actor=actor))
        k += 1
    refresh_payment_status(conn, orders)
    return res
