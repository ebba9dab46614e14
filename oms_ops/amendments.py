"""Order amendments: a channel's later version of an order the OMS already accepted.

A channel may send the same order again with different content (same channel + external id, another
payload): the buyer corrected the address, a marketplace dropped a line, the till re-exported a corrected
receipt. Before, acceptance saw a duplicate and dropped the version silently. Now the normaliser hands every
later version to :func:`process_versions`, which compares it with what the OMS holds (:func:`diff_order`,
field by field) and:

* applies what the OMS may decide on its own, through ``oms_ops.changes`` (events included): the contact
  and address while the order has not shipped, and lines the channel removed while nothing is picked;
  cancellations of the whole order are the normaliser's own (the channel's status, ``cancel_orders``);
* keeps everything else — quantity, price and SKU changes, new lines, another delivery method, anything
  after shipment — as an **open amendment** (``oms.order_amendments``: the raw payload it came with, the
  diff as ``[{"path", "ours", "theirs"}]``, why it waits) for ops to accept (:func:`accept_amendment`
  applies the diff through ``oms_ops.changes``, all or nothing) or reject (:func:`reject_amendment`: the
  order stays as it is).

An order has at most one open amendment: a newer version supersedes the older one (state 'superseded', its
note naming the newer amendment) — the channel's latest word is what ops decide on. A value the channel no
longer sends (``None``: marketplaces mask the buyer's data after delivery) is not a change.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from oms_ops.business_config import BusinessConfig, load_business_config
from oms_ops.changes import (
    CONTACT_CHANGE_STATES,
    CONTACT_FIELDS,
    LINE_CHANGE_STATES,
    AddLine,
    OrderChange,
    RemoveLine,
    SetContact,
    SetDelivery,
    SetPrice,
    SetQuantity,
    SetShipping,
    change_order_in_transaction,
)
from oms_ops.db import run_in_transaction
from oms_ops.errors import AmendmentNotOpen, OmsError
from oms_ops.orders import ORDER_FIELDS

log = logging.getLogger("oms.amendments")

#: order fields compared with a later version (the OMS drives payment and promise dates itself)
DELIVERY_FIELDS = ("delivery_method", "pickup_location_code")
COMPARED_FIELDS = (*CONTACT_FIELDS, *DELIVERY_FIELDS, "shipping_amount")
_AT = {name: ORDER_FIELDS.index(name) for name in COMPARED_FIELDS}
#: channel kinds (business configuration) whose order prices are fixed when the order is placed: a
#: marketplace prices the sale itself (its promotions, the buyer's wallet discount), and a later record of
#: the same order showing another price is another view of the same sale (Wildberries' history shape has
#: no ``finalPrice``), not a new price — their line prices are not compared
PRICE_FIXED_KINDS = frozenset({"marketplace"})


@dataclass
class AmendResult:
    """What :func:`process_versions` did with a batch of later versions."""

    compared: int = 0
    unchanged: int = 0
    applied: list[int] = field(default_factory=list)  # orders changed automatically
    amendments: list[int] = field(default_factory=list)  # amendment rows opened
    failed: list[tuple[str, str]] = field(default_factory=list)  # (external id, why)


# -- comparing -------------------------------------------------------------------------------------------------
def _norm(v: Any) -> Any:
    """A value as it is compared and stored in the diff (JSON-friendly; 2-decimal money as text)."""
    if isinstance(v, Decimal):
        return str(v.quantize(Decimal("0.01")))
    return v


def diff_order(
    held: Mapping[str, Any], incoming: Any, *, compare_prices: bool = True
) -> list[dict[str, Any]]:
    """The field-by-field difference between the order we hold (``held``: the compared columns and
    ``lines``: ``{line_no: {sku, qty, unit_price, name}}`` of the lines the channel sent) and a later version
    (a ``NormalizedOrder`` or ``ValidatedOrder``): ``[{"path", "ours", "theirs"}]``, ``lines[N]`` with
    ``ours`` / ``theirs`` None for a line removed / added. Pure."""
    values = incoming.staging_values()
    out: list[dict[str, Any]] = []
    for name in COMPARED_FIELDS:
        theirs = _norm(values[_AT[name]])
        ours = _norm(held.get(name))
        if theirs is None and name not in DELIVERY_FIELDS:
            continue  # no longer sent (masked after delivery): not a change
        if theirs != ours:
            out.append({"path": name, "ours": ours, "theirs": theirs})
    ours_lines: Mapping[int, Mapping[str, Any]] = held.get("lines", {})
    theirs_lines = {
        no: {"sku": sku, "qty": qty, "unit_price": _norm(price), "name": name}
        for no, sku, qty, price, name in incoming.staging_lines()
    }
    for no in sorted(set(ours_lines) | set(theirs_lines)):
        a, b = ours_lines.get(no), theirs_lines.get(no)
        if a is None or b is None:
            out.append({"path": f"lines[{no}]", "ours": _line_view(a), "theirs": _line_view(b)})
            continue
        for key in ("sku", "qty", "unit_price") if compare_prices else ("sku", "qty"):
            if _norm(a[key]) != b[key]:
                out.append({"path": f"lines[{no}].{key}", "ours": _norm(a[key]), "theirs": b[key]})
    return out


def _line_view(line: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if line is None:
        return None
    return {
        "sku": line["sku"],
        "qty": line["qty"],
        "unit_price": _norm(line["unit_price"]),
        "name": line.get("name"),
    }


def held_orders(
    conn: psycopg.Connection, channel: str, external_ids: Sequence[str]
) -> dict[str, dict[str, Any]]:
    """The orders we hold for ``external_ids`` of ``channel``: the compared columns, ``order_id``, ``state``
    and ``lines`` — the lines that came from the channel (lines ops added later are ours, not the channel's,
    and are left out of the comparison, as are lines already cancelled), with the quantity the customer
    still wants."""
    cur = conn.cursor(row_factory=dict_row)
    rows = cur.execute(
        psycopg.sql.SQL(
            "SELECT order_id, external_id, state, {} FROM oms.orders WHERE channel_code = %s AND external_id = ANY(%s)"
        ).format(psycopg.sql.SQL(", ").join(psycopg.sql.Identifier(c) for c in COMPARED_FIELDS)),
        (channel, list(external_ids)),
    ).fetchall()
    out = {r["external_id"]: {**r, "lines": {}} for r in rows}
    if not out:
        return out
    by_id = {r["order_id"]: out[r["external_id"]] for r in rows}
    for r in cur.execute(
        """SELECT l.order_id, l.line_no, l.sku, l.qty - l.qty_cancelled AS qty, l.unit_price, l.name
           FROM oms.order_lines l
           WHERE l.order_id = ANY(%(ids)s) AND l.state <> 'cancelled'
             AND NOT EXISTS (SELECT 1 FROM oms.order_events e WHERE e.order_id = l.order_id
                             AND e.entity = 'order_line' AND e.entity_id = l.line_id AND e.from_state IS NULL)
           ORDER BY l.order_id, l.line_no""",
        {"ids": sorted(by_id)},
    ):
        by_id[r["order_id"]]["lines"][r["line_no"]] = r
    return out


# -- deciding ----------------------------------------------------------------------------------------------------
def split_diff(
    state: str, diff: Sequence[Mapping[str, Any]], open_lines: int
) -> tuple[list[OrderChange], list[dict], list[dict], str]:
    """``(automatic changes, their diff entries, the rest, why the rest waits)`` for an order in ``state``
    with ``open_lines`` lines left to deliver. Pure."""
    auto: list[OrderChange] = []
    auto_diff: list[dict] = []
    rest: list[dict] = []
    contact = {d["path"]: d["theirs"] for d in diff if d["path"] in CONTACT_FIELDS}
    if contact and state in CONTACT_CHANGE_STATES:
        auto.append(SetContact(contact))
        auto_diff += [dict(d) for d in diff if d["path"] in CONTACT_FIELDS]
    else:
        rest += [dict(d) for d in diff if d["path"] in CONTACT_FIELDS]
    removed = [
        d for d in diff if d["path"].startswith("lines[") and d["path"].endswith("]") and d["theirs"] is None
    ]
    if removed and state in LINE_CHANGE_STATES and len(removed) < open_lines:
        auto += [RemoveLine(_line_no(d["path"])) for d in removed]
        auto_diff += [dict(d) for d in removed]
    else:
        rest += [dict(d) for d in removed]
    taken = {d["path"] for d in auto_diff} | {d["path"] for d in rest}
    rest += [dict(d) for d in diff if d["path"] not in taken]
    if not rest:
        why = ""
    elif state not in CONTACT_CHANGE_STATES:
        why = f"the order is {state}: changes after shipment need ops"
    elif state not in LINE_CHANGE_STATES:
        why = f"the order is {state}: line and delivery changes once picking started need ops"
    else:
        why = "quantity, price, SKU, new line, delivery or shipping changes need ops"
    return auto, auto_diff, rest, why


def _line_no(path: str) -> int:
    return int(path[len("lines[") :].split("]", 1)[0])


def changes_of(diff: Sequence[Mapping[str, Any]], held: Mapping[str, Any] | None = None) -> list[OrderChange]:
    """The ``oms_ops.changes`` that make the order say what ``theirs`` says (accepting an amendment). A SKU
    change replaces the line: the old one is removed, a new one added with the channel's quantity and price
    (the held ones when only the SKU differs). ``held``: the order's ``delivery_method``,
    ``pickup_location_code`` and ``lines[N]`` → ``{qty, unit_price}`` now."""
    held = held or {}
    out: list[OrderChange] = []
    contact: dict[str, Any] = {}
    delivery: dict[str, Any] = {}
    per_line: dict[int, dict[str, Any]] = {}
    for d in diff:
        path, theirs = d["path"], d["theirs"]
        if path in CONTACT_FIELDS:
            contact[path] = theirs
        elif path in DELIVERY_FIELDS:
            delivery[path] = (d["ours"], theirs)
        elif path == "shipping_amount":
            out.append(SetShipping(Decimal(str(theirs))))
        elif path.startswith("lines["):
            no = _line_no(path)
            key = path.split("].", 1)[1] if "]." in path else "line"
            per_line.setdefault(no, {})[key] = (d["ours"], theirs)
    if contact:
        out.append(SetContact(contact))
    if delivery:
        method = delivery.get("delivery_method", (None, None))
        pickup = delivery.get("pickup_location_code", (None, None))
        method_now = method[1] if "delivery_method" in delivery else held.get("delivery_method")
        pickup_now = pickup[1] if "pickup_location_code" in delivery else held.get("pickup_location_code")
        out.append(SetDelivery(method_now, pickup_now))
    for no, keys in sorted(per_line.items()):
        if "line" in keys:
            ours, theirs = keys["line"]
            if theirs is None:
                out.append(RemoveLine(no))
            else:
                out.append(
                    AddLine(
                        theirs["sku"], theirs["qty"], Decimal(str(theirs["unit_price"])), theirs.get("name")
                    )
                )
        elif "sku" in keys:
            ours_line = held.get(f"lines[{no}]") or {}
            qty = keys.get("qty", (None, ours_line.get("qty")))[1]
            price = keys.get("unit_price", (None, ours_line.get("unit_price")))[1]
            out.append(RemoveLine(no))
            out.append(AddLine(keys["sku"][1], qty, Decimal(str(price)), None))
        else:
            if "qty" in keys:
                out.append(SetQuantity(no, keys["qty"][1]))
            if "unit_price" in keys:
                out.append(SetPrice(no, Decimal(str(keys["unit_price"][1]))))
    return out


# -- the normaliser's hook ----------------------------------------------------------------------------------------
def process_versions(
    conn: psycopg.Connection,
    channel: str,
    versions: Mapping[str, tuple[Any, int | None]],
    *,
    config: BusinessConfig,
    actor: str,
    supersede: bool = False,
) -> AmendResult:
    """Compare later versions (external id → (order, raw_id)) of ``channel``'s orders with what we hold
    (inside the caller's transaction): apply what may be applied, open an amendment for the rest. Each
    order in its own savepoint: an order that cannot be handled is logged and left, the others go on.

    ``supersede``: the channel's later version is the record itself (a till's re-exported receipt is the
    sale as it happened, ``Channel.instant_handover``): the whole diff is applied at once when the order
    can still take it, and recorded as an amendment accepted by the channel; what cannot be applied (the
    goods left the till already) stays open for ops like any other channel's."""
    res = AmendResult()
    if not versions:
        return res
    held = held_orders(conn, channel, sorted(versions))
    known = config.channel_by_code.get(channel)
    compare_prices = known is None or known.kind not in PRICE_FIXED_KINDS
    for ext in sorted(held):
        ours = held[ext]
        if ours["state"] == "cancelled":
            continue  # nothing in a cancelled order can change; its cancellation is the channel's status
        order, raw_id = versions[ext]
        diff = diff_order(ours, order, compare_prices=compare_prices)
        res.compared += 1
        if not diff:
            res.unchanged += 1
            continue
        open_lines = sum(1 for ln in ours["lines"].values() if ln["qty"] > 0)
        try:
            with conn.transaction():
                opened = _amend(
                    conn,
                    channel,
                    ours,
                    diff,
                    open_lines,
                    raw_id,
                    config=config,
                    actor=actor,
                    supersede=supersede,
                )
        except (OmsError, psycopg.DatabaseError) as exc:  # this order only: logged, left as it is
            if conn.broken or conn.closed:
                raise
            res.failed.append((ext, str(exc)))
            log.warning("%s: amendment of order %s not handled: %s", channel, ours["order_id"], exc)
            continue
        if opened is None or opened[1] != "open":
            res.applied.append(ours["order_id"])
        if opened is not None:
            res.amendments.append(opened[0])
    return res


