"""KPI figures computed independently from Postgres, in Python, to reconcile the ClickHouse marts against.

Nothing here reads ClickHouse or dbt: rows come straight from the system of record (``oms.*``) and the KPI
rules of docs/kpi-glossary.md are applied in plain Python. The marts must agree exactly on counts and sums and
to the second on durations.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from zoneinfo import ZoneInfo

import psycopg

REPORTING_TZ = ZoneInfo("Europe/Moscow")
DOCUMENT_ERROR_REASONS = {"wrong_item", "not_as_described"}
RECEIVED_RETURN_STATES = {"received", "inspected", "closed"}


def business_date(ts: datetime) -> date:
    return ts.astimezone(REPORTING_TZ).date()


def percentile(values: list[float], p: float) -> float | None:
    """Linear interpolation between closest ranks (Postgres percentile_cont, numpy's default)."""
    if not values:
        return None
    xs = sorted(values)
    pos = p * (len(xs) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


@dataclass
class Order:
    order_id: int
    channel_code: str
    location_code: str
    placed_at: datetime
    placed_date: date
    is_cancelled: bool
    units_ordered: int
    units_sold: int
    revenue: Decimal
    shipped_at: datetime | None
    first_shipped_at: datetime | None
    delivered_at: datetime | None
    shipment_count: int
    units_delivered: int
    ship_by_at: datetime | None
    promise_date: date | None
    pick_lines: int
    accurate_pick_lines: int
    was_backordered: bool
    units_returned: int
    returned_revenue: Decimal
    has_damage: bool
    has_document_error: bool
    shipping_cost: Decimal
    return_reasons: dict[str, int] = field(default_factory=dict)

    @property
    def fulfillment_seconds(self) -> float | None:
        return (self.shipped_at - self.placed_at).total_seconds() if self.shipped_at else None

    @property
    def delivery_seconds(self) -> float | None:
        return (self.delivered_at - self.placed_at).total_seconds() if self.delivered_at else None

    @property
    def shipped_on_time(self) -> bool | None:
        if self.shipped_at is None or self.ship_by_at is None:
            return None
        return self.shipped_at <= self.ship_by_at

    @property
    def delivered_on_time(self) -> bool | None:
        if self.delivered_at is None or self.promise_date is None:
            return None
        return business_date(self.delivered_at) <= self.promise_date

    @property
    def perfect(self) -> bool | None:
        if self.delivered_at is None:
            return None
        return bool(
            self.delivered_on_time
            and self.units_delivered >= self.units_ordered
            and not self.has_damage
            and not self.has_document_error
        )


def _shipped_time(s: dict) -> datetime | None:
    for col in ("handed_over_at", "in_transit_at", "ready_for_pickup_at", "delivered_at", "picked_up_at"):
        if s[col] is not None:
            return s[col]
    return None


def orders_from_postgres(conn: psycopg.Connection) -> dict[int, Order]:
    cur = conn.cursor(row_factory=psycopg.rows.dict_row)
    orders = cur.execute("SELECT * FROM oms.orders ORDER BY order_id").fetchall()
    lines = defaultdict(list)
    for r in cur.execute("SELECT * FROM oms.order_lines"):
        lines[r["order_id"]].append(r)
    ships = defaultdict(list)
    for r in cur.execute(
        """SELECT s.*, coalesce((SELECT sum(qty) FROM oms.shipment_lines sl WHERE sl.shipment_id = s.shipment_id), 0)
                  AS units
           FROM oms.shipments s ORDER BY shipment_id"""
    ):
        ships[r["order_id"]].append(r)
    decisions = defaultdict(list)
    for r in cur.execute("SELECT * FROM oms.allocation_decisions ORDER BY decision_id"):
        decisions[r["order_id"]].append(r)
    picks = defaultdict(list)
    for r in cur.execute(
        "SELECT p.order_id, pl.qty_expected, pl.qty_picked FROM oms.pick_lines pl JOIN oms.picks p USING (pick_id)"
    ):
        picks[r["order_id"]].append(r)
    backordered = {
        r["order_id"]
        for r in cur.execute(
            """SELECT DISTINCT order_id FROM oms.order_events
               WHERE entity IN ('order', 'order_line') AND to_state = 'backordered'"""
        )
    }
    reasons = {r["reason_code"]: r for r in cur.execute("SELECT * FROM oms.return_reasons")}
    returns = defaultdict(list)
    for r in cur.execute(
        """SELECT r.order_id, r.state, rl.reason_code, rl.qty_received, l.unit_price
           FROM oms.return_lines rl JOIN oms.returns r USING (return_id) JOIN oms.order_lines l USING (line_id)"""
    ):
        returns[r["order_id"]].append(r)

    out: dict[int, Order] = {}
    for o in orders:
        oid = o["order_id"]
        ls, ss, ds = lines[oid], ships[oid], decisions[oid]
        units_shipped = sum(ln["qty_shipped"] for ln in ls)
        units_open = sum(ln["qty"] - ln["qty_shipped"] - ln["qty_cancelled"] for ln in ls)
        shipped_times = [_shipped_time(s) for s in ss]
        shipped_at = None
        if units_open == 0 and units_shipped > 0 and ss and all(t is not None for t in shipped_times):
            shipped_at = max(shipped_times)
        delivered = [s for s in ss if s["state"] in ("delivered", "picked_up")]
        rts = [s for s in ss if s["state"] == "returned_to_sender"]
        delivered_at = None
        if units_open == 0 and units_shipped > 0 and delivered and len(delivered) + len(rts) == len(ss):
            delivered_at = max(s["delivered_at"] or s["picked_up_at"] for s in delivered)
        last_reroute = max((d["decision_id"] for d in ds if d["kind"] == "reroute"), default=0)
        with_ship_by = [d for d in ds if d["ship_by"] is not None]
        with_promise = [d for d in ds if d["promise_date"] is not None]
        with_location = [d for d in ds if d["locations"]]
        if ss:
            location = ss[0]["location_code"]
        elif with_location:
            location = with_location[-1]["locations"][0]
        else:
            location = "UNASSIGNED"
        promise = business_date(o["promised_at"]) if o["promised_at"] else None
        if promise is None and with_promise:
            promise = with_promise[-1]["promise_date"]
        rs = [r for r in returns[oid] if r["state"] != "cancelled"]
        received = [r for r in rs if r["state"] in RECEIVED_RETURN_STATES]
        reason_units: dict[str, int] = defaultdict(int)
        for r in received:
            if r["qty_received"] > 0:
                reason_units[r["reason_code"]] += r["qty_received"]
        out[oid] = Order(
            order_id=oid,
            channel_code=o["channel_code"],
            location_code=location,
            placed_at=o["placed_at"],
            placed_date=business_date(o["placed_at"]),
            is_cancelled=o["state"] == "cancelled",
            units_ordered=sum(ln["qty"] for ln in ls if ln["split_from_line_id"] is None),
            units_sold=sum(ln["qty"] - ln["qty_cancelled"] for ln in ls),
            revenue=sum(((ln["qty"] - ln["qty_cancelled"]) * ln["unit_price"] for ln in ls), Decimal(0)),
            shipped_at=shipped_at,
            first_shipped_at=min((t for t in shipped_times if t), default=None),
            delivered_at=delivered_at,
            shipment_count=len(ss),
            units_delivered=sum(s["units"] for s in delivered),
            ship_by_at=with_ship_by[-1]["ship_by"] if with_ship_by else None,
            promise_date=promise,
            pick_lines=len(picks[oid]),
            accurate_pick_lines=sum(1 for p in picks[oid] if p["qty_picked"] == p["qty_expected"]),
            was_backordered=oid in backordered,
            units_returned=sum(r["qty_received"] for r in received),
            returned_revenue=sum((r["qty_received"] * r["unit_price"] for r in received), Decimal(0)),
            has_damage=any(reasons[r["reason_code"]]["is_damage"] for r in rs),
            has_document_error=any(r["reason_code"] in DOCUMENT_ERROR_REASONS for r in rs),
            shipping_cost=sum(
                (
                    Decimal(str(s["cost"]))
                    for d in ds
                    if d["decision_id"] >= last_reroute
                    for s in (
                        d["shipments"] if isinstance(d["shipments"], list) else json.loads(d["shipments"])
                    )
                ),
                Decimal(0),
            ),
            return_reasons=dict(reason_units),
        )
    return out


def _pct(num: float, den: float) -> float | None:
    return None if den == 0 else 100.0 * num / den


def daily_kpis(orders: dict[int, Order]) -> dict[tuple[date, str, str], dict]:
    """agg_kpi_daily as computed from the per-order figures."""
    cells: dict[tuple[date, str, str], list[Order]] = defaultdict(list)
    for o in orders.values():
        cells[(o.placed_date, o.channel_code, o.location_code)].append(o)
    out = {}
    for key, os_ in cells.items():
        shipped = [o for o in os_ if o.shipped_at]
        delivered = [o for o in os_ if o.delivered_at]
        sold = [o for o in os_ if not o.is_cancelled]
        picked = [o for o in os_ if o.pick_lines > 0]
        ship_by = [o for o in shipped if o.shipped_on_time is not None]
        promised = [o for o in delivered if o.delivered_on_time is not None]
        units_sold = sum(o.units_sold for o in os_)
        revenue = sum((o.revenue for o in os_), Decimal(0))
        returned = sum((o.returned_revenue for o in os_), Decimal(0))
        reasons: dict[str, int] = defaultdict(int)
        for o in os_:
            for code, n in o.return_reasons.items():
                reasons[code] += n
        shipping_cost = sum((o.shipping_cost for o in shipped), Decimal(0))
        fulfil = [o.fulfillment_seconds for o in shipped]
        cycle = [o.delivery_seconds for o in delivered]
        out[key] = {
            "orders_placed": len(os_),
            "orders_cancelled": sum(o.is_cancelled for o in os_),
            "cancellation_rate_pct": _pct(sum(o.is_cancelled for o in os_), len(os_)),
            "orders_sold": len(sold),
            "units_ordered": sum(o.units_ordered for o in os_),
            "units_sold": units_sold,
            "revenue": revenue,
            "orders_shipped": len(shipped),
            "orders_delivered": len(delivered),
            "fulfillment_seconds_p50": percentile(fulfil, 0.5),
            "fulfillment_seconds_p90": percentile(fulfil, 0.9),
            "delivery_seconds_p50": percentile(cycle, 0.5),
            "delivery_seconds_p90": percentile(cycle, 0.9),
            "orders_shipped_with_ship_by": len(ship_by),
            "orders_shipped_on_time": sum(bool(o.shipped_on_time) for o in ship_by),
            "on_time_shipment_pct": _pct(sum(bool(o.shipped_on_time) for o in ship_by), len(ship_by)),
            "orders_delivered_with_promise": len(promised),
            "orders_delivered_on_time": sum(bool(o.delivered_on_time) for o in promised),
            "on_time_delivery_pct": _pct(sum(bool(o.delivered_on_time) for o in promised), len(promised)),
            "orders_picked": len(picked),
            "orders_picked_accurately": sum(o.pick_lines == o.accurate_pick_lines for o in picked),
            "pick_accuracy_pct": _pct(
                sum(o.pick_lines == o.accurate_pick_lines for o in picked), len(picked)
            ),
            "units_returned": sum(o.units_returned for o in os_),
            "orders_returned": sum(o.units_returned > 0 for o in os_),
            "returned_revenue": returned,
            "return_rate_units_pct": _pct(sum(o.units_returned for o in os_), units_sold),
            "return_rate_orders_pct": _pct(sum(o.units_returned > 0 for o in os_), len(sold)),
            "return_rate_revenue_pct": _pct(float(returned), float(revenue)),
            "top_return_reasons": [c for c, _ in sorted(reasons.items(), key=lambda kv: (-kv[1], kv[0]))][:3],
            "orders_backordered": sum(o.was_backordered for o in os_),
            "backorder_rate_pct": _pct(sum(o.was_backordered for o in os_), len(os_)),
            "orders_split_shipment": sum(o.shipment_count > 1 for o in shipped),
            "split_shipment_rate_pct": _pct(sum(o.shipment_count > 1 for o in shipped), len(shipped)),
            "shipping_cost": shipping_cost,
            "orders_perfect": sum(bool(o.perfect) for o in delivered),
            "perfect_order_rate_pct": _pct(sum(bool(o.perfect) for o in delivered), len(delivered)),
        }
    return out


def assert_close(actual, expected, *, what: str, seconds: bool = False) -> None:
    """Exact for ints, Decimals and strings; 1e-9 relative for rates; under a second for durations."""
    if expected is None or actual is None:
        assert actual is None and expected is None, f"{what}: {actual!r} != {expected!r}"
    elif seconds:
        assert abs(float(actual) - float(expected)) < 1.0, f"{what}: {actual!r} != {expected!r} (seconds)"
    elif isinstance(expected, float):
        assert abs(float(actual) - expected) <= 1e-9 * max(1.0, abs(expected)), (
            f"{what}: {actual} != {expected}"
        )
    else:
        assert actual == expected, f"{what}: {actual!r} != {expected!r}"
