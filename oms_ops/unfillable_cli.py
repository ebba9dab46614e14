"""``oms unfillable list|clear|sweep``: orders the routing cascade gave up on (oms_ops/unfillable.py).

The same service calls the worker's ``unfillable_sweep`` step and the Operations page make, for ops at a
terminal and for scripts (exit code 1 when a clear is refused).
"""

from __future__ import annotations

import json

import typer

from oms_ops.business_config import load_business_config
from oms_ops.db import connect
from oms_ops.errors import OmsError
from oms_ops.platform import stack
from oms_ops.platform.settings import ConfigError
from oms_ops.services import unfillable
from oms_ops.services.settings import load_oms_settings

unfillable_app = typer.Typer(
    help="Orders no routing rule can fill: parked with an auto-cancel date (docs/allocation.md).",
    no_args_is_help=True,
)


def _fail(message: str, code: int = 2) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def _url() -> str:
    """``OMS_DATABASE_URL``, else the running stack's Postgres."""
    try:
        settings = load_oms_settings()
    except ConfigError as exc:
        _fail(str(exc))
        raise
    if settings.database_url:
        return settings.database_url
    state = stack.read_state(settings) if stack.running_services(settings).get("postgres") else None
    if state is None or not state.database_url:
        _fail("OMS_DATABASE_URL is not set and no running stack was found (start it with `oms up`)")
    return state.database_url


@unfillable_app.command("list")
def list_parked(
    all_: bool = typer.Option(False, "--all", help="Also cleared, cancelled and resolved parkings"),
    as_json: bool = typer.Option(False, "--json", help="One JSON object per line"),
) -> None:
    """Parked orders, soonest auto-cancel first."""
    with connect(_url()) as conn:
        rows = unfillable.parked(conn, include_closed=all_)
    if as_json:
        for r in rows:
            typer.echo(json.dumps(r, ensure_ascii=False, default=str))
        return
    if not rows:
        typer.echo("No parked orders.")
        return
    for r in rows:
        due = r["auto_cancel_at"].strftime("%Y-%m-%d %H:%M") if r["auto_cancel_at"] else "never"
        typer.echo(
            f"{r['order_id']:>10}  {r['order_number'] or '':<14} {r['channel_code']:<12} {r['status']:<9} "
            f"{r['verdict']:<9} auto-cancel {due}  {r['reason'][:120]}"
        )


@unfillable_app.command("clear")
def clear(
    order_id: int = typer.Argument(..., help="The parked order"),
    reason: str = typer.Option("cleared by ops", "--reason", help="Why it may keep waiting"),
    actor: str = typer.Option("cli", "--actor", help="Who clears it (recorded)"),
) -> None:
    """Keep a parked order waiting as a backorder: no auto-cancel, never parked again."""
    with connect(_url()) as conn:
        try:
            unfillable.clear(conn, order_id, actor=actor, reason=reason)
        except OmsError as exc:
            _fail(str(exc), 1)
    typer.echo(f"order {order_id}: cleared, it waits for stock with no auto-cancel")


@unfillable_app.command("sweep")
def sweep() -> None:
    """Park what the cascade gave up on and cancel what is past its date (what the worker does hourly)."""
    with connect(_url()) as conn:
        res = unfillable.sweep(conn, load_business_config())
    typer.echo(json.dumps({**res.metadata(), "parked": res.parked, "cancelled": res.cancelled}))
