"""Unfillable orders for the entry points (worker, CLI, API, dashboards): the sweep that parks and cancels
orders the routing cascade gave up on, the ops clear, and the list — each a call of ``oms_ops.unfillable``."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import psycopg

from oms_ops import unfillable
from oms_ops.business_config import BusinessConfig
from oms_ops.unfillable import SweepResult

__all__ = ["SweepResult", "clear", "parked", "sweep"]


def sweep(conn: psycopg.Connection, config: BusinessConfig, *, now: datetime | None = None) -> SweepResult:
    """Resolve parkings whose order was served, park what the cascade gave up on, cancel what is due."""
    return unfillable.sweep(conn, config, now=now)


def clear(conn: psycopg.Connection, order_id: int, *, actor: str, reason: str) -> None:
    """Keep a parked order waiting as a backorder: no auto-cancel, never parked again."""
    unfillable.clear(conn, order_id, actor=actor, reason=reason)


def parked(
    conn: psycopg.Connection, *, include_closed: bool = False, limit: int = 500
) -> list[dict[str, Any]]:
    """Parked orders, soonest auto-cancel first (``include_closed``: cleared, cancelled, resolved too)."""
    return unfillable.parked(conn, include_closed=include_closed, limit=limit)
