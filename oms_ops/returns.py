"""Returns (RMA): request → receive → inspect (restock or write-off) → refund or exchange → closed.

Quantities are validated against what the customer really received: a line may be returned at most the
units of its delivered / picked-up shipments minus what other RMAs (not cancelled) already claim.
Restocking is a ledger 'return_restock' entry at the receiving location; a written-off unit never re-enters
stock, so it has no ledger entry (its disposition and reason are on the return line, which the return-rate
and damage KPIs read). Refunds go through ``payments.request_refund`` (refunds row + outbox 'payment.refund');
an exchange creates the replacement order (``parent_order_id`` → original) through the normal acceptance.
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
from oms_ops.inventory import Movement, apply_movements
from oms_ops.outbox import enqueue
from oms_ops.state_machine import Change, apply_transitions, record_creations


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
        return ReturnResult(return_id, rma, created=True)

    return run_in_transaction(conn, run)


def _lock_return(c: psycopg.Connection, return_id: int) -> dict:
    row = c.execute("SELECT order_id FROM oms.returns WHERE return_id = %s", (return_id,)).fetchone()
    if row is None:
        raise NotFound("return", [return_id])
    c.execute("SELECT 1 FROM oms.orders WHERE order_id = %s FOR UPDATE", (row[0],))
    cur = c.cursor(row_factory=psycopg.rows.dict_row)
    return cur.execute("SELECT * FROM oms.returns WHERE return_id = %s FOR UPDATE", (return_id,)).fetchone()


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

    def run(c):
        ret = _lock_return(c, return_id)
        if ret["state"] == "received" and ret["location_code"] == location_code:
            return
        if (
            c.execute("SELECT 1 FROM oms.locations WHERE location_code = %s", (location_code,)).fetchone()
            is None
        ):
            raise ValidationFailed(f"unknown location {location_code!r}")
        lines = dict(
            c.execute(
                "SELECT return_line_id, qty FROM oms.return_lines WHERE return_id = %s", (return_id,)
            ).fetchall()
        )
        got = {lid: q for lid, q in lines.items()}
        problems = []
        for lid, q in (received or {}).items():
            if lid not in lines:
                problems.append(f"return line {lid}: not part of return {return_id}")
            elif isinstance(q, bool) or not isinstance(q, int) or not 0 <= q <= lines[lid]:
                problems.append(f"return line {lid}: received must be 0..{lines[lid]}, got {q!r}")
            else:
                got[lid] = q
        if problems:
            raise ValidationFailed(problems)
        apply_transitions(
            c, "return", [Change(return_id, "received", f"received at {location_code}")], actor=actor
        )
        c.execute(
            "UPDATE oms.returns SET location_code = %s WHERE return_id = %s", (location_code, return_id)
        )
        c.execute(
            """UPDATE oms.return_lines rl SET qty_received = t.q FROM unnest(%s::int8[], %s::int4[]) AS t(id, q)
               WHERE rl.return_line_id = t.id""",
            (list(got), list(got.values())),
        )

    run_in_transaction(conn, run)


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

    def run(c):
        from oms_ops.fulfillment import sync_lines

        ret = _lock_return(c, return_id)
        if ret["state"] != "received":
            raise IllegalTransition([("return", return_id, ret["state"], "inspected")])
        lines = c.execute(
            """SELECT return_line_id, line_id, sku, qty_received FROM oms.return_lines WHERE return_id = %s
               ORDER BY return_line_id""",
            (return_id,),
        ).fetchall()
        disp = {r[0]: dispositions for r in lines} if isinstance(dispositions, str) else dict(dispositions)
        problems = []
        for lid in sorted(set(disp) - {r[0] for r in lines}):
            problems.append(f"return line {lid}: not part of return {return_id}")
        for rl_id, _, _, q in lines:
            if q > 0 and disp.get(rl_id) not in ("restock", "write_off"):
                problems.append(
                    f"return line {rl_id}: disposition must be 'restock' or 'write_off', "
                    f"got {disp.get(rl_id)!r}"
                )
        if problems:
            raise ValidationFailed(problems)
        apply_transitions(c, "return", [Change(return_id, "inspected", "inspected")], actor=actor)
        c.execute(
            """UPDATE oms.return_lines rl SET disposition = t.d, inspected_at = now()
               FROM unnest(%s::int8[], %s::text[]) AS t(id, d) WHERE rl.return_line_id = t.id AND rl.qty_received > 0""",
            ([r[0] for r in lines], [disp.get(r[0]) for r in lines]),
        )
        got = [(lid, q) for _, lid, _, q in lines if q > 0]
        c.execute(
            """UPDATE oms.order_lines l SET qty_returned = l.qty_returned + t.q, updated_at = now()
               FROM unnest(%s::int8[], %s::int4[]) AS t(id, q) WHERE l.line_id = t.id""",
            ([g[0] for g in got], [g[1] for g in got]),
        )
        restock = [(sku, q, lid) for rl_id, lid, sku, q in lines if q > 0 and disp.get(rl_id) == "restock"]
        apply_movements(
            c,
            [
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
                for sku, q, lid in restock
            ],
            actor=actor,
        )
        sync_lines(c, [ret["order_id"]], actor=actor, reason=f"return {ret['rma_number']}")
        return [(sku, q) for sku, q, _ in restock]

    return run_in_transaction(conn, run)


def _require_inspected(ret: dict) -> None:
    if ret["state"] != "inspected":
        raise IllegalTransition([("return", ret["return_id"], ret["state"], "closed")])


def refund_return(
    conn: psycopg.Connection, return_id: int, *, actor: str, amount: Decimal | None = None
) -> int | None:
    """Refund an inspected return and close it (one transaction). Default amount = Σ received × unit price.
    Idempotency key ``refund:return:<return_id>``. Returns the refund id (None when nothing was received)."""

    def run(c):
        ret = _lock_return(c, return_id)
        if ret["state"] == "closed":
            row = c.execute(
                "SELECT refund_id FROM oms.refunds WHERE idempotency_key = %s",
                (f"refund:return:{return_id}",),
            ).fetchone()
            return row[0] if row else None
        _require_inspected(ret)
        from oms_ops.payments import request_refund

        value = amount
        if value is None:
            value = c.execute(
                """SELECT coalesce(sum(rl.qty_received * l.unit_price), 0) FROM oms.return_lines rl
                   JOIN oms.order_lines l ON l.line_id = rl.line_id WHERE rl.return_id = %s""",
                (return_id,),
            ).fetchone()[0]
        refund_id = None
        if value > 0:
            refund_id = request_refund(
                c,
                order_id=ret["order_id"],
                amount=value,
                actor=actor,
                reason=f"return {ret['rma_number']}",
                idempotency_key=f"refund:return:{return_id}",
                return_id=return_id,
            )
        apply_transitions(
            c, "return", [Change(return_id, "closed", "refunded", {"refund_id": refund_id})], actor=actor
        )
        return refund_id

    return run_in_transaction(conn, run)


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
        from oms_ops.orders import NormalizedOrder, accept_orders_in_transaction

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
