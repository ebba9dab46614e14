"""Incremental, idempotent replication of the system of record (Postgres) into ClickHouse raw tables.

Each replicated table is described by a :class:`TableSpec`; :func:`replicate_table` copies what changed since
the last run, :func:`replicate_all` runs every spec. Rows travel as CSV out of ``COPY (SELECT …) TO STDOUT``
(the fastest way out of Postgres), are parsed by polars into Arrow and inserted with clickhouse-connect's
``insert_arrow`` — one page of ``batch_rows`` rows per round trip, paged by the primary key inside one
``REPEATABLE READ`` snapshot.

Idempotency. Every raw table is a ``ReplacingMergeTree(_version)`` ordered by the source primary key, and
``_version`` is the time of the Postgres snapshot the row was read in (µs). Copying a row twice — a re-run
after a crash between inserting a page and saving the watermark, or the deliberate overlap described below —
leaves one logical row: readers (dbt staging) use ``FINAL``. A later snapshot always wins, so a row changed
twice is never replaced by its older copy (which an ``updated_at`` version could do: ``now()`` is the
*start* of the writing transaction, not its commit).

Watermarks never skip a row that commits late. They live in ClickHouse itself (``_replication_state``, next to
the data they describe — drop the raw database and the next run re-copies everything):

* ``append`` tables (immutable rows with an identity id; children inserted with their parent use the
  parent's id): copy ``id > wm``. An id can become visible *after* a larger one (its transaction was still
  running), so the watermark only advances to the largest id seen once every transaction that was in flight
  at that snapshot (``pg_snapshot_xip``) has finished — immediately when none was. Rows above the watermark
  may be read again by the next run; the ReplacingMergeTree absorbs them.
* ``mutable`` tables (``updated_at`` bumped by every change, e.g. orders): copy ``updated_at >= wm``. As
  ``updated_at = now()`` is the start of the writing transaction, the watermark advances to the start of the
  oldest transaction still open in this database (``pg_stat_activity``, read *before* the snapshot), never to
  "now". Without the privilege to see other sessions (``pg_read_all_stats``), a fixed safety margin is used.
* ``children`` tables (mutable rows without a change column, e.g. picks, return lines): copy the rows of the
  entities that have ``order_events`` after the event watermark (every state change appends an event in the
  same transaction), with the ``append`` rules applied to the event id.
* ``snapshot`` tables (small reference data without change columns): copied whole every run.

Schema: the ClickHouse columns are derived from the Postgres catalog (types mapped, customer PII excluded).
A column added in Postgres is added in ClickHouse and the table is re-copied once so older rows get it.
"""

from __future__ import annotations

import io
import json
import logging
import time
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

import polars as pl
import psycopg
from clickhouse_connect.driver.client import Client
from psycopg import sql

logger = logging.getLogger(__name__)

Mode = Literal["append", "mutable", "children", "snapshot"]

DEFAULT_RAW_DATABASE = "oms_raw"
STATE_TABLE = "_replication_state"
DEFAULT_BATCH_ROWS = 100_000
#: Used for ``mutable`` watermarks when other sessions' transaction start times are not visible.
FALLBACK_SAFETY_MARGIN = timedelta(minutes=10)
#: Serialises replication runs against one Postgres database (session-level advisory lock).
LOCK_KEY = 0x0_4F4D_5352  # 'OMSR'
#: Customer personal data never leaves the system of record: analytics needs none of it.
ORDER_PII = ("customer_name", "customer_phone", "customer_email", "address", "lat", "lon")

_CHANGED_ORDERS = "order_id IN (SELECT order_id FROM oms.order_events WHERE event_id > %(wm)s)"
_CHANGED_RETURNS = (
    "return_id IN (SELECT entity_id FROM oms.order_events WHERE entity = 'return' AND event_id > %(wm)s)"
)


class ReplicationError(RuntimeError):
    """Replication cannot proceed (busy, schema drift that needs a resync, injected failure…)."""


class ReplicationInterrupted(ReplicationError):
    """Raised by ``fail_after_batches`` (tests): the run stopped after inserting some pages."""


