"""Returns (RMA): request → receive → inspect (restock or write-off) → refund or exchange → closed.

Quantities are validated against what the customer really received: a line may be returned at most the
units of its delivered / picked-up shipments minus what other RMAs (not cancelled) already claim.
Requesting a return also announces it to the warehouse (outbox 'wms.announce_return', expected at the
location that shipped most of the returned units), so the WMS can match the parcel when it arrives and
report its receipt.
Restocking is a ledger 'return_restock' entry at the receiving location; a written-off unit never re-enters
stock, so it has no ledger entry (its disposition and reason are on the return line, which the return-rate
and damage KPIs read). Refunds go through ``payments.request_refund`` (refunds row + outbox 'payment.refund');
an exchange creates the replacement order (``parent_order_id`` → original) through the normal acceptance.

Receiving, inspecting and refunding exist per return (``receive_return`` …) and for many returns at once
(``receive_returns_in_transaction`` …, called inside the caller's transaction): the batch forms lock orders and
returns in id order, validate every return and report all problems together, then write with one statement
per table. The single forms are the batch forms with one item.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Literal

import psycopg

from oms_ops.db import run_in_transaction
from oms_ops.errors import IllegalTransition, NotFound, ValidationFailed
from oms_ops.fulfillment import sync_lines
from oms_ops.inventory import Movement, apply_movements
from oms_ops.orders import NormalizedOrder, accept_orders_in_transaction
from oms_ops.outbox import enqueue
from oms_ops.payments import request_refund
from oms_ops.state_machine import Change, apply_transitions, record_creations

#: outbox effect that tells the warehouse to expect a returned parcel
ANNOUNCE_EFFECT = "wms.announce_return"
#: return states that still wait for something to happen (the "in flight" list of the operations page)
OPEN_STATES = ("requested", "received", "inspected")
DISPOSITIONS = ("restock", "write_off")


@dataclass(frozen=True)
class ReturnLineRequest:
    line_id: int
    qty: int
    reason_code: str
    reason_text: str | None = None


@dataclass(frozen=True)
class ReturnResult:
    return_id: int
    rma_number: str
    created: bool


def _as_request(item: Any) -> ReturnLineRequest:
    if isinstance(item, ReturnLineRequest):
        return item
    if isinstance(item, Mapping):
        return ReturnLineRequest(**item)
    return ReturnLineRequest(*item)


def returnable(conn: psycopg.Connection, order_id: int) -> dict[int, int]:
    """line_id → units that can still be returned: delivered (or picked up) minus what RMAs that are not
    cancelled already claim. Units still in transit are not returnable yet — if the parcel comes back to
    the sender instead, ``return_to_sender`` handles them."""
    rows = conn.execute(
        """SELECT l.line_id,
                  coalesce((SELECT sum(sl.qty) FROM oms.shipment_lines sl JOIN oms.shipments s USING (shipment_id)
                            WHERE sl.line_id = l.line_id AND s.state IN ('delivered', 'picked_up')), 0)
                  - coalesce((SELECT sum(rl.qty) FROM oms.return_lines rl JOIN oms.returns r USING (return_id)
                              WHERE rl.line_id = l.line_id AND r.state <> 'cancelled'), 0)
           FROM oms.order_lines l WHERE l.order_id = %s ORDER BY l.line_id""",
        (order_id,),
    ).fetchall()
    return {r[0]: int(r[1]) for r in rows}


def request_return(
    conn: psycopg.Connection,
    order_id: int,
    lines: Sequence[ReturnLineRequest | Mapping | tuple],
    *,
    actor: str,
    kind: Literal["refund", "exchange"] = "refund",
    channel_return_id: str | None = None,
    note: str | None = None,
) -> ReturnResult:
    """Open an RMA (one transaction). Every line is validated (belongs to the order, qty > 0, known reason
    code, qty ≤ ``returnable``: delivered minus already claimed) and all problems are reported together. With ``channel_return_id`` a re-delivered
    marketplace return request returns the existing RMA (created=False)."""
    reqs = [_as_request(x) for x in lines]
    if kind not in ("refund", "exchange"):
        raise ValidationFailed(f"kind must be 'refund' or 'exchange', not {kind!r}")

    def run(c: psycopg.Connection) -> ReturnResult:
        if (
            c.execute("SELECT 1 FROM oms.orders WHERE order_id = %s FOR UPDATE", (order_id,)).fetchone()
            is None
        ):
            raise NotFound("order", [order_id])
        if channel_return_id:
            row = c.execute(
                "SELECT return_id, rma_number FROM oms.returns WHERE order_id = %s AND channel_return_id = %s",
                (order_id, channel_return_id),
            ).fetchone()
            if row:
                return ReturnResult(row[0], row[1], created=False)
        available = returnable(c, order_id)
        reasons = {r[0] for r in c.execute("SELECT reason_code FROM oms.return_reasons").fetchall()}
        wanted: dict[int, int] = defaultdict(int)
        problems = []
        if not reqs:
            problems.append("no lines to return")
        for r in reqs:
            if r.line_id not in available:
                problems.append(f"line {r.line_id}: not a line of order {order_id}")
            if isinstance(r.qty, bool) or not isinstance(r.qty, int) or r.qty <= 0:
                problems.append(f"line {r.line_id}: quantity must be > 0, got {r.qty!r}")
            else:
                wanted[r.line_id] += r.qty
            if r.reason_code not in reasons:
                problems.append(f"line {r.line_id}: unknown reason code {r.reason_code!r}")
        for line_id, q in sorted(wanted.items()):
            if line_id in available and q > available[line_id]:
                problems.append(f"line {line_id}: return {q} exceeds returnable {available[line_id]}")
        if len({r.line_id for r in reqs}) != len(reqs):
            problems.append("each line may appear once per return")
        if problems:
            raise ValidationFailed(problems)
        return_id, rma = c.execute(
            """INSERT INTO oms.returns (order_id, kind, channel_return_id, note) VALUES (%s, %s, %s, %s)
               RETURNING return_id, rma_number""",
            (order_id, kind, channel_return_id, note),
        ).fetchone()
        c.execute(
            """INSERT INTO oms.return_lines (return_id, line_id, sku, qty, reason_code, reason_text)
               SELECT %s, t.l, ol.sku, t.q, t.rc, t.rt
               FROM unnest(%s::int8[], %s::int4[], %s::text[], %s::text[]) AS t(l, q, rc, rt)
               JOIN oms.order_lines ol ON ol.line_id = t.l""",
            (
                return_id,
                [r.line_id for r in reqs],
                [r.qty for r in reqs],
                [r.reason_code for r in reqs],
                [r.reason_text for r in reqs],
            ),
        )
        record_creations(
            c,
            "return",
            [(order_id, return_id, "requested")],
            actor=actor,
            reason=f"{kind} requested",
            data=[{"rma_number": rma, "lines": len(reqs)}],
        )
        enqueue(
            c,
            "notify.customer",
            {"order_id": order_id, "template": "rma_created", "rma_number": rma},
            f"notify.customer:rma:{rma}",
        )
        _announce(c, return_id)
        return ReturnResult(return_id, rma, created=True)

    return run_in_transaction(conn, run)


def expected_location(conn: psycopg.Connection, return_id: int) -> str | None:
    """Where the parcel of a return is expected: the location whose delivered shipments carried most of the
    returned units (ties: the first location code)."""
    row = conn.execute(
        """SELECT s.location_code FROM oms.return_lines rl
           JOIN oms.shipment_lines sl ON sl.line_id = rl.line_id
           JOIN oms.shipments s ON s.shipment_id = sl.shipment_id AND s.state IN ('delivered', 'picked_up')
           WHERE rl.return_id = %s GROUP BY s.location_code ORDER BY sum(sl.qty) DESC, s.location_code LIMIT 1""",
        (return_id,),
    ).fetchone()
    return row[0] if row else None


def _announce(c: psycopg.Connection, return_id: int) -> None:
    """Outbox 'wms.announce_return' for a new RMA (inside its transaction): number, expected location and
    the units per SKU. The drain maps the location to the WMS's warehouse code and posts it."""
    head = c.execute(
        """SELECT r.rma_number, r.order_id, o.order_number FROM oms.returns r
           JOIN oms.orders o ON o.order_id = r.order_id WHERE r.return_id = %s""",
        (return_id,),
    ).fetchone()
    lines = c.execute(
        """SELECT sku, sum(qty)::int FROM oms.return_lines WHERE return_id = %s GROUP BY sku ORDER BY sku""",
        (return_id,),
    ).fetchall()
    enqueue(
        c,
        ANNOUNCE_EFFECT,
        {
            "return_id": return_id,
            "rma_number": head[0],
            "order_id": head[1],
            "order_number": head[2],
            "location_code": expected_location(c, return_id),
            "lines": [{"sku": sku, "qty": qty} for sku, qty in lines],
        },
        f"{ANNOUNCE_EFFECT}:{head[0]}",
    )


