"""Orders: bulk acceptance of normalised channel orders, holds and cancellation.

``accept_orders`` is the single entry point every connector uses. It is set-based — the validated batch is
COPYed (binary) into two session staging tables and one statement inserts the orders (ON CONFLICT
(channel_code, external_id) DO NOTHING RETURNING), their lines and their creation events — so a batch of
thousands of orders costs a handful of round trips, and the server does no JSON parsing.
Re-delivered or duplicated channel data changes nothing. Bad orders are quarantined with the reason and the
rest of the batch is accepted; an order naming an unknown SKU is accepted on hold (the SKU may simply not be
in the catalog yet) and released by ``release_resolved_unknown_sku_holds`` once the catalog knows it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Annotated, Any, Literal

import psycopg
from psycopg import sql
from pydantic import (
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    model_validator,
)

from oms_ops import fulfillment
from oms_ops.business_config import order_limit_problems, order_limits
from oms_ops.db import run_in_transaction
from oms_ops.errors import NotFound, ValidationFailed
from oms_ops.outbox import dumps, enqueue_many
from oms_ops.payments import request_refund
from oms_ops.quarantine import quarantine_many
from oms_ops.reservations import release_reservations
from oms_ops.state_machine import Change, apply_transitions

Money = Annotated[Decimal, Field(ge=0, max_digits=14, decimal_places=2)]
Text = Annotated[str, Field(min_length=1)]
#: the database's integer bounds: ``integer`` (quantities, line numbers) and ``bigint`` (ids). The binary
#: COPY of the staging rows packs Python ints into these widths WITHOUT a range check (psycopg's C dumper
#: wraps: 4294967299 arrives as 3), so every value is bounded here, before it gets there.
INT4_MAX = 2**31 - 1
INT8_MAX = 2**63 - 1
#: ``numeric(14,2)``: an order total must stay below this
TOTAL_BOUND = Decimal(10) ** 12


def _not_bool(value: Any) -> Any:
    """Refuse a boolean where a number belongs (pydantic's lax mode would read ``True`` as 1)."""
    if isinstance(value, bool):
        raise ValueError("a boolean is not a number")
    return value


Int4 = Annotated[int, BeforeValidator(_not_bool)]


class NormalizedLine(BaseModel):
    """One order line as a connector produces it."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    sku: Text
    qty: Int4 = Field(gt=0, le=INT4_MAX)
    unit_price: Annotated[Decimal, Field(ge=0, max_digits=12, decimal_places=2)]
    line_no: Int4 | None = Field(default=None, ge=1, le=INT4_MAX)
    name: str | None = None


class NormalizedOrder(BaseModel):
    """A channel order in the one shape the OMS accepts (connectors map Ozon/WB/Shopify/POS to this).

    Required: channel_code, external_id, placed_at (timezone-aware), delivery_method and ≥ 1 line;
    pickup_location_code is required unless delivery_method is 'courier'. total_amount defaults to
    Σ qty × unit_price + shipping_amount.
    """

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    channel_code: Text
    external_id: Text
    placed_at: AwareDatetime
    delivery_method: Literal["courier", "pickup_point", "store_pickup"]
    lines: list[NormalizedLine] = Field(min_length=1)
    channel_order_number: str | None = None
    customer_name: str | None = None
    customer_phone: str | None = None
    customer_email: str | None = None
    pickup_location_code: str | None = None
    #: the location the channel assigned the order to (marketplace FBS warehouse): it ships from there
    fulfilment_location_code: str | None = None
    region: str | None = None
    city: str | None = None
    address: str | None = None
    lat: float | None = Field(default=None, ge=-90, le=90)
    lon: float | None = Field(default=None, ge=-180, le=180)
    promised_at: AwareDatetime | None = None
    requested_delivery_at: AwareDatetime | None = None
    payment_method: Literal["prepaid", "cod"] = "prepaid"
    payment_status: Literal["pending", "paid", "failed"] = "pending"
    currency: str = Field(default="RUB", pattern=r"^[A-Z]{3}$")
    shipping_amount: Money = Decimal("0")
    total_amount: Money | None = None
    raw_id: int | None = Field(default=None, ge=-INT8_MAX, le=INT8_MAX)
    parent_order_id: int | None = Field(default=None, ge=1, le=INT8_MAX)

    @model_validator(mode="after")
    def _check(self) -> NormalizedOrder:
        if self.delivery_method != "courier" and not self.pickup_location_code:
            raise ValueError(f"pickup_location_code is required for delivery_method {self.delivery_method!r}")
        numbers = [ln.line_no for ln in self.lines]
        if all(n is None for n in numbers):
            for i, ln in enumerate(self.lines, start=1):
                ln.line_no = i
        elif any(n is None for n in numbers) or len(set(numbers)) != len(numbers):
            raise ValueError("line_no must be given for every line or none, and be unique")
        if self.total_amount is None:
            total = sum((ln.qty * ln.unit_price for ln in self.lines), Decimal("0")) + self.shipping_amount
            if total >= TOTAL_BOUND:  # numeric(14,2): the database would refuse the whole batch
                raise ValueError(
                    f"total_amount: Σ qty × unit_price + shipping_amount = {total} does not fit numeric(14,2)"
                )
            self.total_amount = total
        return self

    @property
    def key(self) -> tuple[str, str]:
        return (self.channel_code, self.external_id)

    @property
    def skus(self) -> set[str]:
        return {ln.sku for ln in self.lines}

    def staging_values(self) -> list[Any]:
        """The order's ``oms.orders`` columns (``ORDER_FIELDS`` order), as staged for the insert."""
        d = self.__dict__
        return [d[c] for c in ORDER_FIELDS]

    def staging_lines(self) -> list[tuple[int, str, int, Decimal, str | None]]:
        """``(line_no, sku, qty, unit_price, name)`` per line, in the order given."""
        return [(ln.line_no, ln.sku, ln.qty, ln.unit_price, ln.name) for ln in self.lines]


class ValidatedOrder:
    """An order a connector's fast path has already checked against every rule of ``NormalizedOrder``.

    Why: building the pydantic model costs more per order than inserting it, and a bulk load spends most of
    its Python time there. A connector's exact fast validator (e.g. ``ozon.fast_posting``) takes only
    payloads it is sure of — plain JSON types, stripped strings, two-decimal amounts, ISO timestamps — and
    gives anything else to the pydantic path, which stays the definition of validity and the source of every
    quarantine reason (``tests/connectors/test_fast_mapping.py`` holds the two paths to the same result).

    ``values``: the ``oms.orders`` columns in ``ORDER_FIELDS`` order (total_amount computed as
    ``NormalizedOrder`` would); ``lines``: ``(line_no, sku, qty, unit_price, name)`` per line.
    """

    __slots__ = ("values", "lines")

    def __init__(self, values: tuple, lines: list[tuple[int, str, int, Decimal, str | None]]) -> None:
        self.values = values
        self.lines = lines

    channel_code = property(lambda self: self.values[0])
    external_id = property(lambda self: self.values[1])
    pickup_location_code = property(lambda self: self.values[_PICKUP])
    fulfilment_location_code = property(lambda self: self.values[_FULFILMENT])
    raw_id = property(lambda self: self.values[_RAW_ID])

    @property
    def key(self) -> tuple[str, str]:
        return (self.values[0], self.values[1])

    @property
    def skus(self) -> set[str]:
        return {ln[1] for ln in self.lines}

    def staging_values(self) -> tuple:
        return self.values

    def staging_lines(self) -> list[tuple[int, str, int, Decimal, str | None]]:
        return self.lines

    def as_payload(self) -> dict[str, Any]:
        """The NormalizedOrder-shaped JSON of the order (what a quarantine row keeps)."""
        d = dict(zip(ORDER_FIELDS, self.values, strict=True))
        d["lines"] = [
            {"line_no": n, "sku": s, "qty": q, "unit_price": p, "name": nm} for n, s, q, p, nm in self.lines
        ]
        return NormalizedOrder.model_validate(d).model_dump(mode="json")

    def __repr__(self) -> str:
        return f"ValidatedOrder({self.key!r}, {len(self.lines)} lines)"


@dataclass
class AcceptResult:
    """Outcome of ``accept_orders``. ``ids`` maps (channel_code, external_id) → order_id for new orders."""

    ids: dict[tuple[str, str], int] = field(default_factory=dict)
    on_hold: list[int] = field(default_factory=list)
    duplicates: list[tuple[str, str]] = field(default_factory=list)
    quarantined: list[int] = field(default_factory=list)
    rejected: list[tuple[str | None, str]] = field(default_factory=list)  # (external_id, reason)

    @property
    def accepted(self) -> list[int]:
        return sorted(self.ids.values())

    @property
    def counts(self) -> dict[str, int]:
        return {
            "accepted": len(self.ids),
            "on_hold": len(self.on_hold),
            "duplicates": len(self.duplicates),
            "quarantined": len(self.rejected),
        }


def _error_text(exc: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(map(str, e['loc'])) or 'order'}: {e['msg']}" for e in exc.errors(include_url=False)
    )


