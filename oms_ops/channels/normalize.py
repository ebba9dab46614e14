"""From raw channel payloads to ``NormalizedOrder``s, in one transaction per batch.

``normalize_pending`` takes the oldest queued raw rows of a channel (``raw.pending_orders``, under the
channel's advisory lock, so two runs never take the same rows), maps each — the channel's exact fast path
for plain payloads (``fastcheck``), else its pydantic mapper and ``NormalizedOrder`` — hands the orders to
``oms_ops.orders.accept_orders``, applies channel cancellations through ``cancel_orders`` and quarantines
what cannot be mapped (with the reason and the payload as received), in the transaction that took the rows
off the queue: a row is either fully handled or still queued.

Several raw rows of one order (the channel said different things over time, e.g. a posting and later its
cancellation) are folded: the order is created from the first usable version, and the latest version
decides whether it is cancelled. A channel order first seen already cancelled is not created.
The latest usable version of an order that did not create it (a later one in the batch, or any version of an
order accepted before) is compared with the order we hold (``oms_ops.amendments``: applied, or kept as an
amendment for ops) — never dropped silently.

Hostile input is isolated payload by payload: whatever goes wrong with one payload — its mapper raising
anything, the text policy or the ``limits`` of the business configuration refusing it
(``base.apply_text_policy``, ``base.limits_problem``, applied to both paths' orders), even the database
refusing its order — quarantines that payload alone with the reason (the error class, and the field when
known), and the rest of its batch goes on. A database error on a chunk of orders rolls back only that
chunk's savepoint; its orders are then accepted one by one, each in its own savepoint.

Every function takes the channel's :class:`~oms_ops.channels.base.Channel` record (its mappers), never a
code: callers holding only a code look it up in ``oms_ops.channels.registry``.
"""

from __future__ import annotations

import dataclasses
import gc
import json
import logging
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

import orjson
import psycopg
from pydantic import ValidationError

from oms_ops.amendments import on_later_versions
from oms_ops.channels.base import (
    ESC,
    Channel,
    FastMapper,
    IntakeRefused,
    Mapped,
    Mapper,
    MappingContext,
    NormalizeResult,
    apply_text_policy,
    id_problem,
    intake_limits,
    limits_problem,
    prepare_payload,
    quarantine_safely,
    unescape_json,
    validation_text,
)
from oms_ops.orders import AcceptResult, NormalizedOrder, ValidatedOrder, accept_orders, cancel_orders
from oms_ops.quarantine import resolve

log = logging.getLogger("oms.channels.normalize")

#: Order states in which a channel cancellation still cancels the order (later, it has shipped).
CANCELLABLE_STATES = (
    "new",
    "on_hold",
    "backordered",
    "partially_allocated",
    "allocated",
    "picking",
    "packed",
)


def normalize_pending(
    conn: psycopg.Connection,
    channel: Channel,
    *,
    batch_size: int = 5000,
    max_batches: int | None = None,
    actor: str | None = None,
    fast_path: bool = True,
) -> NormalizeResult:
    """Normalise every pending raw row of ``channel``, ``batch_size`` rows per transaction.
    ``fast_path=False`` maps everything through the pydantic mapper (the definition the fast path must
    equal; tests compare the two)."""
    total = NormalizeResult()
    batches = 0
    fast = channel.fast_mapper if fast_path else None
    while max_batches is None or batches < max_batches:
        res = _normalize_batch(conn, channel, fast, batch_size, actor or f"connector:{channel.code}")
        batches += 1
        total.add(res)
        if res.rows < batch_size:
            break
    return total


def _lock_channel(conn: psycopg.Connection, channel: str) -> None:
    """One normaliser per channel at a time (transaction-scoped): versions of an order are then handled in
    the order they were received, so a cancellation can never be overtaken by the version it cancels."""
    conn.execute("SELECT pg_advisory_xact_lock(hashtext('oms.normalize'), hashtext(%s))", (channel,))


