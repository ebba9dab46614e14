"""Fulfillment: pick, pack, ship, track, deliver / hand over, not delivered, returned to sender.

The unit of work is one order at one location (routing may split an order over locations): a *pick*
records, per reservation, what was expected and what the picker found (pick accuracy KPI); packing and
shipping move that pick on; the shipment consumes the reservations through ``consume_reservations`` and
writes the carrier booking to the outbox in the same transaction.

Order and line states are *derived* after each operation (``sync_orders``/``sync_lines``) from quantities,
reservations, picks and shipments, then moved through the state machine — one rule set for every path
(single or split shipments, short picks, cancelled remainders). Locks are taken in one order everywhere:
orders (by id) → shipments (by id) → stock (location, sku); reservation rows belong to one order and are
only touched under its lock.

Short pick (decision): the missing units were never on the shelf, so a short pick shrinks the reservation
to what was picked and writes a ledger 'pick' entry (on_hand −short, reserved −short) — both through
``reservations.release_quantities(missing=True)``, where all reservation bookkeeping lives. The short quantity
is cancelled on the line and, with ``short_policy='backorder'`` (default), re-ordered as a new line
(``split_from_line_id`` → original, state 'backordered') that ``allocation.allocate_backorders`` will reserve;
with ``short_policy='cancel'`` it is cancelled (and refunded if paid).

Set-based shipping (``ship_in_full``): the operations above take one (order, location) per transaction —
right for a picker's scanner, slow for a warehouse feed of thousands of orders. ``ship_in_full`` picks in
full, packs and ships many pairs in ONE transaction with the same rows as a result: orders locked by id, the
stock rows of the whole batch locked in (location, sku) order up front, then picks, pick lines, shipments,
shipment lines, ledger entries, events and outbox rows written with one statement per kind. An order split
over locations is shipped location by location ("rounds": the n-th location of every order in round n), so
its states and events follow exactly the sequence the per-location operations produce. A pair that cannot
ship (state changed, reservation gone) is skipped with its reason; the rest of the batch ships.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Literal

import psycopg
from psycopg.rows import dict_row

from oms_ops.db import run_in_transaction
from oms_ops.errors import IllegalTransition, InsufficientStock, NotFound, Shortfall, ValidationFailed
from oms_ops.inventory import Movement, apply_movements, lock_stock
from oms_ops.outbox import enqueue_many
from oms_ops.quarantine import quarantine_many
from oms_ops.reservations import consume_reservations_bulk, release_quantities
from oms_ops.state_machine import Change, allowed, apply_transitions, path, record_creations

PRE_FULFILLMENT_ORDER_STATES = frozenset(
    {"new", "on_hold", "backordered", "partially_allocated", "allocated"}
)
PICKABLE_ORDER_STATES = frozenset(
    {"allocated", "partially_allocated", "picking", "packed", "partially_shipped"}
)
DELIVERY_ORDER_STATES = frozenset(
    {"shipped", "ready_for_pickup", "delivered", "picked_up", "not_delivered", "returned_to_sender"}
)
#: Carrier used when a store hands the order over itself (click & collect from stock at that store).
SELF_CARRIER = "self"

#: Carrier status code → shipment state (None: informational, no state change). Business rules as data:
#: a new carrier is a new entry here, not new code.
CARRIER_STATUS_MAP: dict[str, dict[str, str | None]] = {
    "cdek": {
        "CREATED": None,
        "ACCEPTED": None,
        "RECEIVED_AT_SHIPMENT_WAREHOUSE": "handed_over",
        "READY_FOR_SHIPMENT_IN_SENDER_CITY": "in_transit",
        "SENT_TO_TRANSIT_CITY": "in_transit",
        "ACCEPTED_IN_TRANSIT_CITY": "in_transit",
        "SENT_TO_RECIPIENT_CITY": "in_transit",
        "ACCEPTED_IN_RECIPIENT_CITY": "in_transit",
        "ACCEPTED_AT_PICK_UP_POINT": "ready_for_pickup",
        "TAKEN_BY_COURIER": "in_transit",
        "DELIVERED": "delivered",
        "NOT_DELIVERED": "not_delivered",
        "RETURNED_TO_SENDER": "returned_to_sender",
        "REMOVED": None,
    },
}
#: Forward rank of shipment states: a tracking event may skip missed intermediate states only forwards.
SHIPMENT_RANK = {
    "created": 0,
    "label_printed": 1,
    "handed_over": 2,
    "in_transit": 3,
    "ready_for_pickup": 4,
    "not_delivered": 4,
    "delivered": 5,
    "picked_up": 5,
    "returned_to_sender": 5,
}
STAGE = {0: "allocated", 1: "picked", 2: "packed"}


# --------------------------------------------------------------------------------------------------------
# derivation of order and line states
# --------------------------------------------------------------------------------------------------------
#: A reason for every entity of a batch, or one per order (order_id → reason) when a batch spans orders whose
#: events must name their own pick or shipment.
Reason = str | Mapping[int, str]


def _reason_for(reason: Reason, order_id: int) -> str:
    return reason if isinstance(reason, str) else reason[order_id]


def _move(
    conn: psycopg.Connection,
    entity: str,
    targets: Mapping[int, tuple],
    *,
    actor: str,
    reasons: Mapping[int, str],
    strict: bool,
) -> None:
    """Move entities to target states, step by step along the shortest path in the table (each step its own
    event). ``targets``: id → (current, target[, {state: at}]) — when each state really happened, for the
    KPI stamps; ``reasons``: id → the events' reason. With ``strict`` an unreachable target raises."""
    paths: dict[int, list[str]] = {}
    when: dict[int, dict[str, datetime | None]] = {}
    for eid, (cur, tgt, *at) in targets.items():
        p = path(entity, cur, tgt)
        if p is None:
            if strict:
                raise IllegalTransition([(entity, eid, cur, tgt)])
            continue
        if p:
            paths[eid] = p
            when[eid] = at[0] if at else {}
    step = 0
    while True:
        changes = [
            Change(eid, p[step], reasons[eid], at=when[eid].get(p[step]))
            for eid, p in sorted(paths.items())
            if step < len(p)
        ]
        if not changes:
            return
        apply_transitions(conn, entity, changes, actor=actor)
        step += 1


def sync_lines(conn: psycopg.Connection, order_ids: Sequence[int], *, actor: str, reason: Reason) -> None:
    """Derive each line's state (inside a transaction): fully shipped → shipped / delivered / returned;
    fully cancelled → cancelled; otherwise the least advanced stage of its active reservations
    (allocated < picked < packed). Only moves allowed by the table are made; allocation states are the
    allocator's. ``reason``: one for all, or order_id → reason.

    Pick stages are read through the orders' picks (``picks.order_id`` index, then the pick lines' primary
    key), never by reservation id alone, which no index serves: the cost follows the orders asked about, not
    the size of the pick history."""
    ids = sorted(set(order_ids))
    rows = conn.execute(
        """WITH st AS (
               SELECT pl.reservation_id, max(CASE pk.state WHEN 'packed' THEN 2 ELSE 1 END) AS stage
               FROM oms.picks pk JOIN oms.pick_lines pl ON pl.pick_id = pk.pick_id
               WHERE pk.order_id = ANY(%(ids)b::int8[]) AND pk.state IN ('picked', 'packed')
               GROUP BY pl.reservation_id),
           r AS (
               SELECT r.line_id, count(*) AS active, min(coalesce(st.stage, 0)) AS min_stage
               FROM oms.reservations r LEFT JOIN st ON st.reservation_id = r.reservation_id
               WHERE r.order_id = ANY(%(ids)b::int8[]) AND r.state = 'active'
               GROUP BY r.line_id),
           d AS (
               SELECT sl.line_id, count(*) FILTER (WHERE s.state NOT IN ('delivered', 'picked_up')) AS undelivered
               FROM oms.shipments s JOIN oms.shipment_lines sl ON sl.shipment_id = s.shipment_id
               WHERE s.order_id = ANY(%(ids)b::int8[]) AND s.state <> 'cancelled'
               GROUP BY sl.line_id)
           SELECT l.line_id, l.order_id, l.state, l.qty - l.qty_shipped - l.qty_cancelled, l.qty_shipped,
                  l.qty_returned, coalesce(r.active, 0), r.min_stage, coalesce(d.undelivered, 0)
           FROM oms.order_lines l
           LEFT JOIN r ON r.line_id = l.line_id
           LEFT JOIN d ON d.line_id = l.line_id
           WHERE l.order_id = ANY(%(ids)b::int8[]) ORDER BY l.line_id""",
        {"ids": ids},
    ).fetchall()
    targets = {}
    reasons = {}
    for line_id, order_id, state, open_qty, shipped, returned, active, min_stage, undelivered in rows:
        if open_qty == 0:
            if shipped == 0:
                target = "cancelled"
            elif returned >= shipped:
                target = "returned"
            elif undelivered == 0:
                target = "delivered"
            else:
                target = "shipped"
        elif active:
            target = STAGE[min_stage]
        else:
            continue
        if target != state and allowed("order_line", state, target):
            targets[line_id] = (state, target)
        elif target != state and target in ("delivered", "returned"):
            # shipped → delivered → returned may need two steps
            p = path("order_line", state, target)
            if p:
                targets[line_id] = (state, target)
        if line_id in targets:
            reasons[line_id] = _reason_for(reason, order_id)
    _move(conn, "order_line", targets, actor=actor, reasons=reasons, strict=False)