def _payload(item: Any) -> Any:
    if isinstance(item, BaseModel):
        return item.model_dump(mode="json")
    if isinstance(item, ValidatedOrder):
        return item.as_payload()
    return item


#: Columns of oms.orders filled from a NormalizedOrder, with their SQL types (hold_* and latest_promised_at
#: are derived).
_ORDER_COLUMNS = (
    ("channel_code", "text"),
    ("external_id", "text"),
    ("placed_at", "timestamptz"),
    ("channel_order_number", "text"),
    ("customer_name", "text"),
    ("customer_phone", "text"),
    ("customer_email", "text"),
    ("delivery_method", "text"),
    ("pickup_location_code", "text"),
    ("fulfilment_location_code", "text"),
    ("region", "text"),
    ("city", "text"),
    ("address", "text"),
    ("lat", "float8"),
    ("lon", "float8"),
    ("promised_at", "timestamptz"),
    ("requested_delivery_at", "timestamptz"),
    ("payment_method", "text"),
    ("payment_status", "text"),
    ("currency", "text"),
    ("total_amount", "numeric"),
    ("shipping_amount", "numeric"),
    ("raw_id", "int8"),
    ("parent_order_id", "int8"),
)
ORDER_FIELDS = tuple(c for c, _ in _ORDER_COLUMNS)
_PICKUP = ORDER_FIELDS.index("pickup_location_code")
_FULFILMENT = ORDER_FIELDS.index("fulfilment_location_code")
_RAW_ID = ORDER_FIELDS.index("raw_id")
_LINE_COLUMNS = (
    ("n", "int4"),
    ("k", "int4"),
    ("line_no", "int4"),
    ("sku", "text"),
    ("qty", "int4"),
    ("unit_price", "numeric"),
    ("name", "text"),
)
#: staging rows: batch position, the order's columns, its unknown-SKU hold reason and its number of lines
_STAGED_ORDER_COLUMNS = (("n", "int4"), *_ORDER_COLUMNS, ("hold_reason", "text"), ("nlines", "int4"))


