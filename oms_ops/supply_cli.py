"""``oms supply import|list|promise|receive|cancel|preorder|sync``: incoming supply and promise dates
(oms_ops/supply.py, docs/allocation.md "Incoming supply and promise dates").

The same service calls the worker's ``supply`` step and the Dagster asset ``wms_inbound_supply`` make, for ops
at a terminal and for scripts (exit code 1 when the input or the state refuses the operation).
"""

from __future__ import annotations

import json
from datetime import date

import typer

from oms_ops.business_config import load_business_config
from oms_ops.cli_support import database_url, fail
from oms_ops.db import connect
from oms_ops.errors import OmsError
from oms_ops.platform.settings import ConfigError
from oms_ops.queries import find_orders
from oms_ops.services import supply as svc
from oms_ops.services.clients import Clients
from oms_ops.services.settings import connectors_of, load_oms_settings

supply_app = typer.Typer(
    help="Incoming supply (purchase orders, transfers) and the promise dates of waiting order lines.",
    no_args_is_help=True,
)


def _settings():
    try:
        return load_oms_settings()
    except ConfigError as exc:
        fail(str(exc))


def _config():
    return load_business_config(_settings().business_config)


def _dump(rows) -> None:
    for r in rows:
        typer.echo(json.dumps(r, ensure_ascii=False, default=str))


@supply_app.command("import")
def import_(
    path: str = typer.Argument(..., help="CSV of supply lines, or a 1C CommerceML XML of purchase orders"),
    fmt: str = typer.Option(None, "--format", help="csv or 1c (default: by extension, .xml → 1c)"),
    actor: str = typer.Option("cli", "--actor", help="Who imports (recorded)"),
) -> None:
    """Import purchase orders and transfers (idempotent by their number; bad rows quarantined one by one with
    the reason), then compute the promise dates again."""
    with connect(database_url()) as conn:
        try:
            rep = svc.import_file(conn, _config(), path, fmt=fmt, actor=actor)
        except (OmsError, OSError) as exc:
            fail(str(exc), 1)
            return
    typer.echo(json.dumps(rep.as_dict(), ensure_ascii=False))
    if rep.result.quarantined:
        typer.echo(
            f"{len(rep.result.quarantined)} row(s) quarantined (source supply:{fmt or 'csv/1c'}): "
            "see Operations → Quarantine",
            err=True,
        )


@supply_app.command("list")
def list_(
    all_: bool = typer.Option(False, "--all", help="Also received and cancelled supplies"),
    as_json: bool = typer.Option(False, "--json", help="One JSON object per line"),
) -> None:
    """Supplies, soonest expected first, with what of each is promised to waiting lines."""
    with connect(database_url()) as conn:
        rows = svc.list_supplies(conn, include_closed=all_)
    if as_json:
        _dump(rows)
        return
    if not rows:
        typer.echo("No supply expected.")
        return
    for r in rows:
        lines = ", ".join(
            f"{ln['sku']} {ln['qty_received']}/{ln['qty']} (promised {ln['promised']})" for ln in r["lines"]
        )
        origin = f" from {r['from_location_code']}" if r["from_location_code"] else ""
        typer.echo(
            f"{r['supply_id']:>6}  {r['source']:<6} {r['external_id']:<20} {r['kind']:<14} "
            f"{r['location_code']}{origin}  {r['expected_date']}  {r['state']:<18} {lines}"
        )


@supply_app.command("promise")
def promise(order: str = typer.Argument(..., help="Order id or order number (ORD-…)")) -> None:
    """The promise date of each waiting line of an order, and the supply it waits for."""
    with connect(database_url()) as conn:
        ids = [int(order)] if order.isdigit() else find_orders(conn, order_number=order)
        if not ids:
            fail(f"order {order!r} not found", 1)
        rows = svc.order_promises(conn, ids[0])
    if not rows:
        typer.echo(f"order {order}: no line waits for supply")
        return
    for r in rows:
        when = r["promised_date"].isoformat() if r["promised_date"] else "no date"
        typer.echo(f"line {r['line_no']:>3}  {r['sku']:<16} {r['qty']:>4}  {when:<10}  {r['reason']}")


@supply_app.command("receive")
def receive(
    supply_ref: str = typer.Argument(..., help="Supply id or its number"),
    line: list[str] = typer.Option(
        None, "--line", help="SKU=QTY received (repeatable; none: all outstanding)"
    ),
    reference: str = typer.Option(None, "--reference", help="Receipt document number (idempotency key)"),
    actor: str = typer.Option("cli", "--actor"),
) -> None:
    """Goods of a supply arrived (not for WMS supplies: the WMS reports those): booked as a receipt, then the
    orders promised from it are allocated first, in promise order."""
    lines = None
    if line:
        try:
            lines = {k.strip(): int(v) for k, v in (x.split("=", 1) for x in line)}
        except ValueError:
            fail("--line takes SKU=QTY", 2)
    with connect(database_url()) as conn:
        try:
            rec, arrival = svc.receive(conn, _config(), supply_ref, lines, reference=reference, actor=actor)
        except OmsError as exc:
            fail(str(exc), 1)
            return
    out = {"reference": rec.reference, "applied": rec.applied, "state": rec.state, "received": rec.received}
    if arrival is not None:
        out.update(arrival.metadata())
    typer.echo(json.dumps(out, ensure_ascii=False))


@supply_app.command("cancel")
def cancel(
    supply_ref: str = typer.Argument(..., help="Supply id or its number"),
    actor: str = typer.Option("cli", "--actor"),
) -> None:
    """Cancel an open supply; the lines it covered are promised again from what else is coming."""
    with connect(database_url()) as conn:
        try:
            changed = svc.cancel(conn, _config(), supply_ref, actor=actor)
        except OmsError as exc:
            fail(str(exc), 1)
            return
    typer.echo(f"supply {supply_ref}: " + ("cancelled" if changed else "already closed, nothing changed"))


@supply_app.command("preorder")
def preorder(
    sku: str = typer.Argument(...),
    release_date: str = typer.Option(
        None, "--release-date", help="YYYY-MM-DD: sold as a pre-order until then"
    ),
    off: bool = typer.Option(False, "--off", help="An ordinary product again"),
) -> None:
    """Sell a product as a pre-order until its release date (orders wait with a promise instead of taking
    stock), or stop."""
    if off == (release_date is not None):
        fail("give either --release-date or --off")
    try:
        day = None if off else date.fromisoformat(release_date)
    except ValueError:
        fail(f"--release-date must be YYYY-MM-DD, got {release_date!r}")
        return
    with connect(database_url()) as conn:
        try:
            svc.set_preorder(conn, _config(), sku, day)
        except OmsError as exc:
            fail(str(exc), 1)
    typer.echo(f"{sku}: " + (f"pre-order until {day.isoformat()}" if day else "no longer a pre-order"))


@supply_app.command("sync")
def sync() -> None:
    """Read the WMS's inbound feed now and compute the promises again (what the worker does every few
    seconds); without a WMS, only the promises."""
    connectors = connectors_of(_settings())
    with connect(database_url()) as conn:
        if connectors.configured("wms"):
            with Clients(connectors) as clients:
                meta = svc.sync_wms(conn, clients.get("wms"), _config())
        else:
            meta = svc.recompute(conn, _config()).metadata()
    typer.echo(json.dumps(meta, ensure_ascii=False, default=str))
