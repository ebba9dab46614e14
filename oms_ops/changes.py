"""Changing an accepted order: quantities, lines, prices, delivery, contact — one transaction per change set.

A customer calls back, a channel sends a corrected order, ops fix a typo: the order the OMS holds must change
without breaking what it already promised. :func:`change_order` takes a list of changes for one order and
either applies all of them or none (``ChangeRefused`` / ``InsufficientStock`` naming every line and limit at
fault). It follows the allocation's lock order — the order row first, then stock rows (inside
``reservations`` and ``allocation``), then reservation rows — and it never plans stock itself: surplus units
go back through ``reservations.release_quantities``, new demand is served by ``allocation.allocate_batch``,
and a new delivery method or pickup point re-routes through ``allocation.reroute``.

Rules (docs/allocation.md, "Changing an order"):

* line changes (quantity, price, add, remove) and delivery changes: only before picking starts
  (``LINE_CHANGE_STATES``); contact and address: until the order ships (``CONTACT_CHANGE_STATES``);
* a quantity must be 1 … ``limits.max_line_quantity`` and an order keeps at most ``limits.max_order_lines``
  open lines (the business configuration's intake limits: an order may not grow past what intake accepts);
* an increase (or a new line) must be reservable now: after the allocator ran for the order, each grown line
  is reserved in full, else the whole change is refused with the quantity asked and what is free per
  location. An order on hold is not allocated: its growth is checked against the free stock of the SKU;
* a decrease lets the surplus reservation go (the newest reservations first); removing a line releases it
  all; a paid order gets a refund for the value that went away;
* every change is an ``oms.order_events`` row (entity ``order_line`` or ``order``, from and to the current
  state, ``data.change`` naming what changed with the old and new value) written in the same transaction.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

import psycopg

from oms_ops.allocation import ALLOCATABLE_STATES, REROUTABLE_STATES, allocate_batch, reroute
from oms_ops.business_config import BusinessConfig
from oms_ops.db import run_in_transaction
from oms_ops.errors import ChangeRefused, InsufficientStock, NotFound, Shortfall
from oms_ops.outbox import dumps
from oms_ops.payment_provider import charge_difference
from oms_ops.payments import request_refund
from oms_ops.reservations import release_quantities
from oms_ops.state_machine import Change, apply_transitions, record_creations

#: order states in which lines and the delivery may change: nothing picked yet, reservations can move
LINE_CHANGE_STATES = ("new", "on_hold", "backordered", "partially_allocated", "allocated")
#: order states in which the contact and address may change: the parcel has not left yet
CONTACT_CHANGE_STATES = (*LINE_CHANGE_STATES, "picking", "packed")
#: columns of ``oms.orders`` a contact change may set
CONTACT_FIELDS = (
    "customer_name",
    "customer_phone",
    "customer_email",
    "region",
    "city",
    "address",
    "lat",
    "lon",
)
DELIVERY_METHODS = ("courier", "pickup_point", "store_pickup")
#: contact field → its kind of ``limits.max_text_length``
_TEXT_KIND = {
    "customer_name": "name",
    "customer_phone": "contact",
    "customer_email": "contact",
    "region": "address",
    "city": "address",
    "address": "address",
}
#: line states that still have units to deliver
OPEN_LINE_STATES = ("new", "backordered", "allocated", "picked", "packed")


@dataclass(frozen=True)
class SetQuantity:
    """The line's quantity becomes ``qty`` (what the customer wants in total, shipped units included)."""

    line_no: int
    qty: int


@dataclass(frozen=True)
class SetPrice:
    line_no: int
    unit_price: Decimal


@dataclass(frozen=True)
class AddLine:
    sku: str
    qty: int
    unit_price: Decimal
    name: str | None = None


@dataclass(frozen=True)
class RemoveLine:
    line_no: int


@dataclass(frozen=True)
class SetDelivery:
    delivery_method: str
    pickup_location_code: str | None = None


@dataclass(frozen=True)
class SetContact:
    """New values of some of ``CONTACT_FIELDS`` (``fields``: name → value)."""

    fields: Mapping[str, Any]


@dataclass(frozen=True)
class SetShipping:
    amount: Decimal


