"""Ops actions on orders: cancel, release holds, reroute — each one transaction, all or nothing, refusing
with an error that names every order that cannot take the action."""

from __future__ import annotations

from collections.abc import Sequence

import psycopg

from oms_ops.allocation import REROUTABLE_STATES, reroute
from oms_ops.business_config import BusinessConfig
from oms_ops.orders import CancelResult, cancel_orders, release_holds

__all__ = ["REROUTABLE_STATES", "cancel", "release", "reroute_order"]


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
