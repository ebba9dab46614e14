"""The transactional outbox: every effect on an external system is a row written in the same transaction as
the state change that causes it.

Why: a carrier call or a channel push made inside the transaction could happen and then be rolled back (or
the reverse). Writing the intent instead, with an idempotency key, lets a pipeline deliver it after commit,
at least once; the receiver (or our own key check) makes the effect happen exactly once.

``enqueue``/``enqueue_many`` are called INSIDE the caller's transaction. ``claim``/``complete``/``fail`` are
for the drainers (Dagster jobs) and open their own transactions.
"""

from __future__ import annotations

import datetime as dt
import decimal
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from oms_ops.errors import NotFound

#: Effects known to the drainers; ``enqueue`` refuses others so a typo cannot create an undeliverable row.
EFFECTS = frozenset(
    {
        "carrier.create_shipment",
        "carrier.cancel_shipment",
        "channel.order_status",
        "payment.refund",
        "payment.create",
        "ats.push",
        "notify.customer",
        "erp.export",
        "wms.announce_return",
    }
)


def _default(value: Any) -> Any:
    if isinstance(value, decimal.Decimal):
        return str(value)
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    # Quarantine must never fail because a payload holds an odd type: keep its text.
    return str(value)


def dumps(value: Any) -> str:
    """JSON text for payloads: Decimal as string (money stays exact), datetimes as ISO 8601."""
    return json.dumps(value, default=_default, ensure_ascii=False, separators=(",", ":"))


def jsonb(value: Any) -> Jsonb | None:
    """Wrap a value for a jsonb placeholder (None stays SQL NULL)."""
    return None if value is None else Jsonb(value, dumps=dumps)


def _check_effect(effect: str) -> None:
    if effect not in EFFECTS:
        raise ValueError(f"unknown outbox effect {effect!r} (known: {', '.join(sorted(EFFECTS))})")


def enqueue(conn: psycopg.Connection, effect: str, payload: dict, idempotency_key: str) -> int | None:
    """Write one effect (call inside a transaction). Returns its id, or None if the key already exists."""
    _check_effect(effect)
    row = conn.execute(
        """INSERT INTO oms.outbox (effect, payload, idempotency_key) VALUES (%s, %s, %s)
           ON CONFLICT (idempotency_key) DO NOTHING RETURNING outbox_id""",
        (effect, jsonb(payload), idempotency_key),
    ).fetchone()
    return row[0] if row else None


def enqueue_many(conn: psycopg.Connection, rows: Sequence[tuple[str, dict, str]]) -> int:
    """Write many effects ``(effect, payload, idempotency_key)`` in one statement (inside a transaction).

    Returns how many were new; rows whose key exists are skipped (re-running a step enqueues nothing twice).
    """
    if not rows:
        return 0
    for effect, _, _ in rows:
        _check_effect(effect)
    cur = conn.execute(
        """INSERT INTO oms.outbox (effect, payload, idempotency_key)
           SELECT e, p, k FROM unnest(%b::text[], %b::jsonb[], %b::text[]) AS t(e, p, k)
           ON CONFLICT (idempotency_key) DO NOTHING""",
        ([r[0] for r in rows], [jsonb(r[1]) for r in rows], [r[2] for r in rows]),
    )
    return cur.rowcount


@dataclass(frozen=True)
class OutboxItem:
    outbox_id: int
    effect: str
    payload: dict
    idempotency_key: str
    attempts: int


def claim(
    conn: psycopg.Connection,
    *,
    effects: Sequence[str] | None = None,
    limit: int = 100,
    lease_seconds: int = 300,
) -> list[OutboxItem]:
    """Take up to ``limit`` due effects for delivery (own transaction).

    Rows are locked with SKIP LOCKED so parallel drainers never take the same row, marked in_flight with a
    lease: if the drainer dies, the row becomes due again when the lease runs out (at-least-once).
    """
    with conn.transaction():
        rows = conn.execute(
            """WITH due AS (
                   SELECT outbox_id FROM oms.outbox
                   WHERE state IN ('pending', 'failed', 'in_flight') AND next_attempt_at <= now()
                     AND (%(effects)s::text[] IS NULL OR effect = ANY(%(effects)s::text[]))
                   ORDER BY next_attempt_at, outbox_id
                   LIMIT %(limit)s FOR UPDATE SKIP LOCKED)
               UPDATE oms.outbox o
               SET state = 'in_flight', attempts = o.attempts + 1,
                   next_attempt_at = now() + make_interval(secs => %(lease)s)
               FROM due WHERE o.outbox_id = due.outbox_id
               RETURNING o.outbox_id, o.effect, o.payload, o.idempotency_key, o.attempts""",
            {"effects": list(effects) if effects else None, "limit": limit, "lease": lease_seconds},
        ).fetchall()
    return [OutboxItem(*r) for r in sorted(rows)]


def complete(conn: psycopg.Connection, outbox_ids: Sequence[int]) -> int:
    """Mark delivered effects done (own transaction). Returns how many rows changed."""
    with conn.transaction():
        return conn.execute(
            """UPDATE oms.outbox SET state = 'done', done_at = now(), last_error = NULL
               WHERE outbox_id = ANY(%s) AND state <> 'done'""",
            (list(outbox_ids),),
        ).rowcount


def fail(
    conn: psycopg.Connection,
    outbox_id: int,
    error: str,
    *,
    max_attempts: int = 10,
    backoff_seconds: float = 30.0,
) -> str:
    """Record a failed delivery (own transaction): retry later with exponential back-off, or 'dead' after
    ``max_attempts`` so ops see it. Returns the new state."""
    with conn.transaction():
        row = conn.execute(
            """UPDATE oms.outbox
               SET state = CASE WHEN attempts >= %(max)s THEN 'dead' ELSE 'failed' END,
                   last_error = %(err)s,
                   next_attempt_at = now() + make_interval(
                       secs => %(base)s * power(2, LEAST(GREATEST(attempts - 1, 0), 16)))
               WHERE outbox_id = %(id)s RETURNING state""",
            {"max": max_attempts, "err": error, "base": backoff_seconds, "id": outbox_id},
        ).fetchone()
    if row is None:
        raise NotFound("outbox", [outbox_id])
    return row[0]