def _delivery_state(states: list[str]) -> str:
    s = set(states)
    if s <= {"delivered", "picked_up"}:
        return "picked_up" if s == {"picked_up"} else "delivered"
    if s <= {"delivered", "picked_up", "returned_to_sender"}:
        return "returned_to_sender" if s == {"returned_to_sender"} else "delivered"
    if "not_delivered" in s:
        return "not_delivered"
    if "ready_for_pickup" in s and s <= {"ready_for_pickup", "delivered", "picked_up", "returned_to_sender"}:
        return "ready_for_pickup"
    return "shipped"


def derive_order_state(
    state: str,
    open_qty: int,
    shipped: int,
    active: int,
    unpacked: int,
    open_picks: int,
    shipment_states: list[str],
    after_ship: bool = False,
) -> str | None:
    """Pure rule: the state an order should be in, or None to leave it (allocation states are the allocator's)."""
    if open_qty == 0:
        return "cancelled" if shipped == 0 else _delivery_state(shipment_states)
    if state in PRE_FULFILLMENT_ORDER_STATES and open_picks == 0:
        return None
    if after_ship:
        return "partially_shipped"
    if state == "partially_shipped":
        # stays until everything shipped, unless the rest waits for stock: then the allocator must see it
        return "backordered" if active == 0 and open_picks == 0 else None
    if active == 0 and open_picks == 0:
        return "backordered" if state in ("picking", "packed", "partially_shipped") else None
    if open_picks and unpacked == 0:
        return "packed"
    if open_picks:
        return "picking"
    return None


def sync_orders(
    conn: psycopg.Connection,
    order_ids: Sequence[int],
    *,
    actor: str,
    reason: Reason,
    after_ship: bool = False,
) -> None:
    """Derive and apply each order's state (inside a transaction) with ``derive_order_state``. ``reason``:
    one for all, or order_id → reason. Every figure is read per order set (one aggregate per table over
    ``order_id = ANY``), so a batch of orders costs one statement, not one per order."""
    ids = sorted(set(order_ids))
    for _ in range(2):
        rows = conn.execute(
            """WITH l AS (
                   SELECT order_id, sum(qty - qty_shipped - qty_cancelled)::int AS open,
                          sum(qty_shipped)::int AS shipped
                   FROM oms.order_lines WHERE order_id = ANY(%(ids)b::int8[]) GROUP BY order_id),
               packed AS (
                   SELECT DISTINCT pl.reservation_id
                   FROM oms.picks pk JOIN oms.pick_lines pl ON pl.pick_id = pk.pick_id
                   WHERE pk.order_id = ANY(%(ids)b::int8[]) AND pk.state = 'packed'),
               r AS (
                   SELECT r.order_id, count(*) AS active, count(*) FILTER (WHERE p.reservation_id IS NULL) AS unpacked
                   FROM oms.reservations r LEFT JOIN packed p ON p.reservation_id = r.reservation_id
                   WHERE r.order_id = ANY(%(ids)b::int8[]) AND r.state = 'active' GROUP BY r.order_id),
               p AS (
                   SELECT order_id, count(*) AS open_picks FROM oms.picks
                   WHERE order_id = ANY(%(ids)b::int8[]) AND state IN ('picked', 'packed') GROUP BY order_id),
               s AS (
                   SELECT order_id, array_agg(state ORDER BY shipment_id) AS states,
                          max(coalesce(delivered_at, picked_up_at)) AS delivered, max(picked_up_at) AS picked_up,
                          max(ready_for_pickup_at) AS ready, max(not_delivered_at) AS not_delivered,
                          max(returned_at) AS returned
                   FROM oms.shipments WHERE order_id = ANY(%(ids)b::int8[]) AND state <> 'cancelled'
                   GROUP BY order_id)
               SELECT o.order_id, o.state, coalesce(l.open, 0), coalesce(l.shipped, 0), coalesce(r.active, 0),
                      coalesce(r.unpacked, 0), coalesce(p.open_picks, 0), coalesce(s.states, '{}'),
                      s.delivered, s.picked_up, s.ready, s.not_delivered, s.returned
               FROM oms.orders o
               LEFT JOIN l ON l.order_id = o.order_id
               LEFT JOIN r ON r.order_id = o.order_id
               LEFT JOIN p ON p.order_id = o.order_id
               LEFT JOIN s ON s.order_id = o.order_id
               WHERE o.order_id = ANY(%(ids)b::int8[]) ORDER BY o.order_id""",
            {"ids": ids},
        ).fetchall()
        targets = {}
        for oid, state, open_qty, shipped, active, unpacked, open_picks, ship_states, *times in rows:
            target = derive_order_state(
                state, open_qty, shipped, active, unpacked, open_picks, list(ship_states), after_ship
            )
            if target and target != state:
                # delivery states take the carrier's / store's time (the last delivery of the order)
                at = dict(
                    zip(
                        ("delivered", "picked_up", "ready_for_pickup", "not_delivered", "returned_to_sender"),
                        times,
                        strict=True,
                    )
                )
                targets[oid] = (state, target, at)
        reasons = {oid: _reason_for(reason, oid) for oid in targets}
        _move(conn, "order", targets, actor=actor, reasons=reasons, strict=True)
        if not after_ship:
            return
        after_ship = False


def _lock_order(conn: psycopg.Connection, order_id: int) -> dict:
    cur = conn.cursor(row_factory=psycopg.rows.dict_row)
    row = cur.execute("SELECT * FROM oms.orders WHERE order_id = %s FOR UPDATE", (order_id,)).fetchone()
    if row is None:
        raise NotFound("order", [order_id])
    return row


# --------------------------------------------------------------------------------------------------------
# pick / pack
# --------------------------------------------------------------------------------------------------------
def start_picking(conn: psycopg.Connection, order_ids: Sequence[int], *, actor: str) -> list[int]:
    """Release allocated orders to the floor (pick list printed): allocated / partially_allocated → picking.
    Optional — ``record_pick`` moves the order to picking itself. Refuses the batch on any other state."""

    def run(c):
        ids = sorted(set(order_ids))
        apply_transitions(c, "order", [Change(i, "picking", "pick list released") for i in ids], actor=actor)
        return ids

    return run_in_transaction(conn, run)


@dataclass
class PickResult:
    pick_id: int
    created: bool
    lines: list[tuple[int, int, int]] = field(default_factory=list)  # (line_id, expected, picked)
    short: list[tuple[int, int]] = field(default_factory=list)  # (line_id, short qty)
    backorder_lines: list[int] = field(default_factory=list)
    refunds: list[int] = field(default_factory=list)


def record_pick(
    conn: psycopg.Connection,
    order_id: int,
    location_code: str,
    picked: Mapping[int, int] | None = None,
    *,
    actor: str,
    picker: str | None = None,
    reasons: Mapping[int, str] | None = None,
    short_policy: Literal["backorder", "cancel"] = "backorder",
) -> PickResult:
    """Record the pick of an order at a location (one transaction).

    ``picked`` maps line_id → units found; lines not listed were picked in full (None: everything in full).
    Expected = the order's active reservations at the location not yet in an open pick. Every problem
    (unknown line, over-pick, negative) is reported at once. Re-recording a pick that is already open is a
    no-op returning the existing pick. See the module docstring for short picks.
    """
    if short_policy not in ("backorder", "cancel"):
        raise ValidationFailed(f"short_policy must be 'backorder' or 'cancel', not {short_policy!r}")
    return run_in_transaction(
        conn,
        lambda c: _record_pick(
            c, order_id, location_code, dict(picked or {}), actor, picker, dict(reasons or {}), short_policy
        ),
    )


