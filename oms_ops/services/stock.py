"""Stock in from the WMS: a location's snapshot applied as ledger adjustments (``connectors.wms``), excess
reservations released when the count is below what is reserved."""

from __future__ import annotations

import psycopg

from oms_ops.connectors import wms
from oms_ops.connectors.state import external_location_id
from oms_ops.services.clients import Clients
from oms_ops.stock_counts import SnapshotResult


def sync_location(
    conn: psycopg.Connection, clients: Clients, location_code: str, *, wms_code: str | None = None
) -> SnapshotResult:
    """Read the WMS's count of one location (its mapped WMS id, else ``wms_code``) and apply it."""
    mapped = external_location_id(conn, "wms", location_code)
    return wms.sync_location(conn, clients.get("wms"), mapped or wms_code or location_code, location_code)