def _lock_returns(c: psycopg.Connection, return_ids: Sequence[int]) -> dict[int, dict]:
    """Lock the orders (id order) then the returns (id order) of ``return_ids``; NotFound lists unknown ids."""
    ids = sorted(set(return_ids))
    orders = [
        r[0]
        for r in c.execute(
            "SELECT DISTINCT order_id FROM oms.returns WHERE return_id = ANY(%s) ORDER BY 1", (ids,)
        ).fetchall()
    ]
    c.execute("SELECT 1 FROM oms.orders WHERE order_id = ANY(%s) ORDER BY order_id FOR UPDATE", (orders,))
    cur = c.cursor(row_factory=psycopg.rows.dict_row)
    rows = cur.execute(
        "SELECT * FROM oms.returns WHERE return_id = ANY(%s) ORDER BY return_id FOR UPDATE", (ids,)
    ).fetchall()
    found = {r["return_id"]: r for r in rows}
    missing = [i for i in ids if i not in found]
    if missing:
        raise NotFound("return", missing)
    return found


def _once_each(ids: Sequence[int], what: str) -> None:
    dupes = sorted({i for i in ids if list(ids).count(i) > 1})
    if dupes:
        raise ValidationFailed(f"{what}: return(s) {dupes} appear more than once in one batch")