#: Take the oldest pending rows of a channel in ONE statement: dequeue them (``raw.pending_orders``) and
#: return their payloads as the JSON text they are stored as. Inside the batch's transaction, so a failure
#: leaves them queued.
_CLAIM_SQL = """WITH taken AS (
        DELETE FROM raw.pending_orders
        WHERE channel_code = %(channel)s AND raw_id IN (
            SELECT raw_id FROM raw.pending_orders WHERE channel_code = %(channel)s ORDER BY raw_id LIMIT %(limit)s)
        RETURNING raw_id)
    SELECT r.raw_id, r.external_id, r.payload::text FROM taken JOIN raw.channel_orders r USING (raw_id)"""


def _normalize_batch(conn, channel: Channel, fast, batch_size, actor) -> NormalizeResult:
    with conn.transaction():
        # the channel lock makes row locks unnecessary: only normalisers take rows off the queue
        _lock_channel(conn, channel.code)
        rows = conn.execute(_CLAIM_SQL, {"channel": channel.code, "limit": batch_size}).fetchall()
        rows.sort(key=lambda r: r[0])  # versions are handled as received
        return _process(conn, channel, fast, rows, actor)


def lock_for_inline(conn: psycopg.Connection, channel: str) -> bool:
    """Take the channel's normaliser lock (inside a transaction); True when no older row of the channel is
    pending, i.e. a page being stored may be normalised right away without overtaking anything."""
    _lock_channel(conn, channel)
    older = conn.execute(
        "SELECT 1 FROM raw.pending_orders WHERE channel_code = %s LIMIT 1", (channel,)
    ).fetchone()
    return older is None


def process_stored(
    conn: psycopg.Connection,
    channel: Channel,
    rows: Sequence[tuple[int, str, Any]],
    *,
    actor: str | None = None,
) -> NormalizeResult:
    """Normalise rows being stored in this transaction (stored without a queue entry), from the
    payloads in memory — no read-back. Call after :func:`lock_for_inline` returned True."""
    return _process(conn, channel, channel.fast_mapper, list(rows), actor or f"connector:{channel.code}")


#: Rows per accept_orders call inside a batch: while the server inserts one chunk, a thread maps the next.
CHUNK = 1000


def _load_json(text: str) -> Any:
    """Parse a stored payload's JSON text (orjson: about 3x the standard library; the standard library for
    what orjson refuses, e.g. integers beyond 64 bits or deep nesting) and undo the storage escaping
    (``base.escape_json``: only payloads that held NUL, lone surrogates or NaN carry it), lone surrogates
    coming back as U+FFFD as the mappers are given them."""
    try:
        payload = orjson.loads(text)
    except orjson.JSONDecodeError:
        payload = json.loads(text)
    if ESC in text:
        payload = unescape_json(payload, replace_surrogates=True)
    return payload


def _short(exc: BaseException, limit: int = 300) -> str:
    """An exception as a quarantine reason quotes it: the class, the message cut to ``limit`` characters."""
    text = str(exc).replace("\n", " ")
    return f"{type(exc).__name__}: {text[:limit]}{'…' if len(text) > limit else ''}"


def _map_rows(
    mapper: Mapper, ctx: MappingContext, rows: Sequence[tuple[int, str, Any]], fast: FastMapper | None = None
) -> list:
    """Map and validate rows (pure: no database), ``(raw_id, key, payload, Mapped, NormalizedOrder |
    ValidatedOrder | None, error | None)`` per row. Payloads given as text (read back from Postgres) are
    parsed here. ``fast``: the channel's exact fast path, tried first; what it is unsure of (or fails on)
    goes through ``mapper`` and ``NormalizedOrder``."""
    out = []
    limits = intake_limits()
    for raw_id, ext, payload in rows:
        try:
            out.append(_map_one(mapper, ctx, raw_id, ext, payload, fast, limits))
        except Exception as exc:  # noqa: BLE001 - anything odd about one payload stays with that payload
            out.append(
                (raw_id, ext, payload, Mapped(ext, error=f"cannot map payload: {_short(exc)}"), None, None)
            )
    return out


