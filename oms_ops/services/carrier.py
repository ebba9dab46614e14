"""Carrier use cases: move open bookings on (registration, waybill and label PDFs) and record the carrier's
tracking statuses as shipment and order transitions. Bookings themselves are made by the outbox drain."""

from __future__ import annotations

import psycopg

from oms_ops.connectors import cdek
from oms_ops.services.clients import Clients


def sync_documents(conn: psycopg.Connection, clients: Clients) -> dict[str, int]:
    """Every open CDEK booking one step on: registration → print requests → PDFs stored → label_printed."""
    return cdek.sync_bookings(conn, clients.get("cdek"))


def poll_tracking(conn: psycopg.Connection, clients: Clients) -> dict[str, int]:
    """The statuses of open, registered bookings → tracking events → shipment and order states."""
    r = cdek.poll_tracking(conn, clients.get("cdek"))
    return {
        "events_new": r.inserted,
        "events_duplicate": r.duplicates,
        "transitions": len(r.applied),
        "ignored": len(r.ignored),
        "quarantined": len(r.quarantined),
    }
