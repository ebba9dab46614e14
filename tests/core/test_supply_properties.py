"""Properties of promise dates: whatever the waiting lines and the supplies, no supply is promised more than it
still brings, and promises are first-in-first-out — a line gets the earliest supply that, after the lines
placed before it took theirs, covers it, and a line without a promise had no such supply. Checked on the pure
planner with many examples, and through Postgres (orders, allocator, supplies, ``recompute_promises``)."""

from __future__ import annotations

import functools
from collections import defaultdict
from datetime import UTC, date, datetime, timedelta

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from oms_ops import supply
from oms_ops.allocation import allocate_batch
from oms_ops.supply import Demand, OpenSupply, plan_promises
from tests.core import factories as f

TODAY = date(2025, 11, 26)
T0 = datetime(2025, 11, 26, 5, 0, tzinfo=UTC)
LOCS = ("A", "B", "C")
SKUS = ("X", "Y")

supplies_st = st.lists(
    st.tuples(
        st.sampled_from(LOCS),
        st.integers(-3, 10),  # days from today (overdue ones too)
        st.dictionaries(st.sampled_from(SKUS), st.integers(1, 8), min_size=1),
    ),
    max_size=6,
)
demands_st = st.lists(
    st.tuples(
        st.integers(0, 30),  # minute placed (ties broken by order id)
        st.sampled_from(SKUS),
        st.integers(1, 6),
        st.one_of(st.none(), st.frozensets(st.sampled_from(LOCS), min_size=1)),
        st.one_of(st.none(), st.integers(1, 15)),  # pre-order: release in n days
    ),
    max_size=12,
)
stock_st = st.dictionaries(
    st.tuples(st.sampled_from(LOCS), st.sampled_from(SKUS)), st.integers(1, 5), max_size=3
)


def _build(raw_supplies, raw_demands):
    supplies = [
        OpenSupply(i + 1, loc, TODAY + timedelta(days=d), dict(lines), f"S{i + 1}")
        for i, (loc, d, lines) in enumerate(raw_supplies)
    ]
    demands = [
        Demand(
            line_id=100 + i,
            order_id=1 + i,
            sku=sku,
            qty=qty,
            placed_at=T0 + timedelta(minutes=m),
            eligible=elig,
            release_date=TODAY + timedelta(days=rel) if rel else None,
        )
        for i, (m, sku, qty, elig, rel) in enumerate(raw_demands)
    ]
    return supplies, demands


@settings(max_examples=300, deadline=None)
@given(raw_supplies=supplies_st, raw_demands=demands_st, stock=stock_st)
def test_promises_never_exceed_a_supply_and_are_first_in_first_out(raw_supplies, raw_demands, stock):
    supplies, demands = _build(raw_supplies, raw_demands)
    plan = plan_promises(demands, supplies, today=TODAY, preorder_stock=stock)
    by_line = {p.line_id: p for p in plan}
    assert sorted(by_line) == sorted(d.line_id for d in demands)

    # capacity: per supply and SKU, promised units ≤ what it still brings; on-hand stock likewise
    taken: dict[tuple[int, str], int] = defaultdict(int)
    from_stock: dict[tuple[str, str], int] = defaultdict(int)
    for p in plan:
        if p.covered_by == "supply":
            taken[(p.supply_id, p.sku)] += p.qty
        elif p.covered_by == "stock":
            from_stock[(p.location_code, p.sku)] += p.qty
    remaining = {(s.supply_id, sku): q for s in supplies for sku, q in s.remaining.items()}
    assert all(q <= remaining.get(k, 0) for k, q in taken.items())
    assert all(q <= stock.get(k, 0) for k, q in from_stock.items())

    # FIFO: replay in order time with the commitments the plan itself made
    fifo = sorted(demands, key=lambda d: (d.placed_at, d.order_id, d.line_id))
    used: dict[tuple[int, str], int] = defaultdict(int)
    ordered = sorted(supplies, key=lambda s: (s.expected_date, s.supply_id))
    for d in fifo:
        p = by_line[d.line_id]

        def fits(s, d=d):
            eligible = d.eligible is None or s.location_code in d.eligible
            return eligible and s.remaining.get(d.sku, 0) - used[(s.supply_id, d.sku)] >= d.qty

        first = next((s for s in ordered if fits(s)), None)
        if p.covered_by == "supply":
            assert first is not None and p.supply_id == first.supply_id, (d, p, first)
            used[(p.supply_id, d.sku)] += d.qty
            assert p.promised_date >= max(first.expected_date, TODAY)
        elif p.covered_by is None:
            assert first is None, (d, first)
            assert p.promised_date is None
        if p.promised_date is not None and d.release_date is not None:
            assert p.promised_date >= d.release_date  # a pre-order is never promised before its release
        if p.covered_by == "stock":
            assert d.release_date is not None and p.promised_date == d.release_date