def _map_one(
    mapper: Mapper, ctx: MappingContext, raw_id, ext, payload, fast: FastMapper | None, limits
) -> tuple:
    """One row of :func:`_map_rows`. The fast path's order is used only when it keeps the limits; otherwise
    the pydantic path maps it again and gives the reason — the same check on both, so both give the same
    outcome."""
    if isinstance(payload, str):
        payload = _load_json(payload)
    if fast is not None:
        try:
            key, cancelled, valid = fast(payload, ctx, raw_id)
        except Exception:  # noqa: BLE001, S110 - Unsure, or anything odd: the pydantic path decides
            pass
        else:
            if limits_problem(valid, limits) is None:
                return (raw_id, key, payload, Mapped(key, valid, cancelled=cancelled), valid, None)
    try:
        m = mapper(payload, ctx)
    except ValidationError as exc:
        m = Mapped(ext, error=validation_text(exc))
    except RecursionError:
        m = Mapped(ext, error="cannot map payload: nested too deeply")
    except Exception as exc:  # noqa: BLE001 - a mapper bug or a shape nobody foresaw: this payload only
        m = Mapped(ext, error=f"cannot map payload: {_short(exc)}")
    if not m.error and m.external_id is not None:
        # the key decides duplicates and cancellations (also of payloads never validated as orders)
        problem = id_problem(str(m.external_id), limits.max_text_length.id)
        if problem:
            m = dataclasses.replace(m, order=None, cancelled=False, error=f"external_id: {problem}")
    order, error = None, m.error
    if not error and not m.skip and m.order is not None and not m.cancelled:
        try:
            order = NormalizedOrder.model_validate({**m.order, "raw_id": raw_id})
            apply_text_policy(order)
            error = limits_problem(order, limits)
        except ValidationError as exc:
            error = validation_text(exc)
        except IntakeRefused as exc:
            error = str(exc)
        if error:
            order = None
    return (raw_id, m.external_id or ext, payload, m, order, error)


def _process(conn, channel: Channel, fast: FastMapper | None, rows, actor) -> NormalizeResult:
    """Map, accept, quarantine and cancel ``rows`` — already off the queue (inside the caller's
    transaction).

    Chunks of ``CHUNK`` rows are mapped in a worker thread one chunk ahead of the chunk being accepted:
    psycopg releases the GIL while the server works, so mapping (client CPU) and inserting (server CPU) run
    at the same time. Everything still happens in the caller's one transaction.
    """
    res = NormalizeResult()
    if not rows:
        return res
    res.rows = len(rows)
    ctx = MappingContext.load(conn)
    with _gc_paused():
        later = _process_chunks(conn, channel.code, channel.mapper, fast, ctx, rows, actor, res)
    if later:  # versions of orders we already hold: compared, applied or kept for ops (oms_ops.amendments)
        on_later_versions(conn, channel.code, later, actor=actor, supersede=channel.instant_handover)
    return res