_CONFIG: BusinessConfig | None = None


def _business_config() -> BusinessConfig:
    """The business configuration (read once per process), for the limits and allocation of changes."""
    global _CONFIG
    if _CONFIG is None:
        _CONFIG = load_business_config()
    return _CONFIG


def on_later_versions(
    conn: psycopg.Connection,
    channel: str,
    versions: Mapping[str, tuple[Any, int | None]],
    *,
    actor: str,
    config: BusinessConfig | None = None,
    supersede: bool = False,
) -> AmendResult:
    """The normaliser's hook (inside its batch transaction): :func:`process_versions` in a savepoint, so
    that nothing about amendments — not even an unreadable configuration — can fail the batch that
    accepted new orders. A lost connection still propagates (the batch stays queued)."""
    try:
        with conn.transaction():
            res = process_versions(
                conn, channel, versions, config=config or _business_config(), actor=actor, supersede=supersede
            )
    except Exception as exc:
        if conn.broken or conn.closed:
            raise
        log.warning("%s: comparing %d later versions failed: %s", channel, len(versions), exc)
        return AmendResult(failed=[(k, str(exc)) for k in versions])
    if res.applied or res.amendments or res.failed:
        log.info(
            "%s: later versions: %d applied, %d amendments opened, %d failed",
            channel,
            len(res.applied),
            len(res.amendments),
            len(res.failed),
        )
    return res