OrderChange = SetQuantity | SetPrice | AddLine | RemoveLine | SetDelivery | SetContact | SetShipping


@dataclass
class ChangeResult:
    order_id: int
    state: str
    #: one text per applied change, as the timeline says it
    applied: list[str] = field(default_factory=list)
    released_units: int = 0
    rerouted: bool = False
    refund_id: int | None = None
    #: a paid order grew: the payment link for the difference (oms_ops/payment_provider.py)
    payment_link_id: int | None = None
    total_before: Decimal = Decimal(0)
    total_after: Decimal = Decimal(0)

    def as_dict(self) -> dict[str, Any]:
        return {
            "order_id": self.order_id,
            "state": self.state,
            "applied": self.applied,
            "released_units": self.released_units,
            "rerouted": self.rerouted,
            "refund_id": self.refund_id,
            "payment_link_id": self.payment_link_id,
            "total_before": str(self.total_before),
            "total_after": str(self.total_after),
        }


@dataclass
class _Line:
    line_id: int
    line_no: int
    sku: str
    qty: int
    cancelled: int
    shipped: int
    unit_price: Decimal
    state: str
    reserved: int = 0

    @property
    def wanted(self) -> int:
        return self.qty - self.cancelled

    @property
    def open(self) -> int:
        return self.qty - self.cancelled - self.shipped

    def label(self, order_id: int) -> str:
        return f"order {order_id} line {self.line_no} ({self.sku})"


def change_order(
    conn: psycopg.Connection,
    order_id: int,
    changes: Sequence[OrderChange],
    *,
    config: BusinessConfig,
    actor: str,
    reason: str = "changed by ops",
    now: datetime | None = None,
) -> ChangeResult:
    """Apply ``changes`` to one order in one transaction, or none of them (see the module's rules)."""
    return run_in_transaction(
        conn,
        lambda c: change_order_in_transaction(
            c, order_id, changes, config=config, actor=actor, reason=reason, now=now
        ),
    )


