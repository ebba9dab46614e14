"""WMS snapshots: the warehouse's count of a location applied as ledger adjustments.

WMS snapshot below reserved (decision): the WMS count is the physical truth, so the snapshot is applied and
the excess reservations are released — those of the NEWEST orders that have not started picking (states
allocated / partially_allocated), whole orders at a time, through ``release_reservations``. Those orders
go back to 'new' with an order event (reason 'stock_shortage' naming the snapshot, location and SKUs) so the
allocator re-routes them. If releasing every such order still cannot bring reserved down to the count
(reservations of orders already being picked), that SKU's row is NOT applied and goes to raw.quarantine
with the numbers; the other rows of the snapshot are applied. Like cancellations and the allocator, the
snapshot locks those orders BEFORE any stock row (see ``_lock_snapshot``), so it cannot deadlock with them.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

import psycopg
from psycopg import sql

from oms_ops.db import RetryTransaction, run_in_transaction
from oms_ops.inventory import (
    Key,
    Movement,
    apply_movements,
    as_pairs,
    known_location_and_skus,
    lock_stock,
    register_document,
)
from oms_ops.outbox import jsonb
from oms_ops.quarantine import quarantine_many
from oms_ops.reservations import release_reservations
from oms_ops.state_machine import Change, apply_transitions

RELEASABLE_ORDER_STATES = ("allocated", "partially_allocated")
SNAPSHOT_LOCK_ATTEMPTS = 3


@dataclass
class SnapshotResult:
    """What a WMS snapshot did. ``status``: applied | duplicate (reference seen before) | stale (older than
    the last applied snapshot of the location) | rejected (unknown location)."""

    snapshot_id: str
    location_code: str
    status: str
    adjusted: list[tuple[str, int, int]] = field(default_factory=list)  # (sku, old on_hand, new on_hand)
    unchanged: int = 0
    quarantined: list[tuple[str, str]] = field(default_factory=list)  # (sku, reason)
    released_orders: list[int] = field(default_factory=list)
    quarantine_ids: list[int] = field(default_factory=list)


@dataclass(frozen=True)
class _SnapshotLocks:
    """What a snapshot holds once its locks are taken: the locked stock figures, the orders that give up
    their reservations, the SKUs whose deficit they cover, and the SKUs that no release can cover
    (sku → units releasable)."""

    locked: dict[Key, list[int]]
    victims: list[int]
    short_skus: list[str]
    hopeless: dict[str, int]


def _releasable_orders(
    conn: psycopg.Connection, location_code: str
) -> tuple[list[int], dict[int, dict[str, int]]]:
    """Orders not yet in picking holding active reservations at the location, newest first, and what each
    holds there per SKU."""
    rows = conn.execute(
        """SELECT r.order_id, r.sku, sum(r.qty)::int
           FROM oms.reservations r JOIN oms.orders o ON o.order_id = r.order_id
           WHERE r.state = 'active' AND r.location_code = %s AND o.state = ANY(%s)
           GROUP BY r.order_id, r.sku, o.placed_at
           ORDER BY o.placed_at DESC, r.order_id DESC""",
        (location_code, list(RELEASABLE_ORDER_STATES)),
    ).fetchall()
    by_order: dict[int, dict[str, int]] = {}
    newest_first: list[int] = []
    for order_id, sku, qty in rows:
        if order_id not in by_order:
            by_order[order_id] = {}
            newest_first.append(order_id)
        by_order[order_id][sku] = qty
    return newest_first, by_order


def _choose_victims(
    deficits: Mapping[str, int], newest_first: Sequence[int], by_order: Mapping[int, Mapping[str, int]]
) -> tuple[list[int], dict[str, int]]:
    """Pure: the newest orders whose reservations cover ``deficits`` (sku → units), whole orders at a time.
    Returns the chosen orders (in the order chosen) and what stays uncovered (sku → units > 0)."""
    chosen: set[int] = set()
    victims: list[int] = []
    need = dict(deficits)
    for sku in sorted(need):
        for order_id in newest_first:
            if need[sku] <= 0:
                break
            if order_id in chosen or sku not in by_order[order_id]:
                continue
            chosen.add(order_id)
            victims.append(order_id)
            for s2, q2 in by_order[order_id].items():
                if s2 in need:
                    need[s2] -= q2
    return victims, {s: n for s, n in need.items() if n > 0}


def _lock_snapshot(
    conn: psycopg.Connection, location_code: str, target: Mapping[str, int], busy: set[int], *, last: bool
) -> _SnapshotLocks | None:
    """Take the snapshot's locks in the global order — the orders that will give way (by id), then every
    stock row needed (the snapshot's and those the victims' reservations sit on) in one sorted statement —
    and decide on the locked figures (call INSIDE a savepoint).

    Which orders give way depends on stock figures we may only read *after* locking those orders, so they
    are chosen from an unlocked look first. An order locked by another transaction (being cancelled,
    picked, allocated) is skipped (SKIP LOCKED), added to ``busy`` and passed over by the next attempt:
    waiting for it while its owner waits for our stock rows is the deadlock this avoids. The ``last``
    attempt takes every order that could help and waits for them in id order (safe: nothing else is
    locked yet). Returns None when the locked figures need orders that were not locked (an allocator
    reserved in between, or an order was skipped); the caller rolls the savepoint back — releasing every
    lock taken here — and looks again.
    """
    keys = [(location_code, s) for s in target]
    look = {
        sku: reserved
        for sku, reserved in conn.execute(
            "SELECT sku, reserved FROM oms.stock WHERE location_code = %s AND sku = ANY(%s)",
            (location_code, sorted(target)),
        ).fetchall()
    }
    deficits = {s: look[s] - q for s, q in target.items() if q < look.get(s, 0)}
    wanted: list[int] = []
    if deficits:
        newest_first, by_order = _releasable_orders(conn, location_code)
        if last:
            wanted = [o for o in newest_first if not by_order[o].keys().isdisjoint(deficits)]
        else:
            wanted, _ = _choose_victims(deficits, [o for o in newest_first if o not in busy], by_order)
    mine: list[int] = []
    if wanted:
        mine = [
            r[0]
            for r in conn.execute(
                sql.SQL(
                    """SELECT order_id FROM oms.orders WHERE order_id = ANY(%s) AND state = ANY(%s)
                       ORDER BY order_id FOR UPDATE{}"""
                ).format(sql.SQL("" if last else " SKIP LOCKED")),
                (sorted(wanted), list(RELEASABLE_ORDER_STATES)),
            ).fetchall()
        ]
        if not last:
            # not locked: busy elsewhere, or no longer releasable (picking, cancelled …) — either way skip it
            busy.update(set(wanted) - set(mine))
    extra: list[Key] = []
    if mine:
        # the victims are ours now: nothing can add or close their reservations until we commit
        extra = [
            (r[0], r[1])
            for r in conn.execute(
                """SELECT DISTINCT location_code, sku FROM oms.reservations
                   WHERE order_id = ANY(%s) AND state = 'active'""",
                (mine,),
            ).fetchall()
        ]
    locked = lock_stock(conn, keys + extra)
    deficits = {
        s: locked[(location_code, s)][1] - q for s, q in target.items() if q < locked[(location_code, s)][1]
    }
    if not deficits:
        return _SnapshotLocks(locked, [], [], {})
    # reservations on the locked rows cannot change now; order states may (picking only locks the order),
    # which at worst overstates what is releasable and costs one more attempt
    newest_first, by_order = _releasable_orders(conn, location_code)
    releasable: dict[str, int] = defaultdict(int)
    for held in by_order.values():
        for sku, qty in held.items():
            releasable[sku] += qty
    hopeless = {s: releasable[s] for s in deficits if deficits[s] > releasable[s]}
    coverable = {s: d for s, d in deficits.items() if s not in hopeless}
    ours = set(mine)
    victims, uncovered = _choose_victims(coverable, [o for o in newest_first if o in ours], by_order)
    if uncovered:
        return None
    return _SnapshotLocks(locked, victims, sorted(coverable), hopeless)


def apply_wms_snapshot(
    conn: psycopg.Connection,
    location_code: str,
    counts: Mapping[str, int] | Sequence[tuple[str, int]],
    *,
    snapshot_id: str,
    taken_at: datetime | None = None,
    full: bool = False,
    actor: str = "wms",
) -> SnapshotResult:
    """Apply an absolute on-hand count per SKU for one location (one transaction).

    Differences become ledger 'adjustment' entries (reference = snapshot_id). ``full=True`` means SKUs held at
    the location but absent from the snapshot are counted as 0. Bad rows (unknown SKU, negative or
    non-integer count, SKU listed twice) go to raw.quarantine (source 'wms') and the rest is applied; see the
    module docstring for counts below reserved.
    """
    return run_in_transaction(
        conn, lambda c: _apply_snapshot(c, location_code, counts, snapshot_id, taken_at, full, actor)
    )


def _apply_snapshot(conn, location_code, counts, snapshot_id, taken_at, full, actor) -> SnapshotResult:
    pairs = as_pairs(counts)
    result = SnapshotResult(snapshot_id, location_code, "applied")
    payload = {
        "location_code": location_code,
        "snapshot_id": snapshot_id,
        "taken_at": taken_at,
        "counts": [[str(s), q] for s, q in pairs],
    }
    loc_ok, known = known_location_and_skus(conn, location_code, [str(s) for s, _ in pairs])
    if not loc_ok:
        result.status = "rejected"
        result.quarantine_ids = quarantine_many(
            conn, [("wms", snapshot_id, payload, f"unknown location {location_code!r}")]
        )
        return result
    doc_id = register_document(conn, "wms_snapshot", location_code, snapshot_id, actor, taken_at)
    if doc_id is None:
        result.status = "duplicate"
        return result
    if taken_at is not None:
        newer = conn.execute(
            """SELECT reference, taken_at FROM oms.stock_documents
               WHERE kind = 'wms_snapshot' AND location_code = %s AND taken_at > %s AND doc_id <> %s
               ORDER BY taken_at DESC LIMIT 1""",
            (location_code, taken_at, doc_id),
        ).fetchone()
        if newer:
            result.status = "stale"
            result.quarantine_ids = quarantine_many(
                conn,
                [
                    (
                        "wms",
                        snapshot_id,
                        payload,
                        f"stale snapshot: taken {taken_at.isoformat()}, snapshot {newer[0]} taken {newer[1].isoformat()} "
                        "already applied",
                    )
                ],
            )
            return result

    # ---- row validation: collect every bad row
    bad: list[tuple[str, str]] = []
    seen: dict[str, int] = defaultdict(int)
    for sku, _ in pairs:
        seen[str(sku)] += 1
    target: dict[str, int] = {}
    for sku, qty in pairs:
        sku = str(sku)
        if seen[sku] > 1:
            if sku not in {b[0] for b in bad}:
                bad.append((sku, f"sku listed {seen[sku]} times in one snapshot"))
        elif sku not in known:
            bad.append((sku, "unknown sku"))
        elif isinstance(qty, bool) or not isinstance(qty, int) or qty < 0:
            bad.append((sku, f"count must be a non-negative integer, got {qty!r}"))
        else:
            target[sku] = qty
    if full:
        listed = set(seen)
        for (sku,) in conn.execute(
            "SELECT sku FROM oms.stock WHERE location_code = %s AND on_hand <> 0", (location_code,)
        ).fetchall():
            if sku not in listed:
                target[sku] = 0

    # ---- counts below reserved: lock the orders that give way, then every stock row, then decide
    busy: set[int] = set()  # orders found locked by another transaction: passed over next time
    for attempt in range(1, SNAPSHOT_LOCK_ATTEMPTS + 1):
        with conn.transaction() as savepoint:
            plan = _lock_snapshot(conn, location_code, target, busy, last=attempt == SNAPSHOT_LOCK_ATTEMPTS)
            if plan is None:
                # the figures moved between the look and the lock: let go of everything and look again
                raise psycopg.Rollback(savepoint)
        if plan is not None:
            break
    else:
        raise RetryTransaction(
            f"wms snapshot {snapshot_id}: reservations at {location_code} kept changing while choosing "
            "the orders that give way"
        )
    locked = plan.locked
    for sku, releasable in sorted(plan.hopeless.items()):
        on_hand, reserved = locked[(location_code, sku)]
        bad.append(
            (
                sku,
                f"count {target[sku]} is below reserved {reserved} (on_hand {on_hand}); only "
                f"{releasable} reserved by orders not yet in picking can be released",
            )
        )
        del target[sku]
    victims = plan.victims
    if victims:
        short = plan.short_skus
        reason = f"wms snapshot {snapshot_id}: {location_code} counted below reserved for {', '.join(short)}"
        release_reservations(conn, order_ids=victims, actor=actor, reason=reason)
        data = {"snapshot_id": snapshot_id, "location_code": location_code, "skus": short}
        apply_transitions(
            conn, "order", [Change(o, "new", "stock_shortage", data) for o in victims], actor=actor
        )
        lines = conn.execute(
            "SELECT line_id FROM oms.order_lines WHERE order_id = ANY(%s) AND state = 'allocated' ORDER BY line_id",
            (victims,),
        ).fetchall()
        apply_transitions(
            conn, "order_line", [Change(r[0], "new", "stock_shortage") for r in lines], actor=actor
        )
        # releasing changed `reserved` only; the on_hand figures in `locked` are still current
        result.released_orders = sorted(victims)

    # ---- the adjustments
    moves = []
    for sku in sorted(target):
        old = locked[(location_code, sku)][0]
        if target[sku] == old:
            result.unchanged += 1
            continue
        moves.append(
            Movement(
                location_code,
                sku,
                "adjustment",
                target[sku] - old,
                reference=snapshot_id,
                reason="wms snapshot",
            )
        )
        result.adjusted.append((sku, old, target[sku]))
    apply_movements(conn, moves, actor=actor)
    if bad:
        result.quarantined = bad
        result.quarantine_ids = quarantine_many(
            conn,
            [
                (
                    "wms",
                    snapshot_id,
                    {
                        "location_code": location_code,
                        "snapshot_id": snapshot_id,
                        "sku": s,
                        "count": dict((str(k), v) for k, v in pairs if str(k) == s).get(s),
                    },
                    r,
                )
                for s, r in bad
            ],
        )
    conn.execute(
        "UPDATE oms.stock_documents SET summary = %s WHERE doc_id = %s",
        (
            jsonb(
                {
                    "adjusted": len(result.adjusted),
                    "unchanged": result.unchanged,
                    "quarantined": len(bad),
                    "released_orders": result.released_orders,
                }
            ),
            doc_id,
        ),
    )
    return result
