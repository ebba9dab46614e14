"""Closing reservations: release (cancel, hold, reroute, expiry, WMS shortage), partial release (short
pick) and consume (shipping) — every change to a reservation row after the allocator made it lives here.

All are called INSIDE the caller's transaction, after the caller has locked the orders concerned (cancel
and ship lock ``oms.orders`` rows first), so no allocator can add a reservation to those orders
meanwhile — the allocator skips locked orders. Stock rows are locked in (location_code, sku) order before
any reservation row is touched, the one global lock order every stock writer follows, and the stock change
plus its ledger entries go through :func:`oms_ops.inventory.apply_movements` (one checked UPDATE, one
INSERT), so ``stock.reserved = Σ active reservations`` and ``stock = Σ ledger`` hold after every call.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence

import psycopg

from oms_ops.errors import InsufficientStock, Shortfall, ValidationFailed
from oms_ops.inventory import Movement, apply_movements, lock_stock

CLOSED_STATES = ("released", "expired")


def release_reservations(
    conn: psycopg.Connection,
    *,
    order_ids: Sequence[int],
    actor: str,
    reason: str,
    state: str = "released",
) -> int:
    """Release every active reservation of ``order_ids`` (call INSIDE a transaction).

    ``state`` is 'released' (cancel, hold, reroute, shortage) or 'expired' (unpaid order timed out).
    stock.reserved -= qty with one ledger 'release' entry per reservation. Order and line states are the
    caller's business. Returns the number of reservations closed (0 when there were none).
    """
    if state not in CLOSED_STATES:
        raise ValidationFailed(f"release state must be one of {CLOSED_STATES}, got {state!r}")
    ids = sorted(set(order_ids))
    if not ids:
        return 0
    keys = conn.execute(
        "SELECT DISTINCT location_code, sku FROM oms.reservations WHERE order_id = ANY(%s) AND state = 'active'",
        (ids,),
    ).fetchall()
    if not keys:
        return 0
    lock_stock(conn, [(k[0], k[1]) for k in keys], create=False)
    closed = conn.execute(
        """UPDATE oms.reservations SET state = %s, closed_at = now()
           WHERE order_id = ANY(%s) AND state = 'active'
           RETURNING reservation_id, order_id, line_id, location_code, sku, qty""",
        (state, ids),
    ).fetchall()
    apply_movements(
        conn,
        [
            Movement(
                loc,
                sku,
                "release",
                reserved_delta=-qty,
                order_id=oid,
                line_id=lid,
                reservation_id=rid,
                reason=f"{state}: {reason}",
            )
            for rid, oid, lid, loc, sku, qty in sorted(closed)
        ],
        actor=actor,
    )
    return len(closed)


def consume_reservations(
    conn: psycopg.Connection,
    *,
    line_qty: Sequence[tuple[int, str, int]],
    actor: str,
    reason: str,
) -> None:
    """Turn reserved units into shipped units (call INSIDE a transaction).

    ``line_qty`` holds ``(line_id, location_code, qty)``: for each, ``qty`` units of the line's active
    reservations at that location (oldest first) become 'consumed' — a reservation only partly shipped is
    split into a consumed row and a smaller active one, so Σ(active + consumed) per line never grows.
    stock.on_hand -= qty and stock.reserved -= qty with ledger 'ship' entries. Every shortfall (more than
    reserved, unknown line, qty <= 0) is collected and raised as one ValidationFailed — a shortfall as
    :class:`~oms_ops.errors.InsufficientStock` naming order, line, SKU, location, asked and reserved;
    nothing changes.
    """
    wanted: dict[tuple[int, str], int] = defaultdict(int)
    problems = []
    for line_id, location, qty in line_qty:
        if qty <= 0:
            problems.append(f"line {line_id} at {location}: quantity must be > 0, got {qty}")
        else:
            wanted[(line_id, location)] += qty
    if problems:
        raise ValidationFailed(problems)
    _consume(conn, wanted, dict.fromkeys(wanted, reason), actor)


def consume_reservations_bulk(
    conn: psycopg.Connection,
    *,
    line_qty: Sequence[tuple[int, str, int, str]],
    actor: str,
) -> None:
    """:func:`consume_reservations` for many shipments at once (call INSIDE a transaction).

    ``line_qty`` holds ``(line_id, location_code, qty, reason)``: the reason goes to that entry's ledger
    rows, so each 'ship' entry names its own shipment exactly as a shipment-by-shipment run would. A
    (line, location) pair may appear once. Every problem is collected into one ValidationFailed; nothing
    changes.
    """
    wanted: dict[tuple[int, str], int] = {}
    reasons: dict[tuple[int, str], str] = {}
    problems = []
    for line_id, location, qty, reason in line_qty:
        if qty <= 0:
            problems.append(f"line {line_id} at {location}: quantity must be > 0, got {qty}")
        elif (line_id, location) in wanted:
            problems.append(f"line {line_id} at {location}: listed more than once")
        else:
            wanted[(line_id, location)] = qty
            reasons[(line_id, location)] = reason
    if problems:
        raise ValidationFailed(problems)
    _consume(conn, wanted, reasons, actor)


def _consume(
    conn: psycopg.Connection,
    wanted: Mapping[tuple[int, str], int],
    reasons: Mapping[tuple[int, str], str],
    actor: str,
) -> None:
    """Consume ``wanted`` units per (line, location), oldest reservation first; ledger reason per pair.
    Stock rows are locked in (location, sku) order before the reservation rows."""
    if not wanted:
        return
    line_ids = sorted({k[0] for k in wanted})
    heads = {
        r[0]: (r[1], r[2])
        for r in conn.execute(
            "SELECT line_id, sku, order_id FROM oms.order_lines WHERE line_id = ANY(%s)", (line_ids,)
        ).fetchall()
    }
    skus = {lid: h[0] for lid, h in heads.items()}
    missing = [i for i in line_ids if i not in skus]
    if missing:
        raise ValidationFailed([f"line {i}: not found" for i in missing])
    lock_stock(conn, [(loc, skus[lid]) for lid, loc in wanted], create=False)
    rows = conn.execute(
        """SELECT reservation_id, order_id, line_id, location_code, sku, qty FROM oms.reservations
           WHERE line_id = ANY(%s) AND state = 'active' ORDER BY reservation_id FOR UPDATE""",
        (line_ids,),
    ).fetchall()
    active: dict[tuple[int, str], list[tuple]] = defaultdict(list)
    for row in rows:
        active[(row[2], row[3])].append(row)
    short = []
    for (line_id, location), qty in sorted(wanted.items()):
        held = sum(r[5] for r in active[(line_id, location)])
        if held < qty:
            sku, order_id = heads[line_id]
            short.append(
                Shortfall(sku, qty, held, location, line_id, order_id, action="ship", held="reserved")
            )
    if short:
        raise InsufficientStock(short)

    consumed_full: list[int] = []
    partial: list[tuple[int, int]] = []  # (reservation_id, qty consumed) of reservations split in two
    moves: list[Movement] = []
    pending_split: list[tuple[tuple, int]] = []
    for key, qty in sorted(wanted.items()):
        for rid, oid, lid, loc, sku, rqty in active[key]:
            if qty <= 0:
                break
            take = min(qty, rqty)
            qty -= take
            if take == rqty:
                consumed_full.append(rid)
                moves.append(Movement(loc, sku, "ship", -take, -take, oid, lid, rid, reason=reasons[key]))
            else:
                partial.append((rid, take))
                pending_split.append(((rid, oid, lid, loc, sku), take))
    if consumed_full:
        conn.execute(
            "UPDATE oms.reservations SET state = 'consumed', closed_at = now() WHERE reservation_id = ANY(%s)",
            (consumed_full,),
        )
    if partial:
        conn.execute(
            """UPDATE oms.reservations r SET qty = r.qty - p.q
               FROM unnest(%s::bigint[], %s::int[]) AS p(id, q) WHERE r.reservation_id = p.id""",
            ([p[0] for p in partial], [p[1] for p in partial]),
        )
        # at most one reservation per (line, location) is split, so that pair identifies the new row
        created = conn.execute(
            """INSERT INTO oms.reservations (order_id, line_id, location_code, sku, qty, state, expires_at,
                                             decision_id, closed_at)
               SELECT r.order_id, r.line_id, r.location_code, r.sku, p.q, 'consumed', NULL, r.decision_id, now()
               FROM unnest(%s::bigint[], %s::int[]) AS p(id, q)
               JOIN oms.reservations r ON r.reservation_id = p.id
               RETURNING reservation_id, line_id, location_code""",
            ([p[0] for p in partial], [p[1] for p in partial]),
        ).fetchall()
        new_id = {(lid, loc): rid for rid, lid, loc in created}
        for (_, oid, lid, loc, sku), take in pending_split:
            moves.append(
                Movement(
                    loc, sku, "ship", -take, -take, oid, lid, new_id[(lid, loc)], reason=reasons[(lid, loc)]
                )
            )
    apply_movements(conn, moves, actor=actor)


def release_quantities(
    conn: psycopg.Connection,
    *,
    reservation_qty: Sequence[tuple[int, int]],
    actor: str,
    reason: str,
    missing: bool = False,
    reference: str | None = None,
    reasons: Mapping[int, str] | None = None,
) -> int:
    """Give back part of reservations (call INSIDE a transaction, after locking their orders).

    ``reservation_qty`` holds ``(reservation_id, qty)``: ``qty`` units of that active reservation are let
    go — the reservation shrinks, or is closed as 'released' when nothing is left. stock.reserved -= qty
    with one ledger entry per reservation: 'release', or with ``missing`` (a short pick: the units were
    never on the shelf) 'pick' with on_hand -= qty too. Ledger ``reference`` is common, the ledger reason is
    ``reasons[reservation_id]`` or ``reason``. Stock rows are locked in (location, sku) order before the
    reservation rows. Every problem (unknown or closed reservation, qty <= 0, more than it holds) is
    collected into one ValidationFailed (InsufficientStock when a reservation holds less than asked, naming
    its order, line, SKU and location); nothing changes. Returns the number of reservations changed.
    """
    wanted: dict[int, int] = defaultdict(int)
    problems = []
    for reservation_id, qty in reservation_qty:
        if isinstance(qty, bool) or not isinstance(qty, int) or qty <= 0:
            problems.append(f"reservation {reservation_id}: quantity must be an integer > 0, got {qty!r}")
        else:
            wanted[reservation_id] += qty
    if problems:
        raise ValidationFailed(problems)
    if not wanted:
        return 0
    ids = sorted(wanted)
    keys = conn.execute(
        "SELECT DISTINCT location_code, sku FROM oms.reservations WHERE reservation_id = ANY(%s)", (ids,)
    ).fetchall()
    lock_stock(conn, [(k[0], k[1]) for k in keys], create=False)
    rows = conn.execute(
        """SELECT reservation_id, order_id, line_id, location_code, sku, qty, state FROM oms.reservations
           WHERE reservation_id = ANY(%s) ORDER BY reservation_id FOR UPDATE""",
        (ids,),
    ).fetchall()
    found = {r[0]: r for r in rows}
    short = []
    for rid in ids:
        row = found.get(rid)
        if row is None:
            problems.append(f"reservation {rid}: not found")
        elif row[6] != "active":
            problems.append(f"reservation {rid}: is {row[6]}, not active")
        elif wanted[rid] > row[5]:
            gap = Shortfall(
                row[4], wanted[rid], row[5], row[3], row[2], row[1], action="release", held="reserved"
            )
            short.append(gap)
            problems.append(f"reservation {rid}, {gap}")
    if short:
        raise InsufficientStock(short, problems)
    if problems:
        raise ValidationFailed(problems)
    conn.execute(
        """UPDATE oms.reservations r
           SET qty = CASE WHEN r.qty > t.q THEN r.qty - t.q ELSE r.qty END,
               state = CASE WHEN r.qty > t.q THEN r.state ELSE 'released' END,
               closed_at = CASE WHEN r.qty > t.q THEN r.closed_at ELSE now() END
           FROM unnest(%s::int8[], %s::int4[]) AS t(id, q) WHERE r.reservation_id = t.id""",
        (ids, [wanted[rid] for rid in ids]),
    )
    reasons = reasons or {}
    apply_movements(
        conn,
        [
            Movement(
                found[rid][3],
                found[rid][4],
                "pick" if missing else "release",
                on_hand_delta=-wanted[rid] if missing else 0,
                reserved_delta=-wanted[rid],
                order_id=found[rid][1],
                line_id=found[rid][2],
                reservation_id=rid,
                reference=reference,
                reason=reasons.get(rid) or reason,
            )
            for rid in ids
        ],
        actor=actor,
    )
    return len(ids)


def clear_expiry(conn: psycopg.Connection, *, order_ids: Sequence[int]) -> int:
    """The order is paid: its reservations no longer expire (call INSIDE a transaction). Returns rows changed."""
    return conn.execute(
        """UPDATE oms.reservations SET expires_at = NULL
           WHERE order_id = ANY(%s) AND state = 'active' AND expires_at IS NOT NULL""",
        (sorted(set(order_ids)),),
    ).rowcount
