"""One state machine for orders, order lines, shipments, returns, payments and refunds.

The allowed transitions are data (``TRANSITIONS``), not ``if`` branches spread over the code: every state
change in the system goes through :func:`apply_transitions`, which checks a whole batch against the table,
refuses the batch if any change is illegal (listing every refused change, changing nothing), and otherwise
updates the rows and appends one ``oms.order_events`` row per change.

KPI timestamps (``allocated_at``, ``shipped_at``, ``delivered_at`` …) are stamped here too, from ``STAMPS``,
the first time an entity reaches a state — so allocation and fulfillment stamp them the same way, and
re-entering a state (reroute, re-delivery attempt) never rewrites history.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import psycopg
from psycopg import sql

from oms_ops.errors import IllegalTransition, NotFound, ValidationFailed
from oms_ops.outbox import dumps


def _t(**edges: str) -> dict[str, frozenset[str]]:
    return {src: frozenset(dsts.split()) for src, dsts in edges.items()}


#: entity -> from_state -> allowed to_states. States with no entry are terminal.
TRANSITIONS: dict[str, dict[str, frozenset[str]]] = {
    "order": _t(
        new="allocated partially_allocated backordered on_hold cancelled",
        on_hold="new cancelled",
        backordered="allocated partially_allocated on_hold cancelled shipped",
        partially_allocated="allocated backordered new picking on_hold cancelled shipped",
        allocated="new partially_allocated backordered picking on_hold cancelled shipped",
        picking="packed partially_shipped backordered cancelled shipped",
        # picking, allocated, new … after packed / (partially) shipped: a shipment cancelled before hand-over
        # re-opened its units (oms_ops/shipment_cancel.py)
        packed="partially_shipped shipped cancelled picking",
        partially_shipped="shipped backordered allocated partially_allocated new picking",
        shipped="ready_for_pickup delivered not_delivered returned_to_sender allocated backordered new",
        ready_for_pickup="picked_up not_delivered returned_to_sender",
        not_delivered="shipped ready_for_pickup delivered returned_to_sender allocated backordered",
        delivered="",
        picked_up="",
        returned_to_sender="",
        cancelled="",
    ),
    "order_line": _t(
        new="allocated backordered cancelled",
        backordered="allocated new cancelled shipped",
        allocated="new backordered picked cancelled shipped",
        # … → allocated / new: units of a shipment cancelled before hand-over are reserved again or wait for
        # the allocator (oms_ops/shipment_cancel.py)
        picked="packed cancelled shipped allocated",
        packed="shipped cancelled allocated",
        shipped="delivered returned allocated new",
        delivered="returned",
        returned="",
        cancelled="",
    ),
    "shipment": _t(
        created="label_printed handed_over ready_for_pickup cancelled",
        label_printed="handed_over cancelled",  # cancelled: only before hand-over
        handed_over="in_transit ready_for_pickup delivered not_delivered",
        in_transit="ready_for_pickup delivered not_delivered",
        ready_for_pickup="picked_up not_delivered",
        not_delivered="in_transit ready_for_pickup delivered returned_to_sender",
        delivered="",
        picked_up="",
        returned_to_sender="",
        cancelled="",
    ),
    "return": _t(
        requested="received cancelled",
        received="inspected",
        inspected="closed",
        closed="",
        cancelled="",
    ),
    "payment": _t(
        pending="authorized paid failed cancelled",
        authorized="paid failed cancelled",
        paid="partially_refunded refunded",
        partially_refunded="refunded",
        failed="",
        cancelled="",
        refunded="",
    ),
    "refund": _t(
        requested="pending succeeded failed",
        pending="succeeded failed",
        failed="",
        succeeded="",
    ),
}

#: States an entity may be created in (a creation event goes from NULL to one of these).
INITIAL_STATES: dict[str, frozenset[str]] = {
    "order": frozenset({"new", "on_hold"}),
    "order_line": frozenset({"new", "backordered"}),
    "shipment": frozenset({"created"}),
    "return": frozenset({"requested"}),
    "payment": frozenset(TRANSITIONS["payment"]),  # the provider may report any state first
    "refund": frozenset({"requested"}),
}

#: entity -> (schema, table, id column). Every table has ``state``, ``order_id`` and ``updated_at``.
TABLES: dict[str, tuple[str, str, str]] = {
    "order": ("oms", "orders", "order_id"),
    "order_line": ("oms", "order_lines", "line_id"),
    "shipment": ("oms", "shipments", "shipment_id"),
    "return": ("oms", "returns", "return_id"),
    "payment": ("oms", "payments", "payment_id"),
    "refund": ("oms", "refunds", "refund_id"),
}

#: entity -> state -> timestamp columns stamped (first time only) when the entity enters the state.
STAMPS: dict[str, dict[str, tuple[str, ...]]] = {
    "order": {
        "allocated": ("allocated_at",),
        "picking": ("picking_started_at",),
        "packed": ("picked_at", "packed_at"),
        "partially_shipped": ("first_shipped_at",),
        "shipped": ("first_shipped_at", "shipped_at"),
        "ready_for_pickup": ("ready_for_pickup_at",),
        "delivered": ("delivered_at",),
        "picked_up": ("delivered_at",),
        "cancelled": ("cancelled_at",),
    },
    "order_line": {},
    "shipment": {
        "label_printed": ("label_printed_at",),
        "handed_over": ("handed_over_at",),
        "in_transit": ("in_transit_at",),
        "ready_for_pickup": ("ready_for_pickup_at",),
        "delivered": ("delivered_at",),
        "picked_up": ("picked_up_at",),
        "not_delivered": ("not_delivered_at",),
        "returned_to_sender": ("returned_at",),
        "cancelled": ("cancelled_at",),
    },
    "return": {
        "received": ("received_at",),
        "inspected": ("inspected_at",),
        "closed": ("closed_at",),
        "cancelled": ("cancelled_at",),
    },
    "payment": {"paid": ("paid_at",)},
    "refund": {"succeeded": ("completed_at",), "failed": ("completed_at",)},
}


def states(entity: str) -> frozenset[str]:
    """Every state of ``entity`` (sources and targets of the table)."""
    table = TRANSITIONS[entity]
    return frozenset(table) | frozenset(s for dsts in table.values() for s in dsts)


def allowed(entity: str, from_state: str | None, to_state: str) -> bool:
    """True if the change is in the table (a same-state change is always allowed: it is a no-op)."""
    if from_state is None:
        return to_state in INITIAL_STATES[entity]
    return from_state == to_state or to_state in TRANSITIONS[entity].get(from_state, frozenset())


def path(entity: str, from_state: str, to_state: str) -> list[str] | None:
    """Shortest sequence of states leading from ``from_state`` to ``to_state`` (excluding the start), [] when
    equal, None if unreachable. Used when derived state moves more than one step (shipped → delivered after
    the remainder of a partially shipped order is cancelled): each step is recorded as its own event."""
    if from_state == to_state:
        return []
    table = TRANSITIONS[entity]
    prev: dict[str, str] = {from_state: from_state}
    queue = deque([from_state])
    while queue:
        cur = queue.popleft()
        for nxt in sorted(table.get(cur, ())):
            if nxt in prev:
                continue
            prev[nxt] = cur
            if nxt == to_state:
                out = [nxt]
                while prev[out[-1]] != from_state:
                    out.append(prev[out[-1]])
                return out[::-1]
            queue.append(nxt)
    return None


@dataclass(frozen=True)
class Change:
    """One requested state change. ``at`` (optional, an addition to the contract) is when it really happened
    (e.g. the carrier's delivery time); it is used for the KPI timestamp columns instead of now()."""

    entity_id: int
    to_state: str
    reason: str | None = None
    data: dict | None = None
    at: datetime | None = None


def _stamp_assignments(entity: str) -> sql.Composable:
    by_column: dict[str, list[str]] = {}
    for state, columns in STAMPS[entity].items():
        for col in columns:
            by_column.setdefault(col, []).append(state)
    parts = [
        sql.SQL(
            "{col} = CASE WHEN v.s = ANY({states}) THEN COALESCE(t.{col}, v.at, now()) ELSE t.{col} END"
        ).format(col=sql.Identifier(col), states=sql.Literal(sorted(sts)))
        for col, sts in sorted(by_column.items())
    ]
    return sql.SQL("").join(sql.SQL(", ") + p for p in parts)


def apply_transitions(
    conn: psycopg.Connection, entity: str, changes: Sequence[Change], *, actor: str
) -> list[tuple[int, str, str]]:
    """Apply a batch of state changes of one entity kind (call INSIDE a transaction).

    Locks the rows in id order (FOR UPDATE), checks every change against ``TRANSITIONS`` and raises
    IllegalTransition listing ALL refused changes before writing anything. Otherwise updates state (+
    updated_at, KPI stamps) and appends one order_events row per change in ONE statement (the changes travel
    as one JSON document, read server-side with ``json_to_recordset``).
    A same-state change is a no-op that records nothing. Returns ``(id, from, to)`` for the applied changes.
    """
    if entity not in TABLES:
        raise ValidationFailed(f"unknown entity {entity!r}")
    if not changes:
        return []
    ids = [c.entity_id for c in changes]
    if len(set(ids)) != len(ids):
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        raise ValidationFailed(f"{entity}: more than one change for id(s) {dupes} in one batch")
    schema, table, id_col = TABLES[entity]
    tbl = sql.Identifier(schema, table)
    idc = sql.Identifier(id_col)
    rows = conn.execute(
        sql.SQL("SELECT {id}, state, order_id FROM {t} WHERE {id} = ANY(%s) ORDER BY {id} FOR UPDATE").format(
            id=idc, t=tbl
        ),
        (ids,),
    ).fetchall()
    current = {r[0]: (r[1], r[2]) for r in rows}
    missing = [i for i in ids if i not in current]
    if missing:
        raise NotFound(entity, missing)
    known = states(entity)
    refused = [
        (entity, c.entity_id, current[c.entity_id][0], c.to_state)
        for c in changes
        if c.to_state not in known or not allowed(entity, current[c.entity_id][0], c.to_state)
    ]
    if refused:
        raise IllegalTransition(refused)
    effective = [c for c in changes if c.to_state != current[c.entity_id][0]]
    if not effective:
        return []
    # one statement, one JSON document: psycopg adapts text[]/jsonb[] array parameters element by element
    # in Python, which for a batch of changes costs more than the UPDATE and INSERT themselves
    doc = dumps(
        [
            {
                "id": c.entity_id,
                "o": current[c.entity_id][1],
                "f": current[c.entity_id][0],
                "s": c.to_state,
                "r": c.reason,
                "d": c.data,
                "at": c.at,
            }
            for c in effective
        ]
    )
    conn.execute(
        sql.SQL(
            """WITH v AS (
                   SELECT * FROM ROWS FROM (json_to_recordset(%(doc)s::json) AS (
                       id bigint, o bigint, f text, s text, r text, d jsonb, at timestamptz)) WITH ORDINALITY
                   AS v(id, o, f, s, r, d, at, n)),
               u AS (
                   UPDATE {t} AS t SET state = v.s, updated_at = now(){stamps}
                   FROM v WHERE t.{id} = v.id AND t.{id} = ANY(%(ids)s::bigint[]))
               INSERT INTO oms.order_events (order_id, entity, entity_id, from_state, to_state, actor, reason, data)
               SELECT v.o, %(entity)s, v.id, v.f, v.s, %(actor)s, v.r, v.d FROM v ORDER BY v.n"""
        ).format(t=tbl, id=idc, stamps=_stamp_assignments(entity)),
        # ids again as an array: json_to_recordset is estimated at 100 rows, so without ``= ANY`` the
        # planner hash-joins a sequential scan of the whole table for a batch of a few hundred changes
        {"doc": doc, "entity": entity, "actor": actor, "ids": [c.entity_id for c in effective]},
    )
    return [(c.entity_id, current[c.entity_id][0], c.to_state) for c in effective]


def record_creations(
    conn: psycopg.Connection,
    entity: str,
    rows: Sequence[tuple[int, int, str]],
    *,
    actor: str,
    reason: str | None = None,
    data: Sequence[dict | None] | None = None,
) -> None:
    """Append creation events (from NULL) for new entities ``(order_id, entity_id, state)`` in one INSERT
    from one JSON document (inside a transaction). The state must be an initial state of the entity."""
    if not rows:
        return
    bad = [(entity, eid, "(none)", st) for _, eid, st in rows if st not in INITIAL_STATES[entity]]
    if bad:
        raise IllegalTransition(bad)
    datas = data if data is not None else [None] * len(rows)
    doc = dumps([{"o": o, "i": i, "s": st, "d": d} for (o, i, st), d in zip(rows, datas, strict=True)])
    conn.execute(
        """INSERT INTO oms.order_events (order_id, entity, entity_id, from_state, to_state, actor, reason, data)
           SELECT v.o, %(entity)s, v.i, NULL, v.s, %(actor)s, %(reason)s, v.d
           FROM ROWS FROM (json_to_recordset(%(doc)s::json) AS (o bigint, i bigint, s text, d jsonb))
                WITH ORDINALITY AS v(o, i, s, d, n)
           ORDER BY v.n""",
        {"doc": doc, "entity": entity, "actor": actor, "reason": reason},
    )
