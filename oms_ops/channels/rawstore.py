"""Raw channel payloads into Postgres, and the steps every polling feed takes around them.

The crash-safety rule of every feed lives here: :func:`store_page` writes a page of payloads *and then* the
cursor that points past them in ONE transaction. If the process dies after fetching and before the commit,
neither is there and the next run fetches the same page again (duplicates are no-ops: raw rows are unique
per (channel, external id, payload hash)); it can never happen that the cursor moved and the payloads did
not.

A page can never fail to store because of what one payload holds (that page would fail again on every
poll): payloads are stored as received, with NUL, lone surrogates and NaN escaped losslessly
(``base.prepare_payload``); a payload whose id is unusable as an id (a control character, longer than
``limits.max_text_length.id``) or that cannot be stored at all (nested too deep, larger than
``limits.max_payload_bytes``) is quarantined with the reason instead, and the rest of the page is stored.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import psycopg

from oms_ops.channels import normalize as norm
from oms_ops.channels.base import (
    Channel,
    IngestResult,
    Unstorable,
    id_problem,
    intake_limits,
    prepare_payload,
    quarantine_safely,
    unescape_json,
)
from oms_ops.connectors.state import set_cursor

log = logging.getLogger("oms.channels")


@contextmanager
def fetch_ahead() -> Iterator[ThreadPoolExecutor]:
    """A one-thread pool for the next page's request, submitted as soon as the current page says where the
    next one starts and running while the current page is stored and normalised: the channel renders and
    sends while Postgres works (both are I/O for us, which releases the GIL). Only requests run ahead —
    pages are stored strictly in order, each with its cursor, and a page fetched but never stored (a crash)
    is fetched again by the next run, exactly as without the thread."""
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="fetch-ahead") as pool:
        yield pool


def iso(dt: datetime) -> str:
    return dt.isoformat().replace("+00:00", "Z")


def parse_time(value: Any) -> datetime | None:
    """An API timestamp (RFC 3339, ``Z`` or offset; a naive one is taken as UTC) or None when absent or
    unreadable — used for watermarks, where a bad value must not stop the page from being stored."""
    if not isinstance(value, str) or not value:
        return None
    try:
        dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


@dataclass(frozen=True)
class StoredPage:
    received: int  # payloads in the page
    new: int  # raw rows that were new (a re-delivered payload is not)
    #: (raw_id, external_id, payload) of the new rows
    rows: list[tuple[int, str, Any]] = field(default_factory=list)
    #: what normalising the page in the same transaction did (None: not normalised here)
    normalized: Any = None
    #: payloads quarantined instead of stored (unusable id, unstorable payload)
    rejected: int = 0


@dataclass(frozen=True)
class Prepared:
    """One payload ready for ``raw.channel_orders``: its id, its stored form's canonical text and hash, its
    position in the items, and the payload as the mappers are given it (lone surrogates as U+FFFD)."""

    ext: str
    text: str
    digest: str
    index: int
    view: Any


def prepare_items(
    items: Sequence[tuple[Any, Any]],
) -> tuple[list[Prepared], list[tuple[str | None, Any, str]]]:
    """``(external_id, payload)`` items → the storable ones, and quarantine rows ``(id, payload, reason)``
    for the others: an id that is no usable id, a payload that cannot be stored (``base.Unstorable``)."""
    limits = intake_limits()
    ready: list[Prepared] = []
    rejects: list[tuple[str | None, Any, str]] = []
    for n, (ext, payload) in enumerate(items):
        ext = str(ext)
        problem = id_problem(ext, limits.max_text_length.id)
        if problem:
            rejects.append((ext, payload, f"external id: {problem}"))
            continue
        try:
            stored, text, digest = prepare_payload(payload, max_bytes=limits.max_payload_bytes)
        except Unstorable as exc:
            rejects.append((ext, payload, f"payload cannot be stored: {exc}"))
            continue
        view = payload if stored is payload else unescape_json(stored, replace_surrogates=True)
        ready.append(Prepared(ext, text, digest, n, view))
    return ready, rejects


def store_payloads(conn: psycopg.Connection, channel: str, items: Sequence[tuple[str, Any]]) -> int:
    """Insert ``(external_id, payload)`` into raw.channel_orders as received (inside the caller's transaction).

    Idempotent on (channel, external_id, payload hash); COPY into a temporary table then one INSERT … ON
    CONFLICT, so a page of a thousand payloads is two statements. Returns how many rows were new. Items
    that cannot be stored are quarantined (:func:`prepare_items`).
    """
    return len(insert_payloads(conn, channel, items))


def insert_payloads(
    conn: psycopg.Connection, channel: str, items: Sequence[tuple[str, Any]], *, normalized: bool = False
) -> list[tuple[int, int]]:
    """:func:`store_payloads` returning ``(raw_id, index in items)`` of the rows that were new.
    New rows are queued for the normaliser (``raw.pending_orders``) unless ``normalized``: the caller
    normalises them in this transaction. Items that cannot be stored are quarantined with the reason."""
    ready, rejects = prepare_items(items)
    if rejects:
        quarantine_safely(conn, [(channel, ext, payload, reason) for ext, payload, reason in rejects])
    return insert_prepared(conn, channel, ready, normalized=normalized)


def insert_prepared(
    conn: psycopg.Connection, channel: str, ready: Sequence[Prepared], *, normalized: bool = False
) -> list[tuple[int, int]]:
    """Insert payloads :func:`prepare_items` made ready; ``(raw_id, index)`` of the rows that were new."""
    if not ready:
        return []
    conn.execute(
        """CREATE TEMP TABLE IF NOT EXISTS _raw_in (external_id text, payload json, payload_hash text, n int)
           ON COMMIT DELETE ROWS"""
    )
    seen: set[tuple[str, str]] = set()
    with conn.cursor().copy("COPY _raw_in (external_id, payload, payload_hash, n) FROM STDIN") as cp:
        for p in ready:
            if (p.ext, p.digest) in seen:  # repeated inside the page: one row is enough
                continue
            seen.add((p.ext, p.digest))
            cp.write_row((p.ext, p.text, p.digest, p.index))
    new = conn.execute(
        """WITH ins AS (
               INSERT INTO raw.channel_orders (channel_code, external_id, payload, payload_hash)
               SELECT %(channel)s, external_id, payload, payload_hash FROM _raw_in ORDER BY n
               ON CONFLICT (channel_code, external_id, payload_hash) DO NOTHING
               RETURNING raw_id, external_id, payload_hash),
           queued AS (
               INSERT INTO raw.pending_orders (channel_code, raw_id)
               SELECT %(channel)s, raw_id FROM ins WHERE NOT %(normalized)s)
           SELECT ins.raw_id, r.n FROM ins JOIN _raw_in r USING (external_id, payload_hash) ORDER BY ins.raw_id""",
        {"channel": channel, "normalized": normalized},
    ).fetchall()
    conn.execute("DELETE FROM _raw_in")
    return [(r[0], r[1]) for r in new]


def store_page(
    conn: psycopg.Connection,
    channel: Channel,
    items: Sequence[tuple[str, Any]],
    *,
    cursor_name: str | None = None,
    cursor_value: dict | None = None,
    rejects: Sequence[tuple[str | None, Any, str]] = (),
    normalize: bool = False,
    before_commit: Callable[[], None] | None = None,
) -> StoredPage:
    """One transaction: the page's payloads, its unusable records (quarantined with the reason), with
    ``normalize`` the orders made from them, then the cursor past them. ``before_commit`` is a test hook
    (raise in it to simulate a crash).

    Normalising in the page's transaction is skipped (rows stay pending for ``normalize_pending``) when older
    rows of the channel still wait — they go first — and when the normaliser fails on the page: the payloads
    and the cursor are committed anyway, so a bad page can never stop the feed.
    """
    code = channel.code
    ready, unusable = prepare_items(items)
    views = {p.index: p.view for p in ready}
    with conn.transaction():
        inline = normalize and norm.lock_for_inline(conn, code)
        new = insert_prepared(conn, code, ready, normalized=inline)
        rows = [(raw_id, str(items[n][0]), views[n]) for raw_id, n in new]
        if rejects or unusable:
            quarantine_safely(
                conn, [(code, ext, payload, reason) for ext, payload, reason in (*rejects, *unusable)]
            )
        result = None
        if inline and rows:
            try:
                with conn.transaction():
                    result = norm.process_stored(conn, channel, rows)
            except Exception:  # noqa: BLE001 - the raw data is safe; normalize_pending will retry and report
                log.exception("%s: normalising a stored page failed; its rows stay pending", code)
                conn.execute(
                    "INSERT INTO raw.pending_orders (channel_code, raw_id) SELECT %s, unnest(%s::bigint[])",
                    (code, [r[0] for r in rows]),
                )
        if cursor_name is not None and cursor_value is not None:
            set_cursor(conn, cursor_name, cursor_value)
        if before_commit is not None:
            before_commit()
    return StoredPage(len(items), len(new), rows, result, rejected=len(unusable))


def pending_raw_orders(
    conn: psycopg.Connection, channel: str, *, after_raw_id: int
) -> tuple[int | None, int]:
    """(newest raw_id, count) of a channel's stored payloads not normalised yet, after ``after_raw_id``."""
    row = conn.execute(
        """SELECT max(raw_id), count(*) FROM raw.pending_orders WHERE channel_code = %s AND raw_id > %s""",
        (channel, after_raw_id),
    ).fetchone()
    return (row[0], row[1]) if row else (None, 0)


def split_by_id(
    records: list, id_field: str, *, what: str = "order"
) -> tuple[list[tuple[str, dict]], list[tuple[str | None, Any, str]]]:
    """Records that carry their channel id → ``(id, record)``; the rest → quarantine rows with the reason
    (a record without an id cannot be stored idempotently, so it must not be stored as received)."""
    items, rejects = [], []
    for rec in records:
        rid, problem = record_id(rec, id_field, what=what)
        if problem:
            rejects.append((None, rec, problem))
        else:
            items.append((rid, rec))
    return items, rejects


def record_id(rec: Any, id_field: str, *, what: str = "order") -> tuple[str, str | None]:
    """``(id as text, None)`` or ``("", why the record has no usable id)``. Only text and integers are ids:
    a list, an object, a float or a boolean in the id field (hostile or broken input) is refused here, before
    anything formats it — a deeply nested value would not even survive ``str()``."""
    rid = rec.get(id_field) if isinstance(rec, dict) else None
    if rid is None or rid == "":
        return "", f"{what} without {id_field}: cannot be identified"
    if isinstance(rid, bool) or not isinstance(rid, str | int):
        return "", f"{what} {id_field} is {type(rid).__name__}, not text or an integer: cannot be identified"
    return str(rid), None


def store_polled_page(
    conn,
    channel: Channel,
    items,
    rejects,
    res: IngestResult,
    *,
    cursor_name: str,
    cursor_value: dict,
    normalize: bool,
    before_commit: Callable[[], None] | None,
) -> None:
    """A polled page into Postgres (payloads, quarantined rejects, cursor: one transaction, ``store_page``)
    and its counts into ``res`` — the step every polling connector takes after each page."""
    page = store_page(
        conn,
        channel,
        items,
        rejects=rejects,
        cursor_name=cursor_name,
        cursor_value=cursor_value,
        normalize=normalize,
        before_commit=before_commit,
    )
    res.new_raw += page.new
    res.rejected += len(rejects) + page.rejected
    if normalize:
        normalize_stored(conn, channel, page, res)


def normalize_stored(conn, channel: Channel, page: StoredPage, res: IngestResult) -> None:
    """Count what the page's own transaction normalised; when it could not (older rows pending, or the
    normaliser failed on it), sweep the pending rows now."""
    if page.normalized is not None:
        res.normalized.add(page.normalized)
    elif page.rows:
        res.normalized.add(norm.normalize_pending(conn, channel))