def _record_pick(conn, order_id, location_code, picked, actor, picker, reasons, short_policy) -> PickResult:
    order = _lock_order(conn, order_id)
    if order["state"] not in PICKABLE_ORDER_STATES:
        raise IllegalTransition([("order", order_id, order["state"], "picking")])
    res_rows = conn.execute(
        """SELECT r.reservation_id, r.line_id, r.sku, r.qty FROM oms.reservations r
           WHERE r.order_id = %(o)s AND r.location_code = %(l)s AND r.state = 'active'
             AND NOT EXISTS (SELECT 1 FROM oms.picks pk JOIN oms.pick_lines pl ON pl.pick_id = pk.pick_id
                             WHERE pk.order_id = %(o)s AND pl.reservation_id = r.reservation_id
                               AND pk.state IN ('picked', 'packed'))
           ORDER BY r.line_id, r.reservation_id FOR UPDATE OF r""",
        {"o": order_id, "l": location_code},
    ).fetchall()
    if not res_rows:
        existing = conn.execute(
            """SELECT pick_id FROM oms.picks WHERE order_id = %s AND location_code = %s
               AND state IN ('picked', 'packed') ORDER BY pick_id DESC LIMIT 1""",
            (order_id, location_code),
        ).fetchone()
        if existing:
            return PickResult(existing[0], created=False)
        raise ValidationFailed(f"order {order_id}: nothing reserved at {location_code} to pick")
    expected: dict[int, int] = defaultdict(int)
    sku_of: dict[int, str] = {}
    for _, line_id, sku, qty in res_rows:
        expected[line_id] += qty
        sku_of[line_id] = sku
    problems = []
    # a pick above what is reserved names the line's SKU, both quantities and the location (InsufficientStock)
    over = []
    for line_id, q in sorted(picked.items()):
        if line_id not in expected:
            problems.append(f"line {line_id}: not reserved at {location_code} for order {order_id}")
        elif isinstance(q, bool) or not isinstance(q, int) or q < 0:
            problems.append(f"line {line_id}: picked quantity must be an integer >= 0, got {q!r}")
        elif q > expected[line_id]:
            args = (sku_of[line_id], q, expected[line_id], location_code, line_id, order_id)
            over.append(Shortfall(*args, action="pick", held="reserved"))
            problems.append(str(over[-1]))
    if over:
        raise InsufficientStock(over, problems)
    if problems:
        raise ValidationFailed(problems)

    # distribute per-line picked quantity over the line's reservations, in reservation order
    left = {lid: picked.get(lid, exp) for lid, exp in expected.items()}
    pl_rows = []
    for reservation_id, line_id, sku, qty in res_rows:
        take = min(qty, left[line_id])
        left[line_id] -= take
        pl_rows.append((reservation_id, line_id, sku, qty, take))
    total_picked = sum(r[4] for r in pl_rows)
    pick_id = conn.execute(
        """INSERT INTO oms.picks (order_id, location_code, state, picker, actor)
           VALUES (%s, %s, %s, %s, %s) RETURNING pick_id""",
        (order_id, location_code, "picked" if total_picked else "cancelled", picker, actor),
    ).fetchone()[0]
    conn.execute(
        """INSERT INTO oms.pick_lines (pick_id, reservation_id, line_id, sku, qty_expected, qty_picked,
                                       discrepancy_reason)
           SELECT %s, r, l, s, e, p, d FROM unnest(%s::int8[], %s::int8[], %s::text[], %s::int4[], %s::int4[],
                                                   %s::text[]) AS t(r, l, s, e, p, d)""",
        (
            pick_id,
            [r[0] for r in pl_rows],
            [r[1] for r in pl_rows],
            [r[2] for r in pl_rows],
            [r[3] for r in pl_rows],
            [r[4] for r in pl_rows],
            [(reasons.get(r[1]) or "short") if r[4] < r[3] else None for r in pl_rows],
        ),
    )
    result = PickResult(
        pick_id,
        created=True,
        lines=[(lid, expected[lid], picked.get(lid, expected[lid])) for lid in sorted(expected)],
    )

    if order["state"] in ("allocated", "partially_allocated"):
        apply_transitions(
            conn, "order", [Change(order_id, "picking", f"picked at {location_code}")], actor=actor
        )

    shorts = [r for r in pl_rows if r[4] < r[3]]
    if shorts:
        _short_pick(conn, order, pick_id, shorts, reasons, short_policy, actor, result)

    _stamp_picked(conn, [order_id])
    sync_lines(conn, [order_id], actor=actor, reason=f"pick {pick_id}")
    sync_orders(conn, [order_id], actor=actor, reason=f"pick {pick_id}")
    return result


def _stamp_picked(conn: psycopg.Connection, order_ids: Sequence[int]) -> None:
    """Stamp ``picked_at`` (first time only) on the orders whose every active reservation is in an open pick."""
    conn.execute(
        """UPDATE oms.orders o SET picked_at = COALESCE(o.picked_at, now()) WHERE o.order_id = ANY(%b::int8[])
           AND NOT EXISTS (SELECT 1 FROM oms.reservations r WHERE r.order_id = o.order_id AND r.state = 'active'
                           AND NOT EXISTS (SELECT 1 FROM oms.picks pk JOIN oms.pick_lines pl ON pl.pick_id = pk.pick_id
                                           WHERE pk.order_id = o.order_id AND pl.reservation_id = r.reservation_id
                                             AND pk.state IN ('picked', 'packed')))""",
        (sorted(set(order_ids)),),
    )


def _short_pick(conn, order, pick_id, shorts, reasons, short_policy, actor, result) -> None:
    order_id = order["order_id"]
    short_by_line: dict[int, int] = defaultdict(int)
    for _, line_id, _, qty, took in shorts:
        short_by_line[line_id] += qty - took
    # the reservations shrink to what was picked (or close when nothing was); the missing units leave
    # on_hand and reserved together (ledger 'pick'), so Σ active reservations keeps following stock.reserved
    release_quantities(
        conn,
        reservation_qty=[(rid, qty - took) for rid, _, _, qty, took in shorts],
        actor=actor,
        reason="short pick",
        missing=True,
        reference=f"pick:{pick_id}",
        reasons={rid: reasons[lid] for rid, lid, *_ in shorts if reasons.get(lid)},
    )
    lines = sorted(short_by_line)
    conn.execute(
        """UPDATE oms.order_lines l SET qty_cancelled = l.qty_cancelled + t.s, updated_at = now()
           FROM unnest(%s::int8[], %s::int4[]) AS t(id, s) WHERE l.line_id = t.id""",
        (lines, [short_by_line[lid] for lid in lines]),
    )
    result.short = [(lid, short_by_line[lid]) for lid in lines]
    if short_policy == "backorder":
        rows = conn.execute(
            """INSERT INTO oms.order_lines (order_id, line_no, sku, qty, unit_price, name, state, split_from_line_id)
               SELECT l.order_id, m.max_no + row_number() OVER (ORDER BY l.line_id), l.sku, t.s, l.unit_price,
                      l.name, 'backordered', l.line_id
               FROM unnest(%s::int8[], %s::int4[]) AS t(id, s)
               JOIN oms.order_lines l ON l.line_id = t.id
               CROSS JOIN (SELECT max(line_no) AS max_no FROM oms.order_lines WHERE order_id = %s) m
               RETURNING line_id, split_from_line_id""",
            (lines, [short_by_line[lid] for lid in lines], order_id),
        ).fetchall()
        result.backorder_lines = sorted(r[0] for r in rows)
        record_creations(
            conn,
            "order_line",
            [(order_id, r[0], "backordered") for r in rows],
            actor=actor,
            reason=f"short pick {pick_id}: remainder backordered",
            data=[{"split_from_line_id": r[1]} for r in rows],
        )
    elif order["payment_status"] in ("paid", "partially_refunded"):
        from oms_ops.payments import request_refund

        value = conn.execute(
            """SELECT sum(t.s * l.unit_price) FROM unnest(%s::int8[], %s::int4[]) AS t(id, s)
               JOIN oms.order_lines l ON l.line_id = t.id""",
            (lines, [short_by_line[lid] for lid in lines]),
        ).fetchone()[0]
        if value and value > 0:
            result.refunds.append(
                request_refund(
                    conn,
                    order_id=order_id,
                    amount=value,
                    actor=actor,
                    reason=f"short pick {pick_id}",
                    idempotency_key=f"refund:short:{pick_id}",
                )
            )


