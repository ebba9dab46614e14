"""Read helpers for the ops dashboards: find an order the way a customer or carrier names it, and show its
timeline (events, lines, shipments, returns). Deliberately small; dbt views take over for lists."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg.rows import dict_row

from oms_ops.errors import NotFound


def find_orders(
    conn: psycopg.Connection,
    *,
    order_number: str | None = None,
    channel_code: str | None = None,
    external_id: str | None = None,
    phone: str | None = None,
    tracking_number: str | None = None,
    limit: int = 50,
) -> list[int]:
    """Order ids matching ALL given criteria, newest first. Phones match on their last 10 digits
    (+7 915 …, 8-915-… and 915… are the same customer)."""
    digits = "".join(ch for ch in phone if ch.isdigit())[-10:] if phone else None
    rows = conn.execute(
        """SELECT o.order_id FROM oms.orders o
           WHERE (%(num)s::text IS NULL OR o.order_number = %(num)s OR o.channel_order_number = %(num)s)
             AND (%(ch)s::text IS NULL OR o.channel_code = %(ch)s)
             AND (%(ext)s::text IS NULL OR o.external_id = %(ext)s)
             AND (%(ph)s::text IS NULL OR right(regexp_replace(o.customer_phone, '\\D', '', 'g'), 10) = %(ph)s)
             AND (%(tn)s::text IS NULL OR EXISTS (SELECT 1 FROM oms.shipments s WHERE s.order_id = o.order_id
                                                  AND (s.tracking_number = %(tn)s OR s.shipment_number = %(tn)s)))
           ORDER BY o.placed_at DESC, o.order_id DESC LIMIT %(lim)s""",
        {
            "num": order_number,
            "ch": channel_code,
            "ext": external_id,
            "ph": digits,
            "tn": tracking_number,
            "lim": limit,
        },
    ).fetchall()
    return [r[0] for r in rows]


@dataclass
class OrderTimeline:
    order: dict[str, Any]
    lines: list[dict[str, Any]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    shipments: list[dict[str, Any]] = field(default_factory=list)
    tracking: list[dict[str, Any]] = field(default_factory=list)
    returns: list[dict[str, Any]] = field(default_factory=list)


def order_timeline(conn: psycopg.Connection, order_id: int) -> OrderTimeline:
    """Everything ops need to answer "where is my order": the order, its lines, every event in order,
    shipments with carrier tracking, and returns."""
    cur = conn.cursor(row_factory=dict_row)
    order = cur.execute("SELECT * FROM oms.orders WHERE order_id = %s", (order_id,)).fetchone()
    if order is None:
        raise NotFound("order", [order_id])
    return OrderTimeline(
        order=order,
        lines=cur.execute(
            "SELECT * FROM oms.order_lines WHERE order_id = %s ORDER BY line_no", (order_id,)
        ).fetchall(),
        events=cur.execute(
            """SELECT event_id, entity, entity_id, from_state, to_state, actor, reason, data, created_at
               FROM oms.order_events WHERE order_id = %s ORDER BY event_id""",
            (order_id,),
        ).fetchall(),
        shipments=cur.execute(
            "SELECT * FROM oms.shipments WHERE order_id = %s ORDER BY shipment_id", (order_id,)
        ).fetchall(),
        tracking=cur.execute(
            """SELECT t.* FROM oms.tracking_events t JOIN oms.shipments s USING (shipment_id)
               WHERE s.order_id = %s ORDER BY t.occurred_at, t.tracking_event_id""",
            (order_id,),
        ).fetchall(),
        returns=cur.execute(
            """SELECT r.*, (SELECT json_agg(rl ORDER BY rl.return_line_id) FROM oms.return_lines rl
                            WHERE rl.return_id = r.return_id) AS lines
               FROM oms.returns r WHERE r.order_id = %s ORDER BY r.return_id""",
            (order_id,),
        ).fetchall(),
    )


def lookup_timeline(conn: psycopg.Connection, **criteria: Any) -> list[OrderTimeline]:
    """``find_orders(**criteria)`` then the timeline of each (order number / channel id / phone / tracking)."""
    return [order_timeline(conn, oid) for oid in find_orders(conn, **criteria)]


def any_shipment(conn: psycopg.Connection) -> bool:
    """Has anything ever shipped? (Nothing for the KPI marts to show before that.)"""
    return conn.execute("SELECT EXISTS (SELECT 1 FROM oms.shipments)").fetchone()[0]
