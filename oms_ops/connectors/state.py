"""Connector bookkeeping in Postgres: cursors / watermarks, feed health, raw payload storage.

The crash-safety rule of every connector lives here: :func:`store_page` writes a page of payloads *and then*
the cursor that points past them in ONE transaction. If the process dies after fetching and before the
commit, neither is there and the next run fetches the same page again (duplicates are no-ops: raw rows are
unique per (channel, external id, payload hash)); it can never happen that the cursor moved and the payloads
did not.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg

from oms_ops.outbox import jsonb

log = logging.getLogger("oms.connectors")


def canonical_json(payload: Any) -> str:
    """Canonical JSON text (sorted keys, compact, UTF-8): the same payload always gives the same text.

    Equal to ``oms_ops.orders.payload_hash``'s input for JSON-shaped payloads (what HTTP APIs return), so a
    row stored here and one stored through ``record_raw_orders`` dedupe against each other.
    """
    return json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def payload_sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


# -- cursors --------------------------------------------------------------------------------------------------
def get_cursor(conn: psycopg.Connection, name: str) -> dict | None:
    row = conn.execute("SELECT value FROM connectors.cursors WHERE name = %s", (name,)).fetchone()
    return row[0] if row else None


def set_cursor(conn: psycopg.Connection, name: str, value: dict) -> None:
    """Upsert a cursor (call inside the transaction that stored what it covers)."""
    conn.execute(
        """INSERT INTO connectors.cursors (name, value, updated_at) VALUES (%s, %s, now())
           ON CONFLICT (name) DO UPDATE SET value = excluded.value, updated_at = now()""",
        (name, jsonb(value)),
    )


# -- feed health --------------------------------------------------------------------------------------------
def record_success(conn: psycopg.Connection, feed: str, fetched: int) -> None:
    with conn.transaction():
        conn.execute(
            """INSERT INTO connectors.feed_status (feed, last_success_at, last_fetched, total_fetched, updated_at)
               VALUES (%s, now(), %s, %s, now())
               ON CONFLICT (feed) DO UPDATE SET last_success_at = now(), last_fetched = excluded.last_fetched,
                   total_fetched = connectors.feed_status.total_fetched + excluded.last_fetched, updated_at = now()""",
            (feed, fetched, fetched),
        )


def record_failure(conn: psycopg.Connection, feed: str, error: str) -> None:
    with conn.transaction():
        conn.execute(
            """INSERT INTO connectors.feed_status (feed, last_error_at, last_error, updated_at)
               VALUES (%s, now(), %s, now())
               ON CONFLICT (feed) DO UPDATE SET last_error_at = now(), last_error = excluded.last_error,
                   updated_at = now()""",
            (feed, error[:2000]),
        )


# -- raw payloads -------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class StoredPage:
    received: int  # payloads in the page
    new: int  # raw rows that were new (a re-delivered payload is not)
    #: (raw_id, external_id, payload) of the new rows
    rows: list[tuple[int, str, Any]] = field(default_factory=list)
    #: what normalising the page in the same transaction did (None: not normalised here)
    normalized: Any = None


def store_payloads(conn: psycopg.Connection, channel: str, items: Sequence[tuple[str, Any]]) -> int:
    """Insert ``(external_id, payload)`` into raw.channel_orders as received (inside the caller's transaction).

    Idempotent on (channel, external_id, payload hash); COPY into a temporary table then one INSERT … ON
    CONFLICT, so a page of a thousand payloads is two statements. Returns how many rows were new.
    """
    return len(insert_payloads(conn, channel, items))


def insert_payloads(
    conn: psycopg.Connection, channel: str, items: Sequence[tuple[str, Any]], *, normalized: bool = False
) -> list[tuple[int, int]]:
    """:func:`store_payloads` returning ``(raw_id, index in items)`` of the rows that were new.
    New rows are queued for the normaliser (``raw.pending_orders``) unless ``normalized``: the caller
    normalises them in this transaction."""
    if not items:
        return []
    conn.execute(
        """CREATE TEMP TABLE IF NOT EXISTS _raw_in (external_id text, payload json, payload_hash text, n int)
           ON COMMIT DELETE ROWS"""
    )
    seen: set[tuple[str, str]] = set()
    with conn.cursor().copy("COPY _raw_in (external_id, payload, payload_hash, n) FROM STDIN") as cp:
        for n, (ext, payload) in enumerate(items):
            text = canonical_json(payload)
            digest = payload_sha256(text)
            if (str(ext), digest) in seen:  # repeated inside the page: one row is enough
                continue
            seen.add((str(ext), digest))
            cp.write_row((str(ext), text, digest, n))
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
    channel: str,
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
    from oms_ops.connectors import normalize as norm
    from oms_ops.quarantine import quarantine_many

    with conn.transaction():
        inline = normalize and norm.lock_for_inline(conn, channel)
        new = insert_payloads(conn, channel, items, normalized=inline)
        rows = [(raw_id, str(items[n][0]), items[n][1]) for raw_id, n in new]
        if rejects:
            quarantine_many(conn, [(channel, ext, payload, reason) for ext, payload, reason in rejects])
        result = None
        if inline and rows:
            try:
                with conn.transaction():
                    result = norm.process_stored(conn, channel, rows)
            except Exception:  # noqa: BLE001 - the raw data is safe; normalize_pending will retry and report
                log.exception("%s: normalising a stored page failed; its rows stay pending", channel)
                conn.execute(
                    "INSERT INTO raw.pending_orders (channel_code, raw_id) SELECT %s, unnest(%s::bigint[])",
                    (channel, [r[0] for r in rows]),
                )
        if cursor_name is not None and cursor_value is not None:
            set_cursor(conn, cursor_name, cursor_value)
        if before_commit is not None:
            before_commit()
    return StoredPage(len(items), len(new), rows, result)


def external_location_id(conn: psycopg.Connection, system: str, location_code: str) -> str | None:
    """The id an external system (e.g. the WMS) uses for one of our locations, if mapped."""
    row = conn.execute(
        "SELECT external_id FROM connectors.channel_locations WHERE system = %s AND location_code = %s",
        (system, location_code),
    ).fetchone()
    return row[0] if row else None


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
        rid = rec.get(id_field) if isinstance(rec, dict) else None
        if rid in (None, ""):
            rejects.append((None, rec, f"{what} without {id_field}: cannot be identified"))
        else:
            items.append((str(rid), rec))
    return items, rejects