def _ddl(table: str, columns: Sequence[tuple[str, str]]) -> sql.Composed:
    return sql.SQL("CREATE TEMP TABLE IF NOT EXISTS {} ({}) ON COMMIT DELETE ROWS").format(
        sql.Identifier(table),
        sql.SQL(", ").join(sql.SQL("{} {}").format(sql.Identifier(c), sql.SQL(t)) for c, t in columns),
    )


def _copy(table: str, columns: Sequence[tuple[str, str]]) -> sql.Composed:
    return sql.SQL("COPY {} ({}) FROM STDIN (FORMAT BINARY)").format(
        sql.Identifier(table), sql.SQL(", ").join(sql.Identifier(c) for c, _ in columns)
    )


_STAGE_ORDERS_DDL = _ddl("_accept_orders", _STAGED_ORDER_COLUMNS)
_STAGE_LINES_DDL = _ddl("_accept_lines", _LINE_COLUMNS)
_COPY_ORDERS = _copy("_accept_orders", _STAGED_ORDER_COLUMNS)
_COPY_LINES = _copy("_accept_lines", _LINE_COLUMNS)

#: One statement over the staged batch: insert the new orders (ON CONFLICT: duplicates change nothing) in
#: batch order, their lines (in the order given) and their creation events; returns (n, order_id) of the
#: inserted orders.
_ACCEPT_SQL = sql.SQL(
    """WITH o AS (
           INSERT INTO oms.orders ({cols}, hold_code, hold_reason, latest_promised_at)
           SELECT {cols}, CASE WHEN hold_reason IS NOT NULL THEN 'unknown_sku' END, hold_reason, promised_at
           FROM _accept_orders ORDER BY n
           ON CONFLICT (channel_code, external_id) DO NOTHING
           RETURNING channel_code, external_id, order_id),
       od AS (
           SELECT o.order_id, s.n, s.channel_code, s.external_id, s.nlines
           FROM o JOIN _accept_orders s USING (channel_code, external_id)),
       l AS (
           INSERT INTO oms.order_lines (order_id, line_no, sku, qty, unit_price, name)
           SELECT od.order_id, x.line_no, x.sku, x.qty, x.unit_price, x.name
           FROM od JOIN _accept_lines x USING (n)
           ORDER BY od.order_id, x.k),
       e AS (
           INSERT INTO oms.order_events (order_id, entity, entity_id, from_state, to_state, actor, reason, data)
           SELECT od.order_id, 'order', od.order_id, NULL, 'new', %(actor)s, 'accepted',
                  jsonb_build_object('channel_code', od.channel_code, 'external_id', od.external_id,
                                     'lines', od.nlines)
           FROM od ORDER BY od.order_id)
       SELECT n, order_id FROM od"""
).format(cols=sql.SQL(", ").join(sql.Identifier(c) for c in ORDER_FIELDS))


