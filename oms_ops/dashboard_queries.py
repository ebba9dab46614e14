"""Read queries of the Streamlit dashboards that are not operational figures (presentation lives in
``dashboards/``, the SQL lives here).

Operational figures — backlog, orders at risk, available to sell, quarantine, sync state, shipment documents —
have one definition each, the dbt views of ``oms_ops.read_model``; the pages read them there. What remains
here are lists behind the pages' actions (orders on hold, outbox failures, one order), stock as recorded,
reference lists, and the KPI reads of the ClickHouse marts.

Postgres reads take an autocommit connection and return plain rows (``list[dict]``) that pickle, so the pages
can cache them with ``st.cache_data(ttl=…)``; values only through placeholders. ClickHouse reads take a
clickhouse-connect client whose database holds the dbt marts (``agg_kpi_daily``, ``fct_orders``,
``fct_order_lines``, ``fct_returns``) and the KPI glossary ``dim_kpi``; every ClickHouse query is a constant
with ``{name:Type}`` parameters.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

import psycopg
from psycopg.rows import dict_row


def _rows(conn: psycopg.Connection, query: Any, params: Any = None) -> list[dict[str, Any]]:
    return conn.cursor(row_factory=dict_row).execute(query, params).fetchall()


# -- operations: exceptions -------------------------------------------------------------------------------------


def exception_orders(conn: psycopg.Connection, *, limit: int = 500) -> list[dict[str, Any]]:
    """Orders that need a person: on hold, backordered or partially allocated, oldest first, with the
    customer (the page masks it by role) and the latest allocation reason."""
    return _rows(
        conn,
        """SELECT o.order_id, o.order_number, o.channel_code, o.external_id, o.state, o.placed_at, o.hold_code,
                  o.hold_reason, o.total_amount, o.customer_name, o.customer_phone,
                  (SELECT d.reason FROM oms.allocation_decisions d WHERE d.order_id = o.order_id
                   ORDER BY d.decision_id DESC LIMIT 1) AS decision
           FROM oms.orders o WHERE o.state IN ('on_hold', 'backordered', 'partially_allocated')
           ORDER BY o.placed_at, o.order_id LIMIT %s""",
        (limit,),
    )


def order_brief(conn: psycopg.Connection, order_number: str) -> dict[str, Any] | None:
    """One order by its number (ours or the channel's): id, state, channel, reservations by location."""
    rows = _rows(
        conn,
        """SELECT o.order_id, o.order_number, o.channel_code, o.state, o.placed_at, o.hold_reason,
                  o.customer_name, o.customer_phone, o.total_amount,
                  (SELECT string_agg(DISTINCT r.location_code, ', ' ORDER BY r.location_code)
                   FROM oms.reservations r WHERE r.order_id = o.order_id AND r.state = 'active') AS reserved_at
           FROM oms.orders o WHERE o.order_number = %(n)s OR o.channel_order_number = %(n)s
           ORDER BY o.order_id LIMIT 1""",
        {"n": order_number.strip()},
    )
    return rows[0] if rows else None


def outbox_problems(conn: psycopg.Connection, *, limit: int = 200) -> list[dict[str, Any]]:
    """Effects that failed to deliver (carrier errors, channel pushes …): dead first, then failed."""
    return _rows(
        conn,
        """SELECT outbox_id, effect, state, attempts, last_error, next_attempt_at, created_at, idempotency_key,
                  payload->>'order_number' AS order_number
           FROM oms.outbox WHERE state IN ('dead', 'failed')
           ORDER BY (state = 'dead') DESC, outbox_id LIMIT %s""",
        (limit,),
    )


def outbox_counts(conn: psycopg.Connection) -> dict[str, int]:
    """Effects that could not be delivered: ``{dead, failed}``."""
    row = _rows(
        conn,
        """SELECT count(*) FILTER (WHERE state = 'dead') AS dead, count(*) FILTER (WHERE state = 'failed') AS failed
           FROM oms.outbox WHERE state IN ('dead', 'failed')""",
    )[0]
    return {k: int(v) for k, v in row.items()}


# -- operations: stock as recorded (available to sell: oms_ops.read_model) ---------------------------------------


def stock_by_location(conn: psycopg.Connection) -> list[dict[str, Any]]:
    """Per location: SKUs stocked, units on hand / reserved / free, active reservations and orders."""
    return _rows(
        conn,
        """SELECT l.location_code, l.name, l.kind, l.city,
                  count(s.sku) FILTER (WHERE s.on_hand > 0)::int AS skus,
                  coalesce(sum(s.on_hand), 0)::int AS on_hand,
                  coalesce(sum(s.reserved), 0)::int AS reserved,
                  coalesce(sum(s.on_hand - s.reserved), 0)::int AS free,
                  (SELECT count(*) FROM oms.reservations r
                   WHERE r.location_code = l.location_code AND r.state = 'active')::int AS reservations,
                  (SELECT count(DISTINCT r.order_id) FROM oms.reservations r
                   WHERE r.location_code = l.location_code AND r.state = 'active')::int AS orders_reserved,
                  max(s.updated_at) AS updated_at
           FROM oms.locations l LEFT JOIN oms.stock s ON s.location_code = l.location_code
           WHERE l.active GROUP BY l.location_code ORDER BY l.location_code""",
    )


def stock_rows(conn: psycopg.Connection, *, location_code: str | None = None) -> list[dict[str, Any]]:
    """Stock per (location, sku) with the product name, optionally of one location."""
    return _rows(
        conn,
        """SELECT s.location_code, s.sku, p.name, s.on_hand, s.reserved, s.on_hand - s.reserved AS free,
                  s.updated_at
           FROM oms.stock s LEFT JOIN oms.products p ON p.sku = s.sku
           WHERE %(loc)s::text IS NULL OR s.location_code = %(loc)s
           ORDER BY s.location_code, s.sku""",
        {"loc": location_code},
    )


# -- order lookup and reference lists ---------------------------------------------------------------------------


def order_number(conn: psycopg.Connection, order_id: int) -> str | None:
    row = conn.execute("SELECT order_number FROM oms.orders WHERE order_id = %s", (order_id,)).fetchone()
    return row[0] if row else None


def return_reasons(conn: psycopg.Connection) -> list[dict[str, Any]]:
    return _rows(conn, "SELECT reason_code, description FROM oms.return_reasons ORDER BY reason_code")


def active_channels(conn: psycopg.Connection) -> list[str]:
    return [
        r[0] for r in conn.execute("SELECT channel_code FROM oms.channels WHERE active ORDER BY 1").fetchall()
    ]


def active_locations(conn: psycopg.Connection, *, kinds: Sequence[str] | None = None) -> list[dict[str, Any]]:
    return _rows(
        conn,
        """SELECT location_code, name, kind, city FROM oms.locations
           WHERE active AND (%(k)s::text[] IS NULL OR kind = ANY(%(k)s::text[])) ORDER BY location_code""",
        {"k": list(kinds) if kinds else None},
    )


def products(conn: psycopg.Connection, *, limit: int = 5000) -> list[dict[str, Any]]:
    return _rows(
        conn, "SELECT sku, name, price FROM oms.products WHERE active ORDER BY sku LIMIT %s", (limit,)
    )


# -- KPIs (ClickHouse marts) ---------------------------------------------------------------------------------

KPI_TABLES = ("agg_kpi_daily", "fct_orders", "fct_order_lines", "fct_returns", "dim_kpi")

#: Additive columns of agg_kpi_daily (the numerators and denominators of every rate in the KPI glossary,
#: and the counts the page shows); rates are re-computed from their sums.
KPI_SUMS = (
    "orders_placed",
    "orders_cancelled",
    "orders_sold",
    "units_sold",
    "revenue",
    "orders_shipped",
    "orders_delivered",
    "orders_shipped_with_ship_by",
    "orders_shipped_on_time",
    "orders_delivered_with_promise",
    "orders_delivered_on_time",
    "orders_picked",
    "orders_picked_accurately",
    "units_returned",
    "orders_returned",
    "returned_revenue",
    "orders_backordered",
    "orders_split_shipment",
    "shipping_cost",
    "orders_perfect",
)

# Every query below is a constant: values travel as ClickHouse query parameters ({name:Type}).
_SQL_TABLES = """SELECT name FROM system.tables
WHERE database = currentDatabase() AND has({names:Array(String)}, name)"""

_SQL_FRESHNESS = {
    "agg_kpi_daily": "SELECT max(_loaded_at) AS m, count() AS n FROM agg_kpi_daily",
    "fct_orders": "SELECT max(_loaded_at) AS m, count() AS n FROM fct_orders",
    "fct_order_lines": "SELECT max(_loaded_at) AS m, count() AS n FROM fct_order_lines",
    "fct_returns": "SELECT max(_loaded_at) AS m, count() AS n FROM fct_returns",
}

_SQL_DIMENSIONS = """SELECT groupUniqArray(channel_code) AS c, groupUniqArray(location_code) AS l,
    max(date_day) AS last_day, count() AS n
FROM agg_kpi_daily"""

# The KPI glossary (seed kpi_glossary → dim_kpi): the rates the page shows, each with its name, unit and the
# agg_kpi_daily columns of its numerator and denominator — the same definition the mart computes its rates by.
_SQL_KPI_RATES = """SELECT kpi_code, kpi_name, unit, mart_column, numerator_column, denominator_column,
    numerator, denominator
FROM dim_kpi
WHERE ifNull(numerator_column, '') != '' AND ifNull(denominator_column, '') != ''
ORDER BY kpi_code"""

_SQL_KPI_ROWS = """SELECT date_day, channel_code, location_code,
    orders_placed, orders_cancelled, orders_sold, units_sold, toFloat64(revenue) AS revenue, orders_shipped,
    orders_delivered, orders_shipped_with_ship_by, orders_shipped_on_time, orders_delivered_with_promise,
    orders_delivered_on_time, orders_picked, orders_picked_accurately, units_returned, orders_returned,
    toFloat64(returned_revenue) AS returned_revenue, orders_backordered, orders_split_shipment,
    toFloat64(shipping_cost) AS shipping_cost, orders_perfect
FROM agg_kpi_daily
WHERE date_day BETWEEN {start:Date} AND {end:Date}
  AND (empty({channels:Array(String)}) OR has({channels:Array(String)}, channel_code))
  AND (empty({locations:Array(String)}) OR has({locations:Array(String)}, location_code))
ORDER BY date_day, channel_code, location_code"""

# Percentiles do not add up: a filtered roll-up of fulfilment time goes back to the orders (exact quantiles,
# linear interpolation like the mart's).
_SQL_FULFILLMENT_TREND = """SELECT placed_date AS date_day, count() AS orders_shipped,
    quantileExactInclusive(0.5)(fulfillment_seconds) / 3600 AS fulfillment_hours_p50,
    quantileExactInclusive(0.9)(fulfillment_seconds) / 3600 AS fulfillment_hours_p90
FROM fct_orders
WHERE is_shipped AND fulfillment_seconds IS NOT NULL
  AND placed_date BETWEEN {start:Date} AND {end:Date}
  AND (empty({channels:Array(String)}) OR has({channels:Array(String)}, channel_code))
  AND (empty({locations:Array(String)}) OR has({locations:Array(String)}, location_code))
GROUP BY placed_date ORDER BY placed_date"""

_SQL_RETURNS_BY_SKU = """SELECT sku, sum(qty_sold) AS units_sold, sum(qty_returned) AS units_returned,
    if(sum(qty_sold) = 0, NULL, 100 * sum(qty_returned) / sum(qty_sold)) AS return_rate_units_pct
FROM fct_order_lines
WHERE placed_date BETWEEN {start:Date} AND {end:Date}
  AND (empty({channels:Array(String)}) OR has({channels:Array(String)}, channel_code))
  AND (empty({locations:Array(String)}) OR has({locations:Array(String)}, location_code))
GROUP BY sku HAVING units_returned > 0
ORDER BY return_rate_units_pct DESC, units_returned DESC, sku LIMIT {limit:UInt32}"""

_SQL_RETURNS_BY_REASON = """SELECT reason_code, any(reason_description) AS reason,
    sum(qty_received) AS units_returned, any(is_damage) AS is_damage, any(is_seller_fault) AS is_seller_fault
FROM fct_returns
WHERE is_received
  AND placed_date BETWEEN {start:Date} AND {end:Date}
  AND (empty({channels:Array(String)}) OR has({channels:Array(String)}, channel_code))
  AND (empty({locations:Array(String)}) OR has({locations:Array(String)}, location_code))
GROUP BY reason_code ORDER BY units_returned DESC, reason_code"""


@dataclass(frozen=True)
class KpiFilter:
    """Placed-date period (business dates, inclusive) and optional channel / location filters."""

    start: date
    end: date
    channels: tuple[str, ...] = ()
    locations: tuple[str, ...] = ()

    def params(self) -> dict[str, Any]:
        return {
            "start": self.start,
            "end": self.end,
            "channels": list(self.channels),
            "locations": list(self.locations),
        }


def _ch_rows(client: Any, query: str, params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    res = client.query(query, parameters=params or {})
    return [dict(zip(res.column_names, row, strict=True)) for row in res.result_rows]


def kpi_tables(client: Any) -> set[str]:
    """Which of the marts exist in the client's database."""
    return {r["name"] for r in _ch_rows(client, _SQL_TABLES, {"names": list(KPI_TABLES)})}


def kpi_freshness(client: Any, tables: Iterable[str]) -> dict[str, datetime | None]:
    """Newest ``_loaded_at`` (the replicated change a mart reflects) per existing mart; None when empty."""
    out: dict[str, datetime | None] = {}
    for t in tables:
        if t in _SQL_FRESHNESS:
            row = _ch_rows(client, _SQL_FRESHNESS[t])[0]
            value = row["m"] if row["n"] else None
            # clickhouse-connect returns naive datetimes for UTC columns
            out[t] = value.replace(tzinfo=UTC) if value is not None and value.tzinfo is None else value
    return out


def kpi_dimension_values(client: Any) -> dict[str, Any]:
    """The filter choices: channels and locations present in agg_kpi_daily, and its last business date."""
    row = _ch_rows(client, _SQL_DIMENSIONS)[0]
    return {
        "channel": sorted(row["c"]),
        "location": sorted(row["l"]),
        "last_day": row["last_day"] if row["n"] else None,
    }


def kpi_rows(client: Any, f: KpiFilter) -> list[dict[str, Any]]:
    """The filtered cells of agg_kpi_daily (date × channel × location), additive columns only."""
    return _ch_rows(client, _SQL_KPI_ROWS, f.params())


@dataclass(frozen=True)
class KpiRate:
    """A rate of the KPI glossary: ``column`` (the agg_kpi_daily column holding it) = ``scale`` ×
    Σ ``numerator_column`` / Σ ``denominator_column`` — ``scale`` 100 for a percentage."""

    code: str
    name: str
    unit: str
    column: str
    numerator_column: str
    denominator_column: str
    numerator: str = ""
    denominator: str = ""

    @property
    def scale(self) -> float:
        return 100.0 if self.unit == "percent" else 1.0

    @property
    def help(self) -> str:
        return f"{self.numerator} / {self.denominator}" if self.numerator and self.denominator else ""


def kpi_rates(client: Any) -> list[KpiRate]:
    """The rates of the KPI glossary (``dim_kpi``) whose numerator and denominator are agg_kpi_daily
    columns the page reads (:data:`KPI_SUMS`); others (percentiles, counts) are not re-computable sums."""
    out = []
    for r in _ch_rows(client, _SQL_KPI_RATES):
        if r["numerator_column"] in KPI_SUMS and r["denominator_column"] in KPI_SUMS:
            out.append(
                KpiRate(
                    r["kpi_code"],
                    r["kpi_name"],
                    r["unit"],
                    r["mart_column"],
                    r["numerator_column"],
                    r["denominator_column"],
                    r["numerator"] or "",
                    r["denominator"] or "",
                )
            )
    return out


def rollup(
    rows: Iterable[dict[str, Any]], rates: Sequence[KpiRate], by: Sequence[str] = ()
) -> list[dict[str, Any]]:
    """Sum the additive KPI columns per ``by`` key (none: one total row) and re-compute every rate of
    ``rates`` from the sums — the only correct way to roll rates up (an average of daily rates weighs a quiet
    day like a busy one). A rate is None when its denominator is 0. Pure; rows sorted by the key."""
    groups: dict[tuple, dict[str, Any]] = {}
    for r in rows:
        key = tuple(r[k] for k in by)
        g = groups.setdefault(key, {**dict(zip(by, key, strict=True)), **dict.fromkeys(KPI_SUMS, 0)})
        for col in KPI_SUMS:
            g[col] += r.get(col) or 0
    out = []
    total_orders = sum(g["orders_placed"] for g in groups.values())
    for key in sorted(groups, key=lambda k: tuple(str(v) for v in k)):
        g = groups[key]
        for rate in rates:
            den = g[rate.denominator_column]
            g[rate.column] = None if not den else rate.scale * float(g[rate.numerator_column]) / float(den)
        g["share_of_orders_pct"] = None if not total_orders else 100.0 * g["orders_placed"] / total_orders
        out.append(g)
    return out


def fulfillment_time_trend(client: Any, f: KpiFilter) -> list[dict[str, Any]]:
    """Fulfilment (ship) time p50 / p90 in hours per placed date, over shipped orders (fct_orders)."""
    return _ch_rows(client, _SQL_FULFILLMENT_TREND, f.params())


def return_rate_by_sku(client: Any, f: KpiFilter, *, limit: int = 50) -> list[dict[str, Any]]:
    """Units sold and returned per SKU (sales cohort), highest return rate first (fct_order_lines)."""
    return _ch_rows(client, _SQL_RETURNS_BY_SKU, {**f.params(), "limit": limit})


def returns_by_reason(client: Any, f: KpiFilter) -> list[dict[str, Any]]:
    """Returned (received) units per reason and their share of all returned units (fct_returns)."""
    rows = _ch_rows(client, _SQL_RETURNS_BY_REASON, f.params())
    total = sum(r["units_returned"] for r in rows)
    for r in rows:
        r["share_pct"] = 100.0 * r["units_returned"] / total if total else None
    return rows