@contextmanager
def _gc_paused():
    """Pause the cyclic garbage collector while a batch is mapped. Why: a batch keeps thousands of parsed
    payloads alive, and every collection the allocations trigger walks all of them — a third of the
    mapping time, measured. The objects are freed by reference counting as usual; the collector runs again
    (and catches up) as soon as the batch is done."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def _process_chunks(conn, channel, mapper, fast, ctx, rows, actor, res) -> dict[str, tuple[Any, int]]:
    """Returns the latest valid version of every order of the batch that did not create it (key →
    (order, raw_id)): versions of orders we may already hold, for the amendment check."""
    seen: set[str] = set()  # keys whose order was already handed to accept_orders in this batch
    later: dict[str, tuple[Any, int]] = {}
    created_from: dict[str, Any] = {}
    latest_cancelled: dict[str, bool] = {}
    bad: list[tuple[int, str | None, Any, str]] = []  # (raw_id, external id, payload, reason)
    chunks = [rows[i : i + CHUNK] for i in range(0, len(rows), CHUNK)]
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"normalize-{channel}") as pool:
        ahead = pool.submit(_map_rows, mapper, ctx, chunks[0], fast) if len(chunks) > 1 else None
        for i in range(len(chunks)):
            mapped = ahead.result() if ahead is not None else _map_rows(mapper, ctx, chunks[i], fast)
            if i + 1 < len(chunks):
                ahead = pool.submit(_map_rows, mapper, ctx, chunks[i + 1], fast)
            todo: list[NormalizedOrder | ValidatedOrder] = []
            sources: list[tuple[int, str | None, Any]] = []  # (raw_id, key, payload) of each order in todo
            for raw_id, key, payload, m, order, error in mapped:
                if m.error:
                    bad.append((raw_id, key, payload, m.error))
                    continue
                if m.skip:
                    res.skipped += 1
                    continue
                latest_cancelled[key] = m.cancelled
                if order is not None:
                    later[key] = (order, raw_id)
                if m.order is None or key in seen or m.cancelled:
                    continue  # first seen cancelled: nothing to create (a later open version may still come)
                if error:
                    bad.append((raw_id, key, payload, error))
                    continue
                seen.add(key)
                todo.append(order)
                sources.append((raw_id, key, payload))
            if todo:
                accepted, refused = _accept_isolated(conn, channel, todo, sources, actor)
                bad.extend(refused)
                res.accepted += len(accepted.ids)
                res.on_hold += len(accepted.on_hold)
                res.duplicates += len(accepted.duplicates)
                res.quarantined += len(accepted.quarantined)
                res.order_ids.extend(accepted.accepted)
                created_from.update((o.key[1], o) for o in todo if o.key in accepted.ids)
    res.order_ids.sort()
    if bad:
        quarantine_safely(conn, [(channel, key, payload, why) for _, key, payload, why in bad])
        res.quarantined += len(bad)
    to_cancel = sorted(k for k, c in latest_cancelled.items() if c)
    if to_cancel:
        res.cancelled = _cancel_isolated(conn, channel, to_cancel, actor)
    return {k: v for k, v in later.items() if created_from.get(k) is not v[0] and not latest_cancelled.get(k)}


def _broken(conn: psycopg.Connection) -> bool:
    return conn.broken or conn.closed


def _db_reason(exc: Exception) -> str:
    """Why the database refused one order: the error class, the column or constraint when Postgres names
    one, and the message."""
    diag = getattr(exc, "diag", None)
    where = [x for x in (getattr(diag, "column_name", None), getattr(diag, "constraint_name", None)) if x]
    named = f" ({', '.join(where)})" if where else ""
    return f"refused by the database{named}: {_short(exc)}"


def _accept_isolated(
    conn: psycopg.Connection, channel: str, todo: list, sources: list, actor: str
) -> tuple[AcceptResult, list[tuple[int, str | None, Any, str]]]:
    """``accept_orders`` on a chunk; when the database refuses the chunk (``accept_orders`` runs in a
    savepoint, so only the chunk is rolled back), the chunk's orders one by one, each in its own savepoint:
    the orders it refuses come back as ``(raw_id, key, payload, reason)`` to be quarantined, the others are
    accepted. A lost connection is not a payload's fault: it propagates (the batch stays queued)."""
    try:
        return accept_orders(conn, todo, actor=actor, source=channel, mark_raw=False), []
    except Exception as exc:
        if _broken(conn):
            raise
        log.warning(
            "%s: accepting %d orders failed (%s): accepting them one by one", channel, len(todo), _short(exc)
        )
    total, refused = AcceptResult(), []
    for order, (raw_id, key, payload) in zip(todo, sources, strict=True):
        try:
            one = accept_orders(conn, [order], actor=actor, source=channel, mark_raw=False)
        except Exception as exc:  # noqa: BLE001 - this order only: quarantined with the database's reason
            if _broken(conn):
                raise
            refused.append((raw_id, key, payload, _db_reason(exc)))
            continue
        total.ids.update(one.ids)
        total.on_hold += one.on_hold
        total.duplicates += one.duplicates
        total.quarantined += one.quarantined
        total.rejected += one.rejected
    return total, refused