def _stage(
    conn: psycopg.Connection, todo: Sequence[NormalizedOrder | ValidatedOrder], holds: Mapping[int, str]
) -> None:
    """COPY the batch (binary: no text formatting or parsing of numbers and times on either side) into the
    session's staging tables; ``holds`` maps a batch position to its unknown-SKU hold reason."""
    conn.execute(_STAGE_ORDERS_DDL)
    conn.execute(_STAGE_LINES_DDL)
    for o in todo:  # the binary COPY would wrap an out-of-range integer silently: never let one get there
        lines = o.staging_lines()
        if len(lines) > INT4_MAX or not all(0 < ln[0] <= INT4_MAX and 0 < ln[2] <= INT4_MAX for ln in lines):
            raise ValueError(f"order {o.key}: a quantity or line number outside 1..{INT4_MAX}")
    cur = conn.cursor()
    with cur.copy(_COPY_ORDERS) as cp:
        cp.set_types([t for _, t in _STAGED_ORDER_COLUMNS])
        for n, o in enumerate(todo):
            cp.write_row((n, *o.staging_values(), holds.get(n), len(o.lines)))
    with cur.copy(_COPY_LINES) as cp:
        cp.set_types([t for _, t in _LINE_COLUMNS])
        for n, o in enumerate(todo):
            for k, ln in enumerate(o.staging_lines()):
                cp.write_row((n, k, *ln))


def accept_orders(
    conn: psycopg.Connection,
    orders: Iterable[NormalizedOrder | Mapping[str, Any]],
    *,
    actor: str,
    source: str = "accept_orders",
    mark_raw: bool = True,
) -> AcceptResult:
    """Accept a batch of normalised orders in one transaction.

    Items may be NormalizedOrder instances or plain mappings (validated here, so a connector can hand over
    what it parsed and let invalid orders be quarantined). Per order exactly one outcome: accepted (state
    'new'), accepted on hold (unknown SKU: state 'on_hold', hold_reason naming the SKUs, with an event),
    duplicate (already known or repeated in the batch: nothing changes) or quarantined (raw.quarantine with
    ``source`` and the reason: invalid field, unknown/inactive channel, unknown pickup location).
    The raw payloads the orders name (``raw_id``) leave the normaliser's queue (``raw.pending_orders``);
    ``mark_raw=False``: the caller has taken them off the queue already (the connectors' normaliser).
    """
    items = list(orders)
    return run_in_transaction(
        conn, lambda c: _accept(c, items, actor, quarantine_source=source, mark_raw=mark_raw)
    )


def accept_orders_in_transaction(
    conn: psycopg.Connection,
    orders: Iterable[NormalizedOrder | Mapping[str, Any]],
    *,
    actor: str,
    quarantine_source: str | None = "accept_orders",
) -> AcceptResult:
    """``accept_orders`` for a caller that already runs a transaction (call INSIDE a transaction), e.g. an
    exchange or an ops replay that must close its quarantine row atomically. ``quarantine_source=None``
    reports rejects in ``rejected`` without writing quarantine rows."""
    return _accept(conn, list(orders), actor, quarantine_source=quarantine_source)