def _amend(
    conn, channel, ours, diff, open_lines, raw_id, *, config, actor, supersede
) -> tuple[int, str] | None:
    """Apply what may be applied; ``(amendment id, state)`` of the amendment recorded for the rest."""
    oid = ours["order_id"]
    state = conn.execute("SELECT state FROM oms.orders WHERE order_id = %s FOR UPDATE", (oid,)).fetchone()[0]
    auto, auto_diff, rest, why = split_diff(state, diff, open_lines)
    if auto:
        try:
            with conn.transaction():
                change_order_in_transaction(
                    conn, oid, auto, config=config, actor=actor, reason=f"amended by {channel} (raw {raw_id})"
                )
        except OmsError as exc:  # refused as a whole: ops decide on all of it
            rest, auto_diff = [*auto_diff, *rest], []
            why = f"{why + '; ' if why else ''}automatic change refused: {exc}"
    if not rest:
        return None
    if supersede:
        try:
            with conn.transaction():
                change_order_in_transaction(
                    conn,
                    oid,
                    changes_of(rest, _held_context(conn, oid)),
                    config=config,
                    actor=actor,
                    reason=f"superseded by {channel} (raw {raw_id})",
                )
        except OmsError as exc:
            why = f"superseding version not applicable: {exc}"
        else:
            aid = open_amendment(
                conn,
                order_id=oid,
                channel=channel,
                external_id=ours["external_id"],
                raw_id=raw_id,
                diff=rest,
                applied=auto_diff,
                reason="the channel's later version supersedes the order",
                actor=actor,
            )
            conn.execute(
                """UPDATE oms.order_amendments SET state = 'accepted', resolved_at = now(), resolved_by = %s,
                       note = 'applied: superseding version' WHERE amendment_id = %s""",
                (actor, aid),
            )
            return aid, "accepted"
    aid = open_amendment(
        conn,
        order_id=oid,
        channel=channel,
        external_id=ours["external_id"],
        raw_id=raw_id,
        diff=rest,
        applied=auto_diff,
        reason=why,
        actor=actor,
    )
    return aid, "open"


