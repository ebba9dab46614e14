"""``oms order change …`` and ``oms amendments …``: ops' changes to accepted orders and their decisions on
channel amendments, from the command line (``oms_ops.services.changes``; one transaction per command).

A refused change prints one ``error:`` line naming every line and limit at fault and exits 1; nothing is
half-applied. Output is one JSON object (or a table for ``amendments list``).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from decimal import Decimal, InvalidOperation
from typing import Any

import typer

from oms_ops.cli_support import cli_actor, database_url, fail
from oms_ops.db import connect
from oms_ops.errors import OmsError
from oms_ops.services import changes as service

order_app = typer.Typer(help="Accepted orders: change them before they ship.", no_args_is_help=True)
change_app = typer.Typer(
    help="Change an accepted order: quantities, lines, delivery, contact (all or nothing, with an event).",
    no_args_is_help=True,
)
order_app.add_typer(change_app, name="change")
amendments_app = typer.Typer(
    help="Channel amendments: later versions of accepted orders that wait for ops.", no_args_is_help=True
)


_actor = cli_actor


def _fail(message: str, code: int = 1) -> None:
    fail(message, code)


def _run(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Run a service call on a fresh connection; a domain refusal is one ``error:`` line, exit 1."""
    try:
        with connect(database_url()) as conn:
            return fn(conn, *args, **kwargs)
    except OmsError as exc:
        _fail(str(exc))
    except (OSError, ValueError) as exc:
        _fail(str(exc), 2)


def _order_id(conn, ref: str) -> int:
    """An order given by id or by number (``ORD-…``)."""
    if ref.isdigit():
        return int(ref)
    row = conn.execute("SELECT order_id FROM oms.orders WHERE order_number = %s", (ref,)).fetchone()
    if row is None:
        raise ValueError(f"order {ref!r} not found")
    return row[0]


def _echo(result: Any) -> None:
    data = result.as_dict() if hasattr(result, "as_dict") else result
    typer.echo(json.dumps(data, ensure_ascii=False, default=str))


def _money(value: str | None, name: str) -> Decimal | None:
    if value is None:
        return None
    try:
        return Decimal(value)
    except InvalidOperation:
        _fail(f"{name}: {value!r} is not a number", 2)
        raise


_ORDER = typer.Argument(..., help="order id or number (ORD-…)")
_REASON = typer.Option("changed by ops", help="why (recorded in the order's timeline)")


@change_app.command("qty")
def change_qty(
    order: str = _ORDER,
    line: int = typer.Argument(..., help="line number"),
    qty: int = typer.Argument(..., help="the line's new quantity"),
    reason: str = _REASON,
) -> None:
    """Set a line's quantity: an increase is reserved now or refused, a decrease frees the surplus."""
    _echo(
        _run(
            lambda c: service.change_quantity(
                c, _order_id(c, order), line, qty, actor=_actor(), reason=reason
            )
        )
    )


@change_app.command("add")
def change_add(
    order: str = _ORDER,
    sku: str = typer.Argument(...),
    qty: int = typer.Argument(...),
    price: str = typer.Option(None, help="unit price (default: the catalog price)"),
    reason: str = _REASON,
) -> None:
    """Add a line (reserved now or refused)."""
    unit = _money(price, "--price")
    _echo(
        _run(
            lambda c: service.add_line(
                c, _order_id(c, order), sku, qty, unit_price=unit, actor=_actor(), reason=reason
            )
        )
    )


@change_app.command("remove")
def change_remove(
    order: str = _ORDER, line: int = typer.Argument(..., help="line number"), reason: str = _REASON
) -> None:
    """Remove a line; its reservation goes back to stock."""
    _echo(_run(lambda c: service.remove_line(c, _order_id(c, order), line, actor=_actor(), reason=reason)))


@change_app.command("delivery")
def change_delivery(
    order: str = _ORDER,
    method: str = typer.Argument(..., help="courier | pickup_point | store_pickup"),
    pickup: str = typer.Option(None, help="pickup point or store code (not for courier)"),
    reason: str = _REASON,
) -> None:
    """Change the delivery method or pickup point: the order is re-routed."""
    _echo(
        _run(
            lambda c: service.change_delivery(
                c, _order_id(c, order), method, pickup, actor=_actor(), reason=reason
            )
        )
    )


@change_app.command("contact")
def change_contact(
    order: str = _ORDER,
    name: str = typer.Option(None, help="customer name"),
    phone: str = typer.Option(None),
    email: str = typer.Option(None),
    region: str = typer.Option(None),
    city: str = typer.Option(None),
    address: str = typer.Option(None),
    reason: str = _REASON,
) -> None:
    """Change the customer's contact or address (until the order ships)."""
    given = {
        "customer_name": name,
        "customer_phone": phone,
        "customer_email": email,
        "region": region,
        "city": city,
        "address": address,
    }
    fields = {k: v for k, v in given.items() if v is not None}
    if not fields:
        _fail("give at least one of --name, --phone, --email, --region, --city, --address", 2)
    _echo(
        _run(lambda c: service.change_contact(c, _order_id(c, order), fields, actor=_actor(), reason=reason))
    )


@amendments_app.command("list")
def amendments_list(
    all_states: bool = typer.Option(False, "--all", help="every amendment, not only the open ones"),
    limit: int = typer.Option(50, min=1, max=10_000),
    as_json: bool = typer.Option(False, "--json", help="JSON lines instead of a table"),
) -> None:
    """Amendments waiting for ops (newest first): the order, the channel and the field-by-field diff."""
    rows = _run(lambda c: service.list_amendments(c, state=None if all_states else "open", limit=limit))
    for r in rows:
        if as_json:
            typer.echo(json.dumps(r, ensure_ascii=False, default=str))
            continue
        diff = "; ".join(f"{d['path']}: {d['ours']!s} → {d['theirs']!s}" for d in r["diff"])
        typer.echo(
            f"{r['amendment_id']:>6}  {r['state']:<10} {r['order_number'] or r['order_id']} "
            f"({r['order_state']}) {r['channel_code']}:{r['external_id']}  {diff}  — {r['reason']}"
        )
    if not rows and not as_json:
        typer.echo("no amendments" if all_states else "no open amendments")


@amendments_app.command("accept")
def amendments_accept(
    amendment_id: int = typer.Argument(...), note: str = typer.Option(None, help="recorded with it")
) -> None:
    """Apply an open amendment's diff to its order (all or nothing) and close it."""
    _echo(_run(service.accept_amendment, amendment_id, actor=_actor(), note=note))


@amendments_app.command("reject")
def amendments_reject(
    amendment_id: int = typer.Argument(...), note: str = typer.Option(None, help="why (recorded with it)")
) -> None:
    """Close an open amendment as rejected: the order stays as it is."""
    _echo(_run(service.reject_amendment, amendment_id, actor=_actor(), note=note))