def pack(
    conn: psycopg.Connection, order_id: int, location_code: str, *, actor: str, packages: int = 1
) -> list[int]:
    """Pack what was picked for the order at the location (picks picked → packed). Idempotent: packing an
    already packed order returns its packed picks. Returns the pick ids."""
    if packages < 1:
        raise ValidationFailed("packages must be >= 1")

    def run(c):
        _lock_order(c, order_id)
        rows = c.execute(
            """UPDATE oms.picks SET state = 'packed', packed_at = now(), packages = %s
               WHERE order_id = %s AND location_code = %s AND state = 'picked' RETURNING pick_id""",
            (packages, order_id, location_code),
        ).fetchall()
        if not rows:
            packed = c.execute(
                "SELECT pick_id FROM oms.picks WHERE order_id = %s AND location_code = %s AND state = 'packed'",
                (order_id, location_code),
            ).fetchall()
            if packed:
                return sorted(r[0] for r in packed)
            raise ValidationFailed(f"order {order_id}: nothing picked at {location_code} to pack")
        sync_lines(c, [order_id], actor=actor, reason="packed")
        sync_orders(c, [order_id], actor=actor, reason="packed")
        return sorted(r[0] for r in rows)

    return run_in_transaction(conn, run)


# --------------------------------------------------------------------------------------------------------
# shipments
# --------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ShipmentResult:
    shipment_id: int
    shipment_number: str
    created: bool
    lines: tuple[tuple[int, int], ...] = ()  # (line_id, qty)


def create_shipment(
    conn: psycopg.Connection,
    order_id: int,
    location_code: str,
    *,
    carrier_code: str,
    actor: str,
    service_code: str | None = None,
    weight_g: int | None = None,
) -> ShipmentResult:
    """Ship what is packed for the order at the location (one transaction).

    Creates the shipment and its lines, consumes the reservations through ``consume_reservations``
    (on_hand and reserved go down, ledger 'ship'), raises qty_shipped, and writes the outbox effects in the
    same transaction: 'carrier.create_shipment' (key ``carrier.create_shipment:<shipment_number>``; not for
    carrier 'self', a store handing over its own stock) and 'channel.order_status'. Repeating the call
    after success returns the existing shipment (created=False).
    """
    return run_in_transaction(
        conn,
        lambda c: _create_shipment(c, order_id, location_code, carrier_code, actor, service_code, weight_g),
    )


def _create_shipment(
    conn, order_id, location_code, carrier_code, actor, service_code, weight_g
) -> ShipmentResult:
    order = _lock_order(conn, order_id)
    picks = conn.execute(
        """SELECT pick_id, coalesce(packages, 1) FROM oms.picks
           WHERE order_id = %s AND location_code = %s AND state = 'packed' ORDER BY pick_id FOR UPDATE""",
        (order_id, location_code),
    ).fetchall()
    if not picks:
        prev = conn.execute(
            """SELECT s.shipment_id, s.shipment_number FROM oms.picks p JOIN oms.shipments s USING (shipment_id)
               WHERE p.order_id = %s AND p.location_code = %s AND p.state = 'shipped'
               ORDER BY s.shipment_id DESC LIMIT 1""",
            (order_id, location_code),
        ).fetchone()
        if prev:
            return ShipmentResult(prev[0], prev[1], created=False)
        raise ValidationFailed(f"order {order_id}: nothing packed at {location_code} to ship")
    pick_ids = [p[0] for p in picks]
    line_rows = conn.execute(
        """SELECT pl.line_id, pl.sku, sum(pl.qty_picked)::int, coalesce(max(pr.weight_g), 0)
           FROM oms.pick_lines pl LEFT JOIN oms.products pr ON pr.sku = pl.sku
           WHERE pl.pick_id = ANY(%s) AND pl.qty_picked > 0
           GROUP BY pl.line_id, pl.sku ORDER BY pl.line_id""",
        (pick_ids,),
    ).fetchall()
    if weight_g is None:
        weight_g = sum(q * w for _, _, q, w in line_rows)
    sh_id, sh_number = conn.execute(
        """INSERT INTO oms.shipments (order_id, location_code, carrier_code, service_code, delivery_method,
                                      pickup_location_code, packages, weight_g, promised_at)
           VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING shipment_id, shipment_number""",
        (
            order_id,
            location_code,
            carrier_code,
            service_code,
            order["delivery_method"],
            order["pickup_location_code"],
            sum(p[1] for p in picks),
            weight_g,
            order["latest_promised_at"] or order["promised_at"],
        ),
    ).fetchone()
    conn.execute(
        """INSERT INTO oms.shipment_lines (shipment_id, line_id, sku, qty)
           SELECT %s, l, s, q FROM unnest(%s::int8[], %s::text[], %s::int4[]) AS t(l, s, q)""",
        (sh_id, [r[0] for r in line_rows], [r[1] for r in line_rows], [r[2] for r in line_rows]),
    )
    from oms_ops.reservations import consume_reservations

    consume_reservations(
        conn,
        line_qty=[(r[0], location_code, r[2]) for r in line_rows],
        actor=actor,
        reason=f"shipment {sh_number}",
    )
    conn.execute(
        """UPDATE oms.order_lines l SET qty_shipped = l.qty_shipped + t.q, updated_at = now()
           FROM unnest(%s::int8[], %s::int4[]) AS t(id, q) WHERE l.line_id = t.id""",
        ([r[0] for r in line_rows], [r[2] for r in line_rows]),
    )
    conn.execute(
        "UPDATE oms.picks SET state = 'shipped', shipment_id = %s WHERE pick_id = ANY(%s)", (sh_id, pick_ids)
    )
    record_creations(
        conn,
        "shipment",
        [(order_id, sh_id, "created")],
        actor=actor,
        reason=f"shipped from {location_code}",
        data=[{"carrier_code": carrier_code}],
    )
    effects = _shipment_effects(
        order,
        sh_id,
        sh_number,
        location_code,
        carrier_code,
        service_code,
        weight_g,
        sum(p[1] for p in picks),
        [(r[0], r[1], r[2]) for r in line_rows],
    )
    enqueue_many(conn, effects)
    sync_lines(conn, [order_id], actor=actor, reason=f"shipment {sh_number}")
    sync_orders(conn, [order_id], actor=actor, reason=f"shipment {sh_number}", after_ship=True)
    return ShipmentResult(sh_id, sh_number, True, tuple((r[0], r[2]) for r in line_rows))


def _shipment_effects(
    order: Mapping,
    shipment_id: int,
    shipment_number: str,
    location_code: str,
    carrier_code: str,
    service_code: str | None,
    weight_g: int,
    packages: int,
    lines: Sequence[tuple[int, str, int]],
) -> list[tuple[str, dict, str]]:
    """The outbox rows of a new shipment: the channel learns the order shipped ('channel.order_status') and,
    unless the location hands over itself (carrier 'self'), the carrier gets a booking
    ('carrier.create_shipment', key ``carrier.create_shipment:<shipment_number>``). ``lines``: (line_id, sku,
    qty). One builder for the single and the set-based path, so both write the same payloads."""
    order_id = order["order_id"]
    items = [{"line_id": lid, "sku": sku, "qty": q} for lid, sku, q in lines]
    effects = [
        (
            "channel.order_status",
            {
                "order_id": order_id,
                "order_number": order["order_number"],
                "channel_code": order["channel_code"],
                "external_id": order["external_id"],
                "status": "shipped",
                "shipment_number": shipment_number,
                "items": items,
            },
            f"channel.order_status:{order_id}:shipment:{shipment_id}",
        )
    ]
    if carrier_code != SELF_CARRIER:
        effects.append(
            (
                "carrier.create_shipment",
                {
                    "shipment_id": shipment_id,
                    "shipment_number": shipment_number,
                    "carrier_code": carrier_code,
                    "service_code": service_code,
                    "order_id": order_id,
                    "order_number": order["order_number"],
                    "from_location_code": location_code,
                    "delivery_method": order["delivery_method"],
                    "pickup_location_code": order["pickup_location_code"],
                    "recipient": {
                        "name": order["customer_name"],
                        "phone": order["customer_phone"],
                        "email": order["customer_email"],
                    },
                    "to": {
                        "region": order["region"],
                        "city": order["city"],
                        "address": order["address"],
                        "lat": order["lat"],
                        "lon": order["lon"],
                    },
                    "cod_amount": order["total_amount"] if order["payment_method"] == "cod" else Decimal("0"),
                    "weight_g": weight_g,
                    "packages": packages,
                    "items": items,
                },
                f"carrier.create_shipment:{shipment_number}",
            )
        )
    return effects