def change_order_in_transaction(
    conn: psycopg.Connection,
    order_id: int,
    changes: Sequence[OrderChange],
    *,
    config: BusinessConfig,
    actor: str,
    reason: str = "changed by ops",
    now: datetime | None = None,
) -> ChangeResult:
    """:func:`change_order` inside the caller's transaction (an amendment applies its diff and closes its row
    atomically)."""
    order = conn.execute(
        """SELECT state, delivery_method, pickup_location_code, payment_status, shipping_amount, total_amount
           FROM oms.orders WHERE order_id = %s FOR UPDATE""",
        (order_id,),
    ).fetchone()
    if order is None:
        raise NotFound("order", [order_id])
    state, method, pickup, payment_status, shipping, total_before = order
    lines = _lines(conn, order_id)
    by_no = {ln.line_no: ln for ln in lines}
    limits = config.limits
    problems = _check(conn, order_id, state, changes, by_no, limits, method, pickup)
    if problems:
        raise ChangeRefused(order_id, problems)

    result = ChangeResult(order_id, state, total_before=total_before)
    events: list[dict[str, Any]] = []
    grown: dict[int, int] = {}  # line_id → units the line needs reserved now
    releases: list[tuple[int, int]] = []
    reservations = _active_reservations(conn, order_id)
    line_moves: dict[int, str] = {}
    new_lines: list[AddLine] = []
    delivery: SetDelivery | None = None
    contact: dict[str, Any] = {}
    for ch in changes:
        if isinstance(ch, SetQuantity):
            ln = by_no[ch.line_no]
            if ch.qty == ln.wanted:
                continue
            if ch.qty < ln.wanted:
                surplus = ln.reserved - (ch.qty - ln.shipped)
                releases.extend(_take(reservations[ln.line_id], surplus))
                result.released_units += max(surplus, 0)
                conn.execute(
                    """UPDATE oms.order_lines SET qty_cancelled = qty_cancelled + %s, updated_at = now()
                       WHERE line_id = %s""",
                    (ln.wanted - ch.qty, ln.line_id),
                )
            else:
                conn.execute(
                    "UPDATE oms.order_lines SET qty = qty + %s, updated_at = now() WHERE line_id = %s",
                    (ch.qty - ln.wanted, ln.line_id),
                )
                grown[ln.line_id] = ch.qty - ln.shipped
                if ln.state == "allocated":
                    line_moves[ln.line_id] = "new"
            text = f"line {ln.line_no} ({ln.sku}) quantity {ln.wanted} → {ch.qty}"
            events.append(
                _event(order_id, "order_line", ln.line_id, ln.state, text, "quantity", ln.wanted, ch.qty)
            )
        elif isinstance(ch, SetPrice):
            ln = by_no[ch.line_no]
            if Decimal(ch.unit_price) == ln.unit_price:
                continue
            conn.execute(
                "UPDATE oms.order_lines SET unit_price = %s, updated_at = now() WHERE line_id = %s",
                (ch.unit_price, ln.line_id),
            )
            text = f"line {ln.line_no} ({ln.sku}) unit price {ln.unit_price} → {ch.unit_price}"
            events.append(
                _event(
                    order_id,
                    "order_line",
                    ln.line_id,
                    ln.state,
                    text,
                    "unit_price",
                    ln.unit_price,
                    ch.unit_price,
                )
            )
        elif isinstance(ch, RemoveLine):
            ln = by_no[ch.line_no]
            releases.extend((rid, q) for rid, q in reservations[ln.line_id])
            result.released_units += ln.reserved
            conn.execute(
                "UPDATE oms.order_lines SET qty_cancelled = qty - qty_shipped, updated_at = now() WHERE line_id = %s",
                (ln.line_id,),
            )
            line_moves[ln.line_id] = "cancelled"
            text = f"line {ln.line_no} ({ln.sku}) removed ({ln.wanted} units)"
            events.append(
                _event(order_id, "order_line", ln.line_id, "cancelled", text, "removed", ln.wanted, 0)
            )
        elif isinstance(ch, AddLine):
            new_lines.append(ch)
        elif isinstance(ch, SetDelivery):
            if (ch.delivery_method, ch.pickup_location_code) != (method, pickup):
                delivery = ch
        elif isinstance(ch, SetContact):
            contact.update(ch.fields)
        elif isinstance(ch, SetShipping):
            if Decimal(ch.amount) != shipping:
                conn.execute(
                    "UPDATE oms.orders SET shipping_amount = %s, updated_at = now() WHERE order_id = %s",
                    (ch.amount, order_id),
                )
                text = f"shipping amount {shipping} → {ch.amount}"
                events.append(
                    _event(order_id, "order", order_id, state, text, "shipping_amount", shipping, ch.amount)
                )

    if releases:
        release_quantities(conn, reservation_qty=releases, actor=actor, reason=f"order change: {reason}")
    if line_moves:
        apply_transitions(
            conn,
            "order_line",
            [Change(lid, to, f"change: {reason}") for lid, to in sorted(line_moves.items())],
            actor=actor,
        )
    if new_lines:
        next_no = max(by_no, default=0) + 1
        rows = conn.execute(
            """INSERT INTO oms.order_lines (order_id, line_no, sku, qty, unit_price, name)
               SELECT %s, n, s, q, p, nm FROM unnest(%s::int4[], %s::text[], %s::int4[], %s::numeric[], %s::text[])
                   AS t(n, s, q, p, nm)
               RETURNING line_id, line_no, sku, qty""",
            (
                order_id,
                list(range(next_no, next_no + len(new_lines))),
                [a.sku for a in new_lines],
                [a.qty for a in new_lines],
                [a.unit_price for a in new_lines],
                [a.name for a in new_lines],
            ),
        ).fetchall()
        rows.sort(key=lambda r: r[1])
        record_creations(
            conn,
            "order_line",
            [(order_id, lid, "new") for lid, *_ in rows],
            actor=actor,
            reason=f"change: {reason}",
            data=[{"change": "added", "line_no": no, "sku": sku, "qty": q} for _, no, sku, q in rows],
        )
        for lid, no, sku, q in rows:
            grown[lid] = q
            result.applied.append(f"line {no} ({sku}) added, quantity {q}")
    if contact:
        cur = dict(
            zip(
                CONTACT_FIELDS,
                conn.execute(
                    f"SELECT {', '.join(CONTACT_FIELDS)} FROM oms.orders WHERE order_id = %s",  # noqa: S608 - constant
                    (order_id,),
                ).fetchone(),
                strict=True,
            )
        )
        diff = {k: v for k, v in contact.items() if cur[k] != v}
        if diff:
            cols = sorted(diff)
            conn.execute(
                psycopg.sql.SQL("UPDATE oms.orders SET {}, updated_at = now() WHERE order_id = %s").format(
                    psycopg.sql.SQL(", ").join(
                        psycopg.sql.SQL("{} = %s").format(psycopg.sql.Identifier(c)) for c in cols
                    )
                ),
                [*(diff[c] for c in cols), order_id],
            )
            text = "contact " + ", ".join(cols)
            events.append(
                _event(order_id, "order", order_id, state, text, "contact", {c: cur[c] for c in cols}, diff)
            )
    if delivery is not None:
        conn.execute(
            """UPDATE oms.orders SET delivery_method = %s, pickup_location_code = %s, updated_at = now()
               WHERE order_id = %s""",
            (delivery.delivery_method, delivery.pickup_location_code, order_id),
        )
        text = f"delivery {method}/{pickup or '-'} → {delivery.delivery_method}/{delivery.pickup_location_code or '-'}"
        events.append(
            _event(
                order_id,
                "order",
                order_id,
                state,
                text,
                "delivery",
                {"delivery_method": method, "pickup_location_code": pickup},
                {
                    "delivery_method": delivery.delivery_method,
                    "pickup_location_code": delivery.pickup_location_code,
                },
            )
        )
    _record_events(conn, events, actor=actor, reason=reason)
    result.applied = [e["text"] for e in events] + result.applied

    # -- totals -------------------------------------------------------------------------------------------
    total_after = conn.execute(
        """UPDATE oms.orders o SET total_amount = o.shipping_amount + coalesce(
               (SELECT sum((l.qty - l.qty_cancelled) * l.unit_price) FROM oms.order_lines l
                WHERE l.order_id = o.order_id), 0)
           WHERE o.order_id = %s RETURNING total_amount""",
        (order_id,),
    ).fetchone()[0]
    result.total_after = total_after
    if payment_status in ("paid", "partially_refunded") and total_after < total_before:
        result.refund_id = request_refund(
            conn,
            order_id=order_id,
            amount=total_before - total_after,
            reason=f"order change: {reason}",
            actor=actor,
            idempotency_key=f"refund:change:{order_id}:{uuid.uuid4().hex}",
        )
    elif payment_status in ("paid", "partially_refunded") and total_after > total_before:
        # the customer pays the difference on a link, when the OMS took the payment (not a marketplace's)
        result.payment_link_id = charge_difference(
            conn,
            order_id=order_id,
            amount=total_after - total_before,
            actor=actor,
            idempotency_key=f"payment:change:{order_id}:{uuid.uuid4().hex}",
            note=f"order change: {reason}"[:200],
        )

    # -- stock: re-route, serve the growth, settle the allocation states ----------------------------------
    state = _order_state(conn, order_id)
    if grown and state == "allocated":
        apply_transitions(
            conn, "order", [Change(order_id, "partially_allocated", f"change: {reason}")], actor=actor
        )
        state = "partially_allocated"
    if delivery is not None and state in REROUTABLE_STATES:
        reroute(conn, order_id, config=config, actor=actor, reason=f"change: {reason}", now=now)
        result.rerouted = True
    elif grown and state in ALLOCATABLE_STATES:
        allocate_batch(conn, [order_id], config=config, actor=actor, now=now)
    if grown:
        _check_grown(conn, order_id, grown, on_hold=state == "on_hold")
    _settle(conn, order_id, actor=actor, reason=f"change: {reason}")
    result.state = _order_state(conn, order_id)
    return result


