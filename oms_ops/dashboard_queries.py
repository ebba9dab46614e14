"""Read queries of the Streamlit dashboards (presentation lives in ``dashboards/``, the SQL lives here).

Postgres reads take an autocommit connection and return plain rows (``list[dict]``) that pickle, so the pages
can cache them with ``st.cache_data(ttl=…)``. ClickHouse reads take a clickhouse-connect client whose
database holds the dbt marts (``agg_kpi_daily``, ``fct_orders``, ``fct_order_lines``, ``fct_returns``).

Every value goes through a placeholder; the few identifiers (a KPI breakdown dimension, a discovered table)
come from fixed whitelists or the catalog and go through ``psycopg.sql.Identifier``. Tables that another
part of the system has not created yet (the connectors' sync state and documents, a mart not built yet) are
detected and reported as missing rather than failing the page.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

#: Orders still waiting for fulfilment (nothing or not everything has left the building).
BACKLOG_STATES = (
    "new",
    "on_hold",
    "backordered",
    "partially_allocated",
    "allocated",
    "picking",
    "packed",
    "partially_shipped",
)
#: Age buckets of the backlog: (label, upper bound in hours; None = open-ended).
AGE_BUCKETS: tuple[tuple[str, float | None], ...] = (
    ("< 1 h", 1),
    ("1–4 h", 4),
    ("4–24 h", 24),
    ("1–3 d", 72),
    ("> 3 d", None),
)
#: Where the connectors keep their per-channel sync state (cursor, last success), first existing wins.
SYNC_STATE_TABLES = (("raw", "channel_sync_state"), ("oms", "channel_sync_state"), ("raw", "connector_state"))
#: Where the connectors keep carrier print forms (labels, waybills) per shipment, first existing wins.
DOCUMENT_TABLES = (("oms", "shipment_documents"), ("raw", "shipment_documents"), ("oms", "carrier_documents"))


def _rows(conn: psycopg.Connection, query: Any, params: Any = None) -> list[dict[str, Any]]:
    return conn.cursor(row_factory=dict_row).execute(query, params).fetchall()


def _now(now: datetime | None) -> datetime:
    return now or datetime.now(UTC)


# -- operations: backlog and risk -------------------------------------------------------------------------------


def age_bucket(hours: float) -> str:
    """The backlog age bucket of an order that has waited ``hours``."""
    for label, upper in AGE_BUCKETS:
        if upper is None or hours < upper:
            return label
    raise AssertionError("unreachable")


def backlog(conn: psycopg.Connection, *, now: datetime | None = None) -> list[dict[str, Any]]:
    """Open orders by state and age bucket: ``{state, age_bucket, orders, units, oldest_placed_at}``."""
    rows = _rows(
        conn,
        """SELECT o.state, extract(epoch FROM (%(now)s - o.placed_at)) / 3600.0 AS age_hours, o.placed_at,
                  coalesce((SELECT sum(l.qty - l.qty_shipped - l.qty_cancelled) FROM oms.order_lines l
                            WHERE l.order_id = o.order_id), 0)::int AS units
           FROM oms.orders o WHERE o.state = ANY(%(states)s)""",
        {"now": _now(now), "states": list(BACKLOG_STATES)},
    )
    agg: dict[tuple[str, str], dict[str, Any]] = {}
    for r in rows:
        key = (r["state"], age_bucket(max(0.0, float(r["age_hours"]))))
        cell = agg.setdefault(
            key,
            {
                "state": key[0],
                "age_bucket": key[1],
                "orders": 0,
                "units": 0,
                "oldest_placed_at": r["placed_at"],
            },
        )
        cell["orders"] += 1
        cell["units"] += r["units"]
        cell["oldest_placed_at"] = min(cell["oldest_placed_at"], r["placed_at"])
    order = {s: i for i, s in enumerate(BACKLOG_STATES)}
    buckets = {label: i for i, (label, _) in enumerate(AGE_BUCKETS)}
    return sorted(agg.values(), key=lambda c: (order[c["state"]], buckets[c["age_bucket"]]))


def orders_at_risk(
    conn: psycopg.Connection, *, at_risk_hours: float = 4, now: datetime | None = None, limit: int = 200
) -> list[dict[str, Any]]:
    """Open orders whose deadline is less than ``at_risk_hours`` away or already passed, most urgent first.

    The deadline is the SLA ship-by time of the order's latest allocation decision; orders without one (not
    allocated yet) use the promised delivery time. ``hours_left`` is negative once the deadline passed.
    """
    return _rows(
        conn,
        """WITH latest AS (
               SELECT DISTINCT ON (d.order_id) d.order_id, d.ship_by, d.locations, d.reason
               FROM oms.allocation_decisions d
               JOIN oms.orders o ON o.order_id = d.order_id AND o.state = ANY(%(states)s)
               ORDER BY d.order_id, d.decision_id DESC)
           SELECT o.order_id, o.order_number, o.channel_code, o.state, o.placed_at, l.ship_by, o.promised_at,
                  coalesce(l.ship_by, o.latest_promised_at, o.promised_at) AS deadline,
                  round((extract(epoch FROM (coalesce(l.ship_by, o.latest_promised_at, o.promised_at)
                                             - %(now)s)) / 3600.0)::numeric, 1)::float8 AS hours_left,
                  array_to_string(l.locations, ', ') AS locations, o.hold_reason, l.reason AS decision
           FROM oms.orders o LEFT JOIN latest l ON l.order_id = o.order_id
           WHERE o.state = ANY(%(states)s)
             AND coalesce(l.ship_by, o.latest_promised_at, o.promised_at)
                 <= %(now)s + make_interval(secs => %(secs)s)
           ORDER BY deadline, o.order_id LIMIT %(limit)s""",
        {
            "states": list(BACKLOG_STATES),
            "now": _now(now),
            "secs": float(at_risk_hours) * 3600,
            "limit": limit,
        },
    )


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


def exception_counts(conn: psycopg.Connection) -> dict[str, int]:
    """Headline numbers of the operations page."""
    row = _rows(
        conn,
        """SELECT (SELECT count(*) FROM oms.orders WHERE state = ANY(%(states)s)) AS backlog,
                  (SELECT count(*) FROM oms.orders WHERE state = 'on_hold') AS on_hold,
                  (SELECT count(*) FROM oms.orders WHERE state IN ('backordered', 'partially_allocated'))
                      AS backordered,
                  (SELECT count(*) FROM raw.quarantine WHERE state = 'open') AS quarantined,
                  (SELECT count(*) FROM oms.outbox WHERE state = 'dead') AS outbox_dead,
                  (SELECT count(*) FROM oms.outbox WHERE state = 'failed') AS outbox_failed""",
        {"states": list(BACKLOG_STATES)},
    )[0]
    return {k: int(v) for k, v in row.items()}


# -- operations: stock, reservations, ATS ----------------------------------------------------------------------


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


def compute_ats(stock: Iterable[dict[str, Any]], config: Any) -> list[dict[str, Any]]:
    """Available to sell per (channel, sku): Σ over the channel's ATS pool of max(0, on_hand − reserved −
    safety stock). Pure; ``config`` is a ``BusinessConfig`` (pools and safety stock are configuration)."""
    by_key: dict[tuple[str, str], tuple[int, int]] = {
        (r["location_code"], r["sku"]): (int(r["on_hand"]), int(r["reserved"])) for r in stock
    }
    skus = sorted({sku for _, sku in by_key})
    out = []
    for ch in config.channels:
        if not ch.active:
            continue
        pool = config.channel_pool(ch.code)
        for sku in skus:
            ats = 0
            on_hand = 0
            for loc in pool:
                oh, res = by_key.get((loc, sku), (0, 0))
                on_hand += oh
                ats += max(0, oh - res - config.safety_stock_for(ch.code, loc, sku))
            out.append(
                {
                    "channel_code": ch.code,
                    "sku": sku,
                    "ats": ats,
                    "pool_on_hand": on_hand,
                    "pool_locations": len(pool),
                }
            )
    return out


# -- operations: channel sync health -------------------------------------------------------------------------


def _existing_table(
    conn: psycopg.Connection, candidates: Sequence[tuple[str, str]]
) -> tuple[str, str] | None:
    for schema, table in candidates:
        if conn.execute("SELECT to_regclass(%s)", (f"{schema}.{table}",)).fetchone()[0] is not None:
            return schema, table
    return None


def _columns(conn: psycopg.Connection, schema: str, table: str) -> list[str]:
    return [
        r[0]
        for r in conn.execute(
            """SELECT column_name FROM information_schema.columns WHERE table_schema = %s AND table_name = %s
               ORDER BY ordinal_position""",
            (schema, table),
        ).fetchall()
    ]


def channel_ingest(conn: psycopg.Connection, *, now: datetime | None = None) -> list[dict[str, Any]]:
    """Per channel: last payload received, payloads in the last 24 h, payloads waiting for normalisation,
    open quarantine rows and the newest order — the ingest health that needs no connector table."""
    return _rows(
        conn,
        """SELECT c.channel_code, c.active,
                  (SELECT max(received_at) FROM raw.channel_orders r WHERE r.channel_code = c.channel_code)
                      AS last_received_at,
                  (SELECT count(*) FROM raw.channel_orders r WHERE r.channel_code = c.channel_code
                     AND r.received_at > %(now)s - interval '24 hours')::int AS received_24h,
                  (SELECT count(*) FROM raw.pending_orders r WHERE r.channel_code = c.channel_code)::int
                      AS pending_normalisation,
                  (SELECT count(*) FROM raw.quarantine q WHERE q.source = c.channel_code AND q.state = 'open')::int
                      AS quarantined,
                  (SELECT max(created_at) FROM oms.orders o WHERE o.channel_code = c.channel_code)
                      AS last_order_at
           FROM oms.channels c ORDER BY c.channel_code""",
        {"now": _now(now)},
    )


def connector_sync_state(conn: psycopg.Connection) -> tuple[str | None, list[dict[str, Any]]]:
    """The connectors' own sync state (cursor, last success, last error per channel) when their table
    exists: ``(qualified table name, rows)``, or ``(None, [])`` before the connectors have landed."""
    found = _existing_table(conn, SYNC_STATE_TABLES)
    if found is None:
        return None, []
    rows = _rows(conn, sql.SQL("SELECT * FROM {} LIMIT 500").format(sql.Identifier(*found)))
    return ".".join(found), rows


# -- order lookup --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Document:
    shipment_id: int
    kind: str
    filename: str
    content: bytes


def shipment_documents(conn: psycopg.Connection, shipment_ids: Sequence[int]) -> list[Document]:
    """Carrier print forms (labels, waybills) stored for the shipments, when the connectors' document table
    exists. The PDF comes from a bytea column (``content``/``pdf``/``data``) or a file path column
    (``path``/``file_path``/``storage_path``); rows whose bytes cannot be found are left out."""
    found = _existing_table(conn, DOCUMENT_TABLES)
    if found is None or not shipment_ids:
        return []
    cols = set(_columns(conn, *found))
    if "shipment_id" not in cols:
        return []
    pick = {
        "kind": next((c for c in ("kind", "document_type", "form", "type") if c in cols), None),
        "content": next((c for c in ("content", "pdf", "data", "body") if c in cols), None),
        "path": next((c for c in ("path", "file_path", "storage_path") if c in cols), None),
        "filename": next((c for c in ("filename", "file_name", "name") if c in cols), None),
    }
    select = [sql.Identifier("shipment_id")] + [
        sql.SQL("{} AS {}").format(sql.Identifier(col), sql.Identifier(alias))
        if col
        else sql.SQL("NULL AS {}").format(sql.Identifier(alias))
        for alias, col in pick.items()
    ]
    rows = _rows(
        conn,
        sql.SQL("SELECT {} FROM {} WHERE shipment_id = ANY(%s) ORDER BY shipment_id").format(
            sql.SQL(", ").join(select), sql.Identifier(*found)
        ),
        (list(shipment_ids),),
    )
    docs = []
    for r in rows:
        content = r["content"]
        if content is None and r["path"]:
            p = Path(r["path"])
            content = p.read_bytes() if p.is_file() else None
        if content is None:
            continue
        kind = str(r["kind"] or "document")
        name = r["filename"] or (Path(r["path"]).name if r["path"] else f"{kind}-{r['shipment_id']}.pdf")
        docs.append(Document(int(r["shipment_id"]), kind, str(name), bytes(content)))
    return docs


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

KPI_TABLES = ("agg_kpi_daily", "fct_orders", "fct_order_lines", "fct_returns")

#: Additive columns of agg_kpi_daily (numerators and denominators); rates are re-computed from their sums.
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
    "orders_perfect",
)
#: rate → (numerator, denominator), as percentages; None when the denominator is 0 (kpi-definitions.md).
KPI_RATES = {
    "on_time_shipment_pct": ("orders_shipped_on_time", "orders_shipped_with_ship_by"),
    "on_time_delivery_pct": ("orders_delivered_on_time", "orders_delivered_with_promise"),
    "pick_accuracy_pct": ("orders_picked_accurately", "orders_picked"),
    "return_rate_units_pct": ("units_returned", "units_sold"),
    "return_rate_orders_pct": ("orders_returned", "orders_sold"),
    "return_rate_revenue_pct": ("returned_revenue", "revenue"),
    "perfect_order_rate_pct": ("orders_perfect", "orders_delivered"),
    "cancellation_rate_pct": ("orders_cancelled", "orders_placed"),
}

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

_SQL_KPI_ROWS = """SELECT date_day, channel_code, location_code,
    orders_placed, orders_cancelled, orders_sold, units_sold, toFloat64(revenue) AS revenue, orders_shipped,
    orders_delivered, orders_shipped_with_ship_by, orders_shipped_on_time, orders_delivered_with_promise,
    orders_delivered_on_time, orders_picked, orders_picked_accurately, units_returned, orders_returned,
    toFloat64(returned_revenue) AS returned_revenue, orders_perfect
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


def rollup(rows: Iterable[dict[str, Any]], by: Sequence[str] = ()) -> list[dict[str, Any]]:
    """Sum the additive KPI columns per ``by`` key (none: one total row) and re-compute every rate from the
    sums — the only correct way to roll rates up (an average of daily rates weighs a quiet day like a busy
    one). Pure; rows sorted by the key."""
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
        for rate, (num, den) in KPI_RATES.items():
            g[rate] = None if not g[den] else 100.0 * float(g[num]) / float(g[den])
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
