"""Cancelling a shipment before hand-over: the parcel never left, so its units are open again.

A shipment is created when its units are packed (``fulfillment.create_shipment`` / ``ship_in_full``): the
reservations are consumed (ledger 'ship': on_hand and reserved −qty), ``qty_shipped`` grows and the line and
order move on to shipped. Until the carrier (or the customer) takes the parcel — shipment states ``created``
and ``label_printed`` — ops may call it back: the customer changed their mind about the delivery, the parcel
was damaged on the packing table, the carrier will not come. :func:`cancel_shipment` undoes the shipment in
one transaction, all or nothing:

* the shipment → ``cancelled`` (state machine, ``cancelled_at`` stamped); after hand-over, or for an unknown
  shipment, the call is refused and nothing changes (the error names the shipment and its state);
* the line quantities go back: ``qty_shipped`` −qty, and the reservations that were consumed for those units
  are closed as ``released`` (newest first per line at the shipping location; they are interchangeable), so
  ``qty_shipped = Σ consumed reservations`` keeps holding;
* **with a location** (usually where it was packed): the units are back on that location's shelf and reserved
  for their lines again — one ledger ``ship_cancel`` entry per line (on_hand +qty, reserved +qty, the new
  active reservation's id), the mirror of the 'ship' entry that took them out. The lines are ``allocated``
  and the floor picks and ships them again (a new shipment). An order on hold keeps no reservation: its units
  are put back unreserved and its lines wait as ``new`` for the hold to be released;
* **without a location**: stock is untouched — the parcel is somewhere the OMS does not count (lost, kept by
  the courier, counted by the next WMS snapshot). The units are no longer held for their lines either: the
  lines go back to ``new`` and the allocator reserves them again wherever there is stock. A line whose other
  units are in an open pick cannot wait for the allocator (the pick would ship it as if complete), so that
  case is refused: cancel with a location;
* the order is re-derived (:func:`order_state_after_cancel`): ``allocated`` / ``partially_allocated`` when its
  open units are reserved, ``new`` (nothing else of it shipped) or ``backordered`` (something did, as
  ``fulfillment.derive_order_state`` puts a partly shipped order whose rest waits for stock) when they are not,
  ``picking`` while other parts are being picked. The departure stamps of the order (``shipped_at``, and
  ``first_shipped_at`` when no other parcel remains) are taken back: the departure did not happen;
* a carrier booking is cancelled after commit through the outbox (``carrier.cancel_shipment``, key
  ``carrier.cancel_shipment:<shipment_number>``): the drain deletes the CDEK order (``DELETE /v2/orders/{uuid}``,
  ``connectors.cdek.cancel_booking``); a shipment the location hands over itself (carrier 'self') has no
  booking and writes no effect.

Every change is an event of the order's timeline: the shipment's move to cancelled (with the units and where
they went), each line's and the order's state changes, all with the reason given.

Locks follow the fulfilment order: the order row, the shipment, the order's lines, then stock rows in
(location, sku) order before any reservation row is touched.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg.rows import dict_row

from oms_ops.db import run_in_transaction
from oms_ops.errors import IllegalTransition, NotFound, ValidationFailed
from oms_ops.fulfillment import SELF_CARRIER, sync_orders
from oms_ops.inventory import Movement, apply_movements, lock_stock
from oms_ops.outbox import enqueue
from oms_ops.state_machine import Change, allowed, apply_transitions, path

#: shipment states in which the parcel has not left: it can still be called back
CANCELLABLE_SHIPMENT_STATES = ("created", "label_printed")
#: line states whose units are in the warehouse flow (an open pick)
_IN_PICK_LINE_STATES = ("picked", "packed")


@dataclass
class CancelResult:
    """What :func:`cancel_shipment` did."""

    shipment_id: int
    shipment_number: str
    order_id: int
    order_number: str
    #: the order's state after the cancel
    order_state: str
    #: where the units were put back (None: stock untouched)
    location_code: str | None
    #: (line_id, line_no, sku, qty) of the shipment
    units: list[tuple[int, int, str, int]] = field(default_factory=list)
    #: active reservations made for the units (with a location, order not on hold)
    reservations: list[int] = field(default_factory=list)
    #: a carrier booking is cancelled through the outbox (carrier.cancel_shipment)
    carrier_cancel: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {
            "shipment_id": self.shipment_id,
            "shipment_number": self.shipment_number,
            "order_id": self.order_id,
            "order_number": self.order_number,
            "order_state": self.order_state,
            "location_code": self.location_code,
            "units": [{"line_id": a, "line_no": b, "sku": c, "qty": d} for a, b, c, d in self.units],
            "reservations": self.reservations,
            "carrier_cancel": self.carrier_cancel,
        }


def order_state_after_cancel(
    state: str, *, open_qty: int, reserved: int, unpacked: int, open_picks: int, shipped_left: int
) -> str:
    """Pure rule: the state of an order whose shipment was cancelled (its units are open again).

    ``open_qty`` units are left to ship, ``reserved`` of them held by active reservations (``unpacked`` of
    those in no packed pick), ``open_picks`` picks of the order are picked or packed, ``shipped_left`` units
    stay shipped in other parcels. A held
    order stays held; the floor working on it keeps it ``picking`` (a packed order has new units to pick) or
    ``partially_shipped`` when other parcels left; otherwise the allocation states: ``allocated`` when every
    open unit is reserved, ``partially_allocated`` when some are, else ``backordered`` (something of the order
    shipped: the allocator serves it when stock is free) or ``new``."""
    if state == "on_hold":
        return "on_hold"
    if open_picks or state in ("picking", "packed"):
        if state == "partially_shipped" and shipped_left:
            return "partially_shipped"
        if state == "packed" and unpacked == 0:
            return "packed"  # nothing new to pick: the unreserved units wait for the allocator after it ships
        return "picking"
    if open_qty > 0 and reserved >= open_qty:
        return "allocated"
    if reserved > 0:
        return "partially_allocated"
    return "backordered" if shipped_left else "new"


def find_shipment(conn: psycopg.Connection, ref: str | int) -> int:
    """A shipment given by id, our shipment number (SHP-…) or the carrier's tracking number."""
    text = str(ref).strip()
    if text.isdigit():
        row = conn.execute(
            "SELECT shipment_id FROM oms.shipments WHERE shipment_id = %s", (int(text),)
        ).fetchone()
        if row is not None:
            return row[0]
    row = conn.execute(
        """SELECT shipment_id FROM oms.shipments WHERE shipment_number = %s OR tracking_number = %s
           ORDER BY shipment_number = %s DESC, shipment_id DESC LIMIT 1""",
        (text, text, text),
    ).fetchone()
    if row is None:
        raise NotFound("shipment", [text])
    return row[0]


