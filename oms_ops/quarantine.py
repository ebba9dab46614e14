"""Quarantine of rejected input: bad data is never lost and never half-applied.

Every rejected order, WMS row or catalog row lands here with the reason and the payload as received, so ops
can see it and, after a fix, replay it (``orders.replay_quarantined_orders``) or discard it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg

from oms_ops.errors import ValidationFailed
from oms_ops.outbox import jsonb


def quarantine(
    conn: psycopg.Connection, source: str, external_id: str | None, payload: Any, reason: str
) -> int:
    """Keep one rejected input (call inside a transaction). Returns its quarantine_id."""
    return quarantine_many(conn, [(source, external_id, payload, reason)])[0]


def quarantine_many(conn: psycopg.Connection, rows: Sequence[tuple[str, str | None, Any, str]]) -> list[int]:
    """Keep many rejected inputs ``(source, external_id, payload, reason)`` in one statement (inside a
    transaction). Returns the ids in input order."""
    if not rows:
        return []
    cur = conn.execute(
        """INSERT INTO raw.quarantine (source, external_id, payload, reason)
           SELECT s, e, p, r FROM unnest(%s::text[], %s::text[], %s::jsonb[], %s::text[])
                WITH ORDINALITY AS t(s, e, p, r, n)
           ORDER BY n
           RETURNING quarantine_id""",
        (
            [r[0] for r in rows],
            [r[1] for r in rows],
            [jsonb(r[2] if r[2] is not None else {}) for r in rows],
            [r[3] for r in rows],
        ),
    )
    # identity values are assigned in insertion order, which follows ORDER BY n
    return sorted(r[0] for r in cur.fetchall())


@dataclass(frozen=True)
class QuarantineRow:
    quarantine_id: int
    source: str
    external_id: str | None
    payload: Any
    reason: str
    state: str
    received_at: datetime


def list_open(
    conn: psycopg.Connection, *, source: str | None = None, limit: int = 100
) -> list[QuarantineRow]:
    """Open quarantine rows, oldest first (for the ops exception page)."""
    rows = conn.execute(
        """SELECT quarantine_id, source, external_id, payload, reason, state, received_at
           FROM raw.quarantine WHERE state = 'open' AND (%(s)s::text IS NULL OR source = %(s)s)
           ORDER BY quarantine_id LIMIT %(l)s""",
        {"s": source, "l": limit},
    ).fetchall()
    return [QuarantineRow(*r) for r in rows]


def resolve(conn: psycopg.Connection, quarantine_ids: Sequence[int], *, state: str, actor: str) -> int:
    """Close open quarantine rows as 'replayed' or 'discarded' (own transaction). Returns rows changed."""
    if state not in ("replayed", "discarded"):
        raise ValidationFailed(f"quarantine state must be 'replayed' or 'discarded', not {state!r}")
    with conn.transaction():
        return conn.execute(
            """UPDATE raw.quarantine SET state = %s, resolved_at = now(), resolved_by = %s
               WHERE quarantine_id = ANY(%s) AND state = 'open'""",
            (state, actor, list(quarantine_ids)),
        ).rowcount