def record_carrier_booking(
    conn: psycopg.Connection,
    shipment_id: int,
    *,
    actor: str,
    carrier_shipment_id: str | None = None,
    tracking_number: str | None = None,
) -> None:
    """Store what the carrier returned for the booking (its id, tracking number). Idempotent; a different
    tracking number for a shipment that already has one is refused (ValidationFailed)."""

    def run(c):
        row = c.execute(
            "SELECT tracking_number FROM oms.shipments WHERE shipment_id = %s FOR UPDATE", (shipment_id,)
        ).fetchone()
        if row is None:
            raise NotFound("shipment", [shipment_id])
        if tracking_number and row[0] and row[0] != tracking_number:
            raise ValidationFailed(f"shipment {shipment_id} already has tracking number {row[0]}")
        c.execute(
            """UPDATE oms.shipments SET carrier_shipment_id = COALESCE(%s, carrier_shipment_id),
                      tracking_number = COALESCE(%s, tracking_number), updated_at = now()
               WHERE shipment_id = %s""",
            (carrier_shipment_id, tracking_number, shipment_id),
        )

    run_in_transaction(conn, run)


def _shipment_orders(conn: psycopg.Connection, shipment_ids: Sequence[int]) -> dict[int, int]:
    rows = conn.execute(
        "SELECT shipment_id, order_id FROM oms.shipments WHERE shipment_id = ANY(%s)", (list(shipment_ids),)
    ).fetchall()
    found = dict(rows)
    missing = [s for s in shipment_ids if s not in found]
    if missing:
        raise NotFound("shipment", missing)
    return found


def _lock_orders_of(conn, order_ids) -> None:
    conn.execute(
        "SELECT order_id FROM oms.orders WHERE order_id = ANY(%s) ORDER BY order_id FOR UPDATE",
        (sorted(set(order_ids)),),
    )


def move_shipments(
    conn: psycopg.Connection,
    shipment_ids: Sequence[int],
    to_state: str,
    *,
    actor: str,
    reason: str | None = None,
    at: datetime | None = None,
) -> list[tuple[int, str, str]]:
    """Move shipments to a state (one transaction) and derive their lines and orders: label_printed,
    handed_over, in_transit, ready_for_pickup, delivered, picked_up, not_delivered. ``at`` is when it
    happened (stamps the KPI columns). Any illegal move refuses the batch. Use ``return_to_sender`` for RTS."""
    if to_state == "returned_to_sender":
        raise ValidationFailed("use return_to_sender(): it needs a restock decision")

    return run_in_transaction(conn, lambda c: _move_shipments(c, shipment_ids, to_state, actor, reason, at))


def _move_shipments(conn, shipment_ids, to_state, actor, reason, at) -> list[tuple[int, str, str]]:
    orders = _shipment_orders(conn, shipment_ids)
    _lock_orders_of(conn, orders.values())
    done = apply_transitions(
        conn,
        "shipment",
        [Change(s, to_state, reason, at=at) for s in sorted(set(shipment_ids))],
        actor=actor,
    )
    oids = sorted(set(orders.values()))
    sync_lines(conn, oids, actor=actor, reason=reason or f"shipment {to_state}")
    sync_orders(conn, oids, actor=actor, reason=reason or f"shipment {to_state}")
    return done


def mark_label_printed(conn, shipment_ids: Sequence[int], *, actor: str, at: datetime | None = None):
    """created → label_printed."""
    return move_shipments(conn, shipment_ids, "label_printed", actor=actor, at=at)


def hand_over(conn, shipment_ids: Sequence[int], *, actor: str, at: datetime | None = None):
    """Handed to the carrier (created / label_printed → handed_over)."""
    return move_shipments(conn, shipment_ids, "handed_over", actor=actor, at=at)


def mark_delivered(conn, shipment_ids: Sequence[int], *, actor: str, at: datetime | None = None):
    """Delivered to the customer (lines → delivered; the order → delivered when all its shipments are)."""
    return move_shipments(conn, shipment_ids, "delivered", actor=actor, at=at)


def mark_ready_for_pickup(conn, shipment_ids: Sequence[int], *, actor: str, at: datetime | None = None):
    """Waiting at the store / pickup point."""
    return move_shipments(conn, shipment_ids, "ready_for_pickup", actor=actor, at=at)


def mark_picked_up(conn, shipment_ids: Sequence[int], *, actor: str, at: datetime | None = None):
    """Collected by the customer at the store / pickup point."""
    return move_shipments(conn, shipment_ids, "picked_up", actor=actor, at=at)


def mark_not_delivered(
    conn, shipment_ids: Sequence[int], *, reason: str, actor: str, at: datetime | None = None
):
    """Delivery attempt failed / not collected (a later attempt may still deliver)."""
    return move_shipments(conn, shipment_ids, "not_delivered", actor=actor, reason=reason, at=at)


def return_to_sender(
    conn: psycopg.Connection,
    shipment_id: int,
    *,
    restock: bool,
    actor: str,
    reason: str = "returned to sender",
    at: datetime | None = None,
) -> list[tuple[str, int]]:
    """The parcel came back (one transaction): shipment → returned_to_sender, lines' qty_returned += qty.
    Restock decision: ``restock=True`` puts the units back on the shelf of the shipping location (ledger
    'return_restock'); False writes them off (they were never back in stock, so no ledger entry — the
    disposition is recorded on the shipment). Returns the restocked (sku, qty)."""

    def run(c):
        orders = _shipment_orders(c, [shipment_id])
        _lock_orders_of(c, orders.values())
        apply_transitions(
            c, "shipment", [Change(shipment_id, "returned_to_sender", reason, at=at)], actor=actor
        )
        loc, number = c.execute(
            "SELECT location_code, shipment_number FROM oms.shipments WHERE shipment_id = %s", (shipment_id,)
        ).fetchone()
        lines = c.execute(
            "SELECT line_id, sku, qty FROM oms.shipment_lines WHERE shipment_id = %s ORDER BY line_id",
            (shipment_id,),
        ).fetchall()
        c.execute(
            "UPDATE oms.shipments SET rts_disposition = %s WHERE shipment_id = %s",
            ("restock" if restock else "write_off", shipment_id),
        )
        c.execute(
            """UPDATE oms.order_lines l SET qty_returned = l.qty_returned + t.q, updated_at = now()
               FROM unnest(%s::int8[], %s::int4[]) AS t(id, q) WHERE l.line_id = t.id""",
            ([r[0] for r in lines], [r[2] for r in lines]),
        )
        restocked = []
        if restock:
            apply_movements(
                c,
                [
                    Movement(
                        loc,
                        sku,
                        "return_restock",
                        q,
                        order_id=orders[shipment_id],
                        line_id=lid,
                        reference=number,
                        reason=reason,
                    )
                    for lid, sku, q in lines
                ],
                actor=actor,
            )
            restocked = [(sku, q) for _, sku, q in lines]
        oid = orders[shipment_id]
        sync_lines(c, [oid], actor=actor, reason=reason)
        sync_orders(c, [oid], actor=actor, reason=reason)
        return restocked

    return run_in_transaction(conn, run)


# --------------------------------------------------------------------------------------------------------
# set-based: pick in full, pack and ship many (order, location) pairs in one transaction
# --------------------------------------------------------------------------------------------------------
#: Carrier of a location the allocation decision gives none for (and that does not hand over itself).
DEFAULT_CARRIER = "cdek"
_LOCK_ORDERS = "SELECT * FROM oms.orders WHERE order_id = ANY(%b::int8[]) ORDER BY order_id FOR UPDATE"
_LOCK_ORDERS_SKIP = (
    "SELECT * FROM oms.orders WHERE order_id = ANY(%b::int8[]) ORDER BY order_id FOR UPDATE SKIP LOCKED"
)


@dataclass(frozen=True)
class ShippingPlan:
    """How the allocation decided a location ships its part of an order."""

    carrier_code: str
    service_code: str | None  # the carrier's tariff
    handover: bool  # the location hands the goods to the customer itself (carrier 'self')


#: A location the decision has no plan for ships with the default carrier.
NO_PLAN = ShippingPlan(DEFAULT_CARRIER, None, False)


def shipping_plans(conn: psycopg.Connection, order_ids: Sequence[int]) -> dict[tuple[int, str], ShippingPlan]:
    """Carrier, tariff and handover per (order, location) from each order's latest allocation decision — one
    statement for a whole batch (DISTINCT ON over the ``(order_id, decision_id DESC)`` index). A location
    that hands over ships with carrier 'self'; one without a carrier with ``DEFAULT_CARRIER``."""
    rows = conn.execute(
        """SELECT DISTINCT ON (order_id) order_id, shipments FROM oms.allocation_decisions
           WHERE order_id = ANY(%b::int8[]) ORDER BY order_id, decision_id DESC""",
        (sorted(set(order_ids)),),
    ).fetchall()
    plans: dict[tuple[int, str], ShippingPlan] = {}
    for order_id, shipments in rows:
        for s in shipments or []:
            key = (order_id, s.get("location"))
            if key in plans:
                continue  # the first plan of a location counts
            handover = bool(s.get("handover"))
            carrier = SELF_CARRIER if handover else (s.get("carrier") or DEFAULT_CARRIER)
            plans[key] = ShippingPlan(carrier, s.get("tariff"), handover)
    return plans


