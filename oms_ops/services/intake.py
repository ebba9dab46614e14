"""Orders in: poll a channel's feed, normalise what is queued, take call-centre orders, replay quarantine.

Every function works on a channel by its code, resolved through the registry; the channel's record knows how
to poll, map and validate. Each step is crash safe on its own (a page and its cursor in one transaction; a
normalisation batch in one transaction), so a run killed anywhere loses nothing and duplicates nothing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import psycopg

from oms_ops.channels import callcentre, registry
from oms_ops.channels.base import IngestResult, NormalizeResult
from oms_ops.channels.callcentre import read_orders
from oms_ops.channels.normalize import normalize_pending, replay_quarantined
from oms_ops.channels.rawstore import pending_raw_orders
from oms_ops.connectors.config import NotConfigured
from oms_ops.connectors.state import record_failure
from oms_ops.db import run_in_transaction
from oms_ops.errors import NotFound, ValidationFailed
from oms_ops.orders import (
    AcceptResult,
    NormalizedOrder,
    accept_orders,
    accept_orders_in_transaction,
    replay_quarantined_orders,
)
from oms_ops.quarantine import resolve
from oms_ops.services.clients import Clients


def poll(conn: psycopg.Connection, code: str, clients: Clients, **kw: Any) -> IngestResult:
    """One run of channel ``code``'s feed: fetch, store raw (with the cursor), normalise. A channel without a
    feed (the call centre) only normalises what is queued. Raises ``NotConfigured`` when the channel's
    system has no endpoint, and the connector's error (recorded as the feed's last error) when the API
    fails for good."""
    channel = registry.channel(code)
    if channel.poll is None:
        res = IngestResult(code)
        res.normalized = normalize_pending(conn, channel)
        return res
    try:
        client = clients.get(channel.system)
    except NotConfigured:
        # no feed here: what the channel's other entries stored (webhooks, operators) is still normalised
        normalize_pending(conn, channel)
        raise
    # one poll of a feed at a time (the worker and a Dagster run may both come): the second skips
    if not conn.execute(
        "SELECT pg_try_advisory_lock(hashtext('oms.poll'), hashtext(%s))", (code,)
    ).fetchone()[0]:
        res = IngestResult(code)
        res.notes.append("another poll of this feed is running: skipped")
        return res
    try:
        return channel.poll(conn, client, **kw)
    except Exception as exc:
        record_failure(conn, code, str(exc))
        raise
    finally:
        conn.execute("SELECT pg_advisory_unlock(hashtext('oms.poll'), hashtext(%s))", (code,))


def queued(conn: psycopg.Connection, code: str, *, after_raw_id: int = 0) -> tuple[int | None, int]:
    """(newest raw id, count) of channel ``code``'s payloads queued for the normaliser after ``after_raw_id``."""
    return pending_raw_orders(conn, code, after_raw_id=after_raw_id)


def normalize(conn: psycopg.Connection, code: str, **kw: Any) -> NormalizeResult:
    """Normalise every queued raw payload of channel ``code`` (one transaction per batch)."""
    return normalize_pending(conn, registry.channel(code), **kw)


__all__ = ["read_orders"]  # operator files (JSON list, object or lines) for ``submit_callcentre_orders``


def submit_callcentre_orders(
    conn: psycopg.Connection, orders: list[dict], *, actor: str = "callcentre"
) -> NormalizeResult:
    """Operator orders: stored as received, normalised now (accepted or quarantined with the reason)."""
    return callcentre.submit_orders(conn, orders, actor=actor)


def replay_quarantine(conn: psycopg.Connection, quarantine_ids: Sequence[int], *, actor: str) -> Any:
    """Replay open quarantine rows after a fix: channel payloads through their channel's mapper, order
    payloads (source ``orders``/``replay``) through acceptance. Rows that still fail stay open."""
    rows = conn.execute(
        "SELECT quarantine_id, source FROM raw.quarantine WHERE quarantine_id = ANY(%s) AND state = 'open'",
        (list(quarantine_ids),),
    ).fetchall()
    channel_rows = [qid for qid, source in rows if registry.find(source) is not None]
    other = [qid for qid, source in rows if registry.find(source) is None]
    result = NormalizeResult()
    if channel_rows:
        result.add(replay_quarantined(conn, channel_rows, channel_for=registry.find, actor=actor))
    if other:
        accepted = replay_quarantined_orders(conn, other, actor=actor)
        result.rows += len(other)
        result.accepted += len(accepted.ids)
        result.duplicates += len(accepted.duplicates)
        result.order_ids.extend(accepted.accepted)
    return result


def take_orders(
    conn: psycopg.Connection, orders: Sequence[Mapping[str, Any]], *, actor: str, source: str
) -> AcceptResult:
    """Orders entered in the OMS itself (the call centre's order form), in the ``NormalizedOrder`` shape:
    validated, accepted or quarantined with the reason, like every channel's."""
    return accept_orders(conn, list(orders), actor=actor, source=source)


def order_json_schema(**kw: Any) -> dict[str, Any]:
    """The JSON schema of an order as the OMS takes it (``NormalizedOrder``): the public API describes its
    order body with it, so the description never drifts from what is validated."""
    return NormalizedOrder.model_json_schema(**kw)


def replay_orders(conn: psycopg.Connection, quarantine_ids: Sequence[int], *, actor: str) -> AcceptResult:
    """Re-run open quarantined orders (``NormalizedOrder``-shaped payloads) through acceptance after a fix;
    rows now accepted (or duplicates) are closed, the rest stay open with their reason."""
    return replay_quarantined_orders(conn, quarantine_ids, actor=actor)


def discard_quarantined(conn: psycopg.Connection, quarantine_ids: Sequence[int], *, actor: str) -> int:
    """Close open quarantine rows as 'discarded' (kept, with who did it); how many were still open."""
    return resolve(conn, quarantine_ids, state="discarded", actor=actor)


def replay_fixed_order(
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