@functools.cache
def _config():
    from oms_ops.business_config import load_business_config

    return load_business_config()


db_supplies = st.lists(
    st.tuples(
        st.sampled_from(("WH-MSK-POD", "WH-SPB-SHU", "ST-MSK-1")),
        st.integers(-2, 9),
        st.dictionaries(st.sampled_from(("P-1", "P-2")), st.integers(1, 6), min_size=1),
    ),
    min_size=1,
    max_size=4,
)
db_orders = st.lists(
    st.tuples(
        st.sampled_from(("webstore", "offline", "ozon")), st.sampled_from(("P-1", "P-2")), st.integers(1, 4)
    ),
    min_size=1,
    max_size=8,
)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(raw_supplies=db_supplies, raw_orders=db_orders)
def test_stored_promises_respect_every_supply_and_order_time(conn, raw_supplies, raw_orders):
    from oms_ops.business_config import sync_reference_data

    cfg = _config()
    f.reset(conn)
    sync_reference_data(conn, cfg)
    for s in ("P-1", "P-2"):
        f.product(conn, s, weight_g=300)
    now = datetime(2025, 11, 26, 6, 0, tzinfo=UTC)
    for i, (channel, sku, qty) in enumerate(raw_orders):
        method = "store_pickup" if channel == "offline" else "courier"
        extra = {"pickup_location_code": "ST-MSK-1"} if channel == "offline" else {}
        f.order(conn, [(sku, qty)], channel_code=channel, placed_at=T0 + timedelta(minutes=i % 3),
                delivery_method=method, **extra)  # fmt: skip
    allocate_batch(conn, config=cfg, now=now)
    supply.upsert_supplies(
        conn,
        [
            {
                "external_id": f"PO-{i}",
                "location_code": loc,
                "expected_date": (TODAY + timedelta(days=d)).isoformat(),
                "lines": [{"sku": s, "qty": q} for s, q in lines.items()],
            }
            for i, (loc, d, lines) in enumerate(raw_supplies)
        ],
        source="manual",
    )
    supply.recompute_promises(conn, cfg, now=now)

    over = conn.execute(
        """SELECT p.supply_id, p.sku, sum(p.qty), min(l.qty - l.qty_received) FROM oms.line_promises p
           JOIN oms.supply_lines l ON l.supply_id = p.supply_id AND l.sku = p.sku
           GROUP BY 1, 2 HAVING sum(p.qty) > min(l.qty - l.qty_received)"""
    ).fetchall()
    assert over == []
    # every waiting line has exactly one row, and the rows agree with the pure planner on the same data
    rows = {
        r[0]: (r[1], r[2])
        for r in conn.execute("SELECT line_id, promised_date, supply_id FROM oms.line_promises").fetchall()
    }
    waiting = conn.execute(
        """SELECT l.line_id FROM oms.order_lines l JOIN oms.orders o USING (order_id)
           WHERE l.state = 'backordered' AND o.state IN ('backordered', 'partially_allocated')"""
    ).fetchall()
    assert sorted(rows) == sorted(r[0] for r in waiting)
    demands = supply.read_demands(conn, cfg, TODAY)
    expected = plan_promises(demands, supply.read_open_supply(conn), today=TODAY)
    assert rows == {p.line_id: (p.promised_date, p.supply_id) for p in expected}
