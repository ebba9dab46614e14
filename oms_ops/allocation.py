"""Allocation: reserve stock for orders and decide where they ship (reservation + routing together).

One chunk of orders = one transaction, shaped like Saleor's allocation:

1. **Lock the orders** of the chunk (``FOR UPDATE SKIP LOCKED``, served in placed_at, order_id order): two
   allocators running at once take disjoint orders instead of waiting, and an order being cancelled or held
   (its row locked by that operation) is simply left for the next run.
2. **Lock the stock rows** the chunk may use — every row of its SKUs with free stock — in one statement
   ``ORDER BY location_code, sku FOR UPDATE``: the single global lock order shared with WMS snapshots,
   cancellations and shipping, so concurrent writers queue instead of deadlocking.
3. **Plan** with the pure :func:`oms_ops.routing.plan_batch` against that locked snapshot.
4. **Write in bulk**: one guarded ``UPDATE oms.stock … FROM json_to_recordset(…) WHERE reserved + qty <=
   on_hand`` (its row count is checked: the CHECK constraint and the guard make oversell impossible, not
   unlikely), one INSERT of reservations chained to one INSERT of ledger 'reservation' entries, one INSERT
   of decisions (why: rule, candidate scores, chosen locations), one capacity upsert, and the order/line
   state changes through :func:`oms_ops.state_machine.apply_transitions` (events included). Rows travel
   as one JSON document per statement, not as array parameters psycopg would adapt element by element.

Deadlocks and serialization failures are retried per chunk by :func:`oms_ops.db.run_in_transaction`;
they should not happen given the lock order, but must never reach a caller.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

import psycopg

from oms_ops.business_config import BusinessConfig
from oms_ops.db import run_in_transaction
from oms_ops.errors import NotFound, ValidationFailed
from oms_ops.outbox import dumps
from oms_ops.reservations import clear_expiry, release_reservations
from oms_ops.routing import LineDemand, OrderDemand, OrderPlan, ShortLine, compile_config, plan_batch
from oms_ops.state_machine import Change, apply_transitions

#: Orders the allocator serves.
ALLOCATABLE_STATES = ("new", "backordered", "partially_allocated")
#: Waiting orders: only worth planning again when one of their SKUs has free stock somewhere.
WAITING_STATES = ("backordered", "partially_allocated")
#: Orders whose reservations can still be moved (nothing picked yet).
REROUTABLE_STATES = ("new", "backordered", "partially_allocated", "allocated")
#: Orders per transaction: big enough for set-based writes, small enough to keep lock times short.
DEFAULT_CHUNK = 500
PAYMENT_TIMEOUT_HOLD = "payment_timeout"


class AllocationError(RuntimeError):
    """An internal guard tripped (the plan did not fit the locked stock); the chunk was rolled back."""


@dataclass(frozen=True)
class OrderOutcome:
    order_id: int
    outcome: str  # allocated | partially_allocated | backordered
    previous_state: str
    decision_id: int | None  # None: nothing changed, so no new decision was recorded
    rule: str | None
    locations: tuple[str, ...]
    reserved_lines: int
    reserved_units: int
    short: tuple[ShortLine, ...]
    reason: str
    #: the routing cascade ran past its last rule: ``no_route`` or ``exhausted`` (oms_ops/unfillable.py)
    unfillable: str | None = None


@dataclass
class AllocationResult:
    outcomes: list[OrderOutcome] = field(default_factory=list)
    #: requested orders not allocated this time: locked by another operation or not in an allocatable state
    skipped: list[int] = field(default_factory=list)
    transactions: int = 0
    #: unpaid orders whose expired holds stood on stock this run needed: released as the sweeper does
    #: (``expire_reservations``) in the same transaction, the orders put on hold
    expired: list[int] = field(default_factory=list)

    def _ids(self, outcome: str) -> list[int]:
        return [o.order_id for o in self.outcomes if o.outcome == outcome]

    @property
    def allocated(self) -> list[int]:
        return self._ids("allocated")

    @property
    def partially_allocated(self) -> list[int]:
        return self._ids("partially_allocated")

    @property
    def backordered(self) -> list[int]:
        return self._ids("backordered")

    @property
    def reserved_lines(self) -> int:
        return sum(o.reserved_lines for o in self.outcomes)

    @property
    def reserved_units(self) -> int:
        return sum(o.reserved_units for o in self.outcomes)

    def by_order(self) -> dict[int, OrderOutcome]:
        return {o.order_id: o for o in self.outcomes}

    def extend(self, other: AllocationResult) -> None:
        self.outcomes.extend(other.outcomes)
        self.skipped.extend(other.skipped)
        self.transactions += other.transactions
        self.expired.extend(other.expired)


# -- public operations -------------------------------------------------------------------------------------


def allocate_batch(
    conn: psycopg.Connection,
    order_ids: Sequence[int] | None = None,
    *,
    config: BusinessConfig,
    actor: str = "allocator",
    now: datetime | None = None,
    limit: int | None = None,
    chunk_size: int = DEFAULT_CHUNK,
) -> AllocationResult:
    """Allocate allocatable orders (all of them, or those of ``order_ids``), oldest first.

    Serves orders in state new, and backordered / partially_allocated ones that have a chance (one of their
    open SKUs has free stock somewhere), in (placed_at, order_id) order, ``chunk_size`` orders per
    transaction, at most ``limit`` orders. Orders locked by a concurrent operation are skipped (reported in
    ``skipped`` when they were asked for by id). ``now`` drives cut-offs, capacity days and expiry.
    """
    return _run(conn, order_ids, config, actor, now, limit, chunk_size, ALLOCATABLE_STATES, "allocate")


def allocate_backorders(
    conn: psycopg.Connection,
    *,
    config: BusinessConfig,
    actor: str = "allocator",
    now: datetime | None = None,
    limit: int | None = None,
    chunk_size: int = DEFAULT_CHUNK,
) -> AllocationResult:
    """Give arrived stock to waiting orders first-in-first-out (placed_at, then order_id).

    Only backordered / partially allocated orders with a chance are planned; FIFO is a service order, not a
    queue lock: an older order that still cannot be completed does not block a younger one that can.
    """
    return _run(conn, None, config, actor, now, limit, chunk_size, WAITING_STATES, "backorder")


def reroute(
    conn: psycopg.Connection,
    order_id: int,
    *,
    config: BusinessConfig,
    actor: str,
    reason: str,
    exclude_locations: Iterable[str] = (),
    now: datetime | None = None,
) -> AllocationResult:
    """Release the order's reservations and plan it again, avoiding ``exclude_locations`` (one transaction).

    For an order that has not started picking. The order passes through 'new' (two events: why it was
    released, then the new outcome) and a 'reroute' decision records the new plan. Raises NotFound or
    ValidationFailed (state past allocation) without changing anything.
    """
    now = now or datetime.now(UTC)
    excluded = frozenset(exclude_locations)

    def run(c: psycopg.Connection) -> AllocationResult:
        row = c.execute(
            "SELECT state, fulfilment_location_code FROM oms.orders WHERE order_id = %s FOR UPDATE",
            (order_id,),
        ).fetchone()
        if row is None:
            raise NotFound("order", [order_id])
        state, pinned = row
        if pinned is not None and pinned in excluded:
            raise ValidationFailed(
                f"order {order_id} was assigned to {pinned} by its channel (marketplace FBS warehouse): "
                "it ships from there and cannot be rerouted away from it"
            )
        if state not in REROUTABLE_STATES:
            raise ValidationFailed(
                f"order {order_id} is {state}: only orders in {', '.join(REROUTABLE_STATES)} can be rerouted"
            )
        # lock every stock row of the order's SKUs up front, in the global order — with the rows of other
        # orders' expired holds on those SKUs, which are released here like the sweeper would — so the
        # releases and the new reservation below never take a stock lock out of order
        skus = [
            r[0]
            for r in c.execute(
                "SELECT DISTINCT sku FROM oms.order_lines WHERE order_id = %s ORDER BY 1", (order_id,)
            )
        ]
        expiring = _expiring_holds(c, skus, now, keep=order_id)
        _lock_stock_rows(c, skus, None, _hold_keys(c, expiring), only_free=False)
        expired = _expire_locked(c, expiring, actor)[0]
        release_reservations(c, order_ids=[order_id], actor=actor, reason=f"reroute: {reason}")
        if state in ("allocated", "partially_allocated"):
            why = f"reroute: {reason}"
            apply_transitions(c, "order", [Change(order_id, "new", why)], actor=actor)
            lines = c.execute(
                "SELECT line_id FROM oms.order_lines WHERE order_id = %s AND state = 'allocated' ORDER BY line_id",
                (order_id,),
            ).fetchall()
            apply_transitions(c, "order_line", [Change(r[0], "new", why) for r in lines], actor=actor)
        result = _allocate_chunk(
            c,
            [order_id],
            config,
            actor,
            now,
            states=("new", "backordered"),
            after=None,
            size=1,
            kind="reroute",
            exclude=excluded,
            only_with_chance=False,
            expire_holds=False,
        )[0]
        result.expired.extend(expired)
        return result

    return run_in_transaction(conn, run)


def expire_reservations(
    conn: psycopg.Connection, *, now: datetime | None = None, actor: str = "expiry", limit: int = 1000
) -> int:
    """Release the reservations of unpaid prepaid orders whose hold time ran out (one transaction).

    The whole order lets go (all its active reservations, state 'expired', ledger 'release'), its allocated
    lines go back to 'new' and the order goes on hold (hold_code 'payment_timeout'): back to 'new' would let
    the allocator grab the same stock again a minute later. Payment releases the hold (release_holds).
    Orders paid in the meantime just lose their expiry. Orders locked by another operation are left for
    the next run. Returns the number of reservations expired.
    """
    now = now or datetime.now(UTC)

    def run(c: psycopg.Connection) -> int:
        rows = c.execute(
            """SELECT o.order_id, o.payment_status FROM oms.orders o
               WHERE o.order_id IN (SELECT r.order_id FROM oms.reservations r
                                    WHERE r.state = 'active' AND r.expires_at <= %s)
                 AND o.state IN ('allocated', 'partially_allocated')
               ORDER BY o.order_id LIMIT %s FOR UPDATE OF o SKIP LOCKED""",
            (now, limit),
        ).fetchall()
        return _expire_locked(c, rows, actor)[1]

    return run_in_transaction(conn, run)


# -- expired holds ------------------------------------------------------------------------------------------
# An unpaid order's reservation whose ``expires_at`` has passed must not block stock until the sweeper
# (``expire_reservations``) comes by: every allocation that reads stock first releases the expired holds
# standing on the SKUs it needs — exactly as the sweeper would, in its own transaction, under the same
# locks. The orders are locked SKIP LOCKED (one being paid or cancelled right now keeps its hold until
# the next run), before any stock row; then their stock rows are locked together with the allocation's in
# ONE sorted statement, so the global lock order (orders, then stock rows by location and sku) holds.
EXPIRY_REASON = "reservation expired: payment not received"


def _expired_hold_skus(conn: psycopg.Connection, now: datetime) -> list[str]:
    """SKUs with an active reservation past its expiry (the partial ``reservations_expiring_idx``: the
    sweeper keeps this set small, so the look costs next to nothing when there is none)."""
    return [
        r[0]
        for r in conn.execute(
            """SELECT DISTINCT sku FROM oms.reservations
               WHERE state = 'active' AND expires_at IS NOT NULL AND expires_at <= %s""",
            (now,),
        )
    ]


def _expiring_holds(
    conn: psycopg.Connection, skus: Sequence[str], now: datetime, *, keep: int | None = None
) -> list[tuple[int, str]]:
    """Lock (SKIP LOCKED) the orders the sweeper would expire now that hold one of ``skus``:
    [(order_id, payment_status)]. ``keep`` is left alone (the order being rerouted)."""
    if not skus:
        return []
    return conn.execute(
        """SELECT o.order_id, o.payment_status FROM oms.orders o
           WHERE o.order_id IN (SELECT r.order_id FROM oms.reservations r
                                WHERE r.state = 'active' AND r.expires_at <= %(now)s
                                  AND r.sku = ANY(%(skus)s::text[]))
             AND o.state IN ('allocated', 'partially_allocated')
             AND o.order_id IS DISTINCT FROM %(keep)s
           ORDER BY o.order_id FOR UPDATE OF o SKIP LOCKED""",
        {"now": now, "skus": list(skus), "keep": keep},
    ).fetchall()


def _hold_keys(conn: psycopg.Connection, rows: Sequence[tuple[int, str]]) -> list[tuple[str, str]]:
    """The stock rows the unpaid orders of ``rows`` hold (all their active reservations go)."""
    unpaid = [oid for oid, status in rows if status != "paid"]
    if not unpaid:
        return []
    return [
        (r[0], r[1])
        for r in conn.execute(
            """SELECT DISTINCT location_code, sku FROM oms.reservations
               WHERE order_id = ANY(%s) AND state = 'active' ORDER BY 1, 2""",
            (unpaid,),
        )
    ]


def _expire_locked(
    c: psycopg.Connection, rows: Sequence[tuple[int, str]], actor: str
) -> tuple[list[int], int]:
    """The sweeper's work on orders already locked: ``rows`` = [(order_id, payment_status)]. Paid ones lose
    their expiry; unpaid ones release every active reservation as 'expired', their allocated lines go
    back to 'new' and the order goes on hold ('payment_timeout'). Returns (orders put on hold,
    reservations expired)."""
    paid = [oid for oid, status in rows if status == "paid"]
    unpaid = [oid for oid, status in rows if status != "paid"]
    if paid:
        clear_expiry(c, order_ids=paid)
    if not unpaid:
        return [], 0
    why = EXPIRY_REASON
    n = release_reservations(c, order_ids=unpaid, actor=actor, reason=why, state="expired")
    lines = c.execute(
        "SELECT line_id FROM oms.order_lines WHERE order_id = ANY(%s) AND state = 'allocated' ORDER BY line_id",
        (unpaid,),
    ).fetchall()
    apply_transitions(c, "order_line", [Change(r[0], "new", why) for r in lines], actor=actor)
    apply_transitions(
        c,
        "order",
        [Change(oid, "on_hold", why, {"hold_code": PAYMENT_TIMEOUT_HOLD}) for oid in unpaid],
        actor=actor,
    )
    c.execute(
        "UPDATE oms.orders SET hold_code = %s, hold_reason = %s WHERE order_id = ANY(%s)",
        (PAYMENT_TIMEOUT_HOLD, why, unpaid),
    )
    return unpaid, n


def _lock_stock_rows(
    conn: psycopg.Connection,
    skus: Sequence[str],
    locations: Sequence[str] | None,
    extra: Sequence[tuple[str, str]],
    *,
    only_free: bool,
) -> list[tuple[str, str]]:
    """Lock, in ONE statement ordered by (location, sku), the rows of ``skus`` (at ``locations``; with
    ``only_free`` only those with on_hand > reserved) plus the ``extra`` rows. Returns the keys locked."""
    return [
        (r[0], r[1])
        for r in conn.execute(
            """SELECT s.location_code, s.sku FROM oms.stock s
               WHERE (s.sku = ANY(%(skus)s::text[])
                      AND (%(locs)s::text[] IS NULL OR s.location_code = ANY(%(locs)s::text[]))
                      AND (NOT %(only_free)s OR s.on_hand > s.reserved))
                  OR (s.location_code, s.sku) IN (SELECT * FROM unnest(%(xl)s::text[], %(xs)s::text[]))
               ORDER BY s.location_code, s.sku FOR UPDATE OF s""",
            {
                "skus": list(skus),
                "locs": list(locations) if locations is not None else None,
                "only_free": only_free,
                "xl": [k[0] for k in extra],
                "xs": [k[1] for k in extra],
            },
        )
    ]


def _unreleased(conn: psycopg.Connection, skus: Sequence[str], today: date) -> set[str]:
    """The pre-order SKUs among ``skus`` whose release date is still to come (business date ``today``)."""
    return {
        r[0]
        for r in conn.execute(
            "SELECT sku FROM oms.products WHERE sku = ANY(%s) AND preorder AND release_date > %s",
            (list(skus), today),
        )
    }


def latest_decision(conn: psycopg.Connection, order_id: int) -> dict | None:
    """The most recent allocation decision of an order (for ops screens and fulfilment: carrier, tariff)."""
    cur = conn.execute(
        "SELECT * FROM oms.allocation_decisions WHERE order_id = %s ORDER BY decision_id DESC LIMIT 1",
        (order_id,),
    )
    row = cur.fetchone()
    if row is None:
        return None
    return dict(zip([d.name for d in cur.description], row, strict=True))


# -- the chunk loop ----------------------------------------------------------------------------------------


def _run(conn, order_ids, config, actor, now, limit, chunk_size, states, kind) -> AllocationResult:
    now = now or datetime.now(UTC)
    if chunk_size <= 0:
        raise ValidationFailed("chunk_size must be > 0")
    ids = sorted(set(order_ids)) if order_ids is not None else None
    result = AllocationResult()
    after: tuple[datetime, int] | None = None
    remaining = limit
    seen: set[int] = set()
    while remaining is None or remaining > 0:
        size = chunk_size if remaining is None else min(chunk_size, remaining)
        part, last = run_in_transaction(
            conn,
            lambda c, after=after, size=size: _allocate_chunk(
                c, ids, config, actor, now, states=states, after=after, size=size, kind=kind
            ),
        )
        result.extend(part)
        result.transactions += 1
        seen.update(o.order_id for o in part.outcomes)
        if last is None or (ids is not None and len(seen) == len(ids)):
            break
        after = last
        if remaining is not None:
            remaining -= len(part.outcomes)
    if ids is not None:
        result.skipped = [i for i in ids if i not in seen]
    return result


def _allocate_chunk(
    conn: psycopg.Connection,
    order_ids: Sequence[int] | None,
    config: BusinessConfig,
    actor: str,
    now: datetime,
    *,
    states: Sequence[str],
    after: tuple[datetime, int] | None,
    size: int,
    kind: str,
    exclude: frozenset[str] = frozenset(),
    only_with_chance: bool = True,
    expire_holds: bool = True,
) -> tuple[AllocationResult, tuple[datetime, int] | None]:
    """One transaction's worth (call INSIDE a transaction). Returns the result and the last (placed_at,
    order_id) served, or None when the queue is exhausted (this chunk took fewer orders than ``size``).
    With ``expire_holds`` expired holds on the chunk's SKUs are released first (the caller did it when
    False)."""
    ctx = compile_config(config)
    # SKUs under an expired hold count as having free stock: a waiting order may get them now
    expiring_skus = _expired_hold_skus(conn, now) if expire_holds else []
    picked = conn.execute(
        """SELECT o.order_id, o.placed_at FROM oms.orders o
           WHERE o.state = ANY(%(states)s)
             AND (%(ids)s::bigint[] IS NULL OR o.order_id = ANY(%(ids)s::bigint[]))
             AND (%(after_t)s::timestamptz IS NULL OR (o.placed_at, o.order_id) > (%(after_t)s, %(after_id)s))
             AND (o.state = 'new' OR NOT %(chance)s OR EXISTS (
                    SELECT 1 FROM oms.order_lines l JOIN oms.stock s ON s.sku = l.sku
                    WHERE l.order_id = o.order_id AND l.state IN ('new', 'backordered')
                      AND (s.on_hand > s.reserved OR s.sku = ANY(%(expiring)s::text[]))))
           ORDER BY o.placed_at, o.order_id
           LIMIT %(n)s
           FOR UPDATE OF o SKIP LOCKED""",
        {
            "states": list(states),
            "ids": list(order_ids) if order_ids is not None else None,
            "after_t": after[0] if after else None,
            "after_id": after[1] if after else None,
            "chance": only_with_chance,
            "expiring": expiring_skus,
            "n": size,
        },
    ).fetchall()
    if not picked:
        return AllocationResult(), None
    ids = [r[0] for r in picked]
    # fewer rows than asked for: the queue is exhausted, no need for one more (empty) transaction
    last = (picked[-1][1], picked[-1][0]) if len(picked) == size else None

    # -- what the orders still need ------------------------------------------------------------------------
    # one read of the chunk's reservations, by the order_id index (a filter on state alone lets the planner
    # pick the partial (location, sku) index and scan every active reservation): units already held per
    # line (active + consumed) and the locations already holding an active reservation per order
    held: dict[int, int] = defaultdict(int)
    existing_sets: dict[int, set[str]] = defaultdict(set)
    for oid, line_id, loc, qty, rstate in conn.execute(
        "SELECT order_id, line_id, location_code, qty, state FROM oms.reservations WHERE order_id = ANY(%s)",
        (ids,),
    ):
        if rstate == "active":
            existing_sets[oid].add(loc)
            held[line_id] += qty
        elif rstate == "consumed":
            held[line_id] += qty
    existing = {oid: frozenset(locs) for oid, locs in existing_sets.items()}
    # lines by ``l.order_id = ANY`` (index scan) rather than by the join alone (a hash join over every line)
    rows = conn.execute(
        """SELECT o.order_id, o.state, o.channel_code, o.delivery_method, o.pickup_location_code, o.region,
                  o.city, o.lat, o.lon, o.total_amount, o.placed_at, o.payment_method, o.payment_status,
                  l.line_id, l.sku, l.state, l.qty - l.qty_cancelled, coalesce(p.weight_g, 0),
                  o.fulfilment_location_code, l.unit_price
           FROM oms.order_lines l
           JOIN oms.orders o ON o.order_id = l.order_id
           LEFT JOIN oms.products p ON p.sku = l.sku
           WHERE l.order_id = ANY(%(ids)s) AND o.order_id = ANY(%(ids)s) AND l.state <> 'cancelled'
           ORDER BY o.placed_at, o.order_id, l.line_no""",
        {"ids": ids},
    ).fetchall()
    heads: dict[int, tuple] = {}
    lines: dict[int, list[LineDemand]] = defaultdict(list)
    line_state: dict[int, str] = {}
    pinned: dict[int, str | None] = {}
    for r in rows:
        oid = r[0]
        heads.setdefault(oid, r[:13])
        pinned[oid] = r[18]
        line_state[r[13]] = r[15]
        open_qty = r[16] - held.get(r[13], 0)
        if open_qty > 0 and r[15] in ("new", "backordered"):
            lines[oid].append(LineDemand(r[13], r[14], open_qty, r[17], float(r[19])))
    demands = []
    for oid in heads:
        h = heads[oid]
        demands.append(
            OrderDemand(
                order_id=oid,
                channel=h[2],
                delivery_method=h[3],
                placed_at=h[10],
                lines=tuple(lines[oid]),
                order_value=float(h[9]),
                pickup_location=h[4],
                region=h[5],
                city=h[6],
                lat=h[7],
                lon=h[8],
                existing_locations=existing.get(oid, frozenset()),
                exclude_locations=exclude,
                pinned_location=pinned[oid],
            )
        )

    # -- lock the stock the chunk may use, in the global order, and read it -------------------------------
    skus = sorted({line.sku for d in demands for line in d.lines})
    free: dict[tuple[str, str], int] = {}
    expired: list[int] = []
    stale = sorted(set(skus) & set(expiring_skus))
    if stale:
        # expired holds stand on some of these SKUs: lock their orders (after ours, SKIP LOCKED), then their
        # stock rows with ours in one sorted statement, release them as the sweeper would, read what is free
        expiring = _expiring_holds(conn, stale, now)
        locked = _lock_stock_rows(conn, skus, list(ctx.locations), _hold_keys(conn, expiring), only_free=True)
        expired = _expire_locked(conn, expiring, actor)[0]
        if locked:
            rows = conn.execute(
                """SELECT s.location_code, s.sku, s.on_hand - s.reserved FROM oms.stock s
                   JOIN unnest(%s::text[], %s::text[]) AS k(l, k) ON s.location_code = k.l AND s.sku = k.k
                   WHERE s.on_hand > s.reserved AND s.sku = ANY(%s) AND s.location_code = ANY(%s)""",
                ([k[0] for k in locked], [k[1] for k in locked], skus, list(ctx.locations)),
            ).fetchall()
            free = {(loc, sku): f for loc, sku, f in rows}
        if expired:
            # an order of this chunk whose own hold expired went on hold: it is not planned now
            gone = set(expired)
            demands = [d for d in demands if d.order_id not in gone]
    elif skus:
        rows = conn.execute(
            """SELECT location_code, sku, on_hand - reserved FROM oms.stock
               WHERE sku = ANY(%s) AND location_code = ANY(%s) AND on_hand > reserved
               ORDER BY location_code, sku FOR UPDATE""",
            (skus, list(ctx.locations)),
        ).fetchall()
        free = {(loc, sku): f for loc, sku, f in rows}
    if free:
        # pre-orders (oms_ops/supply.py): a product sold before its release date is not reserved until then,
        # so its lines wait as backorders with a promise date instead of taking stock already on hand
        held = _unreleased(conn, skus, now.astimezone(ctx.business_tz).date())
        if held:
            free = {k: v for k, v in free.items() if k[1] not in held}
    capacity = {
        (loc, day): n
        for loc, day, n in conn.execute(
            "SELECT location_code, ship_date, shipments FROM oms.location_capacity_usage WHERE ship_date >= %s",
            (now.date() - timedelta(days=1),),
        )
    }

    plans = plan_batch(demands, free, ctx, now=now, capacity_used=capacity)
    # a waiting order whose cascade verdict changed (the configuration changed, or a location became
    # reachable) gets a new decision even when its state does not change: the unfillable sweep reads it
    waiting = [p.order_id for p in plans if heads[p.order_id][1] != "new" and not p.shipments]
    verdicts: dict[int, str | None] = {}
    if waiting:
        verdicts = dict(
            conn.execute(
                """SELECT DISTINCT ON (order_id) order_id, unfillable FROM oms.allocation_decisions
                   WHERE order_id = ANY(%s) ORDER BY order_id, decision_id DESC""",
                (waiting,),
            ).fetchall()
        )
    result = _write(conn, plans, heads, lines, line_state, config, actor, now, kind, verdicts)
    result.expired.extend(expired)
    return result, last


# -- writes ------------------------------------------------------------------------------------------------


def _write(
    conn, plans: list[OrderPlan], heads, demand, line_state, config, actor, now, kind, verdicts=None
) -> AllocationResult:
    result = AllocationResult()
    # a decision is recorded when something changes (reservations, a state change, the cascade's
    # unfillable verdict) or on reroute; a backorder retried without result keeps its previous decision
    # instead of adding a row every minute
    verdicts = verdicts or {}
    record = [
        p
        for p in plans
        if kind == "reroute"
        or p.shipments
        or heads[p.order_id][1] != p.outcome
        or (p.order_id in verdicts and verdicts[p.order_id] != p.unfillable)
    ]
    decision_of: dict[int, int] = {}
    if record:
        # one JSON document instead of text[]/jsonb[] arrays: psycopg escapes array elements in Python,
        # which for JSON-heavy rows costs more than the whole INSERT
        for did, oid in conn.execute(
            """INSERT INTO oms.allocation_decisions (order_id, kind, outcome, rule_name, split_allowed,
                   locations, shipments, candidates, short_lines, reason, ship_by, promise_date, eta,
                   config_fingerprint, actor, cascade, unfillable)
               SELECT d.order_id, %s, d.outcome, d.rule_name, d.split_allowed, d.locations, d.shipments,
                      d.candidates, d.short_lines, d.reason, d.ship_by, d.promise_date, d.eta, %s, %s,
                      coalesce(d.cascade, '[]'), d.unfillable
               FROM json_to_recordset(%s::json) AS d(order_id bigint, outcome text, rule_name text,
                   split_allowed boolean, locations text[], shipments jsonb, candidates jsonb,
                   short_lines jsonb, reason text, ship_by timestamptz, promise_date date, eta date,
                   cascade jsonb, unfillable text)
               RETURNING decision_id, order_id""",
            (kind, config.fingerprint, actor, _decisions_json(record)),
        ):
            decision_of[oid] = did

    # -- reservations: guarded stock update, then reservations + ledger in one statement ------------------
    res_rows: list[tuple] = []
    per_key: dict[tuple[str, str], int] = defaultdict(int)
    for p in plans:
        if not p.shipments:
            continue
        h = heads[p.order_id]
        expires = None
        if h[11] == "prepaid" and h[12] in ("pending", "failed"):
            minutes = config.reservations.expiry_minutes(h[2])
            if minutes is not None:
                expires = now + timedelta(minutes=minutes)
        for line_id, loc, sku, qty in p.reservations():
            res_rows.append((p.order_id, line_id, loc, sku, qty, expires, decision_of[p.order_id]))
            per_key[(loc, sku)] += qty
    if res_rows:
        keys = sorted(per_key)
        # rows travel as JSON documents (json_to_recordset), not array parameters: psycopg builds arrays
        # element by element in Python, and a known array length steers the planner to seq-scan oms.stock
        updated = conn.execute(
            """UPDATE oms.stock s SET reserved = s.reserved + u.q, updated_at = now()
               FROM json_to_recordset(%s::json) AS u(l text, k text, q int)
               WHERE s.location_code = u.l AND s.sku = u.k AND s.reserved + u.q <= s.on_hand""",
            (json.dumps([{"l": k[0], "k": k[1], "q": per_key[k]} for k in keys], ensure_ascii=False),),
        ).rowcount
        if updated != len(keys):
            raise AllocationError(
                f"guarded reservation update matched {updated} of {len(keys)} stock rows; rolled back"
            )
        conn.execute(
            """WITH r AS (
                   INSERT INTO oms.reservations (order_id, line_id, location_code, sku, qty, expires_at, decision_id)
                   SELECT v.o, v.li, v.l, v.k, v.q, v.x, v.d
                   FROM ROWS FROM (json_to_recordset(%s::json) AS (
                            o bigint, li bigint, l text, k text, q int, x timestamptz, d bigint))
                        WITH ORDINALITY AS v(o, li, l, k, q, x, d, n)
                   ORDER BY v.n
                   RETURNING reservation_id, order_id, line_id, location_code, sku, qty, decision_id)
               INSERT INTO oms.inventory_ledger (location_code, sku, kind, reserved_delta, order_id, line_id,
                                                 reservation_id, reference, actor, reason)
               SELECT location_code, sku, 'reservation', qty, order_id, line_id, reservation_id,
                      'decision:' || decision_id, %s, %s
               FROM r ORDER BY reservation_id""",
            (
                dumps(
                    [dict(zip(("o", "li", "l", "k", "q", "x", "d"), row, strict=True)) for row in res_rows]
                ),
                actor,
                f"allocation ({kind})",
            ),
        )
        bookings: dict[tuple[str, date], int] = defaultdict(int)
        for p in plans:
            for s in p.shipments:
                bookings[(s.location, s.ship_date)] += 1
        bk = sorted(bookings)
        conn.execute(
            """INSERT INTO oms.location_capacity_usage AS u (location_code, ship_date, shipments)
               SELECT * FROM unnest(%s::text[], %s::date[], %s::int[])
               ON CONFLICT (location_code, ship_date) DO UPDATE SET shipments = u.shipments + excluded.shipments""",
            ([k[0] for k in bk], [k[1] for k in bk], [bookings[k] for k in bk]),
        )

    # -- state changes (the state machine: events, KPI stamps) --------------------------------------------
    line_changes: list[Change] = []
    order_changes: list[Change] = []
    for p in plans:
        reserved: dict[int, int] = defaultdict(int)
        for line_id, _, _, qty in p.reservations():
            reserved[line_id] += qty
        did = decision_of.get(p.order_id)
        data = {"decision_id": did, "rule": p.rule} if did else None
        why = f"{kind}: rule {p.rule}"
        for line in demand[p.order_id]:
            # a line waits (backordered) until all of its open quantity is reserved
            target = "allocated" if reserved.get(line.line_id, 0) >= line.qty else "backordered"
            if line_state[line.line_id] != target:
                line_changes.append(Change(line.line_id, target, why))  # the order's event cites the decision
        if heads[p.order_id][1] != p.outcome:
            order_changes.append(Change(p.order_id, p.outcome, why, data))
        result.outcomes.append(
            OrderOutcome(
                order_id=p.order_id,
                outcome=p.outcome,
                previous_state=heads[p.order_id][1],
                decision_id=did,
                rule=p.rule,
                locations=tuple(s.location for s in p.shipments),
                reserved_lines=len(reserved),
                reserved_units=sum(reserved.values()),
                short=p.short,
                reason=p.reason,
                unfillable=p.unfillable,
            )
        )
    apply_transitions(conn, "order_line", line_changes, actor=actor)
    apply_transitions(conn, "order", order_changes, actor=actor)
    return result


def _decisions_json(plans: list[OrderPlan]) -> str:
    rows = []
    for p in plans:
        rows.append(
            {
                "order_id": p.order_id,
                "outcome": p.outcome,
                "rule_name": p.rule,
                "split_allowed": p.split_allowed,
                "locations": [s.location for s in p.shipments],
                "shipments": [
                    {
                        "location": s.location,
                        "handover": s.handover,
                        "carrier": s.carrier,
                        "tariff": s.tariff,
                        "zone": s.zone,
                        "cost": s.cost,
                        "distance_km": s.distance_km,
                        "ship_date": s.ship_date.isoformat(),
                        "eta": s.eta.isoformat(),
                        "lines": s.lines,
                    }
                    for s in p.shipments
                ],
                "candidates": p.scores,
                "short_lines": [
                    {
                        "line_id": s.line_id,
                        "sku": s.sku,
                        "requested": s.requested,
                        "available": s.available,
                        "locations": dict(s.locations),
                    }
                    for s in p.short
                ],
                "reason": p.reason,
                "ship_by": p.ship_by.isoformat() if p.ship_by else None,
                "promise_date": p.promise_date.isoformat() if p.promise_date else None,
                "eta": p.eta.isoformat() if p.eta else None,
                # the rules tried, only when more than one was (a single rule is ``rule_name``)
                "cascade": list(p.cascade) if len(p.cascade) > 1 or p.unfillable else None,
                "unfillable": p.unfillable,
            }
        )
    return json.dumps(rows, ensure_ascii=False)
