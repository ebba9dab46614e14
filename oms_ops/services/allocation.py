"""Allocate: expire unpaid reservations, release holds whose SKUs now exist, reserve and route new orders,
then backorders — each step set-based, one transaction per chunk (``oms_ops.allocation``)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import psycopg

from oms_ops.allocation import allocate_backorders, allocate_batch, expire_reservations
from oms_ops.business_config import BusinessConfig
from oms_ops.orders import release_resolved_unknown_sku_holds


@dataclass
class AllocateResult:
    expired: int = 0
    released_holds: int = 0
    allocated: int = 0
    partially_allocated: int = 0
    backordered: int = 0
    from_backorders: int = 0

    def metadata(self) -> dict:
        return dict(self.__dict__)


def allocate(
    conn: psycopg.Connection, config: BusinessConfig, *, now: datetime | None = None, actor: str = "allocator"
) -> AllocateResult:
    """Expire unpaid reservations, release holds whose SKUs now exist, allocate new orders, then backorders."""
    res = AllocateResult()
    res.expired = expire_reservations(conn, now=now)
    res.released_holds = len(release_resolved_unknown_sku_holds(conn, actor=actor))
    a = allocate_batch(conn, config=config, actor=actor, now=now)
    res.allocated, res.partially_allocated, res.backordered = (
        len(a.allocated),
        len(a.partially_allocated),
        len(a.backordered),
    )
    b = allocate_backorders(conn, config=config, actor=actor, now=now)
    res.from_backorders = len(b.allocated) + len(b.partially_allocated)
    return res
