"""Test data for the allocation tests (reference data from the sample config, products, stock, orders).

Products enter through ``upsert_products``, stock through ``receive_stock`` (ledger 'receipt') and
orders through ``accept_orders``, so the allocation tests exercise the real paths; ``violations`` runs
``check_invariants`` (stock = ledger, reserved = active reservations, lines reserved at most once, …).
"""

from __future__ import annotations

import itertools
from datetime import UTC, datetime
from decimal import Decimal

import psycopg

from oms_ops.business_config import BusinessConfig, load_business_config, sync_reference_data
from oms_ops.catalog import upsert_products
from oms_ops.invariants import check_invariants
from oms_ops.inventory import receive_stock
from oms_ops.orders import accept_orders

#: 09:00 Moscow on a Wednesday: before every cut-off
NOW = datetime(2025, 11, 26, 6, 0, tzinfo=UTC)
_ids = itertools.count(1)


def sample_config() -> BusinessConfig:
    return load_business_config()


def seed_reference(conn: psycopg.Connection, config: BusinessConfig, skus: dict[str, int]) -> None:
    """Channels + locations from the config; products ``{sku: weight_g}``."""
    sync_reference_data(conn, config)
    upsert_products(conn, [{"sku": s, "name": s, "weight_g": w, "price": 1000} for s, w in skus.items()])


def receive(conn: psycopg.Connection, location: str, lines: dict[str, int]) -> None:
    receive_stock(conn, location, lines, reference=f"RCPT-{next(_ids)}", actor="test")


def order_dict(
    lines: list[tuple[str, int]],
    *,
    channel: str = "webstore",
    method: str = "courier",
    region: str | None = "Москва",
    pickup: str | None = None,
    placed_at: datetime | None = None,
    price: int = 1000,
    paid: bool = True,
    lat: float | None = None,
    lon: float | None = None,
    fulfilment: str | None = None,
) -> dict:
    """A NormalizedOrder-shaped mapping for ``accept_orders``."""
    return {
        "channel_code": channel,
        "external_id": f"EXT-{next(_ids)}",
        "placed_at": placed_at or datetime(2025, 11, 26, 5, 0, tzinfo=UTC),
        "delivery_method": method,
        "pickup_location_code": pickup,
        "fulfilment_location_code": fulfilment,
        "region": region,
        "lat": lat,
        "lon": lon,
        "payment_status": "paid" if paid else "pending",
        "lines": [{"sku": s, "qty": q, "unit_price": Decimal(price)} for s, q in lines],
    }


def place(conn: psycopg.Connection, lines: list[tuple[str, int]], **fields) -> int:
    """Accept one order through intake; returns its order_id."""
    res = accept_orders(conn, [order_dict(lines, **fields)], actor="test")
    assert res.accepted, res
    return res.accepted[0]


def place_many(conn: psycopg.Connection, orders: list[dict]) -> list[int]:
    res = accept_orders(conn, orders, actor="test")
    assert len(res.accepted) == len(orders), res
    return res.accepted


def stock(conn: psycopg.Connection) -> dict[tuple[str, str], tuple[int, int]]:
    return {
        (r[0], r[1]): (r[2], r[3])
        for r in conn.execute("SELECT location_code, sku, on_hand, reserved FROM oms.stock ORDER BY 1, 2")
    }


def active_reservations(conn: psycopg.Connection, order_id: int | None = None) -> list[tuple]:
    return conn.execute(
        """SELECT line_id, location_code, sku, qty FROM oms.reservations
           WHERE state = 'active' AND (%(o)s::bigint IS NULL OR order_id = %(o)s) ORDER BY 1, 2""",
        {"o": order_id},
    ).fetchall()


def order_state(conn: psycopg.Connection, order_id: int) -> tuple[str, list[str]]:
    state = conn.execute("SELECT state FROM oms.orders WHERE order_id = %s", (order_id,)).fetchone()[0]
    lines = [
        r[0]
        for r in conn.execute(
            "SELECT state FROM oms.order_lines WHERE order_id = %s ORDER BY line_no", (order_id,)
        )
    ]
    return state, lines


def violations(conn: psycopg.Connection, *, ignore: tuple[str, ...] = ()) -> list[str]:
    """the invariant checks as readable strings (empty = healthy)."""
    return [str(v) for v in check_invariants(conn) if v.invariant not in ignore]


def test_seeded_stock_matches_its_ledger(conn):
    config = sample_config()
    seed_reference(conn, config, {"SKU-1": 500})
    receive(conn, "WH-MSK-POD", {"SKU-1": 5})
    assert stock(conn) == {("WH-MSK-POD", "SKU-1"): (5, 0)}
    assert violations(conn) == []