@dataclass(frozen=True)
class TableSpec:
    """How one Postgres table is replicated.

    ``cursor``: the id column (append), the change timestamp column (mutable) or None. ``changed`` (children):
    an SQL predicate selecting rows whose entity changed after the event watermark ``%(wm)s``. ``order_by``: the
    ClickHouse sorting (and deduplication) key when it should lead with another column than the primary key —
    ``("order_id", <pk>)`` for tables read per order, so the marts' ``order_id IN (…)`` uses the index.
    """

    table: str
    mode: Mode
    key: tuple[str, ...]
    cursor: str | None = None
    changed: str | None = None
    schema: str = "oms"
    exclude: tuple[str, ...] = ()
    target: str | None = None
    description: str = ""
    order_by: tuple[str, ...] | None = None

    @property
    def sort_key(self) -> tuple[str, ...]:
        return self.order_by or self.key

    @property
    def name(self) -> str:
        """Name of the ClickHouse raw table (and of the Dagster asset)."""
        return self.target or self.table

    @property
    def source(self) -> str:
        return f"{self.schema}.{self.table}"


def _by_order(pk: str) -> tuple[str, str]:
    """ClickHouse sort key of a table read per order: order_id first (immutable, so deduplication by the
    pair equals deduplication by the primary key)."""
    return ("order_id", pk)


#: Everything the KPI marts read. Order matters only for readability; tables are independent.
DEFAULT_SPECS: tuple[TableSpec, ...] = (
    TableSpec("channels", "snapshot", ("channel_code",), description="Sales channels (reference)."),
    TableSpec("locations", "snapshot", ("location_code",), description="Warehouses, stores, pickup points."),
    TableSpec("return_reasons", "snapshot", ("reason_code",), description="Return reason codes and flags."),
    TableSpec("products", "mutable", ("sku",), "updated_at", description="Product catalog."),
    TableSpec(
        "orders", "mutable", ("order_id",), "updated_at", exclude=ORDER_PII, description="Orders (no PII)."
    ),
    TableSpec(
        "order_lines",
        "mutable",
        ("line_id",),
        "updated_at",
        description="Order lines.",
        order_by=_by_order("line_id"),
    ),
    TableSpec(
        "order_events",
        "append",
        ("event_id",),
        "event_id",
        description="Every state transition.",
        order_by=_by_order("event_id"),
    ),
    TableSpec(
        "allocation_decisions",
        "append",
        ("decision_id",),
        "decision_id",
        description="Allocation decisions.",
        order_by=_by_order("decision_id"),
    ),
    TableSpec(
        "picks",
        "children",
        ("pick_id",),
        changed=_CHANGED_ORDERS,
        description="Picks per order/location.",
        order_by=_by_order("pick_id"),
    ),
    TableSpec(
        "pick_lines", "append", ("pick_id", "reservation_id"), "pick_id", description="Expected vs picked."
    ),
    TableSpec(
        "shipments",
        "mutable",
        ("shipment_id",),
        "updated_at",
        description="Shipments and their stamps.",
        order_by=_by_order("shipment_id"),
    ),
    TableSpec(
        "shipment_lines", "append", ("shipment_id", "line_id"), "shipment_id", description="Shipped units."
    ),
    TableSpec(
        "tracking_events",
        "append",
        ("tracking_event_id",),
        "tracking_event_id",
        description="Carrier events.",
    ),
    TableSpec(
        "returns",
        "mutable",
        ("return_id",),
        "updated_at",
        description="Returns (RMA).",
        order_by=_by_order("return_id"),
    ),
    TableSpec(
        "return_lines",
        "children",
        ("return_line_id",),
        changed=_CHANGED_RETURNS,
        description="Returned units.",
    ),
    TableSpec(
        "payments",
        "mutable",
        ("payment_id",),
        "updated_at",
        description="Payments.",
        order_by=_by_order("payment_id"),
    ),
    TableSpec(
        "refunds",
        "mutable",
        ("refund_id",),
        "updated_at",
        description="Refunds.",
        order_by=_by_order("refund_id"),
    ),
    TableSpec(
        "stock", "mutable", ("location_code", "sku"), "updated_at", description="Stock per location/SKU."
    ),
    TableSpec("inventory_ledger", "append", ("entry_id",), "entry_id", description="Stock movements."),
)


