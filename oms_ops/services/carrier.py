"""Carrier use cases: move open bookings on (registration, waybill and label PDFs) and record the carrier's
tracking statuses as shipment and order transitions. Bookings themselves are made by the outbox drain.

Both steps re-create a booking the carrier no longer knows (``reconciled``) or hand it to ops when that is
impossible (``given_up``), and keep a failure about one booking on that booking (``errors``) instead of
failing the run: see ``oms_ops.connectors.cdek`` (reconciliation) and
``oms_ops.read_model.carrier_booking_issues`` (what ops see)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import psycopg

from oms_ops.connectors import cdek
from oms_ops.services.clients import Clients


@contextmanager
def _alone(conn: psycopg.Connection, what: str) -> Iterator[bool]:
    """One run of ``what`` at a time across processes (the worker and a Dagster run may both come): True
    when this one holds the lock, False when another run has it (the caller skips)."""
    got = conn.execute(
        "SELECT pg_try_advisory_lock(hashtext('oms.carrier'), hashtext(%s))", (what,)
    ).fetchone()[0]
    try:
        yield got
    finally:
        if got:
            conn.execute("SELECT pg_advisory_unlock(hashtext('oms.carrier'), hashtext(%s))", (what,))


def sync_documents(
    conn: psycopg.Connection, clients: Clients, *, fallback_phone: str = cdek.FALLBACK_PHONE
) -> dict[str, int]:
    """Every open CDEK booking one step on: registration → print requests → PDFs stored → label_printed.
    Skipped (``{"skipped_busy": 1}``) while another process runs it."""
    client = clients.get("cdek")
    with _alone(conn, "documents") as mine:
        if not mine:
            return {"skipped_busy": 1}
        return cdek.sync_bookings(conn, client, fallback_phone=fallback_phone)


def poll_tracking(
    conn: psycopg.Connection, clients: Clients, *, fallback_phone: str = cdek.FALLBACK_PHONE
) -> dict[str, int]:
    """The statuses of open, registered bookings → tracking events → shipment and order states. Skipped
    (``{"skipped_busy": 1}``) while another process runs it."""
    client = clients.get("cdek")
    with _alone(conn, "tracking") as mine:
        if not mine:
            return {"skipped_busy": 1}
        r = cdek.poll_tracking(conn, client, fallback_phone=fallback_phone)
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
