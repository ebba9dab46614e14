"""Ops changes to accepted orders and decisions on channel amendments — one use case per function, each one
transaction (``oms_ops.changes``, ``oms_ops.amendments``). Entry points (CLI ``oms order change …`` /
``oms amendments …``, the Lookup and Operations pages through the API's actions) call these, never the
domain directly: the business configuration (limits, routing) is read here once per process."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import psycopg

from oms_ops import amendments
from oms_ops.business_config import BusinessConfig, load_business_config
from oms_ops.changes import (
    CONTACT_CHANGE_STATES,
    CONTACT_FIELDS,
    DELIVERY_METHODS,
    LINE_CHANGE_STATES,
    AddLine,
    ChangeResult,
    RemoveLine,
    SetContact,
    SetDelivery,
    SetQuantity,
    change_order,
)
from oms_ops.errors import ChangeRefused

__all__ = [
    # what the pages offer (entry points read them here, not from the domain module)
    "CONTACT_CHANGE_STATES",
    "CONTACT_FIELDS",
    "DELIVERY_METHODS",
    "LINE_CHANGE_STATES",
    "accept_amendment",
    "add_line",
    "change_contact",
    "change_delivery",
    "change_quantity",
    "list_amendments",
    "reject_amendment",
    "remove_line",
]

_CONFIG: BusinessConfig | None = None


def _config(config: BusinessConfig | None) -> BusinessConfig:
    global _CONFIG
    if config is not None:
        return config
    if _CONFIG is None:
        _CONFIG = load_business_config()
    return _CONFIG


def change_quantity(
    conn: psycopg.Connection,
    order_id: int,
    line_no: int,
    qty: int,
    *,
    actor: str,
    reason: str = "changed by ops",
    config: BusinessConfig | None = None,
) -> ChangeResult:
    """Set a line's quantity: an increase is reserved now or refused, a decrease frees the surplus."""
    return change_order(
        conn, order_id, [SetQuantity(line_no, qty)], config=_config(config), actor=actor, reason=reason
    )


def add_line(
    conn: psycopg.Connection,
    order_id: int,
    sku: str,
    qty: int,
    *,
    actor: str,
    unit_price: Decimal | None = None,
    reason: str = "changed by ops",
    config: BusinessConfig | None = None,
) -> ChangeResult:
    """Add a line (priced at the catalog price unless ``unit_price`` is given); reserved now or refused."""
    if unit_price is None:
        row = conn.execute("SELECT price, name FROM oms.products WHERE sku = %s", (sku,)).fetchone()
        if row is None or row[0] is None:
            raise ChangeRefused(order_id, f"order {order_id}: unknown sku {sku!r} (not in the catalog)")
        unit_price = Decimal(row[0])
    return change_order(
        conn,
        order_id,
        [AddLine(sku, qty, Decimal(unit_price))],
        config=_config(config),
        actor=actor,
        reason=reason,
    )


def remove_line(
    conn: psycopg.Connection,
    order_id: int,
    line_no: int,
    *,
    actor: str,
    reason: str = "changed by ops",
    config: BusinessConfig | None = None,
) -> ChangeResult:
    """Remove (cancel) a line; its reservation goes back to stock."""
    return change_order(
        conn, order_id, [RemoveLine(line_no)], config=_config(config), actor=actor, reason=reason
    )


def change_delivery(
    conn: psycopg.Connection,
    order_id: int,
    delivery_method: str,
    pickup_location_code: str | None = None,
    *,
    actor: str,
    reason: str = "changed by ops",
    config: BusinessConfig | None = None,
) -> ChangeResult:
    """Change the delivery method or pickup point: the order is re-routed (released and allocated again)."""
    return change_order(
        conn,
        order_id,
        [SetDelivery(delivery_method, pickup_location_code or None)],
        config=_config(config),
        actor=actor,
        reason=reason,
    )


def change_contact(
    conn: psycopg.Connection,
    order_id: int,
    fields: dict[str, Any],
    *,
    actor: str,
    reason: str = "changed by ops",
    config: BusinessConfig | None = None,
) -> ChangeResult:
    """Change the customer's name, phone, e-mail or address (until the order ships)."""
    return change_order(
        conn, order_id, [SetContact(fields)], config=_config(config), actor=actor, reason=reason
    )


def list_amendments(
    conn: psycopg.Connection, *, state: str | None = "open", order_id: int | None = None, limit: int = 200
) -> list[dict]:
    """Amendments waiting for ops (``state=None``: all; ``order_id``: of one order), newest first."""
    return amendments.list_amendments(conn, state=state, order_id=order_id, limit=limit)


def accept_amendment(
    conn: psycopg.Connection,
    amendment_id: int,
    *,
    actor: str,
    note: str | None = None,
    config: BusinessConfig | None = None,
) -> dict[str, Any]:
    """Apply an open amendment's diff to its order (all or nothing) and close it as accepted."""
    return amendments.accept_amendment(conn, amendment_id, config=_config(config), actor=actor, note=note)


def reject_amendment(
    conn: psycopg.Connection, amendment_id: int, *, actor: str, note: str | None = None
) -> dict[str, Any]:
    """Close an open amendment as rejected: the order stays as it is."""
    return amendments.reject_amendment(conn, amendment_id, actor=actor, note=note)