def spec_by_name(name: str, specs: Sequence[TableSpec] = DEFAULT_SPECS) -> TableSpec:
    for s in specs:
        if s.name == name:
            return s
    raise KeyError(f"no replication spec named {name!r}")


@dataclass
class ReplicationResult:
    """Outcome of one table's run: rows and pages copied, the watermark after it, and freshness."""

    table: str
    mode: Mode
    rows_copied: int = 0
    batches: int = 0
    watermark: str | None = None
    snapshot_at: datetime | None = None
    lag_seconds: float = 0.0
    duration_seconds: float = 0.0
    full_copy: bool = False
    schema_changes: list[str] = field(default_factory=list)

    def as_metadata(self) -> dict[str, Any]:
        return {
            "rows_copied": self.rows_copied,
            "batches": self.batches,
            "watermark": self.watermark or "",
            "snapshot_at": self.snapshot_at.isoformat() if self.snapshot_at else "",
            "lag_seconds": round(self.lag_seconds, 3),
            "duration_seconds": round(self.duration_seconds, 3),
            "full_copy": self.full_copy,
        }


# ---------------------------------------------------------------------------------------------------------
# Postgres catalog → ClickHouse columns
# ---------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Column:
    name: str
    ch_type: str  # ClickHouse type, including Nullable(...)
    select: sql.Composable  # expression in the COPY query
    raw: Any  # polars dtype the CSV field is parsed as
    kind: str  # how the raw value becomes the ClickHouse value: plain|ts|bool|json_list


def _ch_quote(name: str) -> str:
    return "`" + name.replace("\\", "\\\\").replace("`", "\\`") + "`"


def _column(name: str, typname: str, category: str, typmod: int, notnull: bool, elem: str | None) -> Column:
    ident = sql.Identifier(name)
    kind = "plain"
    if category == "A":
        inner = "String" if elem in ("text", "varchar", "bpchar", "name") else None
        if inner:
            return Column(
                name,
                "Array(String)",
                sql.SQL("coalesce(array_to_json({})::text, '[]')").format(ident),
                pl.String,
                "json_list",
            )
        base, select, raw = "String", sql.SQL("{}::text").format(ident), pl.String
    elif typname in ("int2", "int4"):
        base, select, raw = "Int32", ident, pl.Int32
    elif typname == "int8":
        base, select, raw = "Int64", ident, pl.Int64
    elif typname in ("float4", "float8"):
        base, select, raw = "Float64", ident, pl.Float64
    elif typname == "numeric":
        if typmod >= 4:
            precision, scale = ((typmod - 4) >> 16) & 0xFFFF, (typmod - 4) & 0xFFFF
        else:
            precision, scale = 38, 10
        base, select, raw = f"Decimal({precision}, {scale})", ident, pl.Decimal(precision, scale)
    elif typname == "bool":
        base, select, raw, kind = "Bool", sql.SQL("{}::int").format(ident), pl.Int8, "bool"
    elif typname in ("timestamptz", "timestamp"):
        base = "DateTime64(6, 'UTC')"
        select = sql.SQL("(extract(epoch FROM {}) * 1000000)::int8").format(ident)
        raw, kind = pl.Int64, "ts"
    elif typname == "date":
        base, select, raw = "Date32", ident, pl.Date
    else:  # text, varchar, json(b), uuid, time, interval, …
        base, select, raw = "String", sql.SQL("{}::text").format(ident), pl.String
    return Column(name, base if notnull else f"Nullable({base})", select, raw, kind)


def source_columns(conn: psycopg.Connection, spec: TableSpec) -> list[Column]:
    """The replicated columns of ``spec`` read from the Postgres catalog, in table order."""
    rows = conn.execute(
        """SELECT a.attname, t.typname, t.typcategory, a.atttypmod, a.attnotnull, et.typname
           FROM pg_attribute a
           JOIN pg_type t ON t.oid = a.atttypid
           LEFT JOIN pg_type et ON et.oid = t.typelem AND t.typcategory = 'A'
           WHERE a.attrelid = to_regclass(%s) AND a.attnum > 0 AND NOT a.attisdropped
           ORDER BY a.attnum""",
        (spec.source,),
    ).fetchall()
    if not rows:
        raise ReplicationError(f"{spec.source}: table not found in Postgres")
    cols = [_column(*r) for r in rows if r[0] not in spec.exclude]
    names = {c.name for c in cols}
    missing = [k for k in (*spec.key, *([spec.cursor] if spec.cursor else [])) if k not in names]
    if missing:
        raise ReplicationError(f"{spec.source}: key/cursor column(s) {missing} not found")
    return cols