def _lock_return(c: psycopg.Connection, return_id: int) -> dict:
    row = c.execute("SELECT order_id FROM oms.returns WHERE return_id = %s", (return_id,)).fetchone()
    if row is None:
        raise NotFound("return", [return_id])
    c.execute("SELECT 1 FROM oms.orders WHERE order_id = %s FOR UPDATE", (row[0],))
    cur = c.cursor(row_factory=psycopg.rows.dict_row)
    return cur.execute("SELECT * FROM oms.returns WHERE return_id = %s FOR UPDATE", (return_id,)).fetchone()


@dataclass(frozen=True)
class ReturnReceipt:
    """A returned parcel that arrived at ``location_code``. ``received`` maps return_line_id → units really
    in the parcel (None: as requested); ``at`` is when it arrived (None: now); ``reference`` is the
    warehouse's receipt id, kept in the return's event."""

    return_id: int
    location_code: str
    received: Mapping[int, int] | None = None
    at: datetime | None = None
    reference: str | None = None


def receive_return(
    conn: psycopg.Connection,
    return_id: int,
    *,
    location_code: str,
    actor: str,
    received: Mapping[int, int] | None = None,
) -> None:
    """The parcel arrived at ``location_code``: requested → received. ``received`` maps return_line_id →
    units actually in the parcel (default: as requested); all problems are reported together."""
    run_in_transaction(
        conn,
        lambda c: receive_returns_in_transaction(
            c, [ReturnReceipt(return_id, location_code, received)], actor=actor
        ),
    )


