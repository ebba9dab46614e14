"""Routing backtest: replay a past period's orders against a draft business configuration, read-only.

Why: a routing rule, a strategy or a split policy changed in ``business.yaml`` moves parcels, money and load
between locations, and the only honest preview is the period that really happened. The backtest plans every
order of the period again with the pure planner (:func:`oms_ops.routing.plan_batch`, the same code the live
allocator runs under lock) against the stock each location had when the order arrived, and sets the result
beside what the live allocator decided then.

What is replayed (docs/backtest.md):

* **Orders**: those placed in ``[start, end)`` (optionally of some channels) that the live allocator planned
  at least once (an ``oms.allocation_decisions`` row) — orders held for an unknown SKU or cancelled before
  allocation were never a routing question. Each is planned once, as it arrived, with the quantities
  ordered; ``now`` is its ``placed_at`` (cut-offs, capacity days).
* **Stock** per (location, SKU) = on-hand − reserved from ``oms.inventory_ledger`` as of the order's
  ``placed_at``, without the replayed orders' own reservation, release and ship entries (their stock is
  what the replay reserves instead), minus what the replay reserved for earlier orders of the period. A
  replayed order cancelled as a whole (``orders.cancelled_at``) gives its replayed units back at that
  moment; shipping does not change free stock (on-hand and reserved both drop). Receipts, WMS
  adjustments, write-offs, short picks, restocked returns and other orders' reservations come from the
  ledger as they happened.
* **Capacity**: the replay books its own shipments; other orders' bookings come from their decisions, at
  the time each decision was made.

Not replayed: backorder refills after the order's arrival, reroutes, partial line cancellations, expired
payment holds (an order is planned once; "unfillable" means unfillable when it arrived).

Everything is read in ONE ``REPEATABLE READ, READ ONLY`` transaction: Postgres itself refuses any write, and
the figures come from one consistent snapshot. The real side is each order's first decision (the plan made
when it arrived), so both sides answer the same question; shipped parcels come from ``oms.shipments``.
"""

from __future__ import annotations

import bisect
import time as _time
from collections import defaultdict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

import polars as pl
import psycopg
from psycopg import sql

from oms_ops.business_config import BusinessConfig
from oms_ops.routing import (
    CAPACITY_HORIZON_DAYS,
    LineDemand,
    OrderDemand,
    OrderPlan,
    RoutingContext,
    compile_config,
    plan_batch,
)

#: orders planned per ``plan_batch`` call at most (a call never spans an event or a cut-off / midnight)
MAX_BATCH = 500
#: ledger kinds of a replayed order that the replay stands in for
REPLAYED_KINDS = ("reservation", "release", "ship")

# -- the figures --------------------------------------------------------------------------------------------
#: (key, label, unit, lower is better) — the rows of the comparison, in order
FIGURES: tuple[tuple[str, str, str, bool], ...] = (
    ("orders", "orders replayed", "orders", False),
    ("allocated", "allocated in full", "orders", False),
    ("partial", "partially allocated", "orders", True),
    ("unfillable", "unfillable on arrival", "orders", True),
    ("changed_plans", "plans that differ from the real one", "orders", True),
    ("shipments", "shipments", "shipments", True),
    ("split_rate", "split rate", "share of orders shipping", True),
    ("shipments_per_order", "shipments per order", "shipments/order", True),
    ("carrier_cost_rub", "carrier + handling cost", "RUB", True),
    ("cost_per_order_rub", "cost per order", "RUB/order", True),
    ("mean_distance_km", "mean parcel distance", "km", True),
    ("promise_misses", "promise misses (eta after promise date)", "orders", True),
    ("promise_miss_rate", "promise miss rate", "share of orders shipping", True),
    ("units", "units reserved", "units", False),
)


class BacktestError(ValueError):
    """The backtest's input is wrong (period, channels); the message names the field."""