def clickhouse_ddl(database: str, spec: TableSpec, columns: Sequence[Column]) -> str:
    """``CREATE TABLE IF NOT EXISTS`` for the raw table of ``spec``."""
    body = ",\n  ".join(f"{_ch_quote(c.name)} {c.ch_type}" for c in columns)
    key = ", ".join(_ch_quote(k) for k in spec.sort_key)
    comment = f"Replica of {spec.source} ({spec.mode}); maintained by oms_ops.analytics.replication"
    return (
        f"CREATE TABLE IF NOT EXISTS {_ch_quote(database)}.{_ch_quote(spec.name)} (\n  {body},\n"
        "  `_version` UInt64,\n  `_loaded_at` DateTime64(6, 'UTC') DEFAULT now64(6)\n)\n"
        f"ENGINE = ReplacingMergeTree(_version)\nORDER BY ({key})\nCOMMENT '{comment}'"
    )


def _state_ddl(database: str) -> str:
    return (
        f"CREATE TABLE IF NOT EXISTS {_ch_quote(database)}.{STATE_TABLE} (\n"
        "  table_name String, mode String, state String, rows_copied UInt64, batches UInt32,\n"
        "  snapshot_at DateTime64(6, 'UTC'), lag_seconds Float64,\n"
        "  updated_at DateTime64(6, 'UTC') DEFAULT now64(6)\n"
        ") ENGINE = ReplacingMergeTree(updated_at) ORDER BY table_name\n"
        "COMMENT 'Replication watermarks (oms_ops.analytics.replication); one row per raw table'"
    )


def _ensure_table(
    ch: Client, database: str, spec: TableSpec, columns: Sequence[Column]
) -> tuple[bool, list[str]]:
    """Create the raw table or add columns that appeared in Postgres. Returns (created, added columns)."""
    existing = {
        r[0]: r[1]
        for r in ch.query(
            "SELECT name, type FROM system.columns WHERE database = {db:String} AND table = {t:String}",
            parameters={"db": database, "t": spec.name},
        ).result_rows
    }
    if not existing:
        ch.command(clickhouse_ddl(database, spec, columns))
        return True, []
    added, drift = [], []
    previous = None
    for c in columns:
        have = existing.get(c.name)
        if have is None:
            place = f"AFTER {_ch_quote(previous)}" if previous else "FIRST"
            ch.command(
                f"ALTER TABLE {_ch_quote(database)}.{_ch_quote(spec.name)} "
                f"ADD COLUMN IF NOT EXISTS {_ch_quote(c.name)} {c.ch_type} {place}"
            )
            added.append(c.name)
        elif have.replace(" ", "") != c.ch_type.replace(" ", ""):
            drift.append(f"{c.name}: ClickHouse {have}, Postgres maps to {c.ch_type}")
        previous = c.name
    if drift:
        raise ReplicationError(
            f"{spec.source}: column types changed ({'; '.join(drift)}); "
            f"run resync_table(…, {spec.name!r}) to rebuild the replica"
        )
    return False, added


# ---------------------------------------------------------------------------------------------------------
# state
# ---------------------------------------------------------------------------------------------------------
def ensure_state_table(ch: Client, database: str) -> None:
    ch.command(f"CREATE DATABASE IF NOT EXISTS {_ch_quote(database)}")
    ch.command(_state_ddl(database))


def load_state(ch: Client, database: str, table: str) -> dict[str, Any]:
    rows = ch.query(
        "SELECT state FROM {db:Identifier}.{st:Identifier} FINAL WHERE table_name = {t:String}",
        parameters={"db": database, "st": STATE_TABLE, "t": table},
    ).result_rows
    return json.loads(rows[0][0]) if rows else {}


