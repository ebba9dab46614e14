"""Incoming supply and promise dates (docs/allocation.md, "Incoming supply and promise dates").

Purchase orders and inter-location transfers with an expected arrival date are future stock at their
destination (``oms.supplies`` / ``oms.supply_lines``, migration 0020). They come from the WMS's inbound feed,
from a CSV or a 1C CommerceML purchase-order export, or by hand; a supply is unique per (source, external id),
so importing the same document again updates it instead of adding it twice.

**Promises, first-in-first-out.** Order lines that wait — backordered, and pre-order lines held until their
product's release date — are served in order time (placed_at, order_id, line_no), as the allocator serves
backorders. Each takes the first open supply (expected date, then supply id) at a location that may serve
its order (the channel's stock pool; the marketplace's warehouse for an order pinned to one) whose quantity
not yet promised to an earlier line covers the whole line; the promise date is that supply's expected date
(today when it is overdue), and for a pre-order no earlier than the release date. A pre-order line may also be
covered by stock already on hand (it waits only for the release date). A line nothing covers gets no date,
and its row says so. :func:`plan_promises` is the pure computation; :func:`recompute_promises` reads, plans
and writes the whole set in one transaction, and records each changed promise as an order event (no channel
API in the reference accepts a promise or shipment date, so nothing is pushed: see the docs).

**Arrival.** Stock reaches the ledger the usual way for its location: a receipt entered in the OMS
(:func:`receive_supply`: ledger 'receipt', idempotent by reference) or, at a location the WMS runs, the WMS's
own count (its inbound feed reports the received quantities; ``services.supply`` then applies the location's
snapshot at once — booking a receipt as well would count the units twice). Then the orders promised from the
arrived supplies are allocated first, in promise order, through the ordinary allocator, then every other
backorder, and the promises are computed again (``services.supply.after_arrival``).

**Pre-orders.** ``oms.products.preorder`` with ``release_date``: before that date the allocator does not
reserve the product (``allocation``), so its order lines are accepted and wait as backordered lines with a
promise; from the release date on they are ordinary backorders.
"""

from __future__ import annotations

import csv
import io
import json
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any, Literal
from zoneinfo import ZoneInfo

import psycopg
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from oms_ops.business_config import BusinessConfig
from oms_ops.db import run_in_transaction
from oms_ops.errors import NotFound, ValidationFailed
from oms_ops.inventory import Movement, apply_movements, register_document
from oms_ops.onec import commerceml as cml
from oms_ops.outbox import dumps
from oms_ops.quarantine import quarantine_many

SOURCES = ("wms", "csv", "1c", "manual")
KINDS = ("purchase_order", "transfer")
OPEN_STATES = ("expected", "partially_received")
#: order states whose backordered lines wait for supply (the allocator's waiting states)
WAITING_ORDER_STATES = ("backordered", "partially_allocated")
#: one promise computation at a time (two would both write the whole set)
PROMISE_LOCK = 7_420_020
ACTOR = "supply"

# -- input ---------------------------------------------------------------------------------------------------


