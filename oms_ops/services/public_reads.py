"""What the public API shows other systems (oms_ops/api/public.py): orders with lines and shipments, stock per
SKU and location. Shaped for integration — stable names, amounts as strings — and without personal data
unless the caller may see it (``personal``)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import psycopg
from psycopg.rows import dict_row


def by_number(conn: psycopg.Connection, order_number: str) -> list[int]:
    return [
        r[0] for r in conn.execute("SELECT order_id FROM oms.orders WHERE order_number = %s", (order_number,))
    ]


def by_channel_number(conn: psycopg.Connection, channel: str, external_id: str) -> list[int]:
    return [
        r[0]
        for r in conn.execute(
            "SELECT order_id FROM oms.orders WHERE channel_code = %s AND external_id = %s",
            (channel, external_id),
        )
    ]


def changed_after(
    conn: psycopg.Connection, after_at: datetime, after_id: int, limit: int
) -> list[tuple[int, datetime]]:
    """Orders changed after ``(after_at, after_id)`` in change order (keyset paging: a page never repeats or
    skips an order, however many change meanwhile — a changed order moves to the end of the feed)."""
    return [
        (r[0], r[1])
        for r in conn.execute(
            """SELECT order_id, updated_at FROM oms.orders
               WHERE (updated_at, order_id) > (%s, %s) ORDER BY updated_at, order_id LIMIT %s""",
            (after_at, after_id, limit),
        )
    ]


def _grouped(conn: psycopg.Connection, query: str, order_ids: list[int]) -> dict[int, list[dict[str, Any]]]:
    """Rows of ``query`` (its first column ``order_id``, the rest named as the API names them) by order."""
    out: dict[int, list[dict[str, Any]]] = {}
    with conn.cursor(row_factory=dict_row) as cur:
        for row in cur.execute(query, (order_ids,)):
            out.setdefault(row.pop("order_id"), []).append(row)
    return out


def orders(conn: psycopg.Connection, order_ids: list[int], *, personal: bool) -> list[dict[str, Any]]:
    """Orders as the public API shows them, in the order of ``order_ids``: amounts as strings, the promise
    (the latest re-promise when there is one), lines, shipments and payment links (the page where the
    customer pays, for orders the OMS takes the money for); the customer's contact only when ``personal``."""
    if not order_ids:
        return []
    heads = _grouped(
        conn,
        """SELECT order_id, order_number, channel_code AS channel, external_id, channel_order_number, state,
                  placed_at, updated_at, delivery_method, pickup_location_code AS pickup_location, region, city,
                  payment_method, payment_status, currency, total_amount::text AS total_amount,
                  shipping_amount::text AS shipping_amount, coalesce(latest_promised_at, promised_at) AS promised_at,
                  hold_code, cancel_reason, shipped_at, delivered_at, cancelled_at,
                  customer_name, customer_phone, customer_email, address
           FROM oms.orders WHERE order_id = ANY(%s)""",
        order_ids,
    )
    lines = _grouped(
        conn,
        """SELECT order_id, line_no, sku, name, qty, qty_shipped, qty_cancelled, qty_returned,
                  unit_price::text AS unit_price, state
           FROM oms.order_lines WHERE order_id = ANY(%s) ORDER BY order_id, line_no""",
        order_ids,
    )
    shipments = _grouped(
        conn,
        """SELECT order_id, shipment_number, carrier_code AS carrier, tracking_number, state,
                  location_code AS from_location, handed_over_at, delivered_at
           FROM oms.shipments WHERE order_id = ANY(%s) ORDER BY order_id, shipment_id""",
        order_ids,
    )
    links = _grouped(
        conn,
        """SELECT order_id, purpose, amount::text AS amount, currency, status, confirmation_url AS payment_url,
                  created_at
           FROM oms.payment_links WHERE order_id = ANY(%s) ORDER BY order_id, link_id""",
        order_ids,
    )
    out = []
    for oid in order_ids:
        if oid not in heads:
            continue
        order = heads[oid][0]
        contact = {k: order.pop(f"customer_{k}") for k in ("name", "phone", "email")}
        contact["address"] = order.pop("address")
        order["lines"], order["shipments"] = lines.get(oid, []), shipments.get(oid, [])
        order["payment_links"] = links.get(
            oid, []
        )  # where the customer pays (orders the OMS takes money for)
        if personal:
            order["customer"] = contact
        out.append(order)
    return out


def stock(conn: psycopg.Connection, skus: list[str], location: str | None) -> list[dict[str, Any]]:
    rows = conn.execute(
        """SELECT s.sku, s.location_code, l.kind, s.on_hand, s.reserved,
                  coalesce((SELECT sum(r.qty) FROM oms.reservations r
                            WHERE r.location_code = s.location_code AND r.sku = s.sku AND r.state = 'active'
                              AND r.expires_at IS NOT NULL AND r.expires_at <= now()), 0)
           FROM oms.stock s JOIN oms.locations l USING (location_code)
           WHERE s.sku = ANY(%s) AND (%s::text IS NULL OR s.location_code = %s) AND l.active
           ORDER BY s.sku, s.location_code""",
        (skus, location, location),
    ).fetchall()
    out: dict[str, dict[str, Any]] = {sku: {"sku": sku, "available": 0, "locations": []} for sku in skus}
    for sku, loc, kind, on_hand, reserved, expired in rows:
        held = reserved - int(expired)
        available = max(on_hand - held, 0)
        out[sku]["locations"].append(
            {"location": loc, "kind": kind, "on_hand": on_hand, "reserved": held, "available": available}
        )
        out[sku]["available"] += available
    return list(out.values())