def _save_state(ch: Client, database: str, result: ReplicationResult, state: dict[str, Any]) -> None:
    ch.insert(
        STATE_TABLE,
        [
            [
                result.table,
                result.mode,
                json.dumps(state),
                result.rows_copied,
                result.batches,
                result.snapshot_at,
                result.lag_seconds,
            ]
        ],
        column_names=["table_name", "mode", "state", "rows_copied", "batches", "snapshot_at", "lag_seconds"],
        database=database,
    )


def replication_status(ch: Client, database: str = DEFAULT_RAW_DATABASE) -> list[dict[str, Any]]:
    """The last run of every replicated table: rows, watermark, snapshot time and lag."""
    rows = ch.query(
        "SELECT table_name, mode, state, rows_copied, batches, snapshot_at, lag_seconds, updated_at "
        "FROM {db:Identifier}.{st:Identifier} FINAL ORDER BY table_name",
        parameters={"db": database, "st": STATE_TABLE},
    ).named_results()
    return [dict(r, state=json.loads(r["state"])) for r in rows]


def resync_table(ch: Client, spec: TableSpec, database: str = DEFAULT_RAW_DATABASE) -> None:
    """Drop the replica and its watermark: the next run copies the table again from scratch."""
    ch.command(f"DROP TABLE IF EXISTS {_ch_quote(database)}.{_ch_quote(spec.name)}")
    ch.command(
        "DELETE FROM {db:Identifier}.{st:Identifier} WHERE table_name = {t:String}",
        parameters={"db": database, "st": STATE_TABLE, "t": spec.name},
    )


# ---------------------------------------------------------------------------------------------------------
# copying
# ---------------------------------------------------------------------------------------------------------
def _mutable_horizon(conn: psycopg.Connection) -> datetime:
    """Start of the oldest transaction still open in this database (read BEFORE the copy snapshot): every row
    with ``updated_at`` before it is committed. Falls back to now − margin without the stats privilege."""
    now, oldest, can_see = conn.execute(
        """SELECT clock_timestamp(),
                  (SELECT min(xact_start) FROM pg_stat_activity
                    WHERE datname = current_database() AND pid <> pg_backend_pid()),
                  (SELECT rolsuper OR pg_has_role(current_user, 'pg_read_all_stats', 'MEMBER')
                     FROM pg_roles WHERE rolname = current_user)"""
    ).fetchone()
    if not can_see:
        return now - FALLBACK_SAFETY_MARGIN
    return min(now, oldest) if oldest is not None else now


def _parse_page(data: bytes, columns: Sequence[Column], version: int) -> pl.DataFrame:
    df = pl.read_csv(
        io.BytesIO(data),
        has_header=False,
        new_columns=[c.name for c in columns],
        schema={c.name: c.raw for c in columns},
        quote_char='"',
        infer_schema=False,
    )
    exprs = []
    for c in columns:
        col = pl.col(c.name)
        if c.kind == "ts":
            exprs.append(pl.from_epoch(col, time_unit="us").dt.replace_time_zone("UTC").alias(c.name))
        elif c.kind == "bool":
            exprs.append(col.cast(pl.Boolean))
        elif c.kind == "json_list":
            exprs.append(col.str.json_decode(pl.List(pl.String)))
    if exprs:
        df = df.with_columns(exprs)
    return df.with_columns(pl.lit(version, dtype=pl.UInt64).alias("_version"))


def _filter(spec: TableSpec, state: dict[str, Any]) -> tuple[sql.Composable, dict[str, Any]]:
    if spec.mode == "append":
        return sql.SQL("{} > %(wm)s").format(sql.Identifier(spec.cursor)), {"wm": int(state.get("wm", 0))}
    if spec.mode == "children" and int(state.get("wm", 0)) > 0:
        return sql.SQL(spec.changed), {"wm": int(state["wm"])}
    if spec.mode == "mutable" and state.get("wm"):
        wm = datetime.fromisoformat(state["wm"])
        return sql.SQL("{} >= %(wm)s").format(sql.Identifier(spec.cursor)), {"wm": wm}
    return sql.SQL("true"), {}


