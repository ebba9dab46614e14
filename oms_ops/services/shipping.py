"""Shipping use cases: ship what is reserved, and move shipments on (handed over, waiting, collected, delivered).

``ship_reserved`` stands in for the warehouse floor where there is no WMS pick/pack feed: reserved units are
recorded as picked in full, packed as one parcel and shipped with the carrier and tariff the allocation
decision chose (``self`` where the customer collects at the location, which then waits there; sales of
instant-handover channels, the till, are collected at once). It is set-based: ``chunk_size`` orders per
transaction through :func:`oms_ops.fulfillment.ship_in_full`, instead of three to five transactions per
order. The rows it writes are the ones the pick → pack → create_shipment operations write order by order.

Concurrency: orders are taken oldest first (placed_at, order_id) page by page; each chunk locks its orders
with SKIP LOCKED, so two shippers take disjoint orders and an order being cancelled or reallocated right
now is left for the next run (counted in ``deferred``). A chunk whose transaction fails on a domain error
is split in halves and retried until the failing order stands alone: it is reported in ``errors`` and every
other order of the chunk ships.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from zoneinfo import ZoneInfo

import psycopg
from psycopg import sql

from oms_ops import fulfillment, read_model, route_sheet
from oms_ops.allocation import latest_decision
from oms_ops.channels import registry
from oms_ops.errors import IllegalTransition, NotFound, OmsError, ValidationFailed
from oms_ops.fulfillment import BulkShipResult, ShipRequest

log = logging.getLogger("oms.services.shipping")
#: Order states whose active reservations are shipped.
SHIPPABLE_STATES = ("allocated", "partially_allocated", "picking", "packed")
#: A prepaid order goes to the floor only once its money is in: shipping before the customer paid gives the
#: goods away when the payment fails (cash-on-delivery orders ship at once; their money comes at the door).
PAID_STATUSES = ("paid", "partially_refunded")
#: Channels whose customers leave the till with the goods (``Channel.instant_handover``).
INSTANT_HANDOVER_CHANNELS = tuple(c.code for c in registry.CHANNELS if c.instant_handover)


@dataclass
class ShipResult:
    shipments: int = 0
    handovers: int = 0
    errors: list[str] = field(default_factory=list)
    #: orders locked by another operation when their chunk ran: shipped by a later run
    deferred: int = 0
    transactions: int = 0

    def metadata(self) -> dict:
        return {
            "shipments": self.shipments,
            "handovers": self.handovers,
            "errors": len(self.errors),
            "deferred": self.deferred,
            "transactions": self.transactions,
        }


def ship_reserved(
    conn: psycopg.Connection,
    *,
    limit: int = 5000,
    chunk_size: int = 500,
    actor: str = "fulfilment",
    instant_handover_channels: Sequence[str] = INSTANT_HANDOVER_CHANNELS,
) -> ShipResult:
    """Pick in full, pack and ship everything reserved for up to ``limit`` orders in states allocated,
    partially_allocated, picking or packed, oldest first, ``chunk_size`` orders per transaction. A prepaid
    order waits until it is paid (``PAID_STATUSES``); its unpaid hold expires as allocation says.

    Store-pickup shipments (carrier 'self') are marked ready_for_pickup in their chunk's transaction, and
    picked_up for ``instant_handover_channels``. Idempotent: a repeated run finds nothing left to ship.
    """
    if chunk_size <= 0:
        raise ValidationFailed("chunk_size must be > 0")
    if limit < 0:
        raise ValidationFailed("limit must be >= 0")
    res = ShipResult()
    instant = tuple(instant_handover_channels)
    after: tuple[datetime, int] | None = None
    remaining = limit
    while remaining > 0:
        size = min(chunk_size, remaining)
        work = _next_orders(conn, after, size)
        if not work:
            break
        requests = [ShipRequest(order_id, loc) for order_id, _, locations in work for loc in locations]
        _ship_chunk(conn, requests, res, actor, instant)
        if len(work) < size:
            break
        after = (work[-1][1], work[-1][0])
        remaining -= len(work)
    return res


def _next_orders(
    conn: psycopg.Connection, after: tuple[datetime, int] | None, size: int
) -> list[tuple[int, datetime, list[str]]]:
    """The next ``size`` orders with active reservations after ``after`` (placed_at, order_id), with the
    locations holding them. A plain read: the chunk's transaction locks and checks each order again."""
    return conn.execute(
        """SELECT o.order_id, o.placed_at, array_agg(DISTINCT r.location_code ORDER BY r.location_code)
           FROM oms.orders o JOIN oms.reservations r ON r.order_id = o.order_id AND r.state = 'active'
           WHERE o.state = ANY(%(states)s)
             AND (o.payment_method <> 'prepaid' OR o.payment_status = ANY(%(paid)s))
             AND (%(t)s::timestamptz IS NULL OR (o.placed_at, o.order_id) > (%(t)s, %(id)s::bigint))
           GROUP BY o.order_id, o.placed_at
           ORDER BY o.placed_at, o.order_id
           LIMIT %(n)s""",
        {
            "states": list(SHIPPABLE_STATES),
            "paid": list(PAID_STATUSES),
            "t": after[0] if after else None,
            "id": after[1] if after else None,
            "n": size,
        },
    ).fetchall()


