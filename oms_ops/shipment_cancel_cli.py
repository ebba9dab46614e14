"""``oms shipment cancel``: call a shipment back before it is handed over (``oms_ops.services.shipment_cancel``;
one transaction). A refusal — handed over already, unknown shipment or location — prints one ``error:`` line
naming the shipment and its state and exits 1; nothing changed. Output is one JSON object."""

from __future__ import annotations

import typer

from oms_ops.changes_cli import _actor, _echo, _fail, _run
from oms_ops.services import shipment_cancel as service

shipment_app = typer.Typer(help="Shipments: cancel one before hand-over.", no_args_is_help=True)


@shipment_app.command("cancel")
def cancel(
    shipment: str = typer.Argument(..., help="shipment id, number (SHP-…) or tracking number"),
    location: str = typer.Option(
        None, "--location", help="put the units back at this location and reserve them for their lines again"
    ),
    keep_stock: bool = typer.Option(
        False, "--keep-stock", help="leave stock untouched: the lines wait for the allocator again"
    ),
    reason: str = typer.Option(..., "--reason", help="why (recorded in the order's timeline)"),
) -> None:
    """Cancel a shipment not yet handed over (created / label_printed): its units are open again, and a
    carrier booking is cancelled through the outbox."""
    if (location is None) == (not keep_stock):
        _fail("give exactly one of --location CODE (units back on the shelf, re-reserved) or --keep-stock", 2)
    _echo(
        _run(
            lambda c: service.cancel_shipment(
                c, shipment, location_code=location, actor=_actor(), reason=reason
            )
        )
    )