@dataclass(frozen=True)
class ShipRequest:
    """Ship everything reserved for an order at a location: picked in full, packed as one parcel.
    ``carrier_code`` None: carrier and tariff as the allocation decided (``shipping_plans``)."""

    order_id: int
    location_code: str
    carrier_code: str | None = None
    service_code: str | None = None


@dataclass
class BulkShipResult:
    #: shipments created, by (order_id, location_code)
    shipments: dict[tuple[int, str], ShipmentResult] = field(default_factory=dict)
    #: pairs with nothing left to pick that shipped before: their latest shipment (created=False)
    already_shipped: dict[tuple[int, str], ShipmentResult] = field(default_factory=dict)
    #: shipments the location hands over itself, now waiting there (ready_for_pickup)
    ready_for_pickup: list[int] = field(default_factory=list)
    #: … and those collected at once (instant-handover channels: the customer left with the goods)
    picked_up: list[int] = field(default_factory=list)
    #: (order_id, location_code, reason) of pairs that cannot ship
    skipped: list[tuple[int, str, str]] = field(default_factory=list)
    #: orders locked by another operation (``skip_locked``): left for the next run
    deferred: list[int] = field(default_factory=list)


@dataclass
class _Pair:
    """One (order, location) of a batch on its way: what is picked now, what is in open picks, what ships."""

    order: dict
    location: str
    carrier: str
    service: str | None
    #: active reservations in no open pick: (reservation_id, order_id, line_id, location, sku, qty)
    new: list[tuple]
    opened: dict[int, tuple]  # open pick id → (state, packages, [(line_id, sku, qty_picked)])
    lines: list[tuple[int, str, int]]  # what ships: (line_id, sku, qty) in line order
    pick_id: int | None = None
    shipment: ShipmentResult | None = None

    @property
    def order_id(self) -> int:
        return self.order["order_id"]


def ship_in_full(
    conn: psycopg.Connection,
    requests: Sequence[ShipRequest],
    *,
    actor: str,
    instant_handover_channels: Collection[str] = (),
    skip_locked: bool = False,
) -> BulkShipResult:
    """Pick in full, pack and ship many (order, location) pairs in ONE transaction.

    The rows written are those of ``record_pick`` (everything found) → ``pack`` (one parcel) →
    ``create_shipment`` run pair by pair — picks, pick lines, shipments, shipment lines, ledger 'ship' entries,
    reservation, line and order states, events, outbox payloads — with one statement per kind and round
    instead of three transactions and dozens of statements per pair. A shipment with carrier 'self' (the location hands over itself) is then marked
    ready_for_pickup, and picked_up too when the order's channel is in ``instant_handover_channels``.

    Locks: the orders by id (``skip_locked``: orders held by another operation are left out and reported in
    ``deferred``), their reservations and open picks, then every stock row the batch ships from in
    (location, sku) order before anything is written. Each pair is checked before anything is written: an
    order no longer pickable, nothing reserved at the location, or an open pick whose reservation is gone
    puts the pair in ``skipped`` with its reason and the rest ships. A pair that shipped before and has
    nothing left is returned in ``already_shipped`` (re-running a batch ships nothing twice).
    """
    unique: dict[tuple[int, str], ShipRequest] = {}
    for r in requests:
        unique.setdefault((r.order_id, r.location_code), r)
    return run_in_transaction(
        conn,
        lambda c: _ship_in_full(
            c, list(unique.values()), actor, frozenset(instant_handover_channels), skip_locked
        ),
    )


def _ship_in_full(
    conn: psycopg.Connection,
    requests: list[ShipRequest],
    actor: str,
    instant: frozenset[str],
    skip_locked: bool,
) -> BulkShipResult:
    result = BulkShipResult()
    ids = sorted({r.order_id for r in requests})
    if not ids:
        return result
    cur = conn.cursor(row_factory=dict_row)
    orders = {
        o["order_id"]: o for o in cur.execute(_LOCK_ORDERS_SKIP if skip_locked else _LOCK_ORDERS, (ids,))
    }
    absent = [i for i in ids if i not in orders]
    locked: set[int] = set()
    if absent:
        locked = {
            r[0]
            for r in conn.execute(
                "SELECT order_id FROM oms.orders WHERE order_id = ANY(%b::int8[])", (absent,)
            )
        }
        result.deferred = sorted(locked)
    live, idle = [], []
    for r in requests:
        order = orders.get(r.order_id)
        if order is None:
            if r.order_id not in locked:
                result.skipped.append((r.order_id, r.location_code, "order not found"))
        elif order["state"] not in PICKABLE_ORDER_STATES:
            idle.append(r)
        else:
            live.append(r)
    pairs = _plan_pairs(conn, live, orders, result, idle) if live else []
    if idle:
        _settle_idle(conn, idle, orders, result)
    if not pairs:
        return result
    # every stock row the batch ships from, in the one global order, before any of them is written
    lock_stock(conn, {(p.location, sku) for p in pairs for _, sku, _ in p.lines}, create=False)
    skus = sorted({sku for p in pairs for _, sku, _ in p.lines})
    weights = dict(
        conn.execute("SELECT sku, weight_g FROM oms.products WHERE sku = ANY(%b::text[])", (skus,)).fetchall()
    )
    # an order split over locations ships location by location: round n holds the n-th location of each
    # order, so every order sees exactly the state sequence the pair-by-pair operations produce
    rounds: dict[int, list[_Pair]] = defaultdict(list)
    seen: dict[int, int] = defaultdict(int)
    for p in pairs:
        rounds[seen[p.order_id]].append(p)
        seen[p.order_id] += 1
    for n in sorted(rounds):
        batch = rounds[n]
        _pick_in_full(conn, batch, actor)
        _pack_picked(conn, batch, actor)
        _ship_packed(conn, batch, weights, actor)
        _hand_over_own(conn, batch, instant, actor, result)
    result.shipments = {(p.order_id, p.location): p.shipment for p in pairs}
    return result


def _plan_pairs(
    conn, requests: list[ShipRequest], orders: dict, result: BulkShipResult, idle: list[ShipRequest]
) -> list[_Pair]:
    """Read (and lock) the reservations and open picks of the requested orders and decide, per pair, what
    is picked now and what ships. Pairs with nothing to pick go to ``idle``, pairs that cannot ship to
    ``result.skipped``."""
    oids = sorted({r.order_id for r in requests})
    reservations = conn.execute(
        """SELECT reservation_id, order_id, line_id, location_code, sku, qty FROM oms.reservations
           WHERE order_id = ANY(%b::int8[]) AND state = 'active' ORDER BY line_id, reservation_id FOR UPDATE""",
        (oids,),
    ).fetchall()
    pick_rows = conn.execute(
        """SELECT pk.pick_id, pk.order_id, pk.location_code, pk.state, coalesce(pk.packages, 1),
                  pl.reservation_id, pl.line_id, pl.sku, pl.qty_picked
           FROM oms.picks pk JOIN oms.pick_lines pl ON pl.pick_id = pk.pick_id
           WHERE pk.order_id = ANY(%b::int8[]) AND pk.state IN ('picked', 'packed')
           ORDER BY pk.pick_id, pl.line_id FOR UPDATE OF pk""",
        (oids,),
    ).fetchall()
    in_open_pick = {r[5] for r in pick_rows}
    active: dict[tuple[int, str], list[tuple]] = defaultdict(list)
    held: dict[tuple[int, str], int] = defaultdict(int)
    for row in reservations:
        active[(row[1], row[3])].append(row)
        held[(row[2], row[3])] += row[5]
    opened: dict[tuple[int, str], dict[int, tuple]] = defaultdict(dict)
    for pick_id, oid, loc, state, packages, _, line_id, sku, qty in pick_rows:
        opened[(oid, loc)].setdefault(pick_id, (state, packages, []))[2].append((line_id, sku, qty))
    plans = shipping_plans(conn, [r.order_id for r in requests if r.carrier_code is None])
    pairs: list[_Pair] = []
    for r in requests:
        key = (r.order_id, r.location_code)
        new = [row for row in active.get(key, ()) if row[0] not in in_open_pick]
        picks = opened.get(key, {})
        if not new and not picks:
            idle.append(r)
            continue
        qty: dict[int, int] = defaultdict(int)
        sku_of: dict[int, str] = {}
        for _, _, plines in picks.values():
            for line_id, sku, q in plines:
                if q > 0:
                    qty[line_id] += q
                    sku_of[line_id] = sku
        for _, _, line_id, _, sku, q in new:
            qty[line_id] += q
            sku_of[line_id] = sku
        short = [
            str(Shortfall(sku_of[lid], q, have, r.location_code, lid, r.order_id, "ship", "reserved"))
            for lid, q in sorted(qty.items())
            if q > (have := held.get((lid, r.location_code), 0))
        ]
        if short or not qty:
            result.skipped.append((*key, "; ".join(short) or f"nothing picked at {r.location_code} to ship"))
            continue
        if r.carrier_code is None:
            plan = plans.get(key, NO_PLAN)
            carrier, service = plan.carrier_code, plan.service_code
        else:
            carrier, service = r.carrier_code, r.service_code
        lines = [(lid, sku_of[lid], q) for lid, q in sorted(qty.items())]
        pairs.append(_Pair(orders[r.order_id], r.location_code, carrier, service, new, picks, lines))
    return pairs