def _copy_page(
    conn: psycopg.Connection,
    spec: TableSpec,
    columns: Sequence[Column],
    where: sql.Composable,
    params: dict[str, Any],
    batch_rows: int,
    after: tuple | None,
) -> bytes:
    """One CSV page of the rows matching ``where`` with a primary key greater than ``after``."""
    key = sql.SQL(", ").join(map(sql.Identifier, spec.key))
    args = dict(params)
    cond = where
    if after is not None:
        marks = sql.SQL(", ").join(sql.Placeholder(f"k{i}") for i in range(len(spec.key)))
        cond = sql.SQL("({}) AND ({}) > ({})").format(where, key, marks)
        args.update({f"k{i}": v for i, v in enumerate(after)})
    query = sql.SQL(
        "COPY (SELECT {select} FROM {table} WHERE {cond} ORDER BY {key} LIMIT {n}) TO STDOUT (FORMAT csv)"
    ).format(
        select=sql.SQL(", ").join(c.select for c in columns),
        table=sql.Identifier(spec.schema, spec.table),
        cond=cond,
        key=key,
        n=sql.Literal(batch_rows),
    )
    buf = io.BytesIO()
    with conn.cursor() as cur, cur.copy(query, args) as copy:
        for chunk in copy:
            buf.write(chunk)
    return buf.getvalue()


def replicate_table(
    pg_conn: psycopg.Connection,
    ch_client: Client,
    spec: TableSpec,
    *,
    database: str | None = None,
    batch_rows: int = DEFAULT_BATCH_ROWS,
    fail_after_batches: int | None = None,
) -> ReplicationResult:
    """Copy what changed in ``spec``'s table since the last run into ClickHouse (see the module docstring).

    ``pg_conn`` must be an autocommit connection outside a transaction; the copy runs in its own
    ``REPEATABLE READ READ ONLY`` transaction. ``database`` defaults to the client's current database.
    ``fail_after_batches`` (tests) raises :class:`ReplicationInterrupted` after inserting that many pages and
    before saving the watermark, like a crash.
    """
    database = database or ch_client.database or DEFAULT_RAW_DATABASE
    with _replication_lock(pg_conn):
        ensure_state_table(ch_client, database)
        return _replicate(pg_conn, ch_client, spec, database, batch_rows, fail_after_batches)


def replicate_all(
    pg_conn: psycopg.Connection,
    ch_client: Client,
    specs: Sequence[TableSpec] = DEFAULT_SPECS,
    *,
    database: str | None = None,
    only: Collection[str] | None = None,
    batch_rows: int = DEFAULT_BATCH_ROWS,
) -> list[ReplicationResult]:
    """Replicate every spec (or those named in ``only``), one snapshot per table, serialised by a lock."""
    database = database or ch_client.database or DEFAULT_RAW_DATABASE
    chosen = [s for s in specs if only is None or s.name in only]
    unknown = set(only or ()) - {s.name for s in specs}
    if unknown:
        raise KeyError(f"no replication spec named {sorted(unknown)}")
    with _replication_lock(pg_conn):
        ensure_state_table(ch_client, database)
        return [_replicate(pg_conn, ch_client, s, database, batch_rows, None) for s in chosen]


class _replication_lock:
    """Session-level advisory lock: two replication runs against one database never interleave."""

    def __init__(self, conn: psycopg.Connection) -> None:
        self.conn = conn

    def __enter__(self) -> None:
        if self.conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
            raise ReplicationError("replication needs an autocommit connection outside a transaction")
        if not self.conn.execute("SELECT pg_try_advisory_lock(%s)", (LOCK_KEY,)).fetchone()[0]:
            raise ReplicationError("another replication run holds the lock; try again later")

    def __exit__(self, *exc) -> None:
        try:
            self.conn.execute("SELECT pg_advisory_unlock(%s)", (LOCK_KEY,))
        except psycopg.Error:  # the session is gone (and its lock with it): keep the original error
            logger.warning("could not release the replication lock", exc_info=True)