# -- checks ----------------------------------------------------------------------------------------------------
def _check(conn, order_id, state, changes, by_no, limits, method, pickup) -> list[str]:
    """Every problem of the change set (nothing is written before all of them are known)."""
    problems: list[str] = []
    who = f"order {order_id}"
    max_qty = limits.max_line_quantity
    touched: set[int] = set()
    removed: set[int] = set()
    added = 0
    new_skus: list[str] = []
    pickups: list[str] = []
    for ch in changes:
        if isinstance(ch, SetContact):
            if state not in CONTACT_CHANGE_STATES:
                problems.append(f"{who} is {state}: the contact can change only before it ships")
            unknown = sorted(set(ch.fields) - set(CONTACT_FIELDS))
            if unknown:
                problems.append(
                    f"{who}: {', '.join(unknown)} cannot be changed (contact fields: {', '.join(CONTACT_FIELDS)})"
                )
            for k, v in ch.fields.items():
                if (
                    k in ("lat", "lon")
                    and v is not None
                    and (isinstance(v, bool) or not isinstance(v, int | float))
                ):
                    problems.append(f"{who}: {k} must be a number, got {v!r}")
                elif k in _TEXT_KIND and v is not None and not isinstance(v, str):
                    problems.append(f"{who}: {k} must be text, got {v!r}")
                kind = _TEXT_KIND.get(k)
                limit = getattr(limits.max_text_length, kind) if kind else None
                if isinstance(v, str) and limit is not None and len(v) > limit:
                    problems.append(
                        f"{who}: {k} has {len(v)} characters, more than limits.max_text_length.{kind} ({limit})"
                    )
            continue
        if state not in LINE_CHANGE_STATES:
            problems.append(
                f"{who} is {state}: lines and delivery can change only before picking "
                f"({', '.join(LINE_CHANGE_STATES)})"
            )
            break
        if isinstance(ch, (SetQuantity, SetPrice, RemoveLine)):
            ln = by_no.get(ch.line_no)
            if ln is None:
                problems.append(f"{who} line {ch.line_no}: no such line")
                continue
            if ln.line_no in touched:
                problems.append(f"{ln.label(order_id)}: changed twice in one request")
            touched.add(ln.line_no)
            if ln.state not in OPEN_LINE_STATES or ln.open <= 0:
                problems.append(f"{ln.label(order_id)} is {ln.state}: nothing left to change")
                continue
            if isinstance(ch, SetQuantity):
                problems += _qty_problems(f"{ln.label(order_id)}: quantity", ch.qty, max_qty)
                if _is_int(ch.qty) and 0 < ch.qty < ln.shipped:
                    problems.append(
                        f"{ln.label(order_id)}: quantity {ch.qty} is below the {ln.shipped} shipped"
                    )
            elif isinstance(ch, SetPrice):
                problems += _price_problems(f"{ln.label(order_id)}: unit price", ch.unit_price, limits)
            else:
                removed.add(ln.line_no)
        elif isinstance(ch, AddLine):
            added += 1
            label = f"{who} new line {added} ({ch.sku})"
            problems += _qty_problems(f"{label}: quantity", ch.qty, max_qty)
            problems += _price_problems(f"{label}: unit price", ch.unit_price, limits)
            if not ch.sku or len(ch.sku) > limits.max_text_length.code:
                problems.append(f"{label}: sku must have 1 … {limits.max_text_length.code} characters")
            new_skus.append(ch.sku)
        elif isinstance(ch, SetDelivery):
            if ch.delivery_method not in DELIVERY_METHODS:
                problems.append(
                    f"{who}: delivery method {ch.delivery_method!r} is not one of {', '.join(DELIVERY_METHODS)}"
                )
            elif ch.delivery_method != "courier" and not ch.pickup_location_code:
                problems.append(f"{who}: delivery method {ch.delivery_method} needs a pickup location")
            if ch.pickup_location_code:
                pickups.append(ch.pickup_location_code)
        elif isinstance(ch, SetShipping):
            problems += _price_problems(
                f"{who}: shipping amount", ch.amount, limits, bound=limits.max_order_total
            )
    open_after = sum(1 for ln in by_no.values() if ln.open > 0 and ln.line_no not in removed) + added
    if by_no and open_after == 0:
        problems.append(
            f"{who}: removing every open line leaves nothing to deliver: cancel the order instead"
        )
    if open_after > limits.max_order_lines:
        problems.append(
            f"{who}: {open_after} open lines, more than limits.max_order_lines ({limits.max_order_lines})"
        )
    if new_skus:
        known = {r[0] for r in conn.execute("SELECT sku FROM oms.products WHERE sku = ANY(%s)", (new_skus,))}
        problems += [
            f"{who}: unknown sku {s!r} (not in the catalog)"
            for s in dict.fromkeys(new_skus)
            if s not in known
        ]
    if pickups:
        active = {
            r[0]
            for r in conn.execute(
                "SELECT location_code FROM oms.locations WHERE location_code = ANY(%s) AND active", (pickups,)
            )
        }
        problems += [f"{who}: unknown or inactive pickup location {p!r}" for p in pickups if p not in active]
    return problems


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _qty_problems(label: str, qty: Any, max_qty: int) -> list[str]:
    if not _is_int(qty):
        return [f"{label} must be a whole number, got {qty!r}"]
    if qty <= 0:
        return [f"{label} {qty} must be at least 1 (remove the line instead)"]
    if qty > max_qty:
        return [f"{label} {qty} is more than limits.max_line_quantity ({max_qty})"]
    return []