@dataclass
class BacktestReport:
    start: datetime
    end: datetime
    channels: tuple[str, ...] | None
    config_fingerprint: str
    #: fingerprints of the configurations the live decisions were made with
    live_fingerprints: tuple[str, ...]
    #: rows {figure, label, unit, real, backtest, change}
    figures: list[dict[str, Any]]
    #: rows {location, real_shipments, backtest_shipments, real_units, backtest_units}
    locations: list[dict[str, Any]]
    #: per order where the plans differ: {order_id, real, backtest} (at most ``examples`` of them)
    changed: list[dict[str, Any]]
    #: what Postgres said inside the backtest's transaction (``SHOW transaction_read_only``)
    read_only: bool
    timings_s: dict[str, float] = field(default_factory=dict)
    #: parcels really shipped per order that shipped something (``oms.shipments``), for reference
    shipped_parcels_per_order: float | None = None

    def figure(self, key: str) -> dict[str, Any]:
        return next(f for f in self.figures if f["figure"] == key)

    def as_dict(self) -> dict[str, Any]:
        return {
            "from": self.start.isoformat(),
            "to": self.end.isoformat(),
            "channels": list(self.channels) if self.channels else None,
            "config_fingerprint": self.config_fingerprint,
            "live_fingerprints": list(self.live_fingerprints),
            "read_only": self.read_only,
            "figures": self.figures,
            "locations": self.locations,
            "changed_examples": self.changed,
            "shipped_parcels_per_order": self.shipped_parcels_per_order,
            "timings_s": self.timings_s,
        }


# -- reading the period (one read-only transaction) ----------------------------------------------------------


@contextmanager
def read_only(conn: psycopg.Connection) -> Iterator[psycopg.Connection]:
    """One ``REPEATABLE READ, READ ONLY`` transaction: every read sees the same snapshot, and Postgres refuses
    any write inside it (``ReadOnlySqlTransaction``), whatever the code below does."""
    with conn.transaction():
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        yield conn


# The replayed orders, as a CTE every query shares (values only through placeholders).
_REPLAY = sql.SQL("""
WITH replay AS (
    SELECT o.order_id FROM oms.orders o
    WHERE o.placed_at >= %(start)s AND o.placed_at < %(end)s
      AND (%(channels)s::text[] IS NULL OR o.channel_code = ANY(%(channels)s::text[]))
      AND EXISTS (SELECT 1 FROM oms.allocation_decisions d WHERE d.order_id = o.order_id)
), skus AS (
    SELECT DISTINCT l.sku FROM oms.order_lines l WHERE l.order_id IN (SELECT order_id FROM replay)
)
""")

_ORDERS_SQL = _REPLAY + sql.SQL("""
SELECT o.order_id, o.channel_code, o.delivery_method, o.placed_at, o.total_amount, o.pickup_location_code,
       o.region, o.city, o.lat, o.lon, o.fulfilment_location_code, o.cancelled_at,
       l.line_id, l.sku, l.qty, coalesce(p.weight_g, 0), l.unit_price
FROM oms.orders o
JOIN oms.order_lines l ON l.order_id = o.order_id
LEFT JOIN oms.products p ON p.sku = l.sku
WHERE o.order_id IN (SELECT order_id FROM replay)
ORDER BY o.placed_at, o.order_id, l.line_no
""")

# free = on_hand − reserved per (location, sku) before the period, without the replayed orders' own entries
_LEDGER_BEFORE_SQL = _REPLAY + sql.SQL("""
SELECT g.location_code, g.sku, sum(g.on_hand_delta - g.reserved_delta)::int
FROM oms.inventory_ledger g
WHERE g.sku IN (SELECT sku FROM skus) AND g.created_at < %(start)s
  AND NOT (g.kind = ANY(%(kinds)s::text[]) AND g.order_id IN (SELECT order_id FROM replay))
GROUP BY 1, 2
""")

_LEDGER_DURING_SQL = _REPLAY + sql.SQL("""
SELECT g.created_at, g.location_code, g.sku, sum(g.on_hand_delta - g.reserved_delta)::int AS delta
FROM oms.inventory_ledger g
WHERE g.sku IN (SELECT sku FROM skus) AND g.created_at >= %(start)s AND g.created_at < %(end)s
  AND NOT (g.kind = ANY(%(kinds)s::text[]) AND g.order_id IN (SELECT order_id FROM replay))
GROUP BY 1, 2, 3
HAVING sum(g.on_hand_delta - g.reserved_delta) <> 0
ORDER BY 1
""")

# other orders' capacity bookings, at the time their decision was made
_BOOKINGS_SQL = _REPLAY + sql.SQL("""
SELECT d.created_at, s.value->>'location', (s.value->>'ship_date')::date
FROM oms.allocation_decisions d, jsonb_array_elements(d.shipments) s
WHERE d.created_at >= %(horizon)s AND d.created_at < %(end)s
  AND d.order_id NOT IN (SELECT order_id FROM replay)
ORDER BY 1
""")

