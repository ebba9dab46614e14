"""Connector bookkeeping in Postgres: cursors / watermarks, feed health and location mappings.

Cursors are written inside the transaction that stored what they cover (see
``oms_ops.channels.rawstore.store_page``), so a crash never moves a cursor past data that was not stored.
"""

from __future__ import annotations

import logging

import psycopg

from oms_ops.outbox import jsonb

log = logging.getLogger("oms.connectors")


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


def external_location_id(conn: psycopg.Connection, system: str, location_code: str) -> str | None:
    """The id an external system (e.g. the WMS) uses for one of our locations, if mapped."""
    row = conn.execute(
        "SELECT external_id FROM connectors.channel_locations WHERE system = %s AND location_code = %s",
        (system, location_code),
    ).fetchone()
    return row[0] if row else None