def receive_returns_in_transaction(
    c: psycopg.Connection, receipts: Sequence[ReturnReceipt], *, actor: str
) -> list[int]:
    """Receive many returns (inside the caller's transaction): requested → received, location and received
    units recorded. A return already received at the same location is left as it is (a repeated receipt).
    Every problem of every receipt is collected first (ValidationFailed); a return in another state refuses
    the batch (IllegalTransition listing each). Returns the ids received now."""
    if not receipts:
        return []
    _once_each([r.return_id for r in receipts], "receive")
    rets = _lock_returns(c, [r.return_id for r in receipts])
    known_locations = {
        row[0]
        for row in c.execute(
            "SELECT location_code FROM oms.locations WHERE location_code = ANY(%s)",
            (sorted({r.location_code for r in receipts}),),
        ).fetchall()
    }
    lines: dict[int, dict[int, int]] = defaultdict(dict)
    for rid, lid, q in c.execute(
        """SELECT return_id, return_line_id, qty FROM oms.return_lines WHERE return_id = ANY(%s)
           ORDER BY return_id, return_line_id""",
        (sorted(rets),),
    ).fetchall():
        lines[rid][lid] = q
    problems: list[str] = []
    todo: list[tuple[ReturnReceipt, dict[int, int]]] = []
    for r in receipts:
        ret = rets[r.return_id]
        if ret["state"] == "received" and ret["location_code"] == r.location_code:
            continue
        if r.location_code not in known_locations:
            problems.append(f"{ret['rma_number']}: unknown location {r.location_code!r}")
        got = dict(lines[r.return_id])
        for lid, q in (r.received or {}).items():
            if lid not in got:
                problems.append(f"return line {lid}: not part of return {r.return_id}")
            elif isinstance(q, bool) or not isinstance(q, int) or not 0 <= q <= lines[r.return_id][lid]:
                problems.append(
                    f"return line {lid}: received must be 0..{lines[r.return_id][lid]}, got {q!r}"
                )
            else:
                got[lid] = q
        todo.append((r, got))
    if problems:
        raise ValidationFailed(problems)
    if not todo:
        return []
    apply_transitions(
        c,
        "return",
        [
            Change(
                r.return_id,
                "received",
                f"received at {r.location_code}",
                {"receipt": r.reference} if r.reference else None,
                at=r.at,
            )
            for r, _ in todo
        ],
        actor=actor,
    )
    c.execute(
        """UPDATE oms.returns r SET location_code = t.loc FROM unnest(%s::int8[], %s::text[]) AS t(id, loc)
           WHERE r.return_id = t.id""",
        ([r.return_id for r, _ in todo], [r.location_code for r, _ in todo]),
    )
    got_all = [(lid, q) for _, got in todo for lid, q in got.items()]
    c.execute(
        """UPDATE oms.return_lines rl SET qty_received = t.q FROM unnest(%s::int8[], %s::int4[]) AS t(id, q)
           WHERE rl.return_line_id = t.id""",
        ([g[0] for g in got_all], [g[1] for g in got_all]),
    )
    return [r.return_id for r, _ in todo]


@dataclass(frozen=True)
class ReturnInspection:
    """The verdict on a received return: one disposition for every line, or return_line_id → disposition."""

    return_id: int
    dispositions: Mapping[int, str] | str


def inspect_return(
    conn: psycopg.Connection,
    return_id: int,
    dispositions: Mapping[int, str] | str,
    *,
    actor: str,
) -> list[tuple[str, int]]:
    """Decide per return line: 'restock' (ledger 'return_restock' at the receiving location) or 'write_off'
    (no ledger entry). ``dispositions`` is one value for all lines or return_line_id → value; every received
    line needs one. received → inspected; the order lines' qty_returned grows. Returns restocked (sku, qty)."""
    done = run_in_transaction(
        conn,
        lambda c: inspect_returns_in_transaction(c, [ReturnInspection(return_id, dispositions)], actor=actor),
    )
    return done[return_id]


