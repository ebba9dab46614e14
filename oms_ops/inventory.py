"""Stock: WMS snapshots, receipts, adjustments and write-offs — every change is an inventory-ledger entry.

``oms.stock`` is a materialisation of ``oms.inventory_ledger``: each operation locks the stock rows it touches
in (location_code, sku) order (the one global order, so concurrent snapshots, allocations and cancellations
cannot deadlock), computes the new figures in Python from the locked snapshot, checks *every* row before
writing, then writes the stock update and the ledger entries with one statement each.

Each stock document (snapshot, receipt, adjustment, write-off) carries a caller-supplied reference that is
recorded in ``oms.stock_documents``: a re-delivered document is a no-op, never a double count.

WMS snapshots (counts that may release reservations) live in ``oms_ops.stock_counts``.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

import psycopg

from oms_ops.db import run_in_transaction
from oms_ops.errors import ValidationFailed

LEDGER_KINDS = frozenset(
    {
        "receipt",
        "adjustment",
        "reservation",
        "release",
        "pick",
        "ship",
        "ship_cancel",  # units of a shipment cancelled before hand-over, back at a location
        "return_restock",
        "write_off",
    }
)
#: Order states whose reservations a WMS shortage may take back (nothing physical has happened yet).
#: Looks at the stock before a snapshot gives up (RetryTransaction: the whole snapshot starts over).


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
    UPDATE and one INSERT. Every stock writer uses it (release/consume too) except the allocator,
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


def register_document(
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


def known_location_and_skus(
    conn: psycopg.Connection, location_code: str, skus: Iterable[str]
) -> tuple[bool, set[str]]:
    loc = conn.execute("SELECT 1 FROM oms.locations WHERE location_code = %s", (location_code,)).fetchone()
    found = conn.execute("SELECT sku FROM oms.products WHERE sku = ANY(%s)", (sorted(set(skus)),)).fetchall()
    return loc is not None, {r[0] for r in found}


def as_pairs(counts: Mapping[str, int] | Sequence[tuple[str, int]]) -> list[tuple[object, object]]:
    return list(counts.items()) if isinstance(counts, Mapping) else [tuple(r) for r in counts]


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
    pairs = as_pairs(lines)
    problems = []
    if not reference:
        problems.append("a reference (document number) is required")
    loc_ok, known = known_location_and_skus(conn, location_code, [str(s) for s, _ in pairs])
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
    if register_document(conn, kind, location_code, reference, actor) is None:
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
    Backorders waiting for this stock are allocated by ``allocate_backorders`` (the pipeline runs it).
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