def _settle_idle(conn, idle: list[ShipRequest], orders: dict, result: BulkShipResult) -> None:
    """Pairs with nothing to pick: a pair that shipped before is done (its latest shipment goes to
    ``already_shipped``, so re-running a batch is quiet); any other is skipped with the reason."""
    last = {
        (oid, loc): (sid, number)
        for oid, loc, sid, number in conn.execute(
            """SELECT DISTINCT ON (p.order_id, p.location_code) p.order_id, p.location_code, s.shipment_id,
                      s.shipment_number
               FROM oms.picks p JOIN oms.shipments s ON s.shipment_id = p.shipment_id
               WHERE p.order_id = ANY(%b::int8[]) AND p.state = 'shipped'
               ORDER BY p.order_id, p.location_code, s.shipment_id DESC""",
            (sorted({r.order_id for r in idle}),),
        )
    }
    for r in idle:
        key = (r.order_id, r.location_code)
        state = orders[r.order_id]["state"]
        if key in last:
            result.already_shipped[key] = ShipmentResult(*last[key], created=False)
        elif state not in PICKABLE_ORDER_STATES:
            result.skipped.append((*key, f"order is {state}: nothing to pick"))
        else:
            result.skipped.append((*key, f"nothing reserved at {r.location_code} to pick"))


def _pick_in_full(conn: psycopg.Connection, batch: list[_Pair], actor: str) -> None:
    """``record_pick`` with everything found, for every pair of a round (one order appears once)."""
    todo = [p for p in batch if p.new]
    if not todo:
        return
    rows = conn.execute(
        """INSERT INTO oms.picks (order_id, location_code, state, actor)
           SELECT t.o, t.l, 'picked', %s FROM unnest(%b::int8[], %b::text[]) WITH ORDINALITY AS t(o, l, n)
           ORDER BY t.n
           RETURNING pick_id, order_id""",
        (actor, [p.order_id for p in todo], [p.location for p in todo]),
    ).fetchall()
    pick_of = {oid: pid for pid, oid in rows}
    for p in todo:
        p.pick_id = pick_of[p.order_id]
    lines = [(p.pick_id, rid, lid, sku, q) for p in todo for rid, _, lid, _, sku, q in p.new]
    conn.execute(
        """INSERT INTO oms.pick_lines (pick_id, reservation_id, line_id, sku, qty_expected, qty_picked)
           SELECT p, r, l, s, q, q
           FROM unnest(%b::int8[], %b::int8[], %b::int8[], %b::text[], %b::int4[]) AS t(p, r, l, s, q)""",
        [list(col) for col in zip(*lines, strict=True)],
    )
    oids = [p.order_id for p in todo]
    states = dict(
        conn.execute(
            "SELECT order_id, state FROM oms.orders WHERE order_id = ANY(%b::int8[])", (oids,)
        ).fetchall()
    )
    apply_transitions(
        conn,
        "order",
        [
            Change(p.order_id, "picking", f"picked at {p.location}")
            for p in todo
            if states[p.order_id] in ("allocated", "partially_allocated")
        ],
        actor=actor,
    )
    _stamp_picked(conn, oids)
    reasons = {p.order_id: f"pick {p.pick_id}" for p in todo}
    sync_lines(conn, oids, actor=actor, reason=reasons)
    sync_orders(conn, oids, actor=actor, reason=reasons)


def _pack_picked(conn: psycopg.Connection, batch: list[_Pair], actor: str) -> None:
    """``pack`` (one parcel per pick) for every pair of a round."""
    packed = conn.execute(
        """UPDATE oms.picks pk SET state = 'packed', packed_at = now(), packages = 1
           FROM unnest(%b::int8[], %b::text[]) AS t(o, l)
           WHERE pk.order_id = t.o AND pk.location_code = t.l AND pk.state = 'picked'
           RETURNING pk.order_id""",
        ([p.order_id for p in batch], [p.location for p in batch]),
    ).fetchall()
    oids = sorted({r[0] for r in packed})
    if oids:
        sync_lines(conn, oids, actor=actor, reason="packed")
        sync_orders(conn, oids, actor=actor, reason="packed")


def _ship_packed(conn: psycopg.Connection, batch: list[_Pair], weights: Mapping[str, int | None], actor: str):
    """``create_shipment`` for every pair of a round: shipments, lines, consumed reservations, shipped
    quantities, picks → shipped, creation events, outbox, derived states."""
    packages = {
        p.order_id: sum(1 if st == "picked" else n for st, n, _ in p.opened.values())
        + (1 if p.pick_id else 0)
        for p in batch
    }
    weight = {p.order_id: sum(q * (weights.get(sku) or 0) for _, sku, q in p.lines) for p in batch}
    rows = conn.execute(
        """INSERT INTO oms.shipments (order_id, location_code, carrier_code, service_code, delivery_method,
                                      pickup_location_code, packages, weight_g, promised_at)
           SELECT t.o, t.l, t.c, t.sc, t.dm, t.pl, t.pk, t.w, t.pa
           FROM unnest(%b::int8[], %b::text[], %b::text[], %b::text[], %b::text[], %b::text[], %b::int4[],
                       %b::int4[], %b::timestamptz[]) WITH ORDINALITY AS t(o, l, c, sc, dm, pl, pk, w, pa, n)
           ORDER BY t.n
           RETURNING shipment_id, shipment_number, order_id""",
        (
            [p.order_id for p in batch],
            [p.location for p in batch],
            [p.carrier for p in batch],
            [p.service for p in batch],
            [p.order["delivery_method"] for p in batch],
            [p.order["pickup_location_code"] for p in batch],
            [packages[p.order_id] for p in batch],
            [weight[p.order_id] for p in batch],
            [p.order["latest_promised_at"] or p.order["promised_at"] for p in batch],
        ),
    ).fetchall()
    created = {oid: (sid, number) for sid, number, oid in rows}
    for p in batch:
        sid, number = created[p.order_id]
        p.shipment = ShipmentResult(sid, number, True, tuple((lid, q) for lid, _, q in p.lines))
    lines = [(p.shipment.shipment_id, lid, sku, q) for p in batch for lid, sku, q in p.lines]
    conn.execute(
        """INSERT INTO oms.shipment_lines (shipment_id, line_id, sku, qty)
           SELECT * FROM unnest(%b::int8[], %b::int8[], %b::text[], %b::int4[])""",
        [list(col) for col in zip(*lines, strict=True)],
    )
    consume_reservations_bulk(
        conn,
        line_qty=[
            (lid, p.location, q, f"shipment {p.shipment.shipment_number}")
            for p in batch
            for lid, _, q in p.lines
        ],
        actor=actor,
    )
    conn.execute(
        """UPDATE oms.order_lines l SET qty_shipped = l.qty_shipped + t.q, updated_at = now()
           FROM unnest(%b::int8[], %b::int4[]) AS t(id, q) WHERE l.line_id = t.id""",
        ([x[1] for x in lines], [x[3] for x in lines]),
    )
    picks = [
        (pick_id, p.shipment.shipment_id)
        for p in batch
        for pick_id in sorted([*p.opened, *([p.pick_id] if p.pick_id else [])])
    ]
    conn.execute(
        """UPDATE oms.picks pk SET state = 'shipped', shipment_id = t.s
           FROM unnest(%b::int8[], %b::int8[]) AS t(p, s) WHERE pk.pick_id = t.p""",
        ([x[0] for x in picks], [x[1] for x in picks]),
    )
    by_location: dict[str, list[_Pair]] = defaultdict(list)
    for p in batch:
        by_location[p.location].append(p)
    for location, group in sorted(by_location.items()):
        record_creations(
            conn,
            "shipment",
            [(p.order_id, p.shipment.shipment_id, "created") for p in group],
            actor=actor,
            reason=f"shipped from {location}",
            data=[{"carrier_code": p.carrier} for p in group],
        )
    enqueue_many(
        conn,
        [
            effect
            for p in batch
            for effect in _shipment_effects(
                p.order,
                p.shipment.shipment_id,
                p.shipment.shipment_number,
                p.location,
                p.carrier,
                p.service,
                weight[p.order_id],
                packages[p.order_id],
                p.lines,
            )
        ],
    )
    oids = [p.order_id for p in batch]
    reasons = {p.order_id: f"shipment {p.shipment.shipment_number}" for p in batch}
    sync_lines(conn, oids, actor=actor, reason=reasons)
    sync_orders(conn, oids, actor=actor, reason=reasons, after_ship=True)


