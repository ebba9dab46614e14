"""Fulfillment: pick, pack, ship, track, deliver / hand over, not delivered, returned to sender.

The unit of work is one order at one location (B's routing may split an order over locations): a *pick*
records, per reservation, what was expected and what the picker found (pick accuracy KPI); packing and
shipping move that pick on; the shipment consumes the reservations through B's ``consume_reservations``
and writes the carrier booking to the outbox in the same transaction.

Order and line states are *derived* after each operation (``sync_orders``/``sync_lines``) from quantities,
reservations, picks and shipments, then moved through the state machine — one rule set for every path
(single or split shipments, short picks, cancelled remainders). Locks are taken in one order everywhere:
orders (by id) → shipments (by id) → stock (location, sku); reservation rows belong to one order and are
only touched under its lock.

Short pick (decision): the missing units were never on the shelf, so a short pick shrinks the reservation
to what was picked and writes a ledger 'pick' entry (on_hand −short, reserved −short) — both through B's
``reservations.release_quantities(missing=True)``, where all reservation bookkeeping lives. The short quantity
is cancelled on the line and, with ``short_policy='backorder'`` (default), re-ordered as a new line
(``split_from_line_id`` → original, state 'backordered') that B's ``allocate_backorders`` will reserve;
with ``short_policy='cancel'`` it is cancelled (and refunded if paid).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Literal

import psycopg

from oms_ops.db import run_in_transaction
from oms_ops.errors import IllegalTransition, NotFound, ValidationFailed
from oms_ops.inventory import Movement, apply_movements
from oms_ops.outbox import enqueue_many
from oms_ops.quarantine import quarantine_many
from oms_ops.reservations import release_quantities
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
def _move(
    conn: psycopg.Connection,
    entity: str,
    targets: Mapping[int, tuple],
    *,
    actor: str,
    reason: str,
    strict: bool,
) -> None:
    """Move entities to target states, step by step along the shortest path in the table (each step its own
    event). ``targets``: id → (current, target[, {state: at}]) — when each state really happened, for the
    KPI stamps. With ``strict`` an unreachable target raises."""
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
            Change(eid, p[step], reason, at=when[eid].get(p[step]))
            for eid, p in sorted(paths.items())
            if step < len(p)
        ]
        if not changes:
            return
        apply_transitions(conn, entity, changes, actor=actor)
        step += 1


def sync_lines(conn: psycopg.Connection, order_ids: Sequence[int], *, actor: str, reason: str) -> None:
    """Derive each line's state (inside a transaction): fully shipped → shipped / delivered / returned;
    fully cancelled → cancelled; otherwise the least advanced stage of its active reservations
    (allocated < picked < packed). Only moves allowed by the table are made; allocation states are B's."""
    rows = conn.execute(
        """SELECT l.line_id, l.state, l.qty - l.qty_shipped - l.qty_cancelled, l.qty_shipped, l.qty_returned,
                  r.active, r.min_stage, d.undelivered
           FROM oms.order_lines l
           LEFT JOIN LATERAL (
               SELECT count(*) AS active, min(coalesce((
                   SELECT max(CASE pk.state WHEN 'packed' THEN 2 ELSE 1 END)
                   FROM oms.pick_lines pl JOIN oms.picks pk ON pk.pick_id = pl.pick_id
                   WHERE pl.reservation_id = r.reservation_id AND pk.state IN ('picked', 'packed')), 0)) AS min_stage
               FROM oms.reservations r WHERE r.line_id = l.line_id AND r.state = 'active') r ON true
           LEFT JOIN LATERAL (
               SELECT count(*) FILTER (WHERE s.state NOT IN ('delivered', 'picked_up')) AS undelivered
               FROM oms.shipment_lines sl JOIN oms.shipments s ON s.shipment_id = sl.shipment_id
               WHERE sl.line_id = l.line_id) d ON true
           WHERE l.order_id = ANY(%s) ORDER BY l.line_id""",
        (list(order_ids),),
    ).fetchall()
    targets = {}
    for line_id, state, open_qty, shipped, returned, active, min_stage, undelivered in rows:
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
    _move(conn, "order_line", targets, actor=actor, reason=reason, strict=False)


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
    """Pure rule: the state an order should be in, or None to leave it (allocation states are B's)."""
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
    conn: psycopg.Connection, order_ids: Sequence[int], *, actor: str, reason: str, after_ship: bool = False
) -> None:
    """Derive and apply each order's state (inside a transaction) with ``derive_order_state``."""
    for _ in range(2):
        rows = conn.execute(
            """SELECT o.order_id, o.state, coalesce(l.open, 0), coalesce(l.shipped, 0),
                      r.active, r.unpacked, p.open_picks, coalesce(s.states, '{}'),
                      s.delivered, s.picked_up, s.ready, s.not_delivered, s.returned
               FROM oms.orders o
               LEFT JOIN LATERAL (SELECT sum(qty - qty_shipped - qty_cancelled)::int AS open,
                                         sum(qty_shipped)::int AS shipped
                                  FROM oms.order_lines WHERE order_id = o.order_id) l ON true
               LEFT JOIN LATERAL (
                   SELECT count(*) AS active,
                          count(*) FILTER (WHERE NOT EXISTS (
                              SELECT 1 FROM oms.pick_lines pl JOIN oms.picks pk ON pk.pick_id = pl.pick_id
                              WHERE pl.reservation_id = r.reservation_id AND pk.state = 'packed')) AS unpacked
                   FROM oms.reservations r WHERE r.order_id = o.order_id AND r.state = 'active') r ON true
               LEFT JOIN LATERAL (SELECT count(*) AS open_picks FROM oms.picks
                                  WHERE order_id = o.order_id AND state IN ('picked', 'packed')) p ON true
               LEFT JOIN LATERAL (SELECT array_agg(state ORDER BY shipment_id) AS states,
                                         max(coalesce(delivered_at, picked_up_at)) AS delivered,
                                         max(picked_up_at) AS picked_up, max(ready_for_pickup_at) AS ready,
                                         max(not_delivered_at) AS not_delivered, max(returned_at) AS returned
                                  FROM oms.shipments WHERE order_id = o.order_id) s ON true
               WHERE o.order_id = ANY(%s) ORDER BY o.order_id""",
            (list(order_ids),),
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
        _move(conn, "order", targets, actor=actor, reason=reason, strict=True)
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
           WHERE r.order_id = %s AND r.location_code = %s AND r.state = 'active'
             AND NOT EXISTS (SELECT 1 FROM oms.pick_lines pl JOIN oms.picks pk ON pk.pick_id = pl.pick_id
                             WHERE pl.reservation_id = r.reservation_id AND pk.state IN ('picked', 'packed'))
           ORDER BY r.line_id, r.reservation_id FOR UPDATE OF r""",
        (order_id, location_code),
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
    for _, line_id, _, qty in res_rows:
        expected[line_id] += qty
    problems = []
    for line_id, q in sorted(picked.items()):
        if line_id not in expected:
            problems.append(f"line {line_id}: not reserved at {location_code} for order {order_id}")
        elif isinstance(q, bool) or not isinstance(q, int) or q < 0:
            problems.append(f"line {line_id}: picked quantity must be an integer >= 0, got {q!r}")
        elif q > expected[line_id]:
            problems.append(f"line {line_id}: picked {q} exceeds expected {expected[line_id]}")
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

    # every reserved unit of the order is in an open pick now → the order is picked
    conn.execute(
        """UPDATE oms.orders o SET picked_at = COALESCE(o.picked_at, now()) WHERE o.order_id = %s
           AND NOT EXISTS (SELECT 1 FROM oms.reservations r WHERE r.order_id = o.order_id AND r.state = 'active'
                           AND NOT EXISTS (SELECT 1 FROM oms.pick_lines pl JOIN oms.picks pk USING (pick_id)
                                           WHERE pl.reservation_id = r.reservation_id
                                             AND pk.state IN ('picked', 'packed')))""",
        (order_id,),
    )
    sync_lines(conn, [order_id], actor=actor, reason=f"pick {pick_id}")
    sync_orders(conn, [order_id], actor=actor, reason=f"pick {pick_id}")
    return result


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

    Creates the shipment and its lines, consumes the reservations through B's ``consume_reservations``
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
    items = [{"line_id": r[0], "sku": r[1], "qty": r[2]} for r in line_rows]
    effects = [
        (
            "channel.order_status",
            {
                "order_id": order_id,
                "order_number": order["order_number"],
                "channel_code": order["channel_code"],
                "external_id": order["external_id"],
                "status": "shipped",
                "shipment_number": sh_number,
                "items": items,
            },
            f"channel.order_status:{order_id}:shipment:{sh_id}",
        )
    ]
    if carrier_code != SELF_CARRIER:
        effects.append(
            (
                "carrier.create_shipment",
                {
                    "shipment_id": sh_id,
                    "shipment_number": sh_number,
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
                    "packages": sum(p[1] for p in picks),
                    "items": items,
                },
                f"carrier.create_shipment:{sh_number}",
            )
        )
    enqueue_many(conn, effects)
    sync_lines(conn, [order_id], actor=actor, reason=f"shipment {sh_number}")
    sync_orders(conn, [order_id], actor=actor, reason=f"shipment {sh_number}", after_ship=True)
    return ShipmentResult(sh_id, sh_number, True, tuple((r[0], r[2]) for r in line_rows))


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

    def run(c):
        orders = _shipment_orders(c, shipment_ids)
        _lock_orders_of(c, orders.values())
        done = apply_transitions(
            c,
            "shipment",
            [Change(s, to_state, reason, at=at) for s in sorted(set(shipment_ids))],
            actor=actor,
        )
        oids = sorted(set(orders.values()))
        sync_lines(c, oids, actor=actor, reason=reason or f"shipment {to_state}")
        sync_orders(c, oids, actor=actor, reason=reason or f"shipment {to_state}")
        return done

    return run_in_transaction(conn, run)


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