# the real side: each replayed order's first decision, one row per shipment line
_REAL_SQL = _REPLAY + sql.SQL("""
, first AS (
    SELECT DISTINCT ON (d.order_id) d.order_id, d.outcome, d.rule_name, d.shipments, d.promise_date,
           d.config_fingerprint
    FROM oms.allocation_decisions d
    WHERE d.order_id IN (SELECT order_id FROM replay)
    ORDER BY d.order_id, d.decision_id
)
SELECT f.order_id, f.outcome, f.rule_name, f.promise_date, f.config_fingerprint,
       s.ord::int, s.value->>'location', (s.value->>'cost')::float8, (s.value->>'distance_km')::float8,
       (s.value->>'eta')::date, l.value->>1, (l.value->>2)::int
FROM first f
LEFT JOIN LATERAL jsonb_array_elements(f.shipments) WITH ORDINALITY AS s(value, ord) ON true
LEFT JOIN LATERAL jsonb_array_elements(s.value->'lines') AS l(value) ON true
""")

_SHIPPED_SQL = _REPLAY + sql.SQL("""
SELECT count(*)::int, count(DISTINCT order_id)::int FROM oms.shipments
WHERE order_id IN (SELECT order_id FROM replay) AND state <> 'cancelled'  -- a parcel called back never left
""")


@dataclass
class _Period:
    """Everything the replay needs, read from one snapshot."""

    orders: list[OrderDemand]
    cancelled: dict[int, datetime]
    free: dict[str, dict[str, int]]  # sku → location → on_hand − reserved before the period
    #: (time, kind, payload): 0 = ledger delta (loc, sku, delta), 1 = booking (loc, day), 2 = cancellation
    events: list[tuple[datetime, int, tuple]]
    capacity: dict[tuple[str, date], int]
    real_orders: pl.DataFrame
    real_lines: pl.DataFrame
    live_fingerprints: tuple[str, ...]
    shipped: tuple[int, int]
    read_only: bool


def _read_period(conn: psycopg.Connection, start: datetime, end: datetime, channels) -> _Period:
    params = {
        "start": start,
        "end": end,
        "channels": list(channels) if channels else None,
        "kinds": list(REPLAYED_KINDS),
        "horizon": start - timedelta(days=CAPACITY_HORIZON_DAYS + 1),
    }
    read_only_now = conn.execute("SHOW transaction_read_only").fetchone()[0] == "on"
    orders: list[OrderDemand] = []
    cancelled: dict[int, datetime] = {}
    head = None
    lines: list[LineDemand] = []

    def close() -> None:
        if head is not None:
            orders.append(_demand(head, lines))

    for r in conn.execute(_ORDERS_SQL, params):
        if head is None or head[0] != r[0]:
            close()
            head, lines = r, []
            if r[11] is not None:
                cancelled[r[0]] = r[11]
        lines.append(LineDemand(r[12], r[13], r[14], r[15], float(r[16])))
    close()

    free: dict[str, dict[str, int]] = defaultdict(dict)
    for loc, sku, f in conn.execute(_LEDGER_BEFORE_SQL, params):
        free[sku][loc] = f
    events: list[tuple[datetime, int, tuple]] = [
        (t, 0, (loc, sku, d)) for t, loc, sku, d in conn.execute(_LEDGER_DURING_SQL, params)
    ]
    capacity: dict[tuple[str, date], int] = defaultdict(int)
    for t, loc, day in conn.execute(_BOOKINGS_SQL, params):
        if t < start:
            capacity[(loc, day)] += 1
        else:
            events.append((t, 1, (loc, day)))
    events.extend((t, 2, (oid,)) for oid, t in cancelled.items() if t < end)
    events.sort(key=lambda e: (e[0], e[1]))

    real = conn.execute(_REAL_SQL, params).fetchall()
    real_orders = pl.DataFrame(
        {
            "order_id": [r[0] for r in real],
            "outcome": [r[1] for r in real],
            "rule": [r[2] for r in real],
            "promise_date": [r[3] for r in real],
        },
        schema={"order_id": pl.Int64, "outcome": pl.Utf8, "rule": pl.Utf8, "promise_date": pl.Date},
    ).unique("order_id", keep="first")
    with_lines = [r for r in real if r[5] is not None and r[10] is not None]
    real_lines = _lines_frame(
        [r[0] for r in with_lines],
        [r[5] for r in with_lines],
        [r[6] for r in with_lines],
        [r[7] for r in with_lines],
        [r[8] for r in with_lines],
        [r[9] for r in with_lines],
        [r[10] for r in with_lines],
        [r[11] for r in with_lines],
    )
    fingerprints = tuple(sorted({r[4] for r in real if r[4]}))
    shipped = conn.execute(_SHIPPED_SQL, params).fetchone()
    return _Period(
        orders,
        cancelled,
        free,
        events,
        capacity,
        real_orders,
        real_lines,
        fingerprints,
        (shipped[0], shipped[1]),
        read_only_now,
    )