class SupplyLineIn(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    sku: str = Field(min_length=1)
    qty: int = Field(gt=0)
    #: only a WMS reports received quantities with the document; other sources receive via receive_supply
    qty_received: int = Field(default=0, ge=0)


class SupplyIn(BaseModel):
    """One purchase order or transfer as a source states it (the whole document, every line)."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    external_id: str = Field(min_length=1, max_length=100)
    kind: Literal["purchase_order", "transfer"] = "purchase_order"
    location_code: str = Field(min_length=1)
    from_location_code: str | None = None
    supplier: str | None = None
    expected_date: date
    cancelled: bool = False
    lines: list[SupplyLineIn] = Field(min_length=1)

    @model_validator(mode="after")
    def _shape(self) -> SupplyIn:
        problems = []
        if self.kind == "transfer" and not self.from_location_code:
            problems.append("a transfer needs from_location_code (where it leaves from)")
        if self.kind == "purchase_order" and self.from_location_code:
            problems.append("a purchase order has no from_location_code (is it a transfer?)")
        if self.from_location_code and self.from_location_code == self.location_code:
            problems.append("a transfer must arrive at another location than it leaves from")
        skus = [ln.sku for ln in self.lines]
        if len(set(skus)) != len(skus):
            problems.append("a SKU is listed twice: one line per SKU")
        if problems:
            raise ValueError("; ".join(problems))
        return self


@dataclass
class ImportResult:
    inserted: list[str] = field(default_factory=list)  # external ids
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    quarantined: list[int] = field(default_factory=list)  # raw.quarantine ids
    #: supplies whose received quantity grew with this import (WMS feed): stock has arrived for them
    arrived: list[int] = field(default_factory=list)

    def metadata(self) -> dict[str, int]:
        return {
            "supplies_inserted": len(self.inserted),
            "supplies_updated": len(self.updated),
            "supplies_unchanged": len(self.unchanged),
            "supplies_quarantined": len(self.quarantined),
            "supplies_arrived": len(self.arrived),
        }


def quarantine_source(source: str) -> str:
    return f"supply:{source}"


def _pydantic_reason(exc: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(map(str, e['loc'])) or 'document'}: {e['msg']}" for e in exc.errors(include_url=False)
    )


def upsert_supplies(
    conn: psycopg.Connection,
    documents: Iterable[SupplyIn | Mapping[str, Any]],
    *,
    source: str,
    actor: str = ACTOR,
    rejected: Sequence[tuple[str | None, Any, str]] = (),
) -> ImportResult:
    """Insert new supplies and update changed ones, idempotent by (source, external id) — one transaction.

    Every document is checked (shape, known locations, not reopening a closed supply); a bad one is
    quarantined (source ``supply:<source>``) with the reason and the others are applied. A line of an unknown
    SKU is quarantined by itself and the rest of its document applied. ``rejected``
    — ``(external id, payload, reason)`` the caller's parser already refused (bad CSV rows, 1C lines) — is
    quarantined in the same transaction, one entry each. A document lists every line of the supply; lines
    it no longer lists keep what was received (nothing is deleted). Received quantities are taken only
    from the WMS (it counts the stock itself); other sources receive through :func:`receive_supply`.
    """
    if source not in SOURCES:
        raise ValidationFailed(f"supply source must be one of {', '.join(SOURCES)}, not {source!r}")
    items = list(documents)

    def run(c: psycopg.Connection) -> ImportResult:
        res = ImportResult()
        bad: list[tuple[str, str | None, Any, str]] = [
            (quarantine_source(source), ext, payload, why) for ext, payload, why in rejected
        ]
        docs: dict[str, tuple[SupplyIn, Any]] = {}
        for item in items:
            try:
                doc = item if isinstance(item, SupplyIn) else SupplyIn.model_validate(item)
            except ValidationError as exc:
                ext = item.get("external_id") if isinstance(item, Mapping) else None
                bad.append(
                    (
                        quarantine_source(source),
                        None if ext is None else str(ext),
                        item,
                        _pydantic_reason(exc),
                    )
                )
                continue
            docs[doc.external_id] = (doc, item)  # listed twice: the last one wins
        # a line of a SKU the OMS does not sell is kept aside by itself; the rest of its document applies
        known = {
            r[0]
            for r in c.execute(
                "SELECT sku FROM oms.products WHERE sku = ANY(%s)",
                (sorted({ln.sku for d, _ in docs.values() for ln in d.lines}),),
            )
        }
        for ext in list(docs):
            doc, item = docs[ext]
            unknown = [ln for ln in doc.lines if ln.sku not in known]
            if not unknown:
                continue
            head = doc.model_dump(mode="json", exclude={"lines"})
            for ln in unknown:
                why = f"{ext}: unknown SKU {ln.sku} (not in the catalog)"
                bad.append((quarantine_source(source), ext, {**head, "line": ln.model_dump()}, why))
            rest = [ln for ln in doc.lines if ln.sku in known]
            if rest:
                docs[ext] = (doc.model_copy(update={"lines": rest}), item)
            else:
                del docs[ext]
        problems = _reference_problems(c, source, [d for d, _ in docs.values()])
        for ext, why in problems.items():
            doc, item = docs.pop(ext)
            payload = item if isinstance(item, Mapping) else doc.model_dump(mode="json")
            bad.append((quarantine_source(source), ext, payload, why))
        if bad:
            res.quarantined = quarantine_many(c, bad)
        if docs:
            _write(c, source, [d for d, _ in docs.values()], actor, res)
        return res

    return run_in_transaction(conn, run)


def _reference_problems(conn: psycopg.Connection, source: str, docs: Sequence[SupplyIn]) -> dict[str, str]:
    """external id → why it cannot be applied (unknown location, a closed supply changed)."""
    if not docs:
        return {}
    locs = {r[0] for r in conn.execute("SELECT location_code FROM oms.locations")}
    existing = {
        r[0]: (r[1], r[2], r[3])
        for r in conn.execute(
            """SELECT external_id, state, kind, location_code FROM oms.supplies
               WHERE source = %s AND external_id = ANY(%s)""",
            (source, [d.external_id for d in docs]),
        )
    }
    out = {}
    for d in docs:
        why = []
        for code in (d.location_code, d.from_location_code):
            if code is not None and code not in locs:
                why.append(f"unknown location {code!r}")
        if d.external_id in existing:
            state, kind, loc = existing[d.external_id]
            if state == "cancelled" and not d.cancelled:
                why.append(
                    f"{d.external_id} was cancelled: a cancelled supply is not reopened (enter a new one)"
                )
            if (kind, loc) != (d.kind, d.location_code) and state != "expected":
                why.append(
                    f"{d.external_id} is {state}: its kind and destination ({kind} to {loc}) can no longer change"
                )
        if why:
            out[d.external_id] = "; ".join(why)
    return out


def _state_of(lines: Sequence[tuple[int, int]], cancelled: bool) -> str:
    """(qty, qty_received) per line → the supply's state."""
    if cancelled:
        return "cancelled"
    if all(got >= qty for qty, got in lines):
        return "received"
    return "partially_received" if any(got > 0 for _, got in lines) else "expected"


def _write(
    c: psycopg.Connection, source: str, docs: Sequence[SupplyIn], actor: str, res: ImportResult
) -> None:
    """The set-based upsert of valid documents: supplies, then their lines, then the derived states."""
    wms = source == "wms"
    head = [
        {
            "e": d.external_id,
            "k": d.kind,
            "l": d.location_code,
            "f": d.from_location_code,
            "s": d.supplier,
            "d": d.expected_date.isoformat(),
        }
        for d in sorted(docs, key=lambda d: d.external_id)
    ]
    ids: dict[str, int] = {}
    changed: set[str] = set()
    for sid, ext, inserted, touched in c.execute(
        """WITH v AS (SELECT * FROM json_to_recordset(%(doc)s::json)
                      AS v(e text, k text, l text, f text, s text, d date)),
               u AS (
               INSERT INTO oms.supplies AS s (source, external_id, kind, location_code, from_location_code,
                                              supplier, expected_date, created_by)
               SELECT %(src)s, v.e, v.k, v.l, v.f, v.s, v.d, %(actor)s FROM v ORDER BY v.e
               ON CONFLICT (source, external_id) DO UPDATE SET
                   kind = excluded.kind, location_code = excluded.location_code,
                   from_location_code = excluded.from_location_code, supplier = excluded.supplier,
                   expected_date = excluded.expected_date, updated_at = now()
               WHERE (s.kind, s.location_code, s.from_location_code, s.supplier, s.expected_date)
                     IS DISTINCT FROM (excluded.kind, excluded.location_code, excluded.from_location_code,
                                       excluded.supplier, excluded.expected_date)
               RETURNING s.supply_id, s.external_id, (xmax = 0) AS inserted)
           SELECT u.supply_id, u.external_id, u.inserted, true FROM u
           UNION ALL
           SELECT s.supply_id, s.external_id, false, false FROM oms.supplies s JOIN v ON v.e = s.external_id
           WHERE s.source = %(src)s AND v.e NOT IN (SELECT external_id FROM u)""",
        {"doc": json.dumps(head, ensure_ascii=False), "src": source, "actor": actor},
    ).fetchall():
        ids[ext] = sid
        if inserted:
            res.inserted.append(ext)
        elif touched:
            changed.add(ext)
    by_sid = {ids[d.external_id]: d for d in docs}
    before = defaultdict(dict)
    for sid, sku, qty, got in c.execute(
        "SELECT supply_id, sku, qty, qty_received FROM oms.supply_lines WHERE supply_id = ANY(%s) ORDER BY 1, 2",
        (sorted(by_sid),),
    ):
        before[sid][sku] = (qty, got)
    rows = []
    for sid, d in sorted(by_sid.items()):
        for ln in sorted(d.lines, key=lambda ln: ln.sku):
            got = ln.qty_received if wms else before[sid].get(ln.sku, (0, 0))[1]
            rows.append({"i": sid, "k": ln.sku, "q": ln.qty, "r": got})
            if before[sid].get(ln.sku) != (ln.qty, got):
                changed.add(d.external_id)
            if wms and got > before[sid].get(ln.sku, (0, 0))[1]:
                res.arrived.append(sid)
    c.execute(
        """INSERT INTO oms.supply_lines AS l (supply_id, sku, qty, qty_received)
           SELECT v.i, v.k, v.q, v.r FROM json_to_recordset(%s::json) AS v(i bigint, k text, q int, r int)
           ORDER BY v.i, v.k
           ON CONFLICT (supply_id, sku) DO UPDATE SET qty = excluded.qty, qty_received = excluded.qty_received
           WHERE (l.qty, l.qty_received) IS DISTINCT FROM (excluded.qty, excluded.qty_received)""",
        (json.dumps(rows, ensure_ascii=False),),
    )
    res.arrived = sorted(set(res.arrived))
    # states follow from the lines (and the source's cancellation); a changed state is a change too
    cancelled = {ids[d.external_id] for d in docs if d.cancelled}
    for ext in _sync_states(c, sorted(by_sid), cancelled):
        changed.add(ext)
    inserted = set(res.inserted)
    for d in sorted(docs, key=lambda d: d.external_id):
        if d.external_id in inserted:
            continue
        (res.updated if d.external_id in changed else res.unchanged).append(d.external_id)


def _sync_states(c: psycopg.Connection, supply_ids: Sequence[int], cancelled: set[int]) -> list[str]:
    """Set each supply's state from its lines (``cancelled``: cancelled by its source). Returns the external
    ids whose state changed."""
    lines: dict[int, list[tuple[int, int]]] = defaultdict(list)
    for sid, qty, got in c.execute(
        "SELECT supply_id, qty, qty_received FROM oms.supply_lines WHERE supply_id = ANY(%s)",
        (list(supply_ids),),
    ):
        lines[sid].append((qty, got))
    current = {
        r[0]: r[1]
        for r in c.execute(
            "SELECT supply_id, state FROM oms.supplies WHERE supply_id = ANY(%s)", (list(supply_ids),)
        )
    }
    target = []
    for sid in supply_ids:
        state = _state_of(lines[sid], sid in cancelled or current[sid] == "cancelled")
        if state != current[sid]:
            target.append({"i": sid, "s": state})
    if not target:
        return []
    return [
        r[0]
        for r in c.execute(
            """UPDATE oms.supplies s SET state = v.s, updated_at = now(),
                   received_at = CASE WHEN v.s = 'received' THEN coalesce(s.received_at, now()) END,
                   cancelled_at = CASE WHEN v.s = 'cancelled' THEN coalesce(s.cancelled_at, now()) END
               FROM json_to_recordset(%s::json) AS v(i bigint, s text)
               WHERE s.supply_id = v.i RETURNING s.external_id""",
            (json.dumps(target),),
        )
    ]


# -- manual entry, cancellation, arrival ---------------------------------------------------------------------


def find_supply(conn: psycopg.Connection, ref: str | int) -> int:
    """A supply by id, or by its external id (any source; ambiguous when two sources use the same number)."""
    if isinstance(ref, int) or str(ref).isdigit():
        row = conn.execute("SELECT supply_id FROM oms.supplies WHERE supply_id = %s", (int(ref),)).fetchone()
        if row:
            return row[0]
    rows = conn.execute(
        "SELECT supply_id, source FROM oms.supplies WHERE external_id = %s", (str(ref),)
    ).fetchall()
    if not rows:
        raise NotFound("supply", [ref])
    if len(rows) > 1:
        raise ValidationFailed(
            f"supply {ref!r} exists in several sources ({', '.join(r[1] for r in rows)}): give its supply id"
        )
    return rows[0][0]


@dataclass
class ReceiptResult:
    supply_id: int
    reference: str
    applied: bool  # False: this reference was received before (nothing changed)
    state: str
    received: dict[str, int] = field(default_factory=dict)


def receive_supply(
    conn: psycopg.Connection,
    supply_id: int,
    lines: Mapping[str, int] | None = None,
    *,
    reference: str | None = None,
    actor: str,
) -> ReceiptResult:
    """Goods of a supply arrived (entered in the OMS): the ledger gets a 'receipt' at the supply's location and
    the supply's received quantities grow — one transaction, idempotent by ``reference`` (default: the
    supply's outstanding quantity under ``<source>:<external id>``). ``lines`` (sku → units) receives part
    of it; None receives everything outstanding. Every problem is listed (unknown SKU on the supply, more than
    outstanding, a closed supply). Supplies of the WMS are refused: the WMS counts their stock itself.

    Allocating the orders that waited for it is the caller's next step (``services.supply.after_arrival``)."""

    def run(c: psycopg.Connection) -> ReceiptResult:
        head = c.execute(
            """SELECT source, external_id, location_code, state FROM oms.supplies WHERE supply_id = %s
               FOR UPDATE""",
            (supply_id,),
        ).fetchone()
        if head is None:
            raise NotFound("supply", [supply_id])
        source, ext, loc, state = head
        ref = reference or f"supply:{source}:{ext}"
        seen = c.execute(
            "SELECT 1 FROM oms.stock_documents WHERE kind = 'receipt' AND location_code = %s AND reference = %s",
            (loc, ref),
        ).fetchone()
        if seen:
            return ReceiptResult(supply_id, ref, False, state)
        if source == "wms":
            raise ValidationFailed(
                f"supply {ext} comes from the WMS: its receipts and stock arrive from the WMS itself "
                "(receiving it here too would count the units twice)"
            )
        if state not in OPEN_STATES:
            raise ValidationFailed(f"supply {ext} is {state}: nothing more can be received")
        have = {
            r[0]: (r[1], r[2])
            for r in c.execute(
                "SELECT sku, qty, qty_received FROM oms.supply_lines WHERE supply_id = %s ORDER BY sku",
                (supply_id,),
            )
        }
        want = (
            {s: q - got for s, (q, got) in have.items() if q > got}
            if lines is None
            else {str(s): q for s, q in lines.items()}
        )
        problems = []
        for sku, q in sorted(want.items()):
            if sku not in have:
                problems.append(f"{sku}: not a line of supply {ext}")
            elif isinstance(q, bool) or not isinstance(q, int) or q <= 0:
                problems.append(f"{sku}: received quantity must be a positive integer, got {q!r}")
            elif q > have[sku][0] - have[sku][1]:
                problems.append(f"{sku}: {q} received, only {have[sku][0] - have[sku][1]} outstanding")
        if not want:
            problems.append(f"supply {ext}: nothing outstanding to receive")
        if problems:
            raise ValidationFailed(problems)
        if register_document(c, "receipt", loc, ref, actor) is None:
            return ReceiptResult(supply_id, ref, False, state)
        apply_movements(
            c,
            [
                Movement(loc, sku, "receipt", q, reference=ref, reason=f"supply {ext}")
                for sku, q in sorted(want.items())
            ],
            actor=actor,
        )
        c.execute(
            """UPDATE oms.supply_lines l SET qty_received = l.qty_received + v.q
               FROM json_to_recordset(%s::json) AS v(k text, q int)
               WHERE l.supply_id = %s AND l.sku = v.k""",
            (json.dumps([{"k": s, "q": q} for s, q in sorted(want.items())]), supply_id),
        )
        _sync_states(c, [supply_id], set())
        new_state = c.execute("SELECT state FROM oms.supplies WHERE supply_id = %s", (supply_id,)).fetchone()[
            0
        ]
        return ReceiptResult(supply_id, ref, True, new_state, dict(want))

    return run_in_transaction(conn, run)


def cancel_supply(conn: psycopg.Connection, supply_id: int, *, actor: str) -> bool:
    """Cancel an open supply (what it has not delivered will not come). Returns False when it was closed."""
    with conn.transaction():
        row = conn.execute(
            """UPDATE oms.supplies SET state = 'cancelled', cancelled_at = now(), updated_at = now()
               WHERE supply_id = %s AND state = ANY(%s) RETURNING supply_id""",
            (supply_id, list(OPEN_STATES)),
        ).fetchone()
        if (
            row is None
            and conn.execute("SELECT 1 FROM oms.supplies WHERE supply_id = %s", (supply_id,)).fetchone()
            is None
        ):
            raise NotFound("supply", [supply_id])
    return row is not None


def set_preorder(
    conn: psycopg.Connection, sku: str, release_date: date | None, *, actor: str = ACTOR
) -> None:
    """Sell ``sku`` as a pre-order until ``release_date`` (None: an ordinary product again)."""
    with conn.transaction():
        n = conn.execute(
            """UPDATE oms.products SET preorder = %s, release_date = %s, updated_at = now() WHERE sku = %s""",
            (release_date is not None, release_date, sku),
        ).rowcount
    if n == 0:
        raise NotFound("product", [sku])


# -- promises ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Demand:
    """A waiting order line: what it still needs and where it may come from (None: anywhere)."""

    line_id: int
    order_id: int
    sku: str
    qty: int
    placed_at: datetime
    eligible: frozenset[str] | None
    release_date: date | None = None  # pre-order not yet released


@dataclass(frozen=True)
class OpenSupply:
    supply_id: int
    location_code: str
    expected_date: date
    remaining: Mapping[str, int]  # sku → units not yet received
    external_id: str = ""


@dataclass(frozen=True)
class Promise:
    line_id: int
    order_id: int
    sku: str
    qty: int
    promised_date: date | None
    covered_by: str | None  # supply | stock | None
    supply_id: int | None
    location_code: str | None
    preorder: bool
    reason: str


def plan_promises(
    demands: Sequence[Demand],
    supplies: Sequence[OpenSupply],
    *,
    today: date,
    preorder_stock: Mapping[tuple[str, str], int] | None = None,
) -> list[Promise]:
    """First-in-first-out promises (pure). Lines are served in (placed_at, order_id, line_id) order; each takes
    the first supply — by (expected_date, supply_id) — at an eligible location whose quantity not yet promised
    covers the whole line. A pre-order line may first take free stock on hand at an eligible location
    (``preorder_stock``: (location, sku) → units), and its date is never before its release date. An overdue
    supply promises today. A line nothing covers gets no date and says why."""
    left = {s.supply_id: dict(s.remaining) for s in supplies}
    order = sorted(supplies, key=lambda s: (s.expected_date, s.supply_id))
    stock = dict(preorder_stock or {})
    out: list[Promise] = []
    for d in sorted(demands, key=lambda d: (d.placed_at, d.order_id, d.line_id)):
        pre = d.release_date is not None
        base = dict(line_id=d.line_id, order_id=d.order_id, sku=d.sku, qty=d.qty, preorder=pre)
        promise = None
        if pre:
            for loc, sku in sorted(k for k in stock if k[1] == d.sku):
                if (d.eligible is None or loc in d.eligible) and stock[(loc, sku)] >= d.qty:
                    stock[(loc, sku)] -= d.qty
                    promise = Promise(
                        **base,
                        promised_date=d.release_date,
                        covered_by="stock",
                        supply_id=None,
                        location_code=loc,
                        reason=f"pre-order: on hand at {loc}, released {d.release_date.isoformat()}",
                    )
                    break
        if promise is None:
            for s in order:
                if d.eligible is not None and s.location_code not in d.eligible:
                    continue
                if left[s.supply_id].get(d.sku, 0) < d.qty:
                    continue
                left[s.supply_id][d.sku] -= d.qty
                when = max(s.expected_date, today)
                why = f"supply {s.external_id or s.supply_id} expected at {s.location_code} {s.expected_date.isoformat()}"
                if s.expected_date < today:
                    why += " (overdue: promised for today)"
                if pre and d.release_date > when:
                    when = d.release_date
                    why += f"; pre-order released {d.release_date.isoformat()}"
                promise = Promise(
                    **base,
                    promised_date=when,
                    covered_by="supply",
                    supply_id=s.supply_id,
                    location_code=s.location_code,
                    reason=why,
                )
                break
        if promise is None:
            why = "no expected supply at a location that may serve the order covers the line"
            if pre:
                why = f"pre-order (released {d.release_date.isoformat()}): {why}"
            promise = Promise(
                **base, promised_date=None, covered_by=None, supply_id=None, location_code=None, reason=why
            )
        out.append(promise)
    return out


@dataclass
class PromiseResult:
    promised: int = 0
    unpromised: int = 0
    changed: int = 0  # lines whose promise (date or supply) changed: one order event each

    def metadata(self) -> dict[str, int]:
        return {
            "promised_lines": self.promised,
            "unpromised_lines": self.unpromised,
            "promises_changed": self.changed,
        }


def business_today(config: BusinessConfig, now: datetime | None = None) -> date:
    return (now or datetime.now(UTC)).astimezone(ZoneInfo(config.business_timezone)).date()


def _eligible(config: BusinessConfig, active: set[str]) -> dict[str, frozenset[str]]:
    """channel → the active locations whose stock it sells (its ATS pool), from the configuration."""
    out = {}
    for ch in config.channels:
        try:
            out[ch.code] = frozenset(config.channel_pool(ch.code)) & active
        except KeyError:
            continue
    return out


def read_demands(conn: psycopg.Connection, config: BusinessConfig, today: date) -> list[Demand]:
    """The waiting lines: backordered lines of waiting orders with what is still open (ordered, cancelled,
    shipped and already reserved taken off)."""
    active = {r[0] for r in conn.execute("SELECT location_code FROM oms.locations WHERE active")}
    pools = _eligible(config, active)
    rows = conn.execute(
        """SELECT l.line_id, l.order_id, l.sku,
                  l.qty - l.qty_cancelled - l.qty_shipped
                    - coalesce((SELECT sum(r.qty) FROM oms.reservations r
                                WHERE r.line_id = l.line_id AND r.state IN ('active', 'consumed')), 0)::int,
                  o.placed_at, o.channel_code, o.fulfilment_location_code,
                  CASE WHEN p.preorder AND p.release_date > %(today)s THEN p.release_date END
           FROM oms.order_lines l
           JOIN oms.orders o ON o.order_id = l.order_id
           LEFT JOIN oms.products p ON p.sku = l.sku
           WHERE l.state = 'backordered' AND o.state = ANY(%(states)s)
           ORDER BY o.placed_at, o.order_id, l.line_no""",
        {"today": today, "states": list(WAITING_ORDER_STATES)},
    ).fetchall()
    out = []
    for line_id, order_id, sku, open_qty, placed_at, channel, pinned, release in rows:
        if open_qty <= 0:
            continue
        eligible = frozenset({pinned}) if pinned else pools.get(channel, frozenset(active))
        out.append(Demand(line_id, order_id, sku, open_qty, placed_at, eligible, release))
    return out


def read_open_supply(conn: psycopg.Connection) -> list[OpenSupply]:
    rows = conn.execute(
        """SELECT s.supply_id, s.external_id, s.location_code, s.expected_date, l.sku, l.qty - l.qty_received
           FROM oms.supplies s JOIN oms.supply_lines l USING (supply_id)
           WHERE s.state = ANY(%s) AND l.qty > l.qty_received
           ORDER BY s.expected_date, s.supply_id, l.sku""",
        (list(OPEN_STATES),),
    ).fetchall()
    heads: dict[int, tuple[str, str, date]] = {}
    remaining: dict[int, dict[str, int]] = defaultdict(dict)
    for sid, ext, loc, day, sku, left in rows:
        heads[sid] = (ext, loc, day)
        remaining[sid][sku] = left
    return [OpenSupply(sid, loc, day, remaining[sid], ext) for sid, (ext, loc, day) in heads.items()]


def recompute_promises(
    conn: psycopg.Connection, config: BusinessConfig, *, now: datetime | None = None, actor: str = ACTOR
) -> PromiseResult:
    """Compute every waiting line's promise again and store the set (one transaction). A promise that changed
    (a new date, another supply, withdrawn) is an order event on the line (``promise: …``); no channel API
    in the reference takes a promise date, so the event is where it is recorded (docs/allocation.md)."""
    today = business_today(config, now)

    def run(c: psycopg.Connection) -> PromiseResult:
        c.execute("SELECT pg_advisory_xact_lock(%s)", (PROMISE_LOCK,))
        demands = read_demands(c, config, today)
        supplies = read_open_supply(c)
        pre_skus = sorted({d.sku for d in demands if d.release_date is not None})
        stock = {
            (loc, sku): free
            for loc, sku, free in c.execute(
                """SELECT location_code, sku, on_hand - reserved FROM oms.stock
                   WHERE sku = ANY(%s) AND on_hand > reserved""",
                (pre_skus,),
            )
        }
        plan = plan_promises(demands, supplies, today=today, preorder_stock=stock)
        names = {s.supply_id: s.external_id for s in supplies}
        old = {
            r[0]: (r[1], r[2])
            for r in c.execute("SELECT line_id, promised_date, supply_id FROM oms.line_promises")
        }
        res = PromiseResult()
        events = []
        keep = {p.line_id for p in plan}
        for p in plan:
            if p.promised_date is None:
                res.unpromised += 1
            else:
                res.promised += 1
            before = old.get(p.line_id, (None, None))
            if before != (p.promised_date, p.supply_id) and (
                p.promised_date is not None or before[0] is not None
            ):
                events.append(
                    {
                        "o": p.order_id,
                        "i": p.line_id,
                        "r": (
                            f"promise: {p.promised_date.isoformat()} ({p.reason})"
                            if p.promised_date
                            else f"promise withdrawn ({p.reason})"
                        ),
                        "d": {
                            "promised_date": p.promised_date.isoformat() if p.promised_date else None,
                            "previous_date": before[0].isoformat() if before[0] else None,
                            "supply_id": p.supply_id,
                            "supply": names.get(p.supply_id),
                            "location_code": p.location_code,
                            "qty": p.qty,
                            "preorder": p.preorder,
                        },
                    }
                )
        res.changed = len(events)
        gone = sorted(set(old) - keep)
        if gone:
            c.execute("DELETE FROM oms.line_promises WHERE line_id = ANY(%s)", (gone,))
        if plan:
            c.execute(
                """INSERT INTO oms.line_promises AS p (line_id, order_id, sku, qty, promised_date, covered_by,
                                                     supply_id, location_code, preorder, reason, computed_at)
                   SELECT v.line_id, v.order_id, v.sku, v.qty, v.promised_date, v.covered_by, v.supply_id,
                          v.location_code, v.preorder, v.reason, now()
                   FROM json_to_recordset(%s::json) AS v(line_id bigint, order_id bigint, sku text, qty int,
                        promised_date date, covered_by text, supply_id bigint, location_code text,
                        preorder boolean, reason text)
                   ORDER BY v.line_id
                   ON CONFLICT (line_id) DO UPDATE SET qty = excluded.qty, promised_date = excluded.promised_date,
                       covered_by = excluded.covered_by, supply_id = excluded.supply_id,
                       location_code = excluded.location_code, preorder = excluded.preorder,
                       reason = excluded.reason, computed_at = excluded.computed_at
                   WHERE (p.qty, p.promised_date, p.covered_by, p.supply_id, p.location_code, p.preorder, p.reason)
                         IS DISTINCT FROM (excluded.qty, excluded.promised_date, excluded.covered_by,
                                           excluded.supply_id, excluded.location_code, excluded.preorder,
                                           excluded.reason)""",
                (dumps([p.__dict__ for p in plan]),),
            )
        if events:
            c.execute(
                """INSERT INTO oms.order_events (order_id, entity, entity_id, from_state, to_state, actor, reason, data)
                   SELECT v.o, 'order_line', v.i, 'backordered', 'backordered', %(actor)s, v.r, v.d
                   FROM ROWS FROM (json_to_recordset(%(doc)s::json) AS (o bigint, i bigint, r text, d jsonb))
                        WITH ORDINALITY AS v(o, i, r, d, n)
                   ORDER BY v.n""",
                {"doc": dumps(events), "actor": actor},
            )
        return res

    return run_in_transaction(conn, run)


def promised_orders(conn: psycopg.Connection, supply_ids: Sequence[int]) -> list[int]:
    """Orders with a line promised from one of ``supply_ids``, in promise (order time) order."""
    return [
        r[0]
        for r in conn.execute(
            """SELECT o.order_id FROM oms.orders o
               WHERE o.order_id IN (SELECT order_id FROM oms.line_promises WHERE supply_id = ANY(%s))
               ORDER BY o.placed_at, o.order_id""",
            (list(supply_ids),),
        )
    ]


# -- reads ---------------------------------------------------------------------------------------------------


def overpromised(conn: psycopg.Connection) -> list[dict[str, Any]]:
    """Supply lines promised beyond what they still bring (the invariant the FIFO planner keeps): empty when
    healthy. A supply received or cut down after the last computation shows here until the next one."""
    cur = conn.execute(
        """SELECT s.external_id, s.source, p.sku, sum(p.qty)::int AS promised,
                  min(l.qty - l.qty_received) AS outstanding
           FROM oms.line_promises p
           JOIN oms.supplies s ON s.supply_id = p.supply_id
           JOIN oms.supply_lines l ON l.supply_id = p.supply_id AND l.sku = p.sku
           GROUP BY s.external_id, s.source, p.sku
           HAVING sum(p.qty) > min(l.qty - l.qty_received) OR bool_or(s.state NOT IN ('expected', 'partially_received'))
           ORDER BY 1, 3"""
    )
    names = [d.name for d in cur.description]
    return [dict(zip(names, r, strict=True)) for r in cur.fetchall()]


def list_supplies(
    conn: psycopg.Connection, *, include_closed: bool = False, limit: int = 500
) -> list[dict[str, Any]]:
    """Supplies, soonest expected first, with their lines and how much of each is promised to waiting lines."""
    cur = conn.execute(
        """SELECT s.supply_id, s.source, s.external_id, s.kind, s.location_code, s.from_location_code,
                  s.supplier, s.expected_date, s.state,
                  coalesce(json_agg(json_build_object('sku', l.sku, 'qty', l.qty, 'qty_received', l.qty_received,
                      'promised', (SELECT coalesce(sum(p.qty), 0) FROM oms.line_promises p
                                   WHERE p.supply_id = s.supply_id AND p.sku = l.sku))
                      ORDER BY l.sku) FILTER (WHERE l.sku IS NOT NULL), '[]') AS lines
           FROM oms.supplies s LEFT JOIN oms.supply_lines l USING (supply_id)
           WHERE %(all)s OR s.state = ANY(%(open)s)
           GROUP BY s.supply_id
           ORDER BY s.expected_date, s.supply_id
           LIMIT %(limit)s""",
        {"all": include_closed, "open": list(OPEN_STATES), "limit": limit},
    )
    names = [d.name for d in cur.description]
    return [dict(zip(names, r, strict=True)) for r in cur.fetchall()]


def order_promises(conn: psycopg.Connection, order_id: int) -> list[dict[str, Any]]:
    """The promise of each waiting line of an order (empty when nothing of it waits)."""
    cur = conn.execute(
        """SELECT l.line_no, p.line_id, p.sku, p.qty, p.promised_date, p.covered_by, s.external_id AS supply,
                  s.kind AS supply_kind, s.source AS supply_source, p.location_code, p.preorder, p.reason,
                  p.computed_at
           FROM oms.line_promises p
           JOIN oms.order_lines l ON l.line_id = p.line_id
           LEFT JOIN oms.supplies s ON s.supply_id = p.supply_id
           WHERE p.order_id = %s ORDER BY l.line_no""",
        (order_id,),
    )
    names = [d.name for d in cur.description]
    return [dict(zip(names, r, strict=True)) for r in cur.fetchall()]


# -- file formats --------------------------------------------------------------------------------------------

#: CSV columns (one row per supply line; the header row names them, extra columns are refused)
CSV_COLUMNS = (
    "external_id",
    "kind",
    "location_code",
    "from_location_code",
    "supplier",
    "expected_date",
    "sku",
    "qty",
    "cancelled",
)
CSV_REQUIRED = ("external_id", "location_code", "expected_date", "sku", "qty")


@dataclass
class Parsed:
    """Documents read from a file and the rows refused on the way: ``(external id, payload, reason)``."""

    documents: list[dict[str, Any]] = field(default_factory=list)
    rejected: list[tuple[str | None, Any, str]] = field(default_factory=list)


def _int(text: Any) -> int | None:
    try:
        d = Decimal(str(text).strip().replace(",", ".").replace("\u00a0", "").replace(" ", ""))
    except (InvalidOperation, ValueError):
        return None
    return int(d) if d == d.to_integral_value() else None


def _date(text: Any) -> date | None:
    s = str(text or "").strip()
    for parse in (date.fromisoformat, lambda v: datetime.strptime(v, "%d.%m.%Y").date()):
        try:
            return parse(s[:10])
        except ValueError:
            continue
    return None


def _truthy(text: Any) -> bool:
    return str(text or "").strip().lower() in ("1", "true", "yes", "да", "истина")


def _group(rows: list[tuple[str, dict[str, Any]]], out: Parsed) -> None:
    """Rows (ref, flat row) → one document per external id. A row that disagrees with the first row of its
    document on the head fields (kind, locations, supplier, date) is refused by itself."""
    heads = ("kind", "location_code", "from_location_code", "supplier", "expected_date", "cancelled")
    docs: dict[str, dict[str, Any]] = {}
    for ref, row in rows:
        ext = row["external_id"]
        doc = docs.get(ext)
        if doc is None:
            docs[ext] = {**{h: row[h] for h in heads}, "external_id": ext, "lines": [], "_refs": {}}
            doc = docs[ext]
        else:
            differ = [h for h in heads if row[h] != doc[h]]
            if differ:
                out.rejected.append(
                    (
                        ext,
                        {"row": ref, **_json_row(row)},
                        f"{ref}: {', '.join(differ)} differ from the first row of {ext}",
                    )
                )
                continue
        if row["sku"] in doc["_refs"]:
            out.rejected.append(
                (ext, {"row": ref, **_json_row(row)}, f"{ref}: {row['sku']} is listed twice in {ext}")
            )
            continue
        doc["_refs"][row["sku"]] = ref
        doc["lines"].append({"sku": row["sku"], "qty": row["qty"]})
    for doc in docs.values():
        doc.pop("_refs")
        out.documents.append(doc)


def _json_row(row: Mapping[str, Any]) -> dict[str, Any]:
    return {k: (v.isoformat() if isinstance(v, date) else v) for k, v in row.items()}


def parse_csv(text: str, *, name: str = "csv") -> Parsed:
    """A CSV of supply lines (``CSV_COLUMNS``, comma or semicolon separated, UTF-8). Each bad row is refused
    by itself with the reason (``<name>:<line>``); the good rows of a document still make the document."""
    out = Parsed()
    text = text.lstrip("\ufeff")
    first = text.split("\n", 1)[0]
    delimiter = ";" if first.count(";") > first.count(",") else ","  # 1C and Excel in Russia write ';'
    reader = csv.DictReader(io.StringIO(text), delimiter=delimiter)
    fields = [f.strip() for f in (reader.fieldnames or [])]
    missing = [c for c in CSV_REQUIRED if c not in fields]
    extra = [c for c in fields if c not in CSV_COLUMNS]
    if missing or extra:
        why = []
        if missing:
            why.append(f"missing column(s) {', '.join(missing)}")
        if extra:
            why.append(f"unknown column(s) {', '.join(extra)}")
        raise ValidationFailed(f"{name}: header " + "; ".join(why) + f" (columns: {', '.join(CSV_COLUMNS)})")
    rows: list[tuple[str, dict[str, Any]]] = []
    for i, raw in enumerate(reader, start=2):
        ref = f"{name}:{i}"
        row = {k.strip(): (v or "").strip() for k, v in raw.items() if k is not None}
        if None in raw:
            out.rejected.append(
                (row.get("external_id") or None, {"row": ref, **row}, f"{ref}: more fields than columns")
            )
            continue
        if not any(row.values()):
            continue
        why = []
        for col in CSV_REQUIRED:
            if not row.get(col):
                why.append(f"{col} is empty")
        qty = _int(row.get("qty")) if row.get("qty") else None
        if row.get("qty") and (qty is None or qty <= 0):
            why.append(f"qty must be a positive whole number, got {row['qty']!r}")
        day = _date(row.get("expected_date")) if row.get("expected_date") else None
        if row.get("expected_date") and day is None:
            why.append(f"expected_date must be YYYY-MM-DD or DD.MM.YYYY, got {row['expected_date']!r}")
        kind = row.get("kind") or "purchase_order"
        if kind not in KINDS:
            why.append(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
        if why:
            out.rejected.append(
                (row.get("external_id") or None, {"row": ref, **row}, f"{ref}: " + "; ".join(why))
            )
            continue
        rows.append(
            (
                ref,
                {
                    "external_id": row["external_id"],
                    "kind": kind,
                    "location_code": row["location_code"],
                    "from_location_code": row.get("from_location_code") or None,
                    "supplier": row.get("supplier") or None,
                    "expected_date": day,
                    "cancelled": _truthy(row.get("cancelled")),
                    "sku": row["sku"],
                    "qty": qty,
                },
            )
        )
    _group(rows, out)
    return out


#: 1C CommerceML 2: a purchase order is a Документ with ХозОперация "Заказ товара" in which we are the buyer
CML_PURCHASE = "Заказ товара"
CML_BUYER = "Покупатель"
#: ЗначенияРеквизитов of a purchase-order export that carry what the schema has no element for
CML_WAREHOUSE = ("Склад", "Склад получатель")
CML_FROM = ("Склад отправитель",)
CML_DATE = ("Дата поступления", "Ожидаемая дата поступления", "Дата прибытия")
CML_CANCELLED = ("Отменен",)
CML_KIND = ("Вид операции",)


# the CommerceML reading is shared with the 1C exchange (oms_ops.onec.commerceml): safe parsing, helpers
_local, _child, _children, _text, _props = cml.local, cml.child, cml.children, cml.text, cml.requisites


def _prop(props: Mapping[str, str], names: Sequence[str]) -> str | None:
    for n in names:
        if props.get(n):
            return props[n]
    return None


def parse_commerceml(data: bytes | str, *, name: str = "1c") -> Parsed:
    """A 1C CommerceML 2 export (``КоммерческаяИнформация``) of purchase orders ("ЗаказПоставщику"): every
    ``Документ`` with ХозОперация «Заказ товара» and Роль «Покупатель» is a supply — Ид as its external id,
    the seller counterparty as supplier, ``Товары/Товар`` (Артикул, else Ид; Количество) as lines, and the
    requisites ``Склад`` (the OMS location code), ``Дата поступления`` (expected date), ``Отменен`` and, for a
    transfer (``Вид операции`` «Перемещение»), ``Склад отправитель``. A document that is not a purchase
    order is skipped; a document without what a supply needs, and each bad goods line, is refused by itself."""
    root = cml.parse(data, name=name)  # refuses DOCTYPE/ENTITY, oversized files and undeclared encodings
    out = Parsed()
    rows: list[tuple[str, dict[str, Any]]] = []
    for n, doc in enumerate(_children(root, "Документ"), start=1):
        ext = _text(doc, "Ид") or _text(doc, "Номер")
        ref = f"{name}:Документ[{n}]" + (f" {ext}" if ext else "")
        payload = {"document": ref, "Ид": _text(doc, "Ид"), "Номер": _text(doc, "Номер")}
        if _text(doc, "ХозОперация") != CML_PURCHASE or (_text(doc, "Роль") or CML_BUYER) != CML_BUYER:
            continue
        props = _props(doc)
        payload["ЗначенияРеквизитов"] = props
        why = []
        if not ext:
            why.append("no Ид or Номер")
        location = _prop(props, CML_WAREHOUSE)
        if not location:
            why.append(f"no requisite {CML_WAREHOUSE[0]!r} (the OMS location it arrives at)")
        raw_day = _prop(props, CML_DATE)
        day = _date(raw_day) if raw_day else None
        if day is None:
            why.append(f"requisite {CML_DATE[0]!r} missing or not a date ({raw_day!r})")
        is_transfer = "перемещ" in (_prop(props, CML_KIND) or "").lower()
        from_loc = _prop(props, CML_FROM)
        if is_transfer and not from_loc:
            why.append(f"a transfer needs the requisite {CML_FROM[0]!r}")
        if why:
            out.rejected.append((ext, payload, f"{ref}: " + "; ".join(why)))
            continue
        supplier = None
        for cp in _children(_child(doc, "Контрагенты"), "Контрагент"):
            if (_text(cp, "Роль") or "") in ("Продавец", "Поставщик") or supplier is None:
                supplier = _text(cp, "Наименование") or _text(cp, "ПолноеНаименование") or supplier
        goods = _children(_child(doc, "Товары"), "Товар")
        if not goods:
            out.rejected.append((ext, payload, f"{ref}: no Товары/Товар"))
            continue
        for k, g in enumerate(goods, start=1):
            sku = _text(g, "Артикул") or _text(g, "Ид")
            raw_qty = _text(g, "Количество")
            qty = _int(raw_qty) if raw_qty else None
            gref = f"{ref} Товар[{k}]"
            gpay = {
                **payload,
                "Товар": {"Ид": _text(g, "Ид"), "Артикул": _text(g, "Артикул"), "Количество": raw_qty},
            }
            problems = []
            if not sku:
                problems.append("no Артикул or Ид")
            if qty is None or qty <= 0:
                problems.append(f"Количество must be a positive whole number, got {raw_qty!r}")
            if problems:
                out.rejected.append((ext, gpay, f"{gref}: " + "; ".join(problems)))
                continue
            rows.append(
                (
                    gref,
                    {
                        "external_id": ext,
                        "kind": "transfer" if is_transfer else "purchase_order",
                        "location_code": location,
                        "from_location_code": from_loc if is_transfer else None,
                        "supplier": None if is_transfer else supplier,
                        "expected_date": day,
                        "cancelled": _truthy(_prop(props, CML_CANCELLED)),
                        "sku": sku,
                        "qty": qty,
                    },
                )
            )
    _group(rows, out)
    return out
