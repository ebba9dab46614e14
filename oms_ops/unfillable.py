"""Unfillable orders: the last resort of the routing cascade (docs/allocation.md, "Unfillable orders").

An order waits as a backorder while stock may still come. The cascade says when waiting is hopeless or has
lasted long enough: a decision whose cascade ran past its last rule carries ``unfillable`` —

* ``no_route``: no rule's candidate locations could ever serve the order (none active in the channel's pool
  reaches the destination with a tariff within the rule's distance), whatever stock arrives;
* ``exhausted``: every rule was tried and none filled it, but stock could (the order waits for it).

:func:`sweep` (the worker's ``unfillable_sweep`` step, ``oms unfillable sweep``) does three things, each in
its own transaction:

1. **resolve**: parkings whose order left 'backordered' (allocated after all, cancelled by someone) close;
2. **park**: backordered orders whose latest decision is ``no_route``, or ``exhausted`` and placed more than
   ``unfillable.wait_days`` (per channel) ago, get a row in ``oms.unfillable_orders`` with an auto-cancel
   date ``unfillable.cancel_after_days`` later (none: parked for ops only). The order stays 'backordered'
   — parking sets a deadline, it does not stop the allocator from serving the order if stock comes. An
   ``exhausted`` order whose every waiting line has a promise date (expected supply covers it, or a
   pre-order waits for its release: oms_ops/supply.py) is not parked, nor cancelled: its stock is coming;
3. **cancel**: parked orders past their date, not cleared by ops and still backordered are cancelled
   through the ordinary cancel service (reservations released, refund requested for paid orders, the
   channel told) and the customer is notified (outbox ``notify.customer``).

Ops *clear* a parked order (:func:`clear`, Operations → Unfillable, ``oms unfillable clear ID``): it stays
waiting as a backorder, with no auto-cancel, and is never parked again. The dashboards' role clears through
the SECURITY DEFINER function ``oms.clear_unfillable`` (migration 0017), which this module calls too.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg

from oms_ops.business_config import BusinessConfig
from oms_ops.db import run_in_transaction
from oms_ops.errors import ValidationFailed
from oms_ops.orders import cancel_orders
from oms_ops.outbox import enqueue_many

ACTOR = "unfillable_sweep"
#: orders cancelled per transaction (each cancellation writes refunds and effects)
CANCEL_BATCH = 200


@dataclass
class SweepResult:
    parked: list[int] = field(default_factory=list)
    cancelled: list[int] = field(default_factory=list)
    resolved: int = 0

    def metadata(self) -> dict[str, int]:
        return {
            "unfillable_parked": len(self.parked),
            "unfillable_cancelled": len(self.cancelled),
            "unfillable_resolved": self.resolved,
        }


def sweep(
    conn: psycopg.Connection, config: BusinessConfig, *, now: datetime | None = None, actor: str = ACTOR
) -> SweepResult:
    """Resolve, park, then cancel what is due (module docstring); idempotent, safe beside other workers."""
    now = now or datetime.now(UTC)
    res = SweepResult()
    res.resolved = run_in_transaction(conn, lambda c: _resolve(c, now))
    res.parked = run_in_transaction(conn, lambda c: _park(c, config, now, actor))
    while True:
        done = run_in_transaction(conn, lambda c: _cancel_due(c, now, actor))
        res.cancelled.extend(done)
        if len(done) < CANCEL_BATCH:
            break
    return res


def _resolve(c: psycopg.Connection, now: datetime) -> int:
    return c.execute(
        """UPDATE oms.unfillable_orders u SET resolved_at = %s
           FROM oms.orders o
           WHERE o.order_id = u.order_id AND u.resolved_at IS NULL AND u.cancelled_at IS NULL
             AND o.state <> 'backordered'""",
        (now,),
    ).rowcount


def _park(c: psycopg.Connection, config: BusinessConfig, now: datetime, actor: str) -> list[int]:
    """Park the backordered orders the cascade gave up on (their latest decision), waited long enough."""
    rows = c.execute(
        """WITH latest AS (
               SELECT DISTINCT ON (d.order_id) d.order_id, d.decision_id, d.unfillable, d.reason
               FROM oms.allocation_decisions d
               WHERE d.order_id IN (SELECT order_id FROM oms.orders WHERE state = 'backordered')
               ORDER BY d.order_id, d.decision_id DESC)
           SELECT o.order_id, o.channel_code, o.placed_at, l.decision_id, l.unfillable, l.reason
           FROM latest l JOIN oms.orders o ON o.order_id = l.order_id
           WHERE l.unfillable IS NOT NULL AND o.state = 'backordered'
             AND NOT (l.unfillable = 'exhausted' AND oms.fully_promised(o.order_id))
             AND NOT EXISTS (SELECT 1 FROM oms.unfillable_orders u
                             WHERE u.order_id = o.order_id
                               AND (u.resolved_at IS NULL OR u.cleared_at IS NOT NULL))
           ORDER BY o.order_id
           FOR UPDATE OF o SKIP LOCKED""",
    ).fetchall()
    park = []
    for oid, channel, placed_at, did, verdict, reason in rows:
        terms = config.unfillable.terms(channel)
        if verdict == "exhausted" and placed_at + timedelta(days=terms.wait_days) > now:
            continue
        cancel_at = None if terms.cancel_after_days is None else now + timedelta(days=terms.cancel_after_days)
        park.append((oid, verdict, reason, did, cancel_at))
    if not park:
        return []
    c.execute(
        """INSERT INTO oms.unfillable_orders AS u (order_id, verdict, reason, decision_id, parked_at, parked_by,
                                               auto_cancel_at)
           SELECT t.o, t.v, t.r, t.d, %(now)s, %(actor)s, t.x
           FROM unnest(%(o)s::bigint[], %(v)s::text[], %(r)s::text[], %(d)s::bigint[], %(x)s::timestamptz[])
                AS t(o, v, r, d, x)
           ON CONFLICT (order_id) DO UPDATE
             SET verdict = excluded.verdict, reason = excluded.reason, decision_id = excluded.decision_id,
                 parked_at = excluded.parked_at, parked_by = excluded.parked_by,
                 auto_cancel_at = excluded.auto_cancel_at, resolved_at = NULL
             WHERE u.resolved_at IS NOT NULL AND u.cleared_at IS NULL""",
        {
            "now": now,
            "actor": actor,
            "o": [p[0] for p in park],
            "v": [p[1] for p in park],
            "r": [p[2] for p in park],
            "d": [p[3] for p in park],
            "x": [p[4] for p in park],
        },
    )
    return [p[0] for p in park]


def _cancel_due(c: psycopg.Connection, now: datetime, actor: str) -> list[int]:
    """Cancel one batch of parked orders past their date (orders locked SKIP LOCKED: one being allocated,
    cleared or cancelled right now is left for the next run)."""
    rows = c.execute(
        """SELECT o.order_id, u.verdict FROM oms.unfillable_orders u JOIN oms.orders o ON o.order_id = u.order_id
           WHERE u.cleared_at IS NULL AND u.cancelled_at IS NULL AND u.resolved_at IS NULL
             AND u.auto_cancel_at <= %s AND o.state = 'backordered'
             AND NOT (u.verdict = 'exhausted' AND oms.fully_promised(o.order_id))
           ORDER BY o.order_id LIMIT %s
           FOR UPDATE OF o, u SKIP LOCKED""",
        (now, CANCEL_BATCH),
    ).fetchall()
    if not rows:
        return []
    ids = [r[0] for r in rows]
    cancel_orders(c, ids, reason="unfillable: no location could fill the order in time", actor=actor)
    c.execute(
        "UPDATE oms.unfillable_orders SET cancelled_at = %s WHERE order_id = ANY(%s)",
        (now, ids),
    )
    enqueue_many(
        c,
        [
            (
                "notify.customer",
                {"order_id": oid, "template": "order_cancelled_unfillable", "verdict": verdict},
                f"notify.customer:unfillable:{oid}",
            )
            for oid, verdict in rows
        ],
    )
    return ids


def clear(conn: psycopg.Connection, order_id: int, *, actor: str, reason: str) -> None:
    """Ops keep a parked order: it stays a backorder with no auto-cancel and is never parked again.
    ``ValidationFailed`` when the order is not parked now (never was, cleared, cancelled or served)."""
    try:
        with conn.transaction():
            ok = conn.execute(
                "SELECT oms.clear_unfillable(%s, %s, %s)", (order_id, actor, reason)
            ).fetchone()[0]
    except psycopg.errors.InvalidParameterValue as exc:
        raise ValidationFailed(exc.diag.message_primary or str(exc)) from None
    if not ok:
        raise ValidationFailed(
            f"order {order_id} is not parked as unfillable (never parked, or already cleared, cancelled or served)"
        )


def parked(
    conn: psycopg.Connection, *, include_closed: bool = False, limit: int = 500
) -> list[dict[str, Any]]:
    """Parked orders, soonest auto-cancel first (``include_closed``: cleared, cancelled and resolved too), with
    ``status``: parked, cleared, cancelled or resolved."""
    cur = conn.execute(
        """SELECT u.order_id, o.order_number, o.channel_code, o.state, o.placed_at, u.verdict,
                  CASE WHEN u.cancelled_at IS NOT NULL THEN 'cancelled'
                       WHEN u.resolved_at IS NOT NULL THEN 'resolved'
                       WHEN u.cleared_at IS NOT NULL THEN 'cleared'
                       ELSE 'parked' END AS status,
                  u.parked_at, u.auto_cancel_at, u.cleared_by, u.cleared_at, u.clear_reason, u.cancelled_at,
                  u.reason
           FROM oms.unfillable_orders u JOIN oms.orders o ON o.order_id = u.order_id
           WHERE %(all)s OR (u.cancelled_at IS NULL AND u.resolved_at IS NULL)
           ORDER BY u.auto_cancel_at NULLS LAST, u.order_id
           LIMIT %(n)s""",
        {"all": include_closed, "n": limit},
    )
    names = [d.name for d in cur.description]
    return [dict(zip(names, r, strict=True)) for r in cur.fetchall()]
