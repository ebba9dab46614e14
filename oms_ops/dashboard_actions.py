"""Two ops actions the dashboards need that the domain modules do not offer yet.

Each is one business operation = one function = one transaction, like the rest of ``oms_ops``:

* :func:`retry_outbox` — send failed or dead outbox effects (carrier errors, channel pushes) again;
* :func:`replay_quarantined_order` — replay ONE quarantined order payload after ops fixed it by hand (the
  edited JSON is accepted; the quarantine row keeps the payload exactly as received and is closed).

They belong with ``outbox.py`` and ``orders.replay_quarantined_orders``; they live here until the owners of
those modules adopt them (then this module re-exports or disappears).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import psycopg

from oms_ops.db import run_in_transaction
from oms_ops.errors import NotFound, ValidationFailed
from oms_ops.orders import AcceptResult, accept_orders_in_transaction

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


def replay_quarantined_order(
    conn: psycopg.Connection, quarantine_id: int, payload: Mapping[str, Any], *, actor: str
) -> AcceptResult:
    """Accept a fixed version of one open quarantined order and close the row as 'replayed' (one transaction).

    ``payload`` is the corrected order (the NormalizedOrder shape). If it is still invalid, nothing changes and
    ValidationFailed lists every problem; the quarantine row stays open. A payload that turns out to be a
    duplicate of an existing order also closes the row (the order is already in the OMS). The original
    payload stays in the quarantine row, as received.
    """
    if not isinstance(payload, Mapping):
        raise ValidationFailed("the fixed payload must be a JSON object")

    def run(c: psycopg.Connection) -> AcceptResult:
        row = c.execute(
            "SELECT state FROM raw.quarantine WHERE quarantine_id = %s FOR UPDATE", (quarantine_id,)
        ).fetchone()
        if row is None:
            raise NotFound("quarantine", [quarantine_id])
        if row[0] != "open":
            raise ValidationFailed(f"quarantine {quarantine_id} is {row[0]}, not open")
        res = accept_orders_in_transaction(c, [dict(payload)], actor=actor, quarantine_source=None)
        if res.rejected:
            raise ValidationFailed([reason for _, reason in res.rejected])
        c.execute(
            """UPDATE raw.quarantine SET state = 'replayed', resolved_at = now(), resolved_by = %s
               WHERE quarantine_id = %s""",
            (actor, quarantine_id),
        )
        return res

    return run_in_transaction(conn, run)
