"""Cancelling a shipment before hand-over — the use case the entry points call (CLI ``oms shipment cancel``,
the API action ``shipments.cancel`` behind the Lookup page). One transaction
(:func:`oms_ops.shipment_cancel.cancel_shipment`); the carrier booking is cancelled after commit by the
outbox drain (effect ``carrier.cancel_shipment``)."""

from __future__ import annotations

import psycopg

from oms_ops.shipment_cancel import CANCELLABLE_SHIPMENT_STATES, CancelResult, find_shipment
from oms_ops.shipment_cancel import cancel_shipment as _cancel_shipment

__all__ = ["CANCELLABLE_SHIPMENT_STATES", "CancelResult", "cancel_shipment", "find_shipment"]


def cancel_shipment(
    conn: psycopg.Connection,
    shipment: int | str,
    *,
    location_code: str | None,
    actor: str,
    reason: str,
) -> CancelResult:
    """Cancel a shipment not yet handed over — given by id, number (SHP-…) or tracking number. With
    ``location_code`` its units go back on that location's shelf and are reserved for their lines again;
    with None stock is left untouched and the lines wait for the allocator. Refused (nothing changed, the
    error naming the shipment and its state) once the parcel was handed over."""
    shipment_id = shipment if isinstance(shipment, int) else find_shipment(conn, shipment)
    return _cancel_shipment(
        conn, shipment_id, location_code=location_code or None, actor=actor, reason=reason
    )