def inspect_returns_in_transaction(
    c: psycopg.Connection, inspections: Sequence[ReturnInspection], *, actor: str
) -> dict[int, list[tuple[str, int]]]:
    """Inspect many received returns (inside the caller's transaction): dispositions written, resellable
    units restocked at each return's receiving location in one ledger write, order lines' qty_returned
    grown and their states derived. A return that is not 'received' refuses the batch (IllegalTransition
    listing each); every disposition problem is collected (ValidationFailed). Returns return_id →
    restocked (sku, qty)."""
    if not inspections:
        return {}
    _once_each([i.return_id for i in inspections], "inspect")
    rets = _lock_returns(c, [i.return_id for i in inspections])
    refused = [
        ("return", i.return_id, rets[i.return_id]["state"], "inspected")
        for i in inspections
        if rets[i.return_id]["state"] != "received"
    ]
    if refused:
        raise IllegalTransition(refused)
    by_return: dict[int, list[tuple[int, int, str, int]]] = defaultdict(list)
    for rid, rl_id, lid, sku, q in c.execute(
        """SELECT return_id, return_line_id, line_id, sku, qty_received FROM oms.return_lines
           WHERE return_id = ANY(%s) ORDER BY return_id, return_line_id""",
        (sorted(rets),),
    ).fetchall():
        by_return[rid].append((rl_id, lid, sku, q))
    problems: list[str] = []
    verdicts: dict[int, dict[int, str | None]] = {}
    for insp in inspections:
        lines = by_return[insp.return_id]
        d = insp.dispositions
        disp = {r[0]: d for r in lines} if isinstance(d, str) else dict(d)
        for lid in sorted(set(disp) - {r[0] for r in lines}):
            problems.append(f"return line {lid}: not part of return {insp.return_id}")
        for rl_id, _, _, q in lines:
            if q > 0 and disp.get(rl_id) not in DISPOSITIONS:
                problems.append(
                    f"return line {rl_id}: disposition must be 'restock' or 'write_off', got {disp.get(rl_id)!r}"
                )
        verdicts[insp.return_id] = {rl_id: disp.get(rl_id) for rl_id, _, _, q in lines if q > 0}
    if problems:
        raise ValidationFailed(problems)
    apply_transitions(
        c, "return", [Change(i.return_id, "inspected", "inspected") for i in inspections], actor=actor
    )
    decided = [(rl_id, v) for per in verdicts.values() for rl_id, v in per.items()]
    c.execute(
        """UPDATE oms.return_lines rl SET disposition = t.d, inspected_at = now()
           FROM unnest(%s::int8[], %s::text[]) AS t(id, d) WHERE rl.return_line_id = t.id""",
        ([x[0] for x in decided], [x[1] for x in decided]),
    )
    returned: dict[int, int] = defaultdict(int)  # one order line may be in several returns of the batch
    restocked: dict[int, list[tuple[str, int]]] = {i.return_id: [] for i in inspections}
    movements = []
    for insp in inspections:
        ret = rets[insp.return_id]
        for rl_id, lid, sku, q in by_return[insp.return_id]:
            if q <= 0:
                continue
            returned[lid] += q
            if verdicts[insp.return_id][rl_id] == "restock":
                restocked[insp.return_id].append((sku, q))
                movements.append(
                    Movement(
                        ret["location_code"],
                        sku,
                        "return_restock",
                        q,
                        order_id=ret["order_id"],
                        line_id=lid,
                        reference=ret["rma_number"],
                        reason="return inspected: restock",
                    )
                )
    c.execute(
        """UPDATE oms.order_lines l SET qty_returned = l.qty_returned + t.q, updated_at = now()
           FROM unnest(%s::int8[], %s::int4[]) AS t(id, q) WHERE l.line_id = t.id""",
        (list(returned), list(returned.values())),
    )
    apply_movements(c, movements, actor=actor)
    sync_lines(
        c,
        sorted({rets[i.return_id]["order_id"] for i in inspections}),
        actor=actor,
        reason=_returns_reason([rets[i.return_id]["rma_number"] for i in inspections]),
    )
    return restocked


def _returns_reason(rmas: Sequence[str]) -> str:
    rmas = sorted(rmas)
    if len(rmas) <= 3:
        return "return " + ", ".join(rmas)
    return f"returns {rmas[0]} … {rmas[-1]} ({len(rmas)})"


def _require_inspected(ret: dict) -> None:
    if ret["state"] != "inspected":
        raise IllegalTransition([("return", ret["return_id"], ret["state"], "closed")])


def refund_return(
    conn: psycopg.Connection, return_id: int, *, actor: str, amount: Decimal | None = None
) -> int | None:
    """Refund an inspected return and close it (one transaction). Default amount = Σ received × unit price.
    Idempotency key ``refund:return:<return_id>``. Returns the refund id (None when nothing was received)."""
    done = run_in_transaction(
        conn,
        lambda c: refund_returns_in_transaction(
            c, [return_id], actor=actor, amounts=None if amount is None else {return_id: amount}
        ),
    )
    return done[return_id]