def _accept(
    conn: psycopg.Connection,
    items: Sequence[Any],
    actor: str,
    *,
    quarantine_source: str | None = "accept_orders",
    mark_raw: bool = True,
) -> AcceptResult:
    """Acceptance inside the caller's transaction. ``quarantine_source=None`` reports rejects without
    quarantining them (replay keeps the original quarantine row; exchange raises)."""
    result = AcceptResult()
    rejects: list[tuple[Any, str | None, str]] = []  # (payload, external_id, reason)
    valid: list[NormalizedOrder | ValidatedOrder] = []
    for item in items:
        if isinstance(item, (NormalizedOrder, ValidatedOrder)):
            valid.append(item)
            continue
        try:
            valid.append(NormalizedOrder.model_validate(item))
        except ValidationError as exc:
            ext = item.get("external_id") if isinstance(item, Mapping) else None
            rejects.append((item, None if ext is None else str(ext), _error_text(exc)))

    channels = {
        r[0]: r[1]
        for r in conn.execute(
            "SELECT channel_code, active FROM oms.channels WHERE channel_code = ANY(%s)",
            (sorted({o.channel_code for o in valid}),),
        ).fetchall()
    }
    known_locations = {
        r[0]
        for r in conn.execute(
            "SELECT location_code FROM oms.locations WHERE location_code = ANY(%s)",
            (
                sorted(
                    {o.pickup_location_code for o in valid if o.pickup_location_code}
                    | {o.fulfilment_location_code for o in valid if o.fulfilment_location_code}
                ),
            ),
        ).fetchall()
    }
    seen: set[tuple[str, str]] = set()
    todo: list[NormalizedOrder | ValidatedOrder] = []
    limits = order_limits()
    for o in valid:
        problems = []
        if o.channel_code in limits.by_channel:  # the channel's own quantity limits (business configuration)
            problems.extend(order_limit_problems(o.channel_code, o.staging_lines(), limits))
        if o.channel_code not in channels:
            problems.append(f"unknown channel {o.channel_code!r}")
        elif not channels[o.channel_code]:
            problems.append(f"channel {o.channel_code!r} is inactive")
        if o.pickup_location_code and o.pickup_location_code not in known_locations:
            problems.append(f"unknown pickup location {o.pickup_location_code!r}")
        if o.fulfilment_location_code and o.fulfilment_location_code not in known_locations:
            problems.append(f"unknown fulfilment location {o.fulfilment_location_code!r}")
        if problems:
            rejects.append((_payload(o), o.external_id, "; ".join(problems)))
        elif o.key in seen:
            result.duplicates.append(o.key)
        else:
            seen.add(o.key)
            todo.append(o)

    if todo:
        all_skus = sorted(set().union(*(o.skus for o in todo)))
        known = {r[0] for r in conn.execute("SELECT sku FROM oms.products WHERE sku = ANY(%s)", (all_skus,))}
        unknown: dict[int, list[str]] = {}  # position in todo → SKUs the catalog does not know
        for n, o in enumerate(todo):
            missing = sorted(o.skus - known)
            if missing:
                unknown[n] = missing
        # Orders, lines and creation events in ONE statement over the batch COPYed into staging tables:
        # COPY is the cheapest way into the server, and the set-based INSERT … SELECT keeps ON CONFLICT
        # (duplicates change nothing, also against a concurrent acceptance of the same order).
        _stage(conn, todo, {n: f"unknown sku: {', '.join(skus)}" for n, skus in unknown.items()})
        inserted = dict(conn.execute(_ACCEPT_SQL, {"actor": actor}).fetchall())
        conn.execute("DELETE FROM _accept_orders")
        conn.execute("DELETE FROM _accept_lines")
        holds: list[tuple[int, list[str]]] = []
        for n, o in enumerate(todo):
            oid = inserted.get(n)
            if oid is None:
                result.duplicates.append(o.key)
                continue
            result.ids[o.key] = oid
            if n in unknown:
                holds.append((oid, unknown[n]))
        if holds:
            apply_transitions(
                conn,
                "order",
                [
                    Change(
                        oid,
                        "on_hold",
                        f"unknown sku: {', '.join(skus)}",
                        {"hold_code": "unknown_sku", "skus": skus},
                    )
                    for oid, skus in holds
                ],
                actor=actor,
            )
            result.on_hold = sorted(oid for oid, _ in holds)
        raw_ids = [o.raw_id for o in todo if o.raw_id is not None]
        if raw_ids and mark_raw:  # their payloads need no normalising any more
            conn.execute(
                """DELETE FROM raw.pending_orders p USING raw.channel_orders r
                   WHERE r.raw_id = ANY(%s) AND p.channel_code = r.channel_code AND p.raw_id = r.raw_id""",
                (raw_ids,),
            )
    result.rejected = [(ext, reason) for _, ext, reason in rejects]
    if rejects and quarantine_source:
        result.quarantined = quarantine_many(
            conn, [(quarantine_source, ext, payload, reason) for payload, ext, reason in rejects]
        )
    return result


