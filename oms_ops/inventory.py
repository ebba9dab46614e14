"""Stock: WMS snapshots, receipts, adjustments and write-offs — every change is an inventory-ledger entry.

``oms.stock`` is a materialisation of ``oms.inventory_ledger``: each operation locks the stock rows it touches
in (location_code, sku) order (the one global order, so concurrent snapshots, allocations and cancellations
cannot deadlock), computes the new figures in Python from the locked snapshot, checks *every* row before
writing, then writes the stock update and the ledger entries with one statement each.

Each stock document (snapshot, receipt, adjustment, write-off) carries a caller-supplied reference that is
recorded in ``oms.stock_documents``: a re-delivered document is a no-op, never a double count.

WMS snapshot below reserved (decision): the WMS count is the physical truth, so the snapshot is applied and
the excess reservations are released — those of the NEWEST orders that have not started picking (states
allocated / partially_allocated), whole orders at a time, through``release_reservations``. Those orders
go back to 'new' with an order event (reason 'stock_shortage' naming the snapshot, location and SKUs) so the
allocator re-routes them. If releasing every such order still cannot bring reserved down to the count
(reservations of orders already being picked), that SKU's row is NOT applied and goes to raw.quarantine
with the numbers; the other rows of the snapshot are applied. Like cancellations and the allocator, the
snapshot locks those orders BEFORE any stock row (see ``_lock_snapshot``), so it cannot deadlock with them.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

import psycopg
from psycopg import sql

from oms_ops.db import RetryTransaction, run_in_transaction
from oms_ops.errors import ValidationFailed
from oms_ops.outbox import jsonb
from oms_ops.quarantine import quarantine_many
from oms_ops.state_machine import Change, apply_transitions

LEDGER_KINDS = frozenset(
    {"receipt", "adjustment", "reservation", "release", "pick", "ship", "return_restock", "write_off"}
)
#: Order states whose reservations a WMS shortage may take back (nothing physical has happened yet).
RELEASABLE_ORDER_STATES = ("allocated", "partially_allocated")
#: Looks at the stock before a snapshot gives up (RetryTransaction: the whole snapshot starts over).
SNAPSHOT_LOCK_ATTEMPTS = 3


@dataclass(frozen=True)
class Movement:
    """One ledger entry to write (and the stock change it implies)."""

    location_code: str
    sku: str
    kind: str
    on_hand_delta: int = 0
    reserved_delta: int = 0
    order_id: int | None = None
    line_id: int | None = None
    reservation_id: int | None = None
    reference: str | None = None
    reason: str | None = None


Key = tuple[str, str]


def lock_stock(conn: psycopg.Connection, keys: Iterable[Key], *, create: bool = True) -> dict[Key, list[int]]:
    """Lock stock rows in (location_code, sku) order and return ``{key: [on_hand, reserved]}`` (inside a
    transaction). With ``create`` missing rows are inserted first (zero stock); the SKUs and locations must
    exist."""
    keys = sorted(set(keys))
    if not keys:
        return {}
    locs, skus = [k[0] for k in keys], [k[1] for k in keys]
    if create:
        conn.execute(
            """INSERT INTO oms.stock (location_code, sku)
               SELECT l, s FROM unnest(%b::text[], %b::text[]) AS k(l, s) ORDER BY l, s
               ON CONFLICT DO NOTHING""",
            (locs, skus),
        )
    rows = conn.execute(
        """SELECT s.location_code, s.sku, s.on_hand, s.reserved FROM oms.stock s
           JOIN unnest(%b::text[], %b::text[]) AS k(l, s2) ON s.location_code = k.l AND s.sku = k.s2
           ORDER BY s.location_code, s.sku FOR UPDATE OF s""",
        (locs, skus),
    ).fetchall()
    return {(r[0], r[1]): [r[2], r[3]] for r in rows}


def apply_movements(conn: psycopg.Connection, movements: Sequence[Movement], *, actor: str) -> None:
    """Write ledger entries and the matching stock changes (inside a transaction).

    Locks the rows (fixed order), checks that no row would break ``on_hand >= 0`` or
    ``0 <= reserved <= on_hand`` — collecting every offending row into one ValidationFailed — then does one
    UPDATE and one INSERT. Every stock writer uses it release/consume too) except the allocator,
    which reserves with its own guarded UPDATE (``reserved + qty <= on_hand``) and ledger INSERT.
    """
    if not movements:
        return
    bad_kinds = sorted({m.kind for m in movements} - LEDGER_KINDS)
    if bad_kinds:
        raise ValidationFailed(f"unknown ledger kind(s): {bad_kinds}")
    delta: dict[Key, list[int]] = defaultdict(lambda: [0, 0])
    for m in movements:
        d = delta[(m.location_code, m.sku)]
        d[0] += m.on_hand_delta
        d[1] += m.reserved_delta
    locked = lock_stock(conn, delta)
    problems = []
    for key in sorted(delta):
        on_hand, reserved = locked[key]
        new_on_hand, new_reserved = on_hand + delta[key][0], reserved + delta[key][1]
        if new_on_hand < 0 or new_reserved < 0 or new_reserved > new_on_hand:
            problems.append(
                f"{key[0]}/{key[1]}: on_hand {on_hand}{delta[key][0]:+d} = {new_on_hand}, "
                f"reserved {reserved}{delta[key][1]:+d} = {new_reserved} (need 0 <= reserved <= on_hand)"
            )
    if problems:
        raise ValidationFailed(problems)
    keys = sorted(k for k, d in delta.items() if d != [0, 0])
    if keys:
        conn.execute(
            """UPDATE oms.stock s SET on_hand = s.on_hand + d.dh, reserved = s.reserved + d.dr, updated_at = now()
               FROM unnest(%b::text[], %b::text[], %b::int[], %b::int[]) AS d(l, k, dh, dr)
               WHERE s.location_code = d.l AND s.sku = d.k""",
            (
                [k[0] for k in keys],
                [k[1] for k in keys],
                [delta[k][0] for k in keys],
                [delta[k][1] for k in keys],
            ),
        )
    cols = list(
        zip(
            *[
                (
                    m.location_code,
                    m.sku,
                    m.kind,
                    m.on_hand_delta,
                    m.reserved_delta,
                    m.order_id,
                    m.line_id,
                    m.reservation_id,
                    m.reference,
                    m.reason,
                )
                for m in movements
            ],
            strict=True,
        )
    )
    conn.execute(
        """INSERT INTO oms.inventory_ledger (location_code, sku, kind, on_hand_delta, reserved_delta, order_id,
                                             line_id, reservation_id, reference, reason, actor)
           SELECT l, s, k, dh, dr, o, li, r, ref, rsn, %s
           FROM unnest(%b::text[], %b::text[], %b::text[], %b::int[], %b::int[], %b::bigint[], %b::bigint[],
                       %b::bigint[], %b::text[], %b::text[]) AS m(l, s, k, dh, dr, o, li, r, ref, rsn)""",
        (actor, *[list(c) for c in cols]),
    )


def _register_document(
    conn: psycopg.Connection,
    kind: str,
    location_code: str,
    reference: str,
    actor: str,
    taken_at: datetime | None = None,
) -> int | None:
    row = conn.execute(
        """INSERT INTO oms.stock_documents (kind, location_code, reference, taken_at, actor)
           VALUES (%s, %s, %s, %s, %s) ON CONFLICT (kind, location_code, reference) DO NOTHING
           RETURNING doc_id""",
        (kind, location_code, reference, taken_at, actor),
    ).fetchone()
    return row[0] if row else None


def _known(conn: psycopg.Connection, location_code: str, skus: Iterable[str]) -> tuple[bool, set[str]]:
    loc = conn.execute("SELECT 1 FROM oms.locations WHERE location_code = %s", (location_code,)).fetchone()
    found = conn.execute("SELECT sku FROM oms.products WHERE sku = ANY(%s)", (sorted(set(skus)),)).fetchall()
    return loc is not None, {r[0] for r in found}


# --------------------------------------------------------------------------------------------------------
# WMS snapshot
# --------------------------------------------------------------------------------------------------------
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


def _as_pairs(counts: Mapping[str, int] | Sequence[tuple[str, int]]) -> list[tuple[object, object]]:
    return list(counts.items()) if isinstance(counts, Mapping) else [tuple(r) for r in counts]


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
    pairs = _as_pairs(counts)
    result = SnapshotResult(snapshot_id, location_code, "applied")
    payload = {
        "location_code": location_code,
        "snapshot_id": snapshot_id,
        "taken_at": taken_at,
        "counts": [[str(s), q] for s, q in pairs],
    }
    loc_ok, known = _known(conn, location_code, [str(s) for s, _ in pairs])
    if not loc_ok:
        result.status = "rejected"
        result.quarantine_ids = quarantine_many(
            conn, [("wms", snapshot_id, payload, f"unknown location {location_code!r}")]
        )
        return result
    doc_id = _register_document(conn, "wms_snapshot", location_code, snapshot_id, actor, taken_at)
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
        from oms_ops.reservations import release_reservations

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


# --------------------------------------------------------------------------------------------------------
# receipts, adjustments, write-offs
# --------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class StockDocResult:
    """``applied`` is False when the reference was already applied (nothing changed)."""

    reference: str
    applied: bool
    entries: int


def _stock_document(conn, kind, location_code, lines, reference, actor, reason, check) -> StockDocResult:
    pairs = _as_pairs(lines)
    problems = []
    if not reference:
        problems.append("a reference (document number) is required")
    loc_ok, known = _known(conn, location_code, [str(s) for s, _ in pairs])
    if not loc_ok:
        problems.append(f"unknown location {location_code!r}")
    qty: dict[str, int] = defaultdict(int)
    for sku, q in pairs:
        if str(sku) not in known:
            problems.append(f"{sku}: unknown sku")
        elif isinstance(q, bool) or not isinstance(q, int):
            problems.append(f"{sku}: quantity must be an integer, got {q!r}")
        else:
            qty[str(sku)] += q
    if not pairs:
        problems.append("no lines")
    if problems and not loc_ok:
        raise ValidationFailed(problems)
    seen = conn.execute(
        "SELECT 1 FROM oms.stock_documents WHERE kind = %s AND location_code = %s AND reference = %s",
        (kind, location_code, reference),
    ).fetchone()
    if seen and not problems:
        return StockDocResult(reference, False, 0)  # re-delivered document: nothing to do
    # stock-dependent checks run on every valid line too, so one error lists everything to fix
    locked = lock_stock(conn, [(location_code, s) for s in qty])
    problems += [p for s in sorted(qty) if (p := check(s, qty[s], *locked[(location_code, s)]))]
    if problems:
        raise ValidationFailed(problems)
    if _register_document(conn, kind, location_code, reference, actor) is None:
        return StockDocResult(reference, False, 0)
    sign = -1 if kind == "write_off" else 1
    moves = [
        Movement(location_code, s, kind, sign * qty[s], reference=reference, reason=reason)
        for s in sorted(qty)
        if qty[s] != 0
    ]
    apply_movements(conn, moves, actor=actor)
    return StockDocResult(reference, True, len(moves))


def receive_stock(
    conn: psycopg.Connection,
    location_code: str,
    lines: Mapping[str, int] | Sequence[tuple[str, int]],
    *,
    reference: str,
    actor: str,
    reason: str | None = None,
) -> StockDocResult:
    """Book a goods receipt (ledger 'receipt', on_hand += qty) — one transaction, idempotent by reference.

    Every line is checked first (known SKU, qty > 0); any problem raises ValidationFailed listing them all.
    Backorders waiting for this stock are allocated by``allocate_backorders`` (the pipeline runs it).
    """

    def check(sku, q, on_hand, reserved):
        return None if q > 0 else f"{sku}: received quantity must be > 0, got {q}"

    return run_in_transaction(
        conn, lambda c: _stock_document(c, "receipt", location_code, lines, reference, actor, reason, check)
    )


def adjust_stock(
    conn: psycopg.Connection,
    location_code: str,
    lines: Mapping[str, int] | Sequence[tuple[str, int]],
    *,
    reference: str,
    reason: str,
    actor: str,
) -> StockDocResult:
    """Manual correction by a signed delta per SKU (ledger 'adjustment'); idempotent by reference.

    A delta that would take on_hand below reserved is refused (ValidationFailed naming every such SKU):
    unlike a WMS snapshot this is a human action, who should release or re-route orders first.
    """
    if not reason:
        raise ValidationFailed("an adjustment needs a reason")

    def check(sku, d, on_hand, reserved):
        if d == 0:
            return f"{sku}: delta must not be 0"
        if on_hand + d < reserved:
            return f"{sku}: on_hand {on_hand}{d:+d} = {on_hand + d} would be below reserved {reserved}"
        return None

    return run_in_transaction(
        conn,
        lambda c: _stock_document(c, "adjustment", location_code, lines, reference, actor, reason, check),
    )


def write_off(
    conn: psycopg.Connection,
    location_code: str,
    lines: Mapping[str, int] | Sequence[tuple[str, int]],
    *,
    reference: str,
    reason: str,
    actor: str,
) -> StockDocResult:
    """Write off damaged / lost units (ledger 'write_off', on_hand -= qty); idempotent by reference.

    Only free stock (on_hand - reserved) can be written off; every violation is listed.
    """
    if not reason:
        raise ValidationFailed("a write-off needs a reason")

    def check(sku, q, on_hand, reserved):
        if q <= 0:
            return f"{sku}: write-off quantity must be > 0, got {q}"
        if q > on_hand - reserved:
            return f"{sku}: write-off {q} exceeds free stock {on_hand - reserved} (on_hand {on_hand}, reserved {reserved})"
        return None

    return run_in_transaction(
        conn, lambda c: _stock_document(c, "write_off", location_code, lines, reference, actor, reason, check)
    )


def stock_levels(conn: psycopg.Connection, location_code: str | None = None) -> dict[Key, tuple[int, int]]:
    """Current ``{(location, sku): (on_hand, reserved)}`` — a read helper for tests and dashboards."""
    rows = conn.execute(
        """SELECT location_code, sku, on_hand, reserved FROM oms.stock
           WHERE %(l)s::text IS NULL OR location_code = %(l)s ORDER BY 1, 2""",
        {"l": location_code},
    ).fetchall()
    return {(r[0], r[1]): (r[2], r[3]) for r in rows}
