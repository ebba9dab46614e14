"""Health numbers for the Dagster checks: orders past their SLA, quarantine growth, the normaliser's backlog,
feed freshness."""

from __future__ import annotations

from datetime import UTC, datetime

import psycopg

from oms_ops.business_config import BusinessConfig

#: order states before hand-over
OPEN_ORDER_STATES = ("new", "on_hold", "backordered", "partially_allocated", "allocated", "picking", "packed")


def orders_past_sla(
    conn: psycopg.Connection, config: BusinessConfig, *, now: datetime | None = None, sample: int = 10
) -> dict:
    """Open (not yet shipped) orders whose ship-by deadline has passed: the allocation decision's ``ship_by``,
    or placed_at + the SLA's ship-by hours for orders without a decision."""
    now = now or datetime.now(UTC)
    combos = [(c.code, m) for c in config.channels for m in ("courier", "pickup_point", "store_pickup")]
    hours = [config.sla_for(c, m).ship_by_hours for c, m in combos]
    rows = conn.execute(
        """WITH sla AS (SELECT * FROM unnest(%s::text[], %s::text[], %s::float8[]) AS t(channel, method, hours)),
                open AS (
                    SELECT o.order_id, o.order_number, o.state, o.channel_code,
                           coalesce((SELECT d.ship_by FROM oms.allocation_decisions d WHERE d.order_id = o.order_id
                                     ORDER BY d.decision_id DESC LIMIT 1),
                                    o.placed_at + make_interval(secs => sla.hours * 3600)) AS ship_by
                    FROM oms.orders o LEFT JOIN sla ON sla.channel = o.channel_code AND sla.method = o.delivery_method
                    WHERE o.state = ANY(%s))
           SELECT order_id, order_number, state, channel_code, ship_by FROM open WHERE ship_by < %s
           ORDER BY ship_by""",
        ([c for c, _ in combos], [m for _, m in combos], hours, list(OPEN_ORDER_STATES), now),
    ).fetchall()
    by_state: dict[str, int] = {}
    by_channel: dict[str, int] = {}
    for _, _, state, channel, _ in rows:
        by_state[state] = by_state.get(state, 0) + 1
        by_channel[channel] = by_channel.get(channel, 0) + 1
    return {
        "count": len(rows),
        "by_state": by_state,
        "by_channel": by_channel,
        "oldest": [{"order": r[1], "state": r[2], "ship_by": r[4].isoformat()} for r in rows[:sample]],
    }


def quarantine_growth(conn: psycopg.Connection, source: str, *, window_minutes: int = 60) -> dict:
    """Open quarantine rows of a source: total and new within the window."""
    total, recent = conn.execute(
        """SELECT count(*), count(*) FILTER (WHERE received_at > now() - make_interval(mins => %s))
           FROM raw.quarantine WHERE state = 'open' AND source = %s""",
        (window_minutes, source),
    ).fetchone()
    return {"open": total, f"new_last_{window_minutes}_min": recent}


def normalisation_backlog(conn: psycopg.Connection, channel: str) -> dict:
    """Payloads of a channel waiting in the normaliser's queue (``raw.pending_orders``): how many, and how
    long the oldest has waited. A queue that only grows means the normaliser keeps failing on a batch."""
    queued, oldest = conn.execute(
        """SELECT count(*), extract(epoch FROM now() - min(r.received_at))
           FROM raw.pending_orders p JOIN raw.channel_orders r USING (raw_id) WHERE p.channel_code = %s""",
        (channel,),
    ).fetchone()
    return {"queued": queued, "oldest_wait_seconds": float(oldest) if oldest is not None else 0.0}


def feed_freshness(conn: psycopg.Connection, feed: str) -> dict:
    row = conn.execute(
        """SELECT last_success_at, extract(epoch FROM now() - last_success_at), last_error_at, last_error
           FROM connectors.feed_status WHERE feed = %s""",
        (feed,),
    ).fetchone()
    if row is None:
        return {"last_success_at": None, "age_seconds": None, "last_error": None}
    return {
        "last_success_at": row[0].isoformat() if row[0] else None,
        "age_seconds": float(row[1]) if row[1] is not None else None,
        "last_error_at": row[2].isoformat() if row[2] else None,
        "last_error": row[3],
    }