def _demand(h: tuple, lines: list[LineDemand]) -> OrderDemand:
    return OrderDemand(
        order_id=h[0],
        channel=h[1],
        delivery_method=h[2],
        placed_at=h[3],
        lines=tuple(lines),
        order_value=float(h[4]),
        pickup_location=h[5],
        region=h[6],
        city=h[7],
        lat=h[8],
        lon=h[9],
        pinned_location=h[10],
    )


_LINE_SCHEMA = {
    "order_id": pl.Int64,
    "shipment": pl.Int64,
    "location": pl.Utf8,
    "cost": pl.Float64,
    "distance_km": pl.Float64,
    "eta": pl.Date,
    "sku": pl.Utf8,
    "qty": pl.Int64,
}


def _lines_frame(*columns: list) -> pl.DataFrame:
    return pl.DataFrame(dict(zip(_LINE_SCHEMA, columns, strict=True)), schema=_LINE_SCHEMA)


# -- the replay (pure) ---------------------------------------------------------------------------------------


def _epoch_bounds(ctx: RoutingContext, start: datetime, end: datetime) -> list[datetime]:
    """Instants at which some location's ship date changes by the clock alone (local midnight, cut-off):
    orders between two of them may share one ``plan_batch`` call with the first one's ``now``."""
    bounds = set()
    for loc in ctx.locations.values():
        day = start.astimezone(loc.tz).date() - timedelta(days=1)
        last = end.astimezone(loc.tz).date() + timedelta(days=1)
        while day <= last:
            bounds.add(datetime.combine(day, datetime.min.time(), loc.tz))
            if loc.cutoff is not None:
                bounds.add(datetime.combine(day, loc.cutoff, loc.tz))
            day += timedelta(days=1)
    return sorted(bounds)


@dataclass
class Replay:
    plans: list[OrderPlan]
    #: what the replay still held per order at the end (cancelled orders gave theirs back)
    held: dict[int, list[tuple[str, str, int]]]


def replay(
    orders: Sequence[OrderDemand],
    free: dict[str, dict[str, int]],
    events: Sequence[tuple[datetime, int, tuple]],
    config: BusinessConfig | RoutingContext,
    *,
    capacity: dict[tuple[str, date], int] | None = None,
    start: datetime | None = None,
    end: datetime | None = None,
) -> Replay:
    """Plan ``orders`` (in placed_at order) one after the other against a stock timeline (pure, no I/O).

    ``free`` is sku → location → on_hand − reserved at the start (mutated); ``events`` (sorted by time) are
    ``(t, 0, (location, sku, delta))`` stock changes, ``(t, 1, (location, ship_date))`` capacity bookings of
    other orders and ``(t, 2, (order_id,))`` cancellations of replayed orders; each applies before any
    order placed at or after ``t``. Orders between two events and two clock boundaries (a location's local
    midnight or cut-off) are planned in one ``plan_batch`` call: the planner sees exactly what it would
    have seen order by order, and the call's overhead is shared.
    """
    ctx = config if isinstance(config, RoutingContext) else compile_config(config)
    cap: dict[date, dict[str, int]] = defaultdict(dict)
    for (loc, day), n in (capacity or {}).items():
        cap[day][loc] = cap[day].get(loc, 0) + n
    if orders:
        start = start or orders[0].placed_at
        end = end or orders[-1].placed_at + timedelta(seconds=1)
    bounds = _epoch_bounds(ctx, start, end) if orders else []
    held: dict[int, list[tuple[str, str, int]]] = {}
    plans: list[OrderPlan] = []
    ev = 0
    n_events = len(events)

    def apply_events(until: datetime) -> None:
        nonlocal ev
        while ev < n_events and events[ev][0] <= until:
            _, kind, payload = events[ev]
            ev += 1
            if kind == 0:
                loc, sku, delta = payload
                row = free.setdefault(sku, {})
                row[loc] = row.get(loc, 0) + delta
            elif kind == 1:
                loc, day = payload
                cap[day][loc] = cap[day].get(loc, 0) + 1
            else:
                for loc, sku, q in held.pop(payload[0], ()):
                    free[sku][loc] = free[sku].get(loc, 0) + q

    def flush(batch: list[OrderDemand]) -> None:
        now = batch[0].placed_at
        skus = {line.sku for o in batch for line in o.lines}
        sub = {(loc, sku): v for sku in skus for loc, v in free.get(sku, {}).items() if v > 0}
        first = now.date() - timedelta(days=2)
        used = {
            (loc, d): n
            for d in (first + timedelta(days=i) for i in range(CAPACITY_HORIZON_DAYS + 4))
            for loc, n in cap.get(d, {}).items()
        }
        for p in plan_batch(batch, sub, ctx, now=now, capacity_used=used):
            plans.append(p)
            if not p.shipments:
                continue
            mine = held.setdefault(p.order_id, [])
            for s in p.shipments:
                for _, sku, q in s.lines:
                    row = free[sku]
                    row[s.location] = row.get(s.location, 0) - q
                    mine.append((s.location, sku, q))
                day = cap[s.ship_date]
                day[s.location] = day.get(s.location, 0) + 1

    batch: list[OrderDemand] = []
    epoch = -1
    for order in orders:
        t = order.placed_at
        e = bisect.bisect_right(bounds, t)
        if batch and (e != epoch or len(batch) >= MAX_BATCH or (ev < n_events and events[ev][0] <= t)):
            flush(batch)
            batch = []
        if not batch:
            apply_events(t)
            epoch = e
        batch.append(order)
    if batch:
        flush(batch)
    return Replay(plans, held)