def cancel_shipment(
    conn: psycopg.Connection,
    shipment_id: int,
    *,
    location_code: str | None,
    actor: str,
    reason: str,
) -> CancelResult:
    """Cancel a shipment that has not been handed over (one transaction; see the module docstring).

    ``location_code``: where the units are put back and re-reserved; None leaves stock untouched. Raises
    NotFound for an unknown shipment and ValidationFailed naming every problem (handed over already, unknown
    or inactive location, no reason, a line in an open pick without a location) with nothing changed."""
    return run_in_transaction(conn, lambda c: _cancel(c, shipment_id, location_code, actor, reason))


def _cancel(
    conn: psycopg.Connection, shipment_id: int, location_code: str | None, actor: str, reason: str
) -> CancelResult:
    head = conn.execute(
        "SELECT order_id FROM oms.shipments WHERE shipment_id = %s", (shipment_id,)
    ).fetchone()
    if head is None:
        raise NotFound("shipment", [shipment_id])
    cur = conn.cursor(row_factory=dict_row)
    order = cur.execute("SELECT * FROM oms.orders WHERE order_id = %s FOR UPDATE", (head[0],)).fetchone()
    ship = cur.execute(
        """SELECT shipment_id, shipment_number, order_id, state, location_code, carrier_code, carrier_shipment_id
           FROM oms.shipments WHERE shipment_id = %s FOR UPDATE""",
        (shipment_id,),
    ).fetchone()
    order_id, number = order["order_id"], ship["shipment_number"]
    who = f"shipment {number} (id {shipment_id}) of order {order['order_number']}"
    lines = conn.execute(
        """SELECT sl.line_id, l.line_no, sl.sku, sl.qty, l.state, l.qty_shipped, l.qty_returned
           FROM oms.shipment_lines sl JOIN oms.order_lines l ON l.line_id = sl.line_id
           WHERE sl.shipment_id = %s ORDER BY sl.line_id FOR UPDATE OF l""",
        (shipment_id,),
    ).fetchall()

    problems: list[str] = []
    reason = (reason or "").strip()
    if not reason:
        problems.append(f"{who}: a reason is required (it is recorded in the order's timeline)")
    if ship["state"] not in CANCELLABLE_SHIPMENT_STATES:
        problems.append(
            f"{who} is {ship['state']}: only a shipment not yet handed over "
            f"({', '.join(CANCELLABLE_SHIPMENT_STATES)}) can be cancelled"
        )
    if location_code is not None:
        loc = conn.execute(
            "SELECT active FROM oms.locations WHERE location_code = %s", (location_code,)
        ).fetchone()
        if loc is None:
            problems.append(f"{who}: unknown location {location_code!r} to put the units back at")
        elif not loc[0]:
            problems.append(f"{who}: location {location_code} is inactive: the units cannot go back there")
    for _, line_no, sku, qty, line_state, shipped, returned in lines:
        label = f"order {order['order_number']} line {line_no} ({sku})"
        if shipped - qty < returned:
            problems.append(
                f"{label}: {returned} unit(s) returned, more than the {shipped - qty} left shipped"
            )
        if location_code is None and line_state in _IN_PICK_LINE_STATES:
            problems.append(
                f"{label} is {line_state} (its other units are in an open pick): cancel with a location so "
                f"the {qty} unit(s) are reserved again"
            )
    consumed = _consumed(conn, [r[0] for r in lines], ship["location_code"])
    for line_id, line_no, sku, qty, *_ in lines:
        held = sum(q for _, q in consumed.get(line_id, ()))
        if held < qty:
            problems.append(
                f"order {order['order_number']} line {line_no} ({sku}): {qty} shipped from "
                f"{ship['location_code']} but only {held} consumed there"
            )
    if problems:
        raise ValidationFailed(problems)

    units = [(r[0], r[1], r[2], r[3]) for r in lines]
    why = f"shipment {number} cancelled before hand-over: {reason}"
    hold = order["state"] == "on_hold"
    reserve_again = location_code is not None and not hold
    if location_code is not None:
        # stock rows first (the global lock order), then the reservation rows
        lock_stock(conn, [(location_code, sku) for _, _, sku, _ in units])
    _release_consumed(conn, consumed, {lid: q for lid, _, _, q in units})
    result = CancelResult(
        shipment_id, number, order_id, order["order_number"], order["state"], location_code, units
    )
    if location_code is not None:
        result.reservations = _put_back(
            conn, order_id, units, location_code, number, why, reserve_again, actor
        )
    conn.execute(
        """UPDATE oms.order_lines l SET qty_shipped = l.qty_shipped - t.q, updated_at = now()
           FROM unnest(%s::int8[], %s::int4[]) AS t(id, q) WHERE l.line_id = t.id""",
        ([u[0] for u in units], [u[3] for u in units]),
    )
    apply_transitions(
        conn,
        "shipment",
        [
            Change(
                shipment_id,
                "cancelled",
                why,
                {
                    "location_code": location_code,
                    "stock": "re-reserved" if reserve_again else "put back" if location_code else "untouched",
                    "units": [{"line_id": a, "sku": c, "qty": d} for a, _, c, d in units],
                },
            )
        ],
        actor=actor,
    )
    conn.execute(
        "UPDATE oms.shipments SET cancel_location_code = %s WHERE shipment_id = %s",
        (location_code, shipment_id),
    )
    _move_lines(conn, order_id, [u[0] for u in units], why, actor)
    result.order_state = _move_order(conn, order_id, order["state"], why, actor)
    if ship["carrier_code"] != SELF_CARRIER:
        enqueue(
            conn,
            "carrier.cancel_shipment",
            {
                "shipment_id": shipment_id,
                "shipment_number": number,
                "carrier_code": ship["carrier_code"],
                "carrier_shipment_id": ship["carrier_shipment_id"],
                "order_id": order_id,
                "order_number": order["order_number"],
                "reason": reason,
            },
            f"carrier.cancel_shipment:{number}",
        )
        result.carrier_cancel = True
    return result