def _price_problems(label: str, value: Any, limits, bound: Decimal | None = None) -> list[str]:
    bound = limits.max_unit_price if bound is None else bound
    try:
        d = Decimal(value)
    except (ArithmeticError, TypeError, ValueError):
        return [f"{label} {value!r} is not a number"]
    if not d.is_finite() or d < 0:
        return [f"{label} {value} must be ≥ 0"]
    if d > bound:
        return [f"{label} {value} is more than the limit ({bound})"]
    if d != d.quantize(Decimal("0.01")):
        return [f"{label} {value} has more than 2 decimals"]
    return []


def _check_grown(conn: psycopg.Connection, order_id: int, grown: Mapping[int, int], *, on_hold: bool) -> None:
    """Refuse the change (InsufficientStock, one shortfall per line and location) unless every grown line is
    reserved in full — or, for a held order, unless its SKU has the units free somewhere."""
    rows = conn.execute(
        """SELECT l.line_id, l.line_no, l.sku, l.qty - l.qty_cancelled - l.qty_shipped,
                  coalesce((SELECT sum(r.qty) FROM oms.reservations r
                            WHERE r.line_id = l.line_id AND r.state = 'active'), 0)::int
           FROM oms.order_lines l WHERE l.line_id = ANY(%s) ORDER BY l.line_no""",
        (sorted(grown),),
    ).fetchall()
    shortfalls: list[Shortfall] = []
    problems: list[str] = []
    for line_id, line_no, sku, open_qty, reserved in rows:
        free = conn.execute(
            """SELECT location_code, on_hand - reserved FROM oms.stock
               WHERE sku = %s AND on_hand > reserved ORDER BY location_code""",
            (sku,),
        ).fetchall()
        missing = open_qty - reserved
        if on_hold:
            if sum(f for _, f in free) >= open_qty:
                continue
            missing = open_qty
        if missing <= 0:
            continue
        where = ", ".join(f"{loc} {f}" for loc, f in free) or "none anywhere"
        problems.append(
            f"order {order_id} line {line_no} ({sku}): asked {open_qty}, {missing} more than could be reserved; "
            f"free per location: {where}"
        )
        shortfalls += [Shortfall(sku, missing, f, loc, line_id, order_id) for loc, f in free] or [
            Shortfall(sku, missing, 0, None, line_id, order_id)
        ]
    if problems:
        raise InsufficientStock(shortfalls, problems)