def _ship_chunk(
    conn: psycopg.Connection,
    requests: list[ShipRequest],
    res: ShipResult,
    actor: str,
    instant: tuple[str, ...],
) -> None:
    """One transaction for the chunk; on a domain error (the transaction rolled back) the chunk is split
    by order in halves and each half retried, down to the one order that fails."""
    try:
        out = fulfillment.ship_in_full(
            conn, requests, actor=actor, instant_handover_channels=instant, skip_locked=True
        )
    except OmsError as exc:
        orders = list(dict.fromkeys(r.order_id for r in requests))
        if len(orders) == 1:
            res.errors.append(f"order {orders[0]}: {exc}")
            log.warning("ship_reserved: order %s: %s", orders[0], exc)
            return
        first = set(orders[: len(orders) // 2])
        _ship_chunk(conn, [r for r in requests if r.order_id in first], res, actor, instant)
        _ship_chunk(conn, [r for r in requests if r.order_id not in first], res, actor, instant)
        return
    _count(res, out)


def _count(res: ShipResult, out: BulkShipResult) -> None:
    res.transactions += 1
    res.shipments += len(out.shipments)
    res.handovers += len(out.ready_for_pickup)
    res.deferred += len(out.deferred)
    for order_id, location, reason in out.skipped:
        res.errors.append(f"order {order_id} at {location}: {reason}")
        log.warning("ship_reserved: order %s at %s: %s", order_id, location, reason)


# -- moving shipments on: one transaction each, lines and orders derived in the same transaction ------------
def hand_over(
    conn: psycopg.Connection, shipment_ids: Sequence[int], *, actor: str, at: datetime | None = None
) -> list[tuple[int, str, str]]:
    """The carrier took the parcels (created / label_printed → handed_over)."""
    return fulfillment.hand_over(conn, shipment_ids, actor=actor, at=at)


def mark_delivered(
    conn: psycopg.Connection, shipment_ids: Sequence[int], *, actor: str, at: datetime | None = None
) -> list[tuple[int, str, str]]:
    """Delivered to the customer (lines → delivered; an order → delivered once all its shipments are)."""
    return fulfillment.mark_delivered(conn, shipment_ids, actor=actor, at=at)


def mark_ready_for_pickup(
    conn: psycopg.Connection, shipment_ids: Sequence[int], *, actor: str, at: datetime | None = None
) -> list[tuple[int, str, str]]:
    """Waiting for the customer at the store / pickup point."""
    return fulfillment.mark_ready_for_pickup(conn, shipment_ids, actor=actor, at=at)


def mark_picked_up(
    conn: psycopg.Connection, shipment_ids: Sequence[int], *, actor: str, at: datetime | None = None
) -> list[tuple[int, str, str]]:
    """Collected by the customer at the store / pickup point."""
    return fulfillment.mark_picked_up(conn, shipment_ids, actor=actor, at=at)


def ship_one(
    conn: psycopg.Connection,
    order_id: int,
    location: str,
    *,
    channel: str,
    actor: str = "fulfilment",
    instant_handover_channels: Sequence[str] = INSTANT_HANDOVER_CHANNELS,
) -> int:
    """Ship what is reserved for one order at one location the way a floor confirming order by order does:
    a pick, a pack and a shipment transaction (carrier and tariff from the allocation decision), then the
    hand-over at the store. The reference :func:`ship_reserved` is compared with (same rows) and the
    baseline of ``bench/fulfilment.py``. Returns the shipments created (0 or 1)."""
    decision = latest_decision(conn, order_id) or {}
    plan = next((s for s in decision.get("shipments") or [] if s.get("location") == location), {})
    handover = bool(plan.get("handover"))
    carrier = fulfillment.SELF_CARRIER if handover else (plan.get("carrier") or "cdek")
    fulfillment.record_pick(conn, order_id, location, actor=actor)
    fulfillment.pack(conn, order_id, location, actor=actor)
    shipment = fulfillment.create_shipment(
        conn, order_id, location, carrier_code=carrier, actor=actor, service_code=plan.get("tariff")
    )
    if handover and shipment.created:
        fulfillment.mark_ready_for_pickup(conn, [shipment.shipment_id], actor=actor)
        if channel in instant_handover_channels:
            fulfillment.mark_picked_up(conn, [shipment.shipment_id], actor=actor)
    return shipment.created


# -- the own courier: carriers without an API ------------------------------------------------------------------
# CDEK tells the OMS when it took a parcel and when it delivered it; an own courier has no API to tell anything,
# so its parcels would stay 'created' for ever. Ops record both on the Operations page (courier panel), and
# the demo's always-on worker plays the courier with :func:`advance_own_courier`.

#: shipment states of an own-courier parcel the courier has not taken yet / is carrying
COURIER_WAITING = ("created", "label_printed")
COURIER_CARRYING = ("handed_over", "in_transit")
#: parcels moved per transaction by advance_own_courier
COURIER_CHUNK = 500


@dataclass
class CourierRun:
    """What :func:`advance_own_courier` moved."""

    handed_over: int = 0
    #: parcels delivered to the customer's door
    delivered: int = 0
    #: parcels for store pickup dropped at their store (ready_for_pickup: the customer collects them there)
    at_store: int = 0
    transactions: int = 0

    def metadata(self) -> dict:
        return {
            "handed_over": self.handed_over,
            "delivered": self.delivered,
            "at_store": self.at_store,
            "transactions": self.transactions,
        }


def courier_delivered(
    conn: psycopg.Connection, shipment_ids: Sequence[int], *, actor: str, at: datetime | None = None
) -> dict[str, list[int]]:
    """The courier delivered these parcels where they were going: a courier delivery → ``delivered`` (lines
    and order follow), a parcel for store pickup → ``ready_for_pickup`` at its store. One transaction per
    kind; returns ``{"delivered": [...], "at_store": [...]}`` (shipment ids moved)."""
    ids = sorted(set(shipment_ids))
    if not ids:
        return {"delivered": [], "at_store": []}
    methods = dict(
        conn.execute(
            "SELECT shipment_id, delivery_method FROM oms.shipments WHERE shipment_id = ANY(%s)", (ids,)
        ).fetchall()
    )
    missing = [i for i in ids if i not in methods]
    if missing:
        raise NotFound("shipment", missing)
    door = [i for i in ids if methods[i] == "courier"]
    store = [i for i in ids if methods[i] != "courier"]
    if door:
        fulfillment.mark_delivered(conn, door, actor=actor, at=at)
    if store:
        fulfillment.mark_ready_for_pickup(conn, store, actor=actor, at=at)
    return {"delivered": door, "at_store": store}


def _due(
    conn: psycopg.Connection, states: Sequence[str], since: str, older_than_s: float, limit: int
) -> list[int]:
    """Own-courier parcels in ``states`` whose ``since`` time is at least ``older_than_s`` seconds ago."""
    return [
        r[0]
        for r in conn.execute(
            sql.SQL(
                """SELECT shipment_id FROM oms.shipments
                   WHERE state = ANY(%s) AND carrier_code <> ALL(%s)
                     AND {since} <= now() - make_interval(secs => %s)
                   ORDER BY shipment_id LIMIT %s"""
            ).format(since=sql.SQL(since)),
            (list(states), list(read_model.NOT_OWN_COURIER), float(older_than_s), limit),
        ).fetchall()
    ]


def _move_all(conn, ids: list[int], move: Callable[[list[int]], object], run: CourierRun) -> list[int]:
    """Move ``ids`` in chunks; a parcel someone moved meanwhile (ops on the page) is left out and the rest of
    its chunk moved again. Returns the ids moved."""
    moved: list[int] = []
    for start in range(0, len(ids), COURIER_CHUNK):
        chunk = ids[start : start + COURIER_CHUNK]
        for _ in range(3):
            try:
                move(chunk)
            except IllegalTransition as exc:
                refused = {entity_id for _, entity_id, _, _ in exc.refused}
                chunk = [i for i in chunk if i not in refused]
                if chunk:
                    continue
            else:
                run.transactions += 1
                moved.extend(chunk)
            break
    return moved


def advance_own_courier(
    conn: psycopg.Connection,
    *,
    hand_over_after_s: float,
    deliver_after_s: float,
    actor: str = "courier:demo",
    limit: int = 5000,
) -> CourierRun:
    """Play the own courier (the demo; a courier app would report the same two events): parcels of carriers
    without an API waiting for ``hand_over_after_s`` seconds since their label (or creation) are handed over
    (shipped: the orders' fulfilment ends there), and parcels handed over ``deliver_after_s`` seconds ago are
    delivered — to the door (``delivered``) or, for store pickup, to the store (``ready_for_pickup``).

    Set-based: the due parcels are read with one statement per step and moved ``COURIER_CHUNK`` at a time,
    one transaction per chunk (orders and lines derived in it). Safe next to ops on the page and to a second
    worker: a parcel moved meanwhile is left out of its chunk (same-state moves are no-ops). Up to ``limit``
    parcels per step and call."""
    if hand_over_after_s < 0 or deliver_after_s < 0:
        raise ValidationFailed("hand_over_after_s and deliver_after_s must be >= 0")
    run = CourierRun()
    waiting = _due(conn, COURIER_WAITING, "coalesce(label_printed_at, created_at)", hand_over_after_s, limit)
    run.handed_over = len(
        _move_all(conn, waiting, lambda ids: fulfillment.hand_over(conn, ids, actor=actor), run)
    )
    carrying = _due(conn, COURIER_CARRYING, "handed_over_at", deliver_after_s, limit)
    if carrying:
        methods = dict(
            conn.execute(
                "SELECT shipment_id, delivery_method FROM oms.shipments WHERE shipment_id = ANY(%s)",
                (carrying,),
            ).fetchall()
        )
        door = [i for i in carrying if methods[i] == "courier"]
        store = [i for i in carrying if methods[i] != "courier"]
        run.delivered = len(
            _move_all(conn, door, lambda ids: fulfillment.mark_delivered(conn, ids, actor=actor), run)
        )
        run.at_store = len(
            _move_all(conn, store, lambda ids: fulfillment.mark_ready_for_pickup(conn, ids, actor=actor), run)
        )
    if run.handed_over or run.delivered or run.at_store:
        log.info("own courier: %s", run.metadata())
    return run


def courier_route_sheet(
    conn: psycopg.Connection, *, location_code: str, day: date, printed_at: datetime | None = None
) -> bytes:
    """The own courier's route sheet of a location for a local day, as a PDF (``read_model.courier_route``
    rendered by ``oms_ops.route_sheet``): the parcels handed over that day and those waiting to be."""
    loc = conn.execute(
        "SELECT name, city, timezone FROM oms.locations WHERE location_code = %s", (location_code,)
    ).fetchone()
    if loc is None:
        raise NotFound("location", [location_code])
    name, city, tz = loc
    rows = read_model.courier_route(conn, location_code, day)
    when = printed_at or datetime.now(ZoneInfo(tz))
    return route_sheet.render(
        rows, location_code=location_code, location_name=name, city=city, day=day, printed_at=when
    )