def replay_quarantined_orders(
    conn: psycopg.Connection, quarantine_ids: Sequence[int], *, actor: str
) -> AcceptResult:
    """Re-run open quarantined orders through acceptance after a fix (new channel, catalog, …).

    Rows that are now accepted (or turn out to be duplicates) are closed as 'replayed'; rows that still fail
    stay open with their original reason (no new quarantine rows), listed in ``rejected``.
    """

    def run(c: psycopg.Connection) -> AcceptResult:
        rows = c.execute(
            """SELECT quarantine_id, payload FROM raw.quarantine
               WHERE quarantine_id = ANY(%s) AND state = 'open' ORDER BY quarantine_id FOR UPDATE""",
            (list(quarantine_ids),),
        ).fetchall()
        res = _accept(c, [r[1] for r in rows], actor, quarantine_source=None)
        failed = {ext for ext, _ in res.rejected}
        done = [
            qid
            for qid, payload in rows
            if isinstance(payload, Mapping)
            and payload.get("external_id") is not None
            and str(payload["external_id"]) not in failed
        ]
        if done:
            c.execute(
                """UPDATE raw.quarantine SET state = 'replayed', resolved_at = now(), resolved_by = %s
                   WHERE quarantine_id = ANY(%s)""",
                (actor, done),
            )
        return res

    return run_in_transaction(conn, run)