def _cancel_isolated(conn: psycopg.Connection, channel: str, keys: list[str], actor: str) -> int:
    """Channel cancellations of a batch, one by one when the batch's cancellation fails (each attempt in a
    savepoint); an order that cannot be cancelled is logged and left as it is."""
    try:
        with conn.transaction():
            return cancel_channel_orders(conn, channel, keys, actor=actor)
    except Exception as exc:
        if _broken(conn):
            raise
        log.warning("%s: cancelling %d orders failed (%s): one by one", channel, len(keys), _short(exc))
    done = 0
    for key in keys:
        try:
            with conn.transaction():
                done += cancel_channel_orders(conn, channel, [key], actor=actor)
        except Exception as exc:  # noqa: BLE001 - one order's cancellation must not stop the others
            if _broken(conn):
                raise
            log.warning("%s: cancelling order %r failed: %s", channel, key[:100], _short(exc))
    return done


def cancel_channel_orders(
    conn: psycopg.Connection,
    channel: str,
    external_ids: Sequence[str],
    *,
    actor: str,
    reason: str | None = None,
) -> int:
    """Cancel the OMS orders of channel orders the channel cancelled, where that is still possible (inside or
    outside a transaction). Orders already shipped / cancelled are left alone. Returns how many."""
    rows = conn.execute(
        """SELECT order_id FROM oms.orders WHERE channel_code = %s AND external_id = ANY(%s)
           AND state = ANY(%s) ORDER BY order_id""",
        (channel, list(external_ids), list(CANCELLABLE_STATES)),
    ).fetchall()
    ids = [r[0] for r in rows]
    if not ids:
        return 0
    cancel_orders(conn, ids, reason=reason or f"cancelled in {channel}", actor=actor)
    return len(ids)


def replay_quarantined(
    conn: psycopg.Connection,
    quarantine_ids: Sequence[int],
    *,
    channel_for: Callable[[str], Channel | None],
    actor: str,
) -> NormalizeResult:
    """Re-run open quarantined channel payloads (source = a channel code, resolved by ``channel_for``)
    through their mapper after a fix (a mapping row, a catalog entry, a mapper bug fixed). Rows whose order
    now exists (or existed) are closed as 'replayed'; rows that still fail stay open with their reason (no
    new quarantine rows)."""
    rows = conn.execute(
        """SELECT quarantine_id, source, external_id, payload FROM raw.quarantine
           WHERE quarantine_id = ANY(%s) AND state = 'open' ORDER BY quarantine_id""",
        (list(quarantine_ids),),
    ).fetchall()
    res = NormalizeResult(rows=len(rows))
    ctx = MappingContext.load(conn)
    known_channels = {r[0] for r in conn.execute("SELECT channel_code FROM oms.channels WHERE active")}
    known_locations = {r[0] for r in conn.execute("SELECT location_code FROM oms.locations")}
    orders: dict[int, NormalizedOrder] = {}
    limits = intake_limits()
    for qid, source, _ext, stored in rows:
        channel = channel_for(source)
        if channel is None or channel.mapper is None:
            continue
        try:
            # a quarantine row keeps the payload as stored (base.escape_json): its hash finds the raw row
            payload = unescape_json(stored, replace_surrogates=True)
            m = channel.mapper(payload, ctx)
            if m.error or m.order is None:
                continue
            raw = conn.execute(
                "SELECT raw_id FROM raw.channel_orders WHERE channel_code = %s AND payload_hash = %s LIMIT 1",
                (channel.code, prepare_payload(stored)[2]),
            ).fetchone()
            order = NormalizedOrder.model_validate({**m.order, "raw_id": raw[0] if raw else None})
            apply_text_policy(order)
            if limits_problem(order, limits) or id_problem(order.external_id, limits.max_text_length.id):
                continue
        except Exception:  # noqa: BLE001, S112 - still fails: the row stays open with its reason
            continue
        if order.channel_code in known_channels and (
            not order.pickup_location_code or order.pickup_location_code in known_locations
        ):
            orders[qid] = order
    if orders:
        with conn.transaction():
            accepted = accept_orders(conn, list(orders.values()), actor=actor, source="replay")
            res.accepted = len(accepted.ids)
            res.duplicates = len(accepted.duplicates)
            res.order_ids = accepted.accepted
            resolve(conn, sorted(orders), state="replayed", actor=actor)
    return res