# -- comparison (polars) -------------------------------------------------------------------------------------


def _replay_frames(plans: Sequence[OrderPlan]) -> tuple[pl.DataFrame, pl.DataFrame]:
    oid, outcome, rule, promise = [], [], [], []
    cols: list[list] = [[] for _ in _LINE_SCHEMA]
    for p in plans:
        oid.append(p.order_id)
        outcome.append(p.outcome)
        rule.append(p.rule)
        promise.append(p.promise_date)
        for n, s in enumerate(p.shipments, start=1):
            for _, sku, q in s.lines:
                for c, v in zip(
                    cols, (p.order_id, n, s.location, s.cost, s.distance_km, s.eta, sku, q), strict=True
                ):
                    c.append(v)
    orders = pl.DataFrame(
        {"order_id": oid, "outcome": outcome, "rule": rule, "promise_date": promise},
        schema={"order_id": pl.Int64, "outcome": pl.Utf8, "rule": pl.Utf8, "promise_date": pl.Date},
    )
    return orders, _lines_frame(*cols)


def _figures(orders: pl.DataFrame, lines: pl.DataFrame) -> dict[str, float]:
    """One side's figures: orders frame (order_id, outcome, promise_date), lines frame (one row per
    shipment line)."""
    shipments = lines.group_by("order_id", "shipment").agg(
        pl.col("location").first(),
        pl.col("cost").first(),
        pl.col("distance_km").first(),
        pl.col("eta").first(),
    )
    per_order = (
        shipments.group_by("order_id")
        .agg(pl.len().alias("n"), pl.col("eta").max().alias("eta"))
        .join(orders.select("order_id", "promise_date"), on="order_id", how="left")
    )
    n_orders = orders.height
    shipping = per_order.height
    n_shipments = shipments.height
    split = per_order.filter(pl.col("n") > 1).height
    misses = per_order.filter(pl.col("eta") > pl.col("promise_date")).height
    cost = float(shipments["cost"].sum() or 0.0)
    distance = shipments["distance_km"].drop_nulls()
    outcomes = dict(orders.group_by("outcome").len().iter_rows())
    return {
        "orders": n_orders,
        "allocated": outcomes.get("allocated", 0),
        "partial": outcomes.get("partially_allocated", 0),
        "unfillable": outcomes.get("backordered", 0),
        "shipments": n_shipments,
        "split_rate": round(split / shipping, 4) if shipping else 0.0,
        "shipments_per_order": round(n_shipments / shipping, 4) if shipping else 0.0,
        "carrier_cost_rub": round(cost, 2),
        "cost_per_order_rub": round(cost / shipping, 2) if shipping else 0.0,
        "mean_distance_km": round(float(distance.mean()), 1) if distance.len() else 0.0,
        "promise_misses": misses,
        "promise_miss_rate": round(misses / shipping, 4) if shipping else 0.0,
        "units": int(lines["qty"].sum() or 0),
    }