def _replicate(
    conn: psycopg.Connection,
    ch: Client,
    spec: TableSpec,
    database: str,
    batch_rows: int,
    fail_after_batches: int | None,
) -> ReplicationResult:
    started = time.monotonic()
    result = ReplicationResult(spec.name, spec.mode)
    columns = source_columns(conn, spec)
    created, added = _ensure_table(ch, database, spec, columns)
    state = {} if (created or added) else load_state(ch, database, spec.name)
    result.full_copy = not state
    result.schema_changes = [f"added column {a}" for a in added]
    if added:
        logger.info("%s: new column(s) %s; copying the table again", spec.name, added)
    horizon = _mutable_horizon(conn) if spec.mode == "mutable" else None

    with conn.transaction():
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        snap_at, version, xip = conn.execute(
            """SELECT now(), (extract(epoch FROM now()) * 1000000)::int8,
                      ARRAY(SELECT pg_snapshot_xip(pg_current_snapshot())::text)"""
        ).fetchone()
        snap_clock = time.monotonic()
        result.snapshot_at = snap_at
        new_state = dict(state)
        if spec.mode in ("append", "children"):
            # rows of transactions that were in flight last time lie between the old watermark and the
            # old high mark: copy from the OLD watermark, advance it only after this copy
            new_state = _promote(conn, state)
        where, params = _filter(spec, state)
        event_hi = None
        if spec.mode == "children":
            event_hi = conn.execute("SELECT coalesce(max(event_id), 0) FROM oms.order_events").fetchone()[0]
        hi = int(state.get("wm", 0)) if spec.mode == "append" else None
        after: tuple | None = None
        while True:
            data = _copy_page(conn, spec, columns, where, params, batch_rows, after)
            if not data:
                break
            df = _parse_page(data, columns, version)
            ch.insert_arrow(spec.name, df.to_arrow(), database=database)
            result.batches += 1
            result.rows_copied += df.height
            if spec.mode == "append":
                hi = max(hi, int(df.get_column(spec.cursor).max()))
            if fail_after_batches is not None and result.batches >= fail_after_batches:
                raise ReplicationInterrupted(
                    f"{spec.name}: stopped after {result.batches} batch(es) (injected)"
                )
            if df.height < batch_rows:
                break
            after = tuple(df.get_column(k)[-1] for k in spec.key)

    if spec.mode in ("append", "children"):
        hi = hi if spec.mode == "append" else event_hi
        new_state = _advance(new_state, hi, xip)
    elif spec.mode == "mutable":
        old = datetime.fromisoformat(state["wm"]) if state.get("wm") else None
        new_state = {"wm": (max(old, horizon) if old else horizon).isoformat()}
    else:
        new_state = {"copied_at": snap_at.isoformat()}
    result.watermark = str(new_state.get("wm", new_state.get("copied_at")))
    result.lag_seconds = time.monotonic() - snap_clock
    _save_state(ch, database, result, new_state)
    result.duration_seconds = time.monotonic() - started
    logger.info(
        "replicated %s: %d rows in %d batch(es), watermark %s",
        spec.name,
        result.rows_copied,
        result.batches,
        result.watermark,
    )
    return result


def _promote(conn: psycopg.Connection, state: dict[str, Any]) -> dict[str, Any]:
    """If every transaction in flight at the previous snapshot has finished, everything up to the previous
    high mark is final: the watermark moves there."""
    if not state.get("pending_xip"):
        return {"wm": int(state.get("wm", 0))}
    done = conn.execute(
        """SELECT coalesce(bool_and(NOT (x = ANY(ARRAY(SELECT pg_snapshot_xip(pg_current_snapshot()))))), true)
           FROM unnest(%s::xid8[]) AS x""",
        (state["pending_xip"],),
    ).fetchone()[0]
    if done:
        return {"wm": max(int(state.get("wm", 0)), int(state["pending_hi"]))}
    return dict(state)


def _advance(state: dict[str, Any], hi: int, xip: list[str]) -> dict[str, Any]:
    wm = int(state.get("wm", 0))
    if hi <= wm:
        return {"wm": wm} if not state.get("pending_xip") else dict(state)
    if not xip:
        return {"wm": hi}
    return {"wm": wm, "pending_hi": hi, "pending_xip": xip}