# --------------------------------------------------------------------------------------------------------
# raw channel payloads (for the connectors)
# --------------------------------------------------------------------------------------------------------
def payload_hash(payload: Any) -> str:
    """sha256 of the canonical JSON (sorted keys, compact) — the same payload always hashes the same."""
    import json

    text = json.dumps(json.loads(dumps(payload)), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()


def record_raw_orders(
    conn: psycopg.Connection, channel_code: str, payloads: Sequence[tuple[str, Any]]
) -> list[int]:
    """Store channel payloads ``(external_id, payload)`` as received (one transaction), queued for the
    normaliser (or for ``accept_orders`` naming their raw_id). Idempotent on (channel, external_id, payload
    hash): returns the raw_ids of rows that were new."""
    if not payloads:
        return []
    with conn.transaction():
        rows = conn.execute(
            """WITH ins AS (
                   INSERT INTO raw.channel_orders (channel_code, external_id, payload, payload_hash)
                   SELECT %(channel)s, e, p::json, h
                   FROM unnest(%(ext)s::text[], %(payload)s::text[], %(hash)s::text[]) AS t(e, p, h)
                   ON CONFLICT (channel_code, external_id, payload_hash) DO NOTHING RETURNING raw_id),
               queued AS (INSERT INTO raw.pending_orders (channel_code, raw_id) SELECT %(channel)s, raw_id FROM ins)
               SELECT raw_id FROM ins""",
            {
                "channel": channel_code,
                "ext": [str(e) for e, _ in payloads],
                "payload": [dumps(p) for _, p in payloads],
                "hash": [payload_hash(p) for _, p in payloads],
            },
        ).fetchall()
    return sorted(r[0] for r in rows)


# --------------------------------------------------------------------------------------------------------
# holds and cancellation
# --------------------------------------------------------------------------------------------------------
def _lock_orders(conn: psycopg.Connection, order_ids: Sequence[int]) -> dict[int, dict[str, Any]]:
    ids = sorted(set(order_ids))
    rows = conn.execute(
        """SELECT order_id, state, payment_status, channel_code, external_id, order_number, currency,
                  shipping_amount, hold_code
           FROM oms.orders WHERE order_id = ANY(%s) ORDER BY order_id FOR UPDATE""",
        (ids,),
    ).fetchall()
    found = {
        r[0]: dict(
            zip(
                (
                    "order_id",
                    "state",
                    "payment_status",
                    "channel_code",
                    "external_id",
                    "order_number",
                    "currency",
                    "shipping_amount",
                    "hold_code",
                ),
                r,
                strict=True,
            )
        )
        for r in rows
    }
    missing = [i for i in ids if i not in found]
    if missing:
        raise NotFound("order", missing)
    return found


def _release_and_reset_lines(
    conn: psycopg.Connection, order_ids: list[int], *, actor: str, reason: str
) -> None:
    """Give back every active reservation of the orders (``reservations.release_reservations``) and move allocated lines to 'new'."""
    release_reservations(conn, order_ids=order_ids, actor=actor, reason=reason)
    lines = conn.execute(
        "SELECT line_id FROM oms.order_lines WHERE order_id = ANY(%s) AND state = 'allocated' ORDER BY line_id",
        (order_ids,),
    ).fetchall()
    apply_transitions(conn, "order_line", [Change(r[0], "new", reason) for r in lines], actor=actor)


def hold_orders(
    conn: psycopg.Connection, order_ids: Sequence[int], *, reason: str, actor: str, code: str = "manual"
) -> list[int]:
    """Put orders on hold (one transaction): their reservations are released (stock is not held hostage by
    an order nobody will ship) and the order waits in 'on_hold' until ``release_holds``. Allowed from new,
    backordered, partially_allocated and allocated; any other state refuses the whole batch."""

    def run(c: psycopg.Connection) -> list[int]:
        _lock_orders(c, order_ids)
        ids = sorted(set(order_ids))
        apply_transitions(
            c, "order", [Change(i, "on_hold", reason, {"hold_code": code}) for i in ids], actor=actor
        )
        c.execute(
            "UPDATE oms.orders SET hold_code = %s, hold_reason = %s WHERE order_id = ANY(%s)",
            (code, reason, ids),
        )
        _release_and_reset_lines(c, ids, actor=actor, reason=f"hold: {reason}")
        return ids

    return run_in_transaction(conn, run)


def release_holds(
    conn: psycopg.Connection, order_ids: Sequence[int], *, reason: str, actor: str
) -> list[int]:
    """Release held orders back to 'new' (the allocator picks them up). Orders held for unknown SKUs that the
    catalog still does not know are refused (ValidationFailed naming every order and SKU)."""

    def run(c: psycopg.Connection) -> list[int]:
        _lock_orders(c, order_ids)
        ids = sorted(set(order_ids))
        unknown = c.execute(
            """SELECT l.order_id, string_agg(DISTINCT l.sku, ', ' ORDER BY l.sku)
               FROM oms.order_lines l WHERE l.order_id = ANY(%s)
                 AND NOT EXISTS (SELECT 1 FROM oms.products p WHERE p.sku = l.sku)
               GROUP BY l.order_id ORDER BY l.order_id""",
            (ids,),
        ).fetchall()
        if unknown:
            raise ValidationFailed([f"order {o}: unknown sku {s}" for o, s in unknown])
        apply_transitions(c, "order", [Change(i, "new", reason) for i in ids], actor=actor)
        c.execute(
            "UPDATE oms.orders SET hold_code = NULL, hold_reason = NULL WHERE order_id = ANY(%s)", (ids,)
        )
        return ids

    return run_in_transaction(conn, run)


def release_resolved_unknown_sku_holds(conn: psycopg.Connection, *, actor: str) -> list[int]:
    """Release every order held for unknown SKUs whose SKUs the catalog now knows (run after a catalog
    import). Returns the released order ids."""
    ids = [
        r[0]
        for r in conn.execute(
            """SELECT o.order_id FROM oms.orders o
               WHERE o.state = 'on_hold' AND o.hold_code = 'unknown_sku'
                 AND NOT EXISTS (SELECT 1 FROM oms.order_lines l WHERE l.order_id = o.order_id
                                 AND NOT EXISTS (SELECT 1 FROM oms.products p WHERE p.sku = l.sku))
               ORDER BY o.order_id"""
        ).fetchall()
    ]
    if not ids:
        return []
    return release_holds(conn, ids, reason="skus now in catalog", actor=actor)


@dataclass
class CancelResult:
    cancelled: list[int] = field(default_factory=list)  # fully cancelled
    remainder_cancelled: list[int] = field(default_factory=list)  # partially shipped: the rest cancelled
    refunds: list[int] = field(default_factory=list)


def cancel_orders(
    conn: psycopg.Connection, order_ids: Sequence[int], *, reason: str, actor: str
) -> CancelResult:
    """Cancel orders (one transaction, all or nothing).

    Reservations are released through ``reservations.release_reservations``, open picks are cancelled (picked goods
    go back to the shelf: on_hand never moved), every line's open quantity becomes qty_cancelled. An order
    that has already shipped something keeps what shipped: only the remainder is cancelled and it moves to
    'shipped'. Paid orders get a refund (refunds row + outbox 'payment.refund') for the cancelled value; the
    channel is told through outbox 'channel.order_status'. Any order in a state that cannot be cancelled
    refuses the whole batch (IllegalTransition listing each).
    """

    def run(c: psycopg.Connection) -> CancelResult:
        orders = _lock_orders(c, order_ids)
        ids = sorted(orders)
        open_value = {
            r[0]: (r[1], r[2], r[3])
            for r in c.execute(
                """SELECT order_id, sum(qty_shipped)::int, sum(qty - qty_shipped - qty_cancelled)::int,
                          sum((qty - qty_shipped - qty_cancelled) * unit_price)
                   FROM oms.order_lines WHERE order_id = ANY(%s) GROUP BY order_id""",
                (ids,),
            ).fetchall()
        }
        res = CancelResult()
        changes = []
        for oid in ids:
            shipped = open_value.get(oid, (0, 0, 0))[0]
            if shipped > 0 and orders[oid]["state"] not in fulfillment.DELIVERY_ORDER_STATES:
                changes.append(Change(oid, "shipped", f"remainder cancelled: {reason}"))
                res.remainder_cancelled.append(oid)
            else:
                changes.append(Change(oid, "cancelled", reason))
                res.cancelled.append(oid)
        apply_transitions(c, "order", changes, actor=actor)
        c.execute("UPDATE oms.orders SET cancel_reason = %s WHERE order_id = ANY(%s)", (reason, ids))
        release_reservations(c, order_ids=ids, actor=actor, reason=f"cancel: {reason}")
        c.execute(
            "UPDATE oms.picks SET state = 'cancelled' WHERE order_id = ANY(%s) AND state IN ('picked', 'packed')",
            (ids,),
        )
        lines = c.execute(
            """SELECT line_id, qty_shipped FROM oms.order_lines
               WHERE order_id = ANY(%s) AND qty - qty_shipped - qty_cancelled > 0 ORDER BY line_id""",
            (ids,),
        ).fetchall()
        apply_transitions(
            c,
            "order_line",
            [
                Change(lid, "shipped" if shipped else "cancelled", f"cancel: {reason}")
                for lid, shipped in lines
            ],
            actor=actor,
        )
        c.execute(
            """UPDATE oms.order_lines SET qty_cancelled = qty - qty_shipped, updated_at = now()
               WHERE line_id = ANY(%s)""",
            ([r[0] for r in lines],),
        )
        effects = []
        for oid in ids:
            o = orders[oid]
            status = "cancelled" if oid in res.cancelled else "remainder_cancelled"
            effects.append(
                (
                    "channel.order_status",
                    {
                        "order_id": oid,
                        "order_number": o["order_number"],
                        "channel_code": o["channel_code"],
                        "external_id": o["external_id"],
                        "status": status,
                        "reason": reason,
                    },
                    f"channel.order_status:{oid}:{status}",
                )
            )
            if o["payment_status"] in ("paid", "partially_refunded"):
                value = open_value.get(oid, (0, 0, Decimal(0)))[2] or Decimal(0)
                if oid in res.cancelled:
                    value += o["shipping_amount"]
                if value > 0:
                    rid = request_refund(
                        c,
                        order_id=oid,
                        amount=value,
                        reason=f"cancel: {reason}",
                        actor=actor,
                        idempotency_key=f"refund:cancel:{oid}",
                    )
                    res.refunds.append(rid)
        enqueue_many(c, effects)
        if res.remainder_cancelled:
            fulfillment.sync_orders(c, res.remainder_cancelled, actor=actor, reason="remainder cancelled")
        return res

    return run_in_transaction(conn, run)


def get_order(conn: psycopg.Connection, order_id: int) -> dict[str, Any]:
    """The order row with its lines (``lines``: list of dicts) — a read helper."""
    cur = conn.cursor(row_factory=psycopg.rows.dict_row)
    row = cur.execute("SELECT * FROM oms.orders WHERE order_id = %s", (order_id,)).fetchone()
    if row is None:
        raise NotFound("order", [order_id])
    row["lines"] = cur.execute(
        "SELECT * FROM oms.order_lines WHERE order_id = %s ORDER BY line_no", (order_id,)
    ).fetchall()
    return row


__all__ = [
    "AcceptResult",
    "CancelResult",
    "NormalizedLine",
    "NormalizedOrder",
    "accept_orders",
    "accept_orders_in_transaction",
    "cancel_orders",
    "get_order",
    "hold_orders",
    "payload_hash",
    "record_raw_orders",
    "release_holds",
    "release_resolved_unknown_sku_holds",
    "replay_quarantined_orders",
]
