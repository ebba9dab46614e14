"""The worker's journal: what the fast lane did, step by step, for Dagster to show as asset events."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg


@dataclass(frozen=True)
class JournalEntry:
    entry_id: int
    at: datetime
    worker_id: str
    asset: str
    metadata: dict[str, Any]


def entries_after(conn: psycopg.Connection, after_id: int, *, limit: int = 500) -> list[JournalEntry]:
    """Journal entries with an id above ``after_id``, oldest first."""
    rows = conn.execute(
        """SELECT entry_id, at, worker_id, asset, metadata FROM oms.worker_journal
           WHERE entry_id > %s ORDER BY entry_id LIMIT %s""",
        (after_id, limit),
    ).fetchall()
    return [JournalEntry(*r) for r in rows]


def prune(conn: psycopg.Connection, *, keep_days: int = 7) -> int:
    """Forget entries older than ``keep_days`` (Dagster keeps the events it made of them)."""
    return conn.execute(
        "DELETE FROM oms.worker_journal WHERE at < now() - make_interval(days => %s)", (keep_days,)
    ).rowcount