def refund_returns_in_transaction(
    c: psycopg.Connection,
    return_ids: Sequence[int],
    *,
    actor: str,
    amounts: Mapping[int, Decimal] | None = None,
) -> dict[int, int | None]:
    """Refund and close many inspected returns (inside the caller's transaction). The default amount of each
    is Σ received × unit price, computed for all in one query; a refund is requested per return (refunds
    row + outbox 'payment.refund', key ``refund:return:<id>``), then all are closed in one transition batch.
    A return already closed answers its existing refund (repeating is harmless); any other state refuses
    the batch. Returns return_id → refund id (None when nothing was received)."""
    if not return_ids:
        return {}
    _once_each(list(return_ids), "refund")
    rets = _lock_returns(c, return_ids)
    refused = [
        ("return", rid, rets[rid]["state"], "closed")
        for rid in return_ids
        if rets[rid]["state"] not in ("inspected", "closed")
    ]
    if refused:
        raise IllegalTransition(refused)
    keys = {rid: f"refund:return:{rid}" for rid in return_ids}
    out: dict[int, int | None] = {}
    closed = [rid for rid in return_ids if rets[rid]["state"] == "closed"]
    if closed:
        existing = dict(
            c.execute(
                "SELECT idempotency_key, refund_id FROM oms.refunds WHERE idempotency_key = ANY(%s)",
                ([keys[rid] for rid in closed],),
            ).fetchall()
        )
        out.update({rid: existing.get(keys[rid]) for rid in closed})
    todo = [rid for rid in return_ids if rets[rid]["state"] == "inspected"]
    if not todo:
        return out
    values = dict(
        c.execute(
            """SELECT rl.return_id, coalesce(sum(rl.qty_received * l.unit_price), 0) FROM oms.return_lines rl
               JOIN oms.order_lines l ON l.line_id = rl.line_id WHERE rl.return_id = ANY(%s)
               GROUP BY rl.return_id""",
            (todo,),
        ).fetchall()
    )
    for rid in todo:
        value = (amounts or {}).get(rid, values.get(rid, Decimal("0")))
        out[rid] = None
        if value > 0:
            out[rid] = request_refund(
                c,
                order_id=rets[rid]["order_id"],
                amount=value,
                actor=actor,
                reason=f"return {rets[rid]['rma_number']}",
                idempotency_key=keys[rid],
                return_id=rid,
            )
    apply_transitions(
        c, "return", [Change(rid, "closed", "refunded", {"refund_id": out[rid]}) for rid in todo], actor=actor
    )
    return out


def exchange_return(
    conn: psycopg.Connection,
    return_id: int,
    *,
    actor: str,
    replacement: Sequence[tuple[str, int]] | None = None,
) -> int:
    """Close an inspected return with a replacement order (one transaction): the new order copies customer
    and delivery from the original, is linked via parent_order_id, is already paid, and has the given
    (sku, qty) lines — by default the same SKUs and received quantities at the original prices. Its
    external id is ``<original external id>:exchange:<rma>``, so repeating the call creates nothing new.
    Returns the replacement order id."""

    def run(c):
        ret = _lock_return(c, return_id)
        if ret["state"] == "closed" and ret["exchange_order_id"]:
            return ret["exchange_order_id"]
        _require_inspected(ret)
        cur = c.cursor(row_factory=psycopg.rows.dict_row)
        o = cur.execute("SELECT * FROM oms.orders WHERE order_id = %s", (ret["order_id"],)).fetchone()
        got = c.execute(
            """SELECT rl.sku, rl.qty_received, l.unit_price FROM oms.return_lines rl
               JOIN oms.order_lines l ON l.line_id = rl.line_id WHERE rl.return_id = %s AND rl.qty_received > 0
               ORDER BY rl.return_line_id""",
            (return_id,),
        ).fetchall()
        if replacement is None:
            lines = [{"sku": s, "qty": q, "unit_price": p} for s, q, p in got]
        else:
            prices = dict(
                c.execute(
                    "SELECT sku, price FROM oms.products WHERE sku = ANY(%s)", ([s for s, _ in replacement],)
                ).fetchall()
            )
            lines = [{"sku": s, "qty": q, "unit_price": prices.get(s, Decimal("0"))} for s, q in replacement]
        if not lines:
            raise ValidationFailed(f"return {return_id}: nothing received to exchange")
        new = NormalizedOrder(
            channel_code=o["channel_code"],
            external_id=f"{o['external_id']}:exchange:{ret['rma_number']}",
            placed_at=datetime.now(UTC),
            delivery_method=o["delivery_method"],
            lines=lines,
            customer_name=o["customer_name"],
            customer_phone=o["customer_phone"],
            customer_email=o["customer_email"],
            pickup_location_code=o["pickup_location_code"],
            region=o["region"],
            city=o["city"],
            address=o["address"],
            lat=o["lat"],
            lon=o["lon"],
            payment_method="prepaid",
            payment_status="paid",
            currency=o["currency"],
            parent_order_id=o["order_id"],
        )
        res = accept_orders_in_transaction(c, [new], actor=actor, quarantine_source=None)
        if res.rejected:
            raise ValidationFailed([f"replacement order: {why}" for _, why in res.rejected])
        new_id = (
            res.ids.get(new.key)
            or c.execute(
                "SELECT order_id FROM oms.orders WHERE channel_code = %s AND external_id = %s", new.key
            ).fetchone()[0]
        )
        c.execute("UPDATE oms.returns SET exchange_order_id = %s WHERE return_id = %s", (new_id, return_id))
        apply_transitions(
            c,
            "return",
            [Change(return_id, "closed", "exchanged", {"exchange_order_id": new_id})],
            actor=actor,
        )
        return new_id

    return run_in_transaction(conn, run)


