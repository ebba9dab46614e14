"""Carrier use cases: move open bookings on (registration, waybill and label PDFs) and record the carrier's
tracking statuses as shipment and order transitions. Bookings themselves are made by the outbox drain.

Both steps re-create a booking the carrier no longer knows (``reconciled``) or hand it to ops when that is
impossible (``given_up``), and keep a failure about one booking on that booking (``errors``) instead of
failing the run: see ``oms_ops.connectors.cdek`` (reconciliation) and
``oms_ops.read_model.carrier_booking_issues`` (what ops see)."""

from __future__ import annotations

import psycopg

from oms_ops.connectors import cdek
from oms_ops.services.clients import Clients


def sync_documents(
    conn: psycopg.Connection, clients: Clients, *, fallback_phone: str = cdek.FALLBACK_PHONE
) -> dict[str, int]:
    """Every open CDEK booking one step on: registration → print requests → PDFs stored → label_printed."""
    return cdek.sync_bookings(conn, clients.get("cdek"), fallback_phone=fallback_phone)


def poll_tracking(
    conn: psycopg.Connection, clients: Clients, *, fallback_phone: str = cdek.FALLBACK_PHONE
) -> dict[str, int]:
    """The statuses of open, registered bookings → tracking events → shipment and order states."""
    r = cdek.poll_tracking(conn, clients.get("cdek"), fallback_phone=fallback_phone)
    t = r.tracking
    return {
        "events_new": t.inserted,
        "events_duplicate": t.duplicates,
        "transitions": len(t.applied),
        "ignored": len(t.ignored),
        "quarantined": len(t.quarantined),
        "reconciled": r.reconciled,
        "given_up": r.given_up,
        "errors": r.errors,
    }
