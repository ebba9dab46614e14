"""Quick test data for the core domain (usable by every test under tests/; B may import it).

Everything goes through the real operations where one exists (receipts via ``receive_stock``, orders via
``accept_orders``), so tests start from states the system itself produces. ``reserve`` is the one shortcut:
it books reservations at a chosen location without the allocator or a business config (ledger
'reservation' entries, stock.reserved, reservation rows, line/order states) — for tests that need an
allocated order at a known place.

API (all take an autocommit connection; actor is "test"):
    channel(conn, code="webstore", kind="webstore") -> code
    location(conn, code="WH-MSK", kind="warehouse", **columns) -> code
    product(conn, sku, price=100, weight_g=500) -> sku
    stock(conn, location_code, {sku: qty}) -> None            # a receipt with a fresh reference
    order_dict(lines=[("SKU-1", 2)], **fields) -> dict         # a NormalizedOrder-shaped mapping
    order(conn, lines=[("SKU-1", 2)], **fields) -> order_id    # accepted through accept_orders
    reserve(conn, order_id, location_code, {line_id: qty} | None) -> [reservation_id]
    world(conn, skus=("SKU-1", "SKU-2", "SKU-3"), qty=10) -> None  # channel + 2 warehouses + store + stock
    allocated_order(conn, lines, location="WH-MSK", **fields) -> order_id
    shipped_order(conn, lines, location="WH-MSK", carrier="cdek", **fields) -> (order_id, shipment_id)
    line_ids(conn, order_id) -> [line_id by line_no]
    reset(conn) -> None                                        # TRUNCATE everything (hypothesis examples)
    order_state(conn, order_id) / stock_row(conn, loc, sku) / events(conn, order_id, entity) -> read helpers
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import psycopg

from oms_ops import fulfillment
from oms_ops.inventory import Movement, apply_movements, receive_stock
from oms_ops.orders import accept_orders
from oms_ops.state_machine import Change, apply_transitions

ACTOR = "test"
T0 = datetime(2025, 11, 26, 6, 0, tzinfo=UTC)
_seq = itertools.count(1)


def next_id() -> int:
    """A process-wide counter for unique references."""
    return next(_seq)


def channel(
    conn: psycopg.Connection, code: str = "webstore", kind: str = "webstore", active: bool = True
) -> str:
    conn.execute(
        """INSERT INTO oms.channels (channel_code, name, kind, active) VALUES (%s, %s, %s, %s)
           ON CONFLICT (channel_code) DO NOTHING""",
        (code, code.title(), kind, active),
    )
    return code


def location(conn: psycopg.Connection, code: str = "WH-MSK", kind: str = "warehouse", **cols: Any) -> str:
    row = {
        "name": code,
        "region": "Москва",
        "city": "Москва",
        "lat": 55.75,
        "lon": 37.62,
        "hands_over": kind != "warehouse",
        **cols,
    }
    names = ["location_code", "kind", *row]
    conn.execute(
        psycopg.sql.SQL("INSERT INTO oms.locations ({}) VALUES ({}) ON CONFLICT DO NOTHING").format(
            psycopg.sql.SQL(", ").join(map(psycopg.sql.Identifier, names)),
            psycopg.sql.SQL(", ").join(psycopg.sql.Placeholder() * len(names)),
        ),
        [code, kind, *row.values()],
    )
    return code


def product(conn: psycopg.Connection, sku: str, price: int | Decimal = 100, weight_g: int = 500) -> str:
    conn.execute(
        """INSERT INTO oms.products (sku, name, weight_g, price) VALUES (%s, %s, %s, %s)
           ON CONFLICT (sku) DO NOTHING""",
        (sku, f"Product {sku}", weight_g, price),
    )
    return sku


def stock(conn: psycopg.Connection, location_code: str, qty: Mapping[str, int]) -> None:
    receive_stock(conn, location_code, dict(qty), reference=f"TEST-RCPT-{next(_seq)}", actor=ACTOR)


def order_dict(lines: Sequence[tuple[str, int]] = (("SKU-1", 2),), **fields: Any) -> dict[str, Any]:
    n = next(_seq)
    base = {
        "channel_code": "webstore",
        "external_id": f"EXT-{n}",
        "placed_at": T0 + timedelta(seconds=n),
        "delivery_method": "courier",
        "customer_name": "Иван Петров",
        "customer_phone": f"+7 915 {n:07d}",
        "region": "Москва",
        "city": "Москва",
        "address": "ул. Тверская, 1",
        "payment_status": "paid",
        "lines": [{"sku": s, "qty": q, "unit_price": Decimal("100.00")} for s, q in lines],
    }
    base.update(fields)
    return base


def order(conn: psycopg.Connection, lines: Sequence[tuple[str, int]] = (("SKU-1", 2),), **fields: Any) -> int:
    res = accept_orders(conn, [order_dict(lines, **fields)], actor=ACTOR)
    assert len(res.ids) == 1, res
    return next(iter(res.ids.values()))


def line_ids(conn: psycopg.Connection, order_id: int) -> list[int]:
    return [
        r[0]
        for r in conn.execute(
            "SELECT line_id FROM oms.order_lines WHERE order_id = %s ORDER BY line_no", (order_id,)
        ).fetchall()
    ]


def reserve(
    conn: psycopg.Connection, order_id: int, location_code: str, qty: Mapping[int, int] | None = None
) -> list[int]:
    """Reserve lines of an order at a location (default: every open line in full) — test shortcut for
    the allocator. Lines become 'allocated' when fully reserved; the order 'allocated' when every open line
    is, else 'partially_allocated'."""
    with conn.transaction():
        conn.execute("SELECT 1 FROM oms.orders WHERE order_id = %s FOR UPDATE", (order_id,))
        lines = conn.execute(
            """SELECT l.line_id, l.sku, l.qty - l.qty_cancelled - l.qty_shipped
                      - coalesce((SELECT sum(qty) FROM oms.reservations r WHERE r.line_id = l.line_id
                                  AND r.state = 'active'), 0), l.state
               FROM oms.order_lines l WHERE l.order_id = %s ORDER BY l.line_id""",
            (order_id,),
        ).fetchall()
        want = {lid: open_ for lid, _, open_, _ in lines if open_ > 0} if qty is None else dict(qty)
        sku = {lid: s for lid, s, _, _ in lines}
        ids = []
        moves = []
        for lid, q in sorted(want.items()):
            rid = conn.execute(
                """INSERT INTO oms.reservations (order_id, line_id, location_code, sku, qty)
                   VALUES (%s, %s, %s, %s, %s) RETURNING reservation_id""",
                (order_id, lid, location_code, sku[lid], q),
            ).fetchone()[0]
            ids.append(rid)
            moves.append(Movement(location_code, sku[lid], "reservation", 0, q, order_id, lid, rid, "test"))
        apply_movements(conn, moves, actor=ACTOR)
        changes = []
        fully = True
        for lid, _, open_, state in lines:
            if open_ <= 0:
                continue
            if want.get(lid, 0) >= open_:
                if state != "allocated":
                    changes.append(Change(lid, "allocated", "test reserve"))
            else:
                fully = False
        apply_transitions(conn, "order_line", changes, actor=ACTOR)
        st = conn.execute("SELECT state FROM oms.orders WHERE order_id = %s", (order_id,)).fetchone()[0]
        target = "allocated" if fully else "partially_allocated"
        if st in ("new", "backordered", "partially_allocated") and st != target:
            apply_transitions(conn, "order", [Change(order_id, target, "test reserve")], actor=ACTOR)
    return ids


def world(conn: psycopg.Connection, skus: Sequence[str] = ("SKU-1", "SKU-2", "SKU-3"), qty: int = 10) -> None:
    """Channel 'webstore' (+ 'ozon'), warehouses WH-MSK and WH-SPB, store ST-MSK-1 (hands over), products
    priced 100 with ``qty`` units of each at both warehouses."""
    channel(conn)
    channel(conn, "ozon", "marketplace")
    location(conn, "WH-MSK")
    location(conn, "WH-SPB", region="Санкт-Петербург", city="Санкт-Петербург", lat=59.93, lon=30.33)
    location(conn, "ST-MSK-1", "store")
    for s in skus:
        product(conn, s)
    if qty:
        stock(conn, "WH-MSK", {s: qty for s in skus})
        stock(conn, "WH-SPB", {s: qty for s in skus})


def allocated_order(conn, lines=(("SKU-1", 2),), location="WH-MSK", **fields) -> int:
    oid = order(conn, lines, **fields)
    reserve(conn, oid, location)
    return oid


def shipped_order(
    conn, lines=(("SKU-1", 2),), location="WH-MSK", carrier="cdek", **fields
) -> tuple[int, int]:
    oid = allocated_order(conn, lines, location, **fields)
    fulfillment.record_pick(conn, oid, location, actor=ACTOR)
    fulfillment.pack(conn, oid, location, actor=ACTOR)
    sh = fulfillment.create_shipment(conn, oid, location, carrier_code=carrier, actor=ACTOR)
    return oid, sh.shipment_id


def reset(conn: psycopg.Connection) -> None:
    """Empty every table of the oms and raw schemas (identities restarted) — for hypothesis examples that
    share one database."""
    tables = conn.execute(
        """SELECT quote_ident(schemaname) || '.' || quote_ident(tablename) FROM pg_tables
           WHERE schemaname IN ('oms', 'raw') AND tablename <> 'return_reasons' ORDER BY 1"""
    ).fetchall()
    conn.execute(
        psycopg.sql.SQL("TRUNCATE {} RESTART IDENTITY CASCADE").format(
            psycopg.sql.SQL(", ").join(psycopg.sql.SQL(t[0]) for t in tables)
        )
    )
    return None


def state(conn: psycopg.Connection, table: str, id_col: str, id_: int) -> str:
    return conn.execute(
        psycopg.sql.SQL("SELECT state FROM {} WHERE {} = %s").format(
            psycopg.sql.Identifier("oms", table), psycopg.sql.Identifier(id_col)
        ),
        (id_,),
    ).fetchone()[0]


def order_state(conn: psycopg.Connection, order_id: int) -> str:
    return state(conn, "orders", "order_id", order_id)


def stock_row(conn: psycopg.Connection, location_code: str, sku: str) -> tuple[int, int]:
    row = conn.execute(
        "SELECT on_hand, reserved FROM oms.stock WHERE location_code = %s AND sku = %s", (location_code, sku)
    ).fetchone()
    return (row[0], row[1]) if row else (0, 0)


def events(conn: psycopg.Connection, order_id: int, entity: str = "order") -> list[tuple[str | None, str]]:
    return [
        (r[0], r[1])
        for r in conn.execute(
            """SELECT from_state, to_state FROM oms.order_events WHERE order_id = %s AND entity = %s
           ORDER BY event_id""",
            (order_id, entity),
        ).fetchall()
    ]