def _consumed(
    conn: psycopg.Connection, line_ids: list[int], location: str
) -> dict[int, list[tuple[int, int]]]:
    """line_id → [(reservation_id, qty)] of the lines' consumed reservations at ``location``, newest first."""
    out: dict[int, list[tuple[int, int]]] = defaultdict(list)
    for rid, lid, qty in conn.execute(
        """SELECT reservation_id, line_id, qty FROM oms.reservations
           WHERE line_id = ANY(%s) AND location_code = %s AND state = 'consumed'
           ORDER BY reservation_id DESC FOR UPDATE""",
        (line_ids, location),
    ):
        out[lid].append((rid, qty))
    return out


def _release_consumed(
    conn: psycopg.Connection, consumed: dict[int, list[tuple[int, int]]], wanted: dict[int, int]
) -> None:
    """Close ``wanted[line]`` consumed units per line as 'released' (a row only partly concerned is split: the
    rest stays consumed), so Σ consumed per line follows qty_shipped. No ledger entry: stock does not move
    here (the 'ship' entry stays; what comes back is a 'ship_cancel' entry of its own)."""
    whole: list[int] = []
    split: list[tuple[int, int]] = []
    for line_id, qty in wanted.items():
        for rid, held in consumed[line_id]:
            if qty <= 0:
                break
            take = min(qty, held)
            qty -= take
            if take == held:
                whole.append(rid)
            else:
                split.append((rid, take))
    if whole:
        conn.execute(
            "UPDATE oms.reservations SET state = 'released', closed_at = now() WHERE reservation_id = ANY(%s)",
            (whole,),
        )
    if split:
        conn.execute(
            """WITH s AS (
                   UPDATE oms.reservations r SET qty = r.qty - t.q
                   FROM unnest(%s::int8[], %s::int4[]) AS t(id, q) WHERE r.reservation_id = t.id
                   RETURNING r.order_id, r.line_id, r.location_code, r.sku, t.q, r.decision_id)
               INSERT INTO oms.reservations (order_id, line_id, location_code, sku, qty, state, decision_id,
                                             closed_at)
               SELECT order_id, line_id, location_code, sku, q, 'released', decision_id, now() FROM s""",
            ([s[0] for s in split], [s[1] for s in split]),
        )