def _held_context(conn: psycopg.Connection, order_id: int) -> dict[str, Any]:
    """What :func:`changes_of` needs of the order as it is now: delivery and each line's quantity and price."""
    held = conn.execute(
        "SELECT delivery_method, pickup_location_code FROM oms.orders WHERE order_id = %s", (order_id,)
    ).fetchone()
    context: dict[str, Any] = {"delivery_method": held[0], "pickup_location_code": held[1]}
    for no, qty, price in conn.execute(
        "SELECT line_no, qty - qty_cancelled, unit_price FROM oms.order_lines WHERE order_id = %s",
        (order_id,),
    ):
        context[f"lines[{no}]"] = {"qty": qty, "unit_price": price}
    return context


def open_amendment(
    conn: psycopg.Connection,
    *,
    order_id: int,
    channel: str,
    external_id: str,
    raw_id: int | None,
    diff: Sequence[Mapping[str, Any]],
    applied: Sequence[Mapping[str, Any]] = (),
    reason: str,
    actor: str,
) -> int:
    """Record an open amendment (inside a transaction, the order locked), superseding the order's previous
    open one. Returns its id."""
    new_id = conn.execute(
        "SELECT nextval(pg_get_serial_sequence('oms.order_amendments', 'amendment_id'))"
    ).fetchone()[0]
    conn.execute(
        """UPDATE oms.order_amendments SET state = 'superseded', resolved_at = now(), resolved_by = %s,
               note = %s
           WHERE order_id = %s AND state = 'open'""",
        (actor, f"superseded by amendment {new_id}", order_id),
    )
    conn.execute(
        """INSERT INTO oms.order_amendments (amendment_id, order_id, channel_code, external_id, raw_id, diff,
                                            applied, reason, created_by)
           OVERRIDING SYSTEM VALUE VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)""",
        (
            new_id,
            order_id,
            channel,
            external_id,
            raw_id,
            Jsonb(list(diff)),
            Jsonb(list(applied)),
            reason,
            actor,
        ),
    )
    return new_id


