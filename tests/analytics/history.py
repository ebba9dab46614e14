"""A small, fully known order history built through the real domain operations (the domain functions).

The history straddles a month end and the reporting time zone's midnight, so the marts' date bucketing and
duration arithmetic are exercised where they usually break:

* O1 webstore, 2 lines: picked, packed, shipped (handed over 31 Jan 15:00 UTC), delivered 2 Feb; later one unit
  is returned (reason ``size_fit``), received, inspected and refunded.
* O2 ozon, placed 31 Jan 22:30 UTC = 1 Feb 01:30 Moscow (business date 1 Feb): short pick (2 of 3 found; ozon keeps
  one unit of safety stock, hence 4 received),
  a pick discrepancy) → the missing unit is backordered, arrives later and ships in a second shipment: a
  split shipment whose LAST delivery is the order's delivery.
* O3 webstore: allocated, then cancelled before picking (counts as an order and a cancellation, stays out of
  every fulfilment denominator).
* O4 webstore: shipped late (handed over 3 Feb), still in transit.
* O5 wildberries, SKU without stock: backordered, open.

Timestamps that KPIs read (placed, handed over, delivered) are given explicitly; the rest are stamped by the
operations at wall-clock time and read back from Postgres by the tests.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal

import psycopg

from oms_ops.allocation import allocate_backorders, allocate_batch
from oms_ops.business_config import load_business_config, sync_reference_data
from oms_ops.fulfillment import create_shipment, hand_over, mark_delivered, pack, record_pick
from oms_ops.inventory import receive_stock
from oms_ops.orders import accept_orders, cancel_orders
from oms_ops.returns import inspect_return, receive_return, refund_return, request_return

ACTOR = "analytics-test"
WAREHOUSE = "WH-MSK-POD"
PRODUCTS = {
    "SKU-A": (500, Decimal("1000.00")),
    "SKU-B": (800, Decimal("2500.00")),
    "SKU-C": (300, Decimal("700.00")),
    "SKU-D": (1000, Decimal("5000.00")),
}


def ts(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


@dataclass
class History:
    orders: dict[str, int] = field(default_factory=dict)  # label → order_id
    shipments: dict[str, list[int]] = field(default_factory=dict)  # label → shipment ids
    return_id: int | None = None


def _order(label: str, channel: str, placed: str, lines: list[tuple[str, int]]) -> dict:
    return {
        "channel_code": channel,
        "external_id": f"EXT-{label}",
        "placed_at": ts(placed),
        "delivery_method": "courier",
        "region": "Москва",
        "city": "Москва",
        "customer_name": "Иван Петров",
        "payment_status": "paid",
        "shipping_amount": Decimal("300.00"),
        "lines": [{"sku": s, "qty": q, "unit_price": PRODUCTS[s][1]} for s, q in lines],
    }


def _ship(conn: psycopg.Connection, order_id: int, handed_over: str) -> int:
    shipment = create_shipment(conn, order_id, WAREHOUSE, carrier_code="cdek", actor=ACTOR)
    hand_over(conn, [shipment.shipment_id], actor=ACTOR, at=ts(handed_over))
    return shipment.shipment_id


def build_history(conn: psycopg.Connection) -> History:
    """Write the history described in the module docstring into a fresh, migrated database."""
    config = load_business_config()
    sync_reference_data(conn, config)
    with conn.transaction():
        conn.execute(
            """INSERT INTO oms.products (sku, name, weight_g, price)
               SELECT * FROM unnest(%s::text[], %s::text[], %s::int[], %s::numeric[])""",
            (
                list(PRODUCTS),
                list(PRODUCTS),
                [w for w, _ in PRODUCTS.values()],
                [p for _, p in PRODUCTS.values()],
            ),
        )
    receive_stock(conn, WAREHOUSE, {"SKU-A": 10, "SKU-B": 10, "SKU-C": 4}, reference="RCPT-1", actor=ACTOR)

    h = History()
    accepted = accept_orders(
        conn,
        [
            _order("O1", "webstore", "2025-01-31 09:00:00", [("SKU-A", 2), ("SKU-B", 1)]),
            _order("O2", "ozon", "2025-01-31 22:30:00", [("SKU-C", 3)]),
            _order("O3", "webstore", "2025-01-31 10:00:00", [("SKU-A", 1)]),
            _order("O4", "webstore", "2025-01-31 11:00:00", [("SKU-B", 1)]),
            _order("O5", "wildberries", "2025-02-01 09:00:00", [("SKU-D", 1)]),
        ],
        actor=ACTOR,
    )
    for label in ("O1", "O2", "O3", "O4", "O5"):
        h.orders[label] = accepted.ids[
            (
                "webstore" if label in ("O1", "O3", "O4") else {"O2": "ozon", "O5": "wildberries"}[label],
                f"EXT-{label}",
            )
        ]
    allocate_batch(conn, config=config, actor=ACTOR, now=ts("2025-02-01 06:00:00"))

    o1, o2, o3, o4 = (h.orders[k] for k in ("O1", "O2", "O3", "O4"))
    # O1: full pick, pack, ship, deliver
    record_pick(conn, o1, WAREHOUSE, actor=ACTOR)
    pack(conn, o1, WAREHOUSE, actor=ACTOR)
    h.shipments["O1"] = [_ship(conn, o1, "2025-01-31 15:00:00")]
    mark_delivered(conn, h.shipments["O1"], actor=ACTOR, at=ts("2025-02-02 10:00:00"))

    # O2: short pick (2 of 3) → backorder line; first shipment now, the rest after a receipt
    line_c = conn.execute("SELECT line_id FROM oms.order_lines WHERE order_id = %s", (o2,)).fetchone()[0]
    record_pick(conn, o2, WAREHOUSE, {line_c: 2}, actor=ACTOR, reasons={line_c: "not_found"})
    pack(conn, o2, WAREHOUSE, actor=ACTOR)
    first = _ship(conn, o2, "2025-02-01 12:00:00")
    mark_delivered(conn, [first], actor=ACTOR, at=ts("2025-02-03 09:00:00"))
    receive_stock(conn, WAREHOUSE, {"SKU-C": 1}, reference="RCPT-2", actor=ACTOR)
    allocate_backorders(conn, config=config, actor=ACTOR, now=ts("2025-02-03 06:00:00"))
    record_pick(conn, o2, WAREHOUSE, actor=ACTOR)
    pack(conn, o2, WAREHOUSE, actor=ACTOR)
    second = _ship(conn, o2, "2025-02-04 10:00:00")
    mark_delivered(conn, [second], actor=ACTOR, at=ts("2025-02-05 08:00:00"))
    h.shipments["O2"] = [first, second]

    # O3: cancelled before picking
    cancel_orders(conn, [o3], reason="customer changed their mind", actor=ACTOR)

    # O4: shipped late, not delivered yet
    record_pick(conn, o4, WAREHOUSE, actor=ACTOR)
    pack(conn, o4, WAREHOUSE, actor=ACTOR)
    h.shipments["O4"] = [_ship(conn, o4, "2025-02-03 10:00:00")]

    # O1: one unit of SKU-A comes back (size/fit), is restocked and refunded
    line_a = conn.execute(
        "SELECT line_id FROM oms.order_lines WHERE order_id = %s AND sku = 'SKU-A'", (o1,)
    ).fetchone()[0]
    ret = request_return(conn, o1, [(line_a, 1, "size_fit")], actor=ACTOR)
    receive_return(conn, ret.return_id, location_code=WAREHOUSE, actor=ACTOR)
    inspect_return(conn, ret.return_id, "restock", actor=ACTOR)
    refund_return(conn, ret.return_id, actor=ACTOR)
    h.return_id = ret.return_id
    return h


def add_orders(
    conn: psycopg.Connection, n: int, *, start: int, placed: str = "2025-02-02 08:00:00"
) -> list[int]:
    """More accepted (not yet allocated) orders, for incremental runs."""
    res = accept_orders(
        conn,
        [_order(f"N{start + i}", "webstore", placed, [("SKU-B", 1)]) for i in range(n)],
        actor=ACTOR,
    )
    return res.accepted