def _put_back(
    conn: psycopg.Connection,
    order_id: int,
    units: list[tuple[int, int, str, int]],
    location_code: str,
    number: str,
    why: str,
    reserve_again: bool,
    actor: str,
) -> list[int]:
    """The units are on ``location_code``'s shelf again (ledger 'ship_cancel', on_hand +qty) and, unless the
    order is on hold, reserved for their lines (a new active reservation each, reserved +qty in the same
    entry). Returns the new reservation ids."""
    rids: dict[int, int] = {}
    if reserve_again:
        rows = conn.execute(
            """INSERT INTO oms.reservations (order_id, line_id, location_code, sku, qty)
               SELECT %s, l, %s, s, q FROM unnest(%s::int8[], %s::text[], %s::int4[]) AS t(l, s, q)
               RETURNING reservation_id, line_id""",
            (
                order_id,
                location_code,
                [u[0] for u in units],
                [u[2] for u in units],
                [u[3] for u in units],
            ),
        ).fetchall()
        rids = {lid: rid for rid, lid in rows}
    apply_movements(
        conn,
        [
            Movement(
                location_code,
                sku,
                "ship_cancel",
                qty,
                qty if reserve_again else 0,
                order_id,
                line_id,
                rids.get(line_id),
                reference=number,
                reason=why,
            )
            for line_id, _, sku, qty in units
        ],
        actor=actor,
    )
    return sorted(rids.values())