def _hand_over_own(
    conn: psycopg.Connection, batch: list[_Pair], instant: frozenset[str], actor: str, result: BulkShipResult
) -> None:
    """Shipments the location hands over itself wait there at once; instant-handover channels' customers
    take them at once."""
    own = [p for p in batch if p.carrier == SELF_CARRIER]
    if not own:
        return
    ready = [p.shipment.shipment_id for p in own]
    _move_shipments(conn, ready, "ready_for_pickup", actor, None, None)
    result.ready_for_pickup.extend(ready)
    collected = [p.shipment.shipment_id for p in own if p.order["channel_code"] in instant]
    if collected:
        _move_shipments(conn, collected, "picked_up", actor, None, None)
        result.picked_up.extend(collected)


# --------------------------------------------------------------------------------------------------------
# carrier tracking
# --------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TrackingEvent:
    """One carrier status report. Identify the shipment by shipment_id, or tracking_number (+ carrier), or
    our shipment_number (CDEK ``im_number``)."""

    carrier_code: str
    status_code: str
    occurred_at: datetime
    tracking_number: str | None = None
    shipment_number: str | None = None
    shipment_id: int | None = None
    status_name: str | None = None
    city: str | None = None


@dataclass
class TrackingResult:
    inserted: int = 0
    duplicates: int = 0
    applied: list[tuple[int, str, str]] = field(default_factory=list)  # (shipment_id, from, to)
    ignored: list[tuple[int, str, str]] = field(default_factory=list)  # (shipment_id, status_code, why)
    quarantined: list[int] = field(default_factory=list)


def record_tracking_events(
    conn: psycopg.Connection, events: Sequence[TrackingEvent], *, actor: str = "carrier"
) -> TrackingResult:
    """Record carrier status events (one transaction), idempotent by (shipment, status code, time).

    New events are applied per shipment in time order through ``CARRIER_STATUS_MAP``; an event may skip
    missed intermediate states only forwards (created → delivered records handed_over then delivered), an
    event older than the last applied one or contradicting the table is kept but not applied. 'delivered'
    at a shipment waiting at a pickup point means picked_up. Unknown shipments go to raw.quarantine.
    """
    return run_in_transaction(conn, lambda c: _record_tracking(c, list(events), actor))


def _record_tracking(conn, events: list[TrackingEvent], actor: str) -> TrackingResult:
    result = TrackingResult()
    if not events:
        return result
    ids = {e.shipment_id for e in events if e.shipment_id is not None}
    tn = {(e.carrier_code, e.tracking_number) for e in events if e.tracking_number}
    nums = {e.shipment_number for e in events if e.shipment_number}
    rows = conn.execute(
        """SELECT shipment_id, carrier_code, tracking_number, shipment_number FROM oms.shipments
           WHERE shipment_id = ANY(%s) OR shipment_number = ANY(%s)
              OR (carrier_code, tracking_number) IN (SELECT * FROM unnest(%s::text[], %s::text[]))""",
        (sorted(ids), sorted(nums), [t[0] for t in tn], [t[1] for t in tn]),
    ).fetchall()
    by_id = {r[0] for r in rows}
    by_tn = {(r[1], r[2]): r[0] for r in rows if r[2]}
    by_num = {r[3]: r[0] for r in rows}
    resolved: list[tuple[int, TrackingEvent]] = []
    unknown = []
    for e in events:
        sid = (
            (e.shipment_id if e.shipment_id in by_id else None)
            or by_tn.get((e.carrier_code, e.tracking_number))
            or by_num.get(e.shipment_number)
        )
        if sid is None:
            unknown.append(e)
        else:
            resolved.append((sid, e))
    if unknown:
        result.quarantined = quarantine_many(
            conn,
            [
                (
                    f"tracking:{e.carrier_code}",
                    e.tracking_number or e.shipment_number,
                    {k: getattr(e, k) for k in TrackingEvent.__dataclass_fields__},
                    "unknown shipment",
                )
                for e in unknown
            ],
        )
    if not resolved:
        return result
    orders = _shipment_orders(conn, sorted({s for s, _ in resolved}))
    _lock_orders_of(conn, orders.values())
    ship_rows = conn.execute(
        """SELECT s.shipment_id, s.state, s.carrier_code,
                  (SELECT max(occurred_at) FROM oms.tracking_events t WHERE t.shipment_id = s.shipment_id AND t.applied)
           FROM oms.shipments s WHERE s.shipment_id = ANY(%s) ORDER BY s.shipment_id FOR UPDATE""",
        (sorted(orders),),
    ).fetchall()
    status_map = {}
    for sid, _, carrier, _ in ship_rows:
        status_map[sid] = CARRIER_STATUS_MAP.get(carrier, CARRIER_STATUS_MAP["cdek"])
    new_rows = conn.execute(
        """INSERT INTO oms.tracking_events (shipment_id, status_code, status_name, occurred_at, city, mapped_state)
           SELECT * FROM unnest(%s::int8[], %s::text[], %s::text[], %s::timestamptz[], %s::text[], %s::text[])
           ON CONFLICT (shipment_id, status_code, occurred_at) DO NOTHING
           RETURNING tracking_event_id, shipment_id, status_code, occurred_at""",
        (
            [s for s, _ in resolved],
            [e.status_code for _, e in resolved],
            [e.status_name for _, e in resolved],
            [e.occurred_at for _, e in resolved],
            [e.city for _, e in resolved],
            [status_map[s].get(e.status_code) for s, e in resolved],
        ),
    ).fetchall()
    result.inserted = len(new_rows)
    result.duplicates = len(resolved) - len(new_rows)
    per_ship: dict[int, list[tuple[datetime, int, str]]] = defaultdict(list)
    for ev_id, sid, code, occurred in new_rows:
        per_ship[sid].append((occurred, ev_id, code))
    steps: dict[int, list[Change]] = {}
    applied_events: list[int] = []
    for sid, state, _, last_applied in ship_rows:
        plan: list[Change] = []
        for occurred, ev_id, code in sorted(per_ship.get(sid, [])):
            if code not in status_map[sid]:
                result.ignored.append((sid, code, "unknown status code"))
                continue
            target = status_map[sid][code]
            if target is None:
                continue
            if last_applied is not None and occurred < last_applied:
                result.ignored.append((sid, code, "older than the last applied event"))
                continue
            if target == "delivered" and state == "ready_for_pickup":
                target = "picked_up"
            if target == state:
                applied_events.append(ev_id)
                last_applied = occurred
                continue
            if allowed("shipment", state, target):
                hops = [target]
            else:
                p = path("shipment", state, target)
                forward = p is not None and all(
                    SHIPMENT_RANK[b] > SHIPMENT_RANK[a] for a, b in zip([state, *p[:-1]], p, strict=True)
                )
                if not forward:
                    result.ignored.append((sid, code, f"{state} -> {target} not allowed"))
                    continue
                hops = p
            for hop in hops:
                plan.append(Change(sid, hop, f"carrier {code}", {"status_code": code}, at=occurred))
            state = target
            last_applied = occurred
            applied_events.append(ev_id)
        if plan:
            steps[sid] = plan
    k = 0
    while True:
        batch = [p[k] for _, p in sorted(steps.items()) if k < len(p)]
        if not batch:
            break
        result.applied.extend(apply_transitions(conn, "shipment", batch, actor=actor))
        k += 1
    if applied_events:
        conn.execute(
            "UPDATE oms.tracking_events SET applied = true WHERE tracking_event_id = ANY(%s)",
            (applied_events,),
        )
    touched = sorted({orders[s] for s in steps})
    if touched:
        sync_lines(conn, touched, actor=actor, reason="carrier tracking")
        sync_orders(conn, touched, actor=actor, reason="carrier tracking")
    return result