# -- ops' decisions ------------------------------------------------------------------------------------------------
def _lock_open(conn: psycopg.Connection, amendment_id: int) -> dict[str, Any]:
    """The amendment's order first, then the amendment (the lock order of every order operation)."""
    row = conn.execute(
        "SELECT order_id FROM oms.order_amendments WHERE amendment_id = %s", (amendment_id,)
    ).fetchone()
    if row is None:
        raise AmendmentNotOpen(amendment_id, None)
    conn.execute("SELECT 1 FROM oms.orders WHERE order_id = %s FOR UPDATE", (row[0],))
    am = (
        conn.cursor(row_factory=dict_row)
        .execute("SELECT * FROM oms.order_amendments WHERE amendment_id = %s FOR UPDATE", (amendment_id,))
        .fetchone()
    )
    if am["state"] != "open":
        raise AmendmentNotOpen(amendment_id, am["state"])
    return am


def accept_amendment(
    conn: psycopg.Connection,
    amendment_id: int,
    *,
    config: BusinessConfig,
    actor: str,
    note: str | None = None,
) -> dict[str, Any]:
    """Apply an open amendment's diff to its order through ``oms_ops.changes`` (one transaction, all or
    nothing: a refused change leaves the amendment open and raises) and close it as 'accepted'."""

    def run(c: psycopg.Connection) -> dict[str, Any]:
        am = _lock_open(c, amendment_id)
        result = change_order_in_transaction(
            c,
            am["order_id"],
            changes_of(am["diff"], _held_context(c, am["order_id"])),
            config=config,
            actor=actor,
            reason=f"amendment {amendment_id} accepted{': ' + note if note else ''}",
        )
        c.execute(
            """UPDATE oms.order_amendments SET state = 'accepted', resolved_at = now(), resolved_by = %s, note = %s
               WHERE amendment_id = %s""",
            (actor, note, amendment_id),
        )
        return {"amendment_id": amendment_id, "state": "accepted", "order": result.as_dict()}

    return run_in_transaction(conn, run)