def _signatures(orders: pl.DataFrame, lines: pl.DataFrame) -> pl.DataFrame:
    """order_id → "outcome|LOC:SKU:qty,…" (what was reserved where), for telling plans apart."""
    parts = (
        lines.group_by("order_id", "location", "sku")
        .agg(pl.col("qty").sum())
        .sort("order_id", "location", "sku")
        .with_columns(part=pl.format("{}:{}:{}", "location", "sku", "qty"))
        .group_by("order_id")
        .agg(pl.col("part").str.join(","))
    )
    return (
        orders.select("order_id", "outcome")
        .join(parts, on="order_id", how="left")
        .select("order_id", sig=pl.format("{}|{}", "outcome", pl.col("part").fill_null("")))
    )


def _load(lines: pl.DataFrame, side: str) -> pl.DataFrame:
    return lines.group_by("location").agg(
        pl.struct("order_id", "shipment").n_unique().alias(f"{side}_shipments"),
        pl.col("qty").sum().alias(f"{side}_units"),
    )


def compare(
    real_orders: pl.DataFrame,
    real_lines: pl.DataFrame,
    replay_orders: pl.DataFrame,
    replay_lines: pl.DataFrame,
    *,
    examples: int = 20,
) -> tuple[list[dict], list[dict], list[dict]]:
    """(figures, per-location load, examples of changed plans), real beside backtest."""
    real = _figures(real_orders, real_lines)
    back = _figures(replay_orders, replay_lines)
    sig = _signatures(real_orders, real_lines).join(
        _signatures(replay_orders, replay_lines), on="order_id", how="full", suffix="_backtest", coalesce=True
    )
    diff = sig.filter(pl.col("sig").fill_null("") != pl.col("sig_backtest").fill_null("")).sort("order_id")
    real["changed_plans"] = 0
    back["changed_plans"] = diff.height
    figures = []
    for key, label, unit, _ in FIGURES:
        r, b = real[key], back[key]
        figures.append(
            {"figure": key, "label": label, "unit": unit, "real": r, "backtest": b, "change": round(b - r, 4)}
        )
    load = (
        _load(real_lines, "real")
        .join(_load(replay_lines, "backtest"), on="location", how="full", coalesce=True)
        .fill_null(0)
        .select("location", "real_shipments", "backtest_shipments", "real_units", "backtest_units")
        .sort("location")
    )
    changed = [
        {"order_id": oid, "real": r, "backtest": b}
        for oid, r, b in diff.head(examples).select("order_id", "sig", "sig_backtest").iter_rows()
    ]
    return figures, load.to_dicts(), changed


# -- the operation -------------------------------------------------------------------------------------------


def backtest(
    conn: psycopg.Connection,
    config: BusinessConfig,
    *,
    start: datetime,
    end: datetime,
    channels: Sequence[str] | None = None,
    examples: int = 20,
) -> BacktestReport:
    """Replay the orders placed in ``[start, end)`` (of ``channels``) against ``config``; nothing is written.

    Reads in one read-only transaction (:func:`read_only`), replays in memory (:func:`replay`) and compares
    with each order's first live decision (:func:`compare`).
    """
    if start.tzinfo is None or end.tzinfo is None:
        raise BacktestError("from/to: need a time zone")
    if end <= start:
        raise BacktestError(f"to: must be after from ({start.isoformat()} … {end.isoformat()})")
    chans = tuple(sorted(set(channels))) if channels else None
    timings: dict[str, float] = {}
    t0 = _time.perf_counter()
    with read_only(conn):
        period = _read_period(conn, start, end, chans)
    timings["read"] = round(_time.perf_counter() - t0, 3)
    t0 = _time.perf_counter()
    result = replay(
        period.orders, period.free, period.events, config, capacity=period.capacity, start=start, end=end
    )
    timings["replay"] = round(_time.perf_counter() - t0, 3)
    t0 = _time.perf_counter()
    replay_orders, replay_lines = _replay_frames(result.plans)
    figures, load, changed = compare(
        period.real_orders, period.real_lines, replay_orders, replay_lines, examples=examples
    )
    timings["compare"] = round(_time.perf_counter() - t0, 3)
    parcels, shipped_orders = period.shipped
    return BacktestReport(
        start=start,
        end=end,
        channels=chans,
        config_fingerprint=config.fingerprint,
        live_fingerprints=period.live_fingerprints,
        figures=figures,
        locations=load,
        changed=changed,
        read_only=period.read_only,
        timings_s=timings,
        shipped_parcels_per_order=round(parcels / shipped_orders, 4) if shipped_orders else None,
    )
