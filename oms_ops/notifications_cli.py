"""``oms notifications list|resend|opt-out|run``: the customer notification log for ops at a terminal
(oms_ops/notifications.py, docs/notifications.md).

``list`` shows what each customer was told (or why not), ``resend`` sends one again under a new outbox key,
``opt-out`` records a customer or an order that is not to be notified, ``run`` does one turn of the worker's
``notifications`` step (events → notifications → outbox, SMS delivery statuses) and drains the effects — for
scripts and for a stack without the worker. Exit code 1 when the state refuses the operation.
"""

from __future__ import annotations

import json

import typer

from oms_ops.business_config import load_business_config
from oms_ops.cli_support import database_url, fail
from oms_ops.db import connect
from oms_ops.errors import OmsError
from oms_ops.platform.settings import ConfigError
from oms_ops.queries import find_orders
from oms_ops.services import notifications as svc
from oms_ops.services.clients import Clients
from oms_ops.services.outbox import drain_outbox
from oms_ops.services.settings import connectors_of, load_oms_settings

notifications_app = typer.Typer(
    help="Customer notifications (SMS, e-mail): the log, resending, opt-outs.", no_args_is_help=True
)


def _settings():
    try:
        return load_oms_settings()
    except ConfigError as exc:
        fail(str(exc))


def _order_id(conn, order: str) -> int:
    ids = [int(order)] if order.isdigit() else find_orders(conn, order_number=order)
    if not ids:
        fail(f"order {order!r} not found", 1)
    return ids[0]


@notifications_app.command("list")
def list_(
    order: str = typer.Option(None, "--order", help="Order id or order number (ORD-…)"),
    status: str = typer.Option(None, "--status", help="queued, sent, delivered, failed or suppressed"),
    limit: int = typer.Option(50, "--limit"),
    as_json: bool = typer.Option(False, "--json", help="One JSON object per line"),
) -> None:
    """What customers were told, newest first: channel, recipient, status (with the reason), gateway id."""
    if status is not None and status not in svc.STATUSES:
        fail(f"--status: expected one of {', '.join(svc.STATUSES)}")
    with connect(database_url()) as conn:
        order_id = _order_id(conn, order) if order else None
        rows = svc.list_notifications(conn, order_id=order_id, status=status, limit=limit)
    if as_json:
        for r in rows:
            typer.echo(json.dumps(r, ensure_ascii=False, default=str))
        return
    if not rows:
        typer.echo("No notifications.")
        return
    for r in rows:
        why = f"  ({r['reason']})" if r["reason"] else ""
        typer.echo(
            f"{r['notification_id']:>7}  {r['order_number']:<14} {r['trigger']:<17} {r['channel']:<5} "
            f"{r['recipient'] or '-':<28} {r['status']:<10} {r['provider_id'] or ''}{why}"
        )


@notifications_app.command("resend")
def resend(
    notification_id: int = typer.Argument(..., help="Notification id (see `oms notifications list`)"),
    actor: str = typer.Option("cli", "--actor", help="Who resends (recorded)"),
) -> None:
    """Send a sent, delivered or failed notification again (a new outbox effect; the worker sends it)."""
    with connect(database_url()) as conn:
        try:
            out = svc.resend(conn, notification_id, actor=actor)
        except OmsError as exc:
            fail(str(exc), 1)
            return
    typer.echo(json.dumps(out, ensure_ascii=False))


@notifications_app.command("opt-out")
def opt_out(
    order: str = typer.Option(None, "--order", help="Order id or number: this order only"),
    phone: str = typer.Option(None, "--phone", help="The customer's phone: every order"),
    email: str = typer.Option(None, "--email", help="The customer's e-mail: every order"),
    channel: str = typer.Option(None, "--channel", help="sms or email (default: both)"),
    reason: str = typer.Option(None, "--reason"),
    actor: str = typer.Option("cli", "--actor"),
) -> None:
    """Stop notifying a customer (by phone or e-mail) or one order."""
    with connect(database_url()) as conn:
        try:
            order_id = _order_id(conn, order) if order else None
            oid = svc.opt_out(
                conn, actor=actor, order_id=order_id, phone=phone, email=email, channel=channel, reason=reason
            )
        except OmsError as exc:
            fail(str(exc), 1)
            return
    typer.echo(json.dumps({"opt_out_id": oid}))


@notifications_app.command("run")
def run() -> None:
    """One turn of the worker's notifications step, then deliver the notification effects now."""
    settings = _settings()
    config = load_business_config(settings.business_config)
    with connect(database_url()) as conn, Clients(connectors_of(settings)) as clients:
        meta = svc.run(conn, clients, config)
        drained = drain_outbox(conn, clients, effects=("notify.customer",))
    typer.echo(
        json.dumps({**meta, "delivery": drained.metadata(), "errors": drained.errors[:20]}, default=str)
    )