def reject_amendment(
    conn: psycopg.Connection, amendment_id: int, *, actor: str, note: str | None = None
) -> dict[str, Any]:
    """Close an open amendment as 'rejected': the order stays as it is."""

    def run(c: psycopg.Connection) -> dict[str, Any]:
        am = _lock_open(c, amendment_id)
        c.execute(
            """UPDATE oms.order_amendments SET state = 'rejected', resolved_at = now(), resolved_by = %s, note = %s
               WHERE amendment_id = %s""",
            (actor, note, amendment_id),
        )
        return {"amendment_id": amendment_id, "order_id": am["order_id"], "state": "rejected"}

    return run_in_transaction(conn, run)


def list_amendments(
    conn: psycopg.Connection, *, state: str | None = "open", order_id: int | None = None, limit: int = 200
) -> list[dict[str, Any]]:
    """Amendments, newest first, with the order's number and state (a read for the CLI and the page)."""
    return (
        conn.cursor(row_factory=dict_row)
        .execute(
            """SELECT a.amendment_id, a.order_id, o.order_number, o.state AS order_state, a.channel_code,
                      a.external_id, a.raw_id, a.diff, a.applied, a.reason, a.state, a.created_by, a.created_at,
                      a.resolved_by, a.resolved_at, a.note
               FROM oms.order_amendments a JOIN oms.orders o USING (order_id)
               WHERE (%(state)s::text IS NULL OR a.state = %(state)s)
                 AND (%(order)s::bigint IS NULL OR a.order_id = %(order)s)
               ORDER BY a.amendment_id DESC LIMIT %(limit)s""",
            {"state": state, "order": order_id, "limit": limit},
        )
        .fetchall()
    )


__all__ = [
    "AmendResult",
    "accept_amendment",
    "changes_of",
    "diff_order",
    "held_orders",
    "list_amendments",
    "on_later_versions",
    "open_amendment",
    "process_versions",
    "reject_amendment",
    "split_diff",
]
