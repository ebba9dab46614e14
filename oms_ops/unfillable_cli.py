"""``oms unfillable list|clear|sweep``: orders the routing cascade gave up on (oms_ops/unfillable.py).

The same service calls the worker's ``unfillable_sweep`` step and the Operations page make, for ops at a
terminal and for scripts (exit code 1 when a clear is refused).
"""

from __future__ import annotations

import json

import typer

from oms_ops.business_config import load_business_config
from oms_ops.cli_support import database_url, fail
from oms_ops.db import connect
from oms_ops.errors import OmsError
from oms_ops.services import unfillable

unfillable_app = typer.Typer(
    help="Orders no routing rule can fill: parked with an auto-cancel date (docs/allocation.md).",
    no_args_is_help=True,
)


@unfillable_app.command("list")
def list_parked(
    all_: bool = typer.Option(False, "--all", help="Also cleared, cancelled and resolved parkings"),
    as_json: bool = typer.Option(False, "--json", help="One JSON object per line"),
) -> None:
    """Parked orders, soonest auto-cancel first."""
    with connect(database_url()) as conn:
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
    with connect(database_url()) as conn:
        try:
            unfillable.clear(conn, order_id, actor=actor, reason=reason)
        except OmsError as exc:
            fail(str(exc), 1)
    typer.echo(f"order {order_id}: cleared, it waits for stock with no auto-cancel")


@unfillable_app.command("sweep")
def sweep() -> None:
    """Park what the cascade gave up on and cancel what is past its date (what the worker does hourly)."""
    with connect(database_url()) as conn:
        res = unfillable.sweep(conn, load_business_config())
    typer.echo(json.dumps({**res.metadata(), "parked": res.parked, "cancelled": res.cancelled}))