# -- reads and writes ------------------------------------------------------------------------------------------
def _lines(conn: psycopg.Connection, order_id: int) -> list[_Line]:
    rows = conn.execute(
        """SELECT l.line_id, l.line_no, l.sku, l.qty, l.qty_cancelled, l.qty_shipped, l.unit_price, l.state,
                  coalesce((SELECT sum(r.qty) FROM oms.reservations r
                            WHERE r.line_id = l.line_id AND r.state = 'active'), 0)::int
           FROM oms.order_lines l WHERE l.order_id = %s ORDER BY l.line_no FOR UPDATE OF l""",
        (order_id,),
    ).fetchall()
    return [_Line(*r) for r in rows]


def _active_reservations(conn: psycopg.Connection, order_id: int) -> dict[int, list[tuple[int, int]]]:
    """line_id → [(reservation_id, qty)], newest first (a decrease gives back the latest promise first)."""
    out: dict[int, list[tuple[int, int]]] = defaultdict(list)
    for rid, lid, qty in conn.execute(
        """SELECT reservation_id, line_id, qty FROM oms.reservations
           WHERE order_id = %s AND state = 'active' ORDER BY reservation_id DESC""",
        (order_id,),
    ):
        out[lid].append((rid, qty))
    return out


def _take(held: list[tuple[int, int]], units: int) -> list[tuple[int, int]]:
    """``(reservation_id, qty)`` releasing ``units`` from ``held`` in its order."""
    out = []
    for rid, qty in held:
        if units <= 0:
            break
        q = min(qty, units)
        out.append((rid, q))
        units -= q
    return out


