"""Ops actions on orders: cancel, release holds, reroute — each one transaction, all or nothing, refusing
with an error that names every order that cannot take the action."""

from __future__ import annotations

from collections.abc import Sequence

import psycopg

from oms_ops.allocation import REROUTABLE_STATES, reroute
from oms_ops.business_config import BusinessConfig
from oms_ops.orders import CancelResult, cancel_orders, release_holds
from oms_ops.state_machine import TRANSITIONS

__all__ = [
    "CANCEL",
    "RELEASE",
    "REMAINDER_CANCELLABLE_STATES",
    "REROUTABLE_STATES",
    "REROUTE",
    "allowed_actions",
    "cancel",
    "release",
    "reroute_order",
]

#: the ops actions on one order, as :func:`allowed_actions` names them
CANCEL, RELEASE, REROUTE = "cancel", "release", "reroute"
#: states past the point of cancelling in which ``cancel`` still cancels the unshipped remainder (the order
#: then moves to 'shipped', see ``oms_ops.orders.cancel_orders``)
REMAINDER_CANCELLABLE_STATES = frozenset({"partially_shipped"})


def allowed_actions(state: str) -> set[str]:
    """The actions an order in ``state`` can take, so a page offers only those that will not be refused:
    ``cancel`` while the state machine lets the order become 'cancelled' (or its remainder be cancelled),
    ``release`` for a held order, ``reroute`` in the states allocation can plan again."""
    out = set()
    if "cancelled" in TRANSITIONS["order"].get(state, ()) or state in REMAINDER_CANCELLABLE_STATES:
        out.add(CANCEL)
    if state == "on_hold":
        out.add(RELEASE)
    if state in REROUTABLE_STATES:
        out.add(REROUTE)
    return out


def cancel(conn: psycopg.Connection, order_ids: Sequence[int], *, reason: str, actor: str) -> CancelResult:
    """Cancel orders: reservations released, open picks cancelled, paid value refunded, the channel told."""
    return cancel_orders(conn, order_ids, reason=reason, actor=actor)


def release(conn: psycopg.Connection, order_ids: Sequence[int], *, reason: str, actor: str) -> list[int]:
    """Release held orders back to 'new' for the allocator."""
    return release_holds(conn, order_ids, reason=reason, actor=actor)


def reroute_order(
    conn: psycopg.Connection, order_id: int, *, config: BusinessConfig, actor: str, reason: str, **kw
):
    """Release an order's reservations and allocate it again under the current rules and stock."""
    return reroute(conn, order_id, config=config, actor=actor, reason=reason, **kw)