def cancel_return(conn: psycopg.Connection, return_id: int, *, reason: str, actor: str) -> None:
    """Withdraw an RMA that has not been received (requested → cancelled); its quantity is returnable again."""

    def run(c):
        _lock_return(c, return_id)
        apply_transitions(c, "return", [Change(return_id, "cancelled", reason)], actor=actor)

    run_in_transaction(conn, run)


# -- read models (the operations page's returns panel) ------------------------------------------------------
#: display stage of a return: 'requested' becomes 'in transit' once the warehouse was told to expect it
STAGES = ("requested", "in transit", "received", "inspected")


def returns_in_flight(conn: psycopg.Connection, *, limit: int = 200) -> list[dict[str, Any]]:
    """Returns not closed or cancelled, oldest request first, with their stage (requested / in transit /
    received / inspected), the location where they are (or are expected), units and value."""
    cur = conn.cursor(row_factory=psycopg.rows.dict_row)
    return cur.execute(
        """SELECT r.return_id, r.rma_number, o.order_number, r.kind, r.state,
                  CASE WHEN r.state = 'requested' AND ob.state = 'done' THEN 'in transit' ELSE r.state END AS stage,
                  coalesce(r.location_code, ob.payload->>'location_code') AS location_code,
                  r.requested_at, r.received_at, r.inspected_at,
                  l.lines, l.units, l.units_received, l.value
           FROM oms.returns r
           JOIN oms.orders o ON o.order_id = r.order_id
           LEFT JOIN oms.outbox ob ON ob.idempotency_key = %(prefix)s || r.rma_number
           CROSS JOIN LATERAL (
               SELECT count(*) AS lines, coalesce(sum(rl.qty), 0) AS units,
                      coalesce(sum(rl.qty_received), 0) AS units_received,
                      coalesce(sum(rl.qty * ol.unit_price), 0) AS value
               FROM oms.return_lines rl JOIN oms.order_lines ol ON ol.line_id = rl.line_id
               WHERE rl.return_id = r.return_id) l
           WHERE r.state = ANY(%(states)s)
           ORDER BY r.requested_at, r.return_id LIMIT %(limit)s""",
        {"prefix": f"{ANNOUNCE_EFFECT}:", "states": list(OPEN_STATES), "limit": limit},
    ).fetchall()


def return_lines(conn: psycopg.Connection, return_id: int) -> list[dict[str, Any]]:
    """The lines of one return: requested and received units, reason, disposition once inspected."""
    cur = conn.cursor(row_factory=psycopg.rows.dict_row)
    return cur.execute(
        """SELECT return_line_id, sku, qty, qty_received, reason_code, disposition FROM oms.return_lines
           WHERE return_id = %s ORDER BY return_line_id""",
        (return_id,),
    ).fetchall()


def receiving_locations(conn: psycopg.Connection) -> list[str]:
    """Active locations that can take a returned parcel (warehouses and stores)."""
    return [
        r[0]
        for r in conn.execute(
            """SELECT location_code FROM oms.locations WHERE active AND kind IN ('warehouse', 'store')
               ORDER BY location_code"""
        ).fetchall()
    ]