def _move_lines(conn: psycopg.Connection, order_id: int, line_ids: list[int], why: str, actor: str) -> None:
    """Each line of the cancelled shipment: ``allocated`` when its open units are reserved (none of the new
    reservations is in a pick), else ``new`` — the allocator serves lines in new / backordered only."""
    rows = conn.execute(
        """SELECT l.line_id, l.state, l.qty - l.qty_cancelled - l.qty_shipped,
                  coalesce((SELECT sum(r.qty) FROM oms.reservations r
                            WHERE r.line_id = l.line_id AND r.state = 'active'), 0)::int
           FROM oms.order_lines l WHERE l.line_id = ANY(%s) ORDER BY l.line_id""",
        (line_ids,),
    ).fetchall()
    changes, refused = [], []
    for line_id, state, open_qty, reserved in rows:
        target = "allocated" if open_qty > 0 and reserved >= open_qty else "new"
        if target == state or (target == "new" and state == "backordered"):
            continue
        if allowed("order_line", state, target):
            changes.append(Change(line_id, target, why))
        else:
            refused.append(("order_line", line_id, state, target))
    if refused:
        raise IllegalTransition(refused)
    apply_transitions(conn, "order_line", changes, actor=actor)


def _move_order(conn: psycopg.Connection, order_id: int, state: str, why: str, actor: str) -> str:
    """Re-derive the order (:func:`order_state_after_cancel`), step by step through the table, take back the
    departure stamps, then let the fulfilment derivation refine it (a picking order whose picks are all
    packed is packed). Returns the new state."""
    open_qty, shipped_left, reserved, unpacked, open_picks, parcels = conn.execute(
        """SELECT (SELECT coalesce(sum(qty - qty_cancelled - qty_shipped), 0)::int FROM oms.order_lines
                   WHERE order_id = %(o)s),
                  (SELECT coalesce(sum(qty_shipped), 0)::int FROM oms.order_lines WHERE order_id = %(o)s),
                  (SELECT coalesce(sum(qty), 0)::int FROM oms.reservations WHERE order_id = %(o)s AND state = 'active'),
                  (SELECT count(*) FROM oms.reservations r WHERE r.order_id = %(o)s AND r.state = 'active'
                     AND NOT EXISTS (SELECT 1 FROM oms.picks pk JOIN oms.pick_lines pl ON pl.pick_id = pk.pick_id
                                     WHERE pk.order_id = %(o)s AND pk.state = 'packed'
                                       AND pl.reservation_id = r.reservation_id)),
                  (SELECT count(*) FROM oms.picks WHERE order_id = %(o)s AND state IN ('picked', 'packed')),
                  (SELECT count(*) FROM oms.shipments WHERE order_id = %(o)s AND state <> 'cancelled')""",
        {"o": order_id},
    ).fetchone()
    target = order_state_after_cancel(
        state,
        open_qty=open_qty,
        reserved=reserved,
        unpacked=unpacked,
        open_picks=open_picks,
        shipped_left=shipped_left,
    )
    steps = path("order", state, target)
    if steps is None:
        raise IllegalTransition([("order", order_id, state, target)])
    for step in steps:
        apply_transitions(conn, "order", [Change(order_id, step, why)], actor=actor)
    conn.execute(
        """UPDATE oms.orders SET shipped_at = NULL,
                  first_shipped_at = CASE WHEN %s THEN first_shipped_at END, updated_at = now()
           WHERE order_id = %s""",
        (parcels > 0, order_id),
    )
    sync_orders(conn, [order_id], actor=actor, reason=why)
    return conn.execute("SELECT state FROM oms.orders WHERE order_id = %s", (order_id,)).fetchone()[0]