def _order_state(conn: psycopg.Connection, order_id: int) -> str:
    return conn.execute("SELECT state FROM oms.orders WHERE order_id = %s", (order_id,)).fetchone()[0]


def _settle(conn: psycopg.Connection, order_id: int, *, actor: str, reason: str) -> None:
    """After units went away, lines now reserved in full become 'allocated', and an order whose every open
    line is, too (a decrease can complete a partially allocated order)."""
    rows = conn.execute(
        """SELECT l.line_id, l.state, l.qty - l.qty_cancelled - l.qty_shipped,
                  coalesce((SELECT sum(r.qty) FROM oms.reservations r
                            WHERE r.line_id = l.line_id AND r.state = 'active'), 0)::int
           FROM oms.order_lines l WHERE l.order_id = %s AND l.state <> 'cancelled' ORDER BY l.line_id""",
        (order_id,),
    ).fetchall()
    moves = [
        Change(lid, "allocated", reason)
        for lid, st, open_, res in rows
        if st in ("new", "backordered") and open_ > 0 and res >= open_
    ]
    apply_transitions(conn, "order_line", moves, actor=actor)
    state = _order_state(conn, order_id)
    open_rows = [(open_, res) for _, _, open_, res in rows if open_ > 0]
    if (
        state in ("new", "backordered", "partially_allocated")
        and open_rows
        and all(res >= o for o, res in open_rows)
    ):
        apply_transitions(conn, "order", [Change(order_id, "allocated", reason)], actor=actor)


def _event(order_id, entity, entity_id, state, text, change, before, after) -> dict[str, Any]:
    return {
        "o": order_id,
        "e": entity,
        "i": entity_id,
        "s": state,
        "text": text,
        "d": {"change": change, "from": before, "to": after},
    }


def _record_events(
    conn: psycopg.Connection, events: list[dict[str, Any]], *, actor: str, reason: str
) -> None:
    """One ``oms.order_events`` row per change, in one INSERT from one JSON document (as
    ``state_machine.apply_transitions`` writes transitions): the state does not move, the event says what
    changed (``reason``: ``change: <what>; <why>``, ``data``: the change with its old and new value)."""
    if not events:
        return
    doc = dumps([{**e, "r": f"change: {e['text']}; {reason}"} for e in events])
    conn.execute(
        """INSERT INTO oms.order_events (order_id, entity, entity_id, from_state, to_state, actor, reason, data)
           SELECT v.o, v.e, v.i, v.s, v.s, %(actor)s, v.r, v.d
           FROM ROWS FROM (json_to_recordset(%(doc)s::json) AS (o bigint, e text, i bigint, s text, r text, d jsonb))
                WITH ORDINALITY AS v(o, e, i, s, r, d, n)
           ORDER BY v.n""",
        {"doc": doc, "actor": actor},
    )


__all__ = [
    "CONTACT_CHANGE_STATES",
    "CONTACT_FIELDS",
    "LINE_CHANGE_STATES",
    "AddLine",
    "ChangeResult",
    "OrderChange",
    "RemoveLine",
    "SetContact",
    "SetDelivery",
    "SetPrice",
    "SetQuantity",
    "SetShipping",
    "change_order",
    "change_order_in_transaction",
]
