"""Invariants of the system of record, checked with numbers.

``check_invariants`` returns every violation (never stops at the first) with the figures that disagree, so a
test failure or a Dagster asset check says exactly which stock row or line is wrong and by how much. The
database enforces what it can (CHECK constraints, unique keys, append-only triggers); these checks cover
what spans tables.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import sql

from oms_ops.state_machine import TABLES, states


@dataclass(frozen=True)
class Violation:
    invariant: str
    key: str
    numbers: dict[str, Any] = field(default_factory=dict)

    def __str__(self) -> str:
        nums = ", ".join(f"{k}={v}" for k, v in self.numbers.items())
        return f"{self.invariant} [{self.key}]: {nums}"


#: name → (SQL returning (key, numbers…), number names). Each query returns only violating rows.
CHECKS: dict[str, tuple[str, tuple[str, ...]]] = {
    "stock_on_hand_equals_ledger": (
        """SELECT coalesce(s.location_code, l.location_code) || '/' || coalesce(s.sku, l.sku),
                  s.on_hand, l.on_hand
           FROM oms.stock s FULL JOIN (SELECT location_code, sku, sum(on_hand_delta) AS on_hand
                                       FROM oms.inventory_ledger GROUP BY 1, 2) l USING (location_code, sku)
           WHERE coalesce(s.on_hand, 0) <> coalesce(l.on_hand, 0) ORDER BY 1""",
        ("stock_on_hand", "ledger_on_hand"),
    ),
    "stock_reserved_equals_ledger": (
        """SELECT coalesce(s.location_code, l.location_code) || '/' || coalesce(s.sku, l.sku),
                  s.reserved, l.reserved
           FROM oms.stock s FULL JOIN (SELECT location_code, sku, sum(reserved_delta) AS reserved
                                       FROM oms.inventory_ledger GROUP BY 1, 2) l USING (location_code, sku)
           WHERE coalesce(s.reserved, 0) <> coalesce(l.reserved, 0) ORDER BY 1""",
        ("stock_reserved", "ledger_reserved"),
    ),
    "stock_reserved_equals_active_reservations": (
        """SELECT coalesce(s.location_code, r.location_code) || '/' || coalesce(s.sku, r.sku),
                  s.reserved, r.qty
           FROM oms.stock s FULL JOIN (SELECT location_code, sku, sum(qty) AS qty FROM oms.reservations
                                       WHERE state = 'active' GROUP BY 1, 2) r USING (location_code, sku)
           WHERE coalesce(s.reserved, 0) <> coalesce(r.qty, 0) ORDER BY 1""",
        ("stock_reserved", "active_reservations"),
    ),
    "stock_nonnegative": (
        """SELECT location_code || '/' || sku, on_hand, reserved FROM oms.stock
           WHERE on_hand < 0 OR reserved < 0 OR reserved > on_hand ORDER BY 1""",
        ("on_hand", "reserved"),
    ),
    "line_reserved_at_most_once": (
        """SELECT 'line ' || l.line_id, l.qty, l.qty_cancelled, r.qty
           FROM oms.order_lines l JOIN (SELECT line_id, sum(qty) AS qty FROM oms.reservations
                                        WHERE state IN ('active', 'consumed') GROUP BY 1) r USING (line_id)
           WHERE r.qty > l.qty - l.qty_cancelled ORDER BY l.line_id""",
        ("qty", "qty_cancelled", "reserved_active_or_consumed"),
    ),
    "shipped_not_above_ordered": (
        """SELECT 'line ' || line_id, qty, qty_shipped, qty_cancelled FROM oms.order_lines
           WHERE qty_shipped < 0 OR qty_shipped + qty_cancelled > qty ORDER BY line_id""",
        ("qty", "qty_shipped", "qty_cancelled"),
    ),
    "line_shipped_equals_shipment_lines": (
        """SELECT 'line ' || l.line_id, l.qty_shipped, coalesce(s.qty, 0)
           FROM oms.order_lines l LEFT JOIN (SELECT x.line_id, sum(x.qty) AS qty FROM oms.shipment_lines x
                                             JOIN oms.shipments sh USING (shipment_id)
                                             WHERE sh.state <> 'cancelled' GROUP BY 1) s
                USING (line_id)
           WHERE l.qty_shipped <> coalesce(s.qty, 0) ORDER BY l.line_id""",
        ("qty_shipped", "shipment_lines_qty"),
    ),
    "line_shipped_equals_consumed_reservations": (
        """SELECT 'line ' || l.line_id, l.qty_shipped, coalesce(r.qty, 0)
           FROM oms.order_lines l LEFT JOIN (SELECT line_id, sum(qty) AS qty FROM oms.reservations
                                             WHERE state = 'consumed' GROUP BY 1) r USING (line_id)
           WHERE l.qty_shipped <> coalesce(r.qty, 0) ORDER BY l.line_id""",
        ("qty_shipped", "consumed_reservations"),
    ),
    "returns_within_shipped": (
        """SELECT 'line ' || l.line_id, l.qty_shipped, l.qty_returned, coalesce(rl.qty, 0), coalesce(rts.qty, 0)
           FROM oms.order_lines l
           LEFT JOIN (SELECT line_id, sum(x.qty) AS qty FROM oms.return_lines x JOIN oms.returns r USING (return_id)
                      WHERE r.state <> 'cancelled' GROUP BY 1) rl USING (line_id)
           LEFT JOIN (SELECT line_id, sum(x.qty) AS qty FROM oms.shipment_lines x JOIN oms.shipments s
                      USING (shipment_id) WHERE s.state = 'returned_to_sender' GROUP BY 1) rts USING (line_id)
           WHERE l.qty_returned > l.qty_shipped OR coalesce(rl.qty, 0) + coalesce(rts.qty, 0) > l.qty_shipped
           ORDER BY l.line_id""",
        ("qty_shipped", "qty_returned", "rma_qty", "returned_to_sender_qty"),
    ),
    "no_active_reservation_on_closed_order": (
        """SELECT 'order ' || o.order_id || ' (' || o.state || ')', count(*), sum(r.qty)
           FROM oms.reservations r JOIN oms.orders o USING (order_id)
           WHERE r.state = 'active' AND o.state IN ('cancelled', 'on_hold', 'shipped', 'delivered', 'picked_up',
                                                    'ready_for_pickup', 'not_delivered', 'returned_to_sender')
           GROUP BY o.order_id, o.state ORDER BY o.order_id""",
        ("active_reservations", "qty"),
    ),
}


def check_invariants(conn: psycopg.Connection) -> list[Violation]:
    """Every violated invariant with its numbers (empty list = healthy). Read-only; runs in one snapshot
    (REPEATABLE READ) so concurrent writers cannot produce a false alarm between two queries."""
    out: list[Violation] = []
    with conn.transaction():
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
        for name, (query, labels) in CHECKS.items():
            for row in conn.execute(query).fetchall():
                out.append(Violation(name, str(row[0]), dict(zip(labels, row[1:], strict=True))))
        for entity, (schema, table, _) in TABLES.items():
            known = sorted(states(entity))
            rows = conn.execute(
                sql.SQL(
                    "SELECT state, count(*) FROM {} WHERE NOT (state = ANY(%s)) GROUP BY state ORDER BY state"
                ).format(sql.Identifier(schema, table)),
                (known,),
            ).fetchall()
            for state, n in rows:
                out.append(Violation("state_in_transition_table", f"{entity} state {state!r}", {"rows": n}))
    return out
