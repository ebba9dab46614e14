"""WMS stock snapshots: absolute on-hand per SKU for one warehouse or store, applied to the OMS ledger.

``GET /wms/v1/stock?warehouse=…`` pins a snapshot on its first page; the following pages (``page_token``) read
the same snapshot, so the pages add up to one consistent count even while stock moves. The whole snapshot is
collected first and applied in one transaction by A's ``inventory.apply_wms_snapshot`` (differences become
ledger adjustments; a count below reserved releases the newest orders' reservations; a re-delivered snapshot
is a no-op by its reference ``wms:<code>:<as_of>:<snapshot_id>``). An evicted snapshot (410) restarts from
page one. A page with unusable items (no SKU, a count that is not a number) is read again once — the WMS
sends the same pinned data — and if it is still bad those items are quarantined and the snapshot is applied
as *partial* (SKUs not in it keep their stock instead of being counted as zero).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import psycopg

from oms_ops.connectors.http import ApiClient, ApiError, RetryPolicy
from oms_ops.connectors.state import record_failure, record_success
from oms_ops.inventory import SnapshotResult, apply_wms_snapshot
from oms_ops.quarantine import quarantine_many

PAGE_SIZE = 1000


class WmsClient(ApiClient):
    api = "WMS API"

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        policy: RetryPolicy | None = None,
        rate: float | None = None,
        **kw: Any,
    ) -> None:
        super().__init__(base_url, headers={"X-Api-Key": api_key}, policy=policy, rate=rate, **kw)

    @classmethod
    def from_endpoint(cls, ep, **kw) -> WmsClient:
        return cls(ep.base_url, ep.get("api_key"), **kw)

    def warehouses(self) -> list[dict]:
        return self.request("GET", "/wms/v1/warehouses").json()["warehouses"]

    def stock_page(self, warehouse: str, page_token: str | None = None, page_size: int = PAGE_SIZE) -> dict:
        params: dict[str, Any] = {"warehouse": warehouse, "page_size": page_size}
        if page_token:
            params["page_token"] = page_token
        return self.request("GET", "/wms/v1/stock", params=params).json()


@dataclass
class Snapshot:
    warehouse: str
    snapshot_id: str
    as_of: datetime | None
    counts: dict[str, int] = field(default_factory=dict)
    bad: list[tuple[dict, str]] = field(default_factory=list)
    restarts: int = 0

    @property
    def reference(self) -> str:
        return f"wms:{self.warehouse}:{self.as_of.isoformat() if self.as_of else '-'}:{self.snapshot_id}"


def _check(item: Any) -> str | None:
    if not isinstance(item, dict) or not item.get("sku"):
        return "stock item without sku"
    q = item.get("on_hand")
    if isinstance(q, bool) or not isinstance(q, int) or q < 0:
        return f"on_hand must be a non-negative integer, got {q!r}"
    return None


def read_snapshot(
    client: WmsClient, warehouse: str, *, page_size: int = PAGE_SIZE, max_restarts: int = 3
) -> Snapshot:
    """All pages of one pinned snapshot."""
    restarts = 0
    while True:
        try:
            return _read(client, warehouse, page_size, restarts)
        except ApiError as exc:
            if exc.status == 410 and restarts < max_restarts:
                restarts += 1
                continue
            raise


def _read(client: WmsClient, warehouse: str, page_size: int, restarts: int) -> Snapshot:
    token = None
    snap: Snapshot | None = None
    while True:
        body = client.stock_page(warehouse, token, page_size)
        items = body.get("items") or []
        if any(_check(i) for i in items):
            again = client.stock_page(warehouse, token, page_size)  # same pinned page (or a fresh snapshot)
            if token is None or again.get("snapshot_id") == body.get("snapshot_id"):
                body, items = again, again.get("items") or []
        if snap is None:
            as_of = body.get("as_of")
            snap = Snapshot(
                warehouse,
                str(body.get("snapshot_id")),
                datetime.fromisoformat(as_of.replace("Z", "+00:00")) if as_of else None,
                restarts=restarts,
            )
        for item in items:
            problem = _check(item)
            if problem:
                snap.bad.append((item, problem))
            else:
                snap.counts[str(item["sku"])] = int(item["on_hand"])
        token = body.get("next_page_token")
        if not token:
            return snap


def sync_location(
    conn: psycopg.Connection, client: WmsClient, warehouse: str, location_code: str, *, actor: str = "wms"
) -> SnapshotResult:
    """Read the WMS snapshot of ``warehouse`` and apply it to the OMS location (one transaction)."""
    feed = f"wms:{warehouse}"
    try:
        snap = read_snapshot(client, warehouse)
    except Exception as exc:
        record_failure(conn, feed, str(exc))
        raise
    known = {
        r[0] for r in conn.execute("SELECT sku FROM oms.products WHERE sku = ANY(%s)", (list(snap.counts),))
    }
    # SKUs the OMS does not sell (yet) are not an error of the snapshot: skip them, the catalog import adds them
    counts = {s: q for s, q in snap.counts.items() if s in known}
    with conn.transaction():
        if snap.bad:
            quarantine_many(
                conn,
                [
                    ("wms", snap.reference, {"warehouse": warehouse, "item": item}, why)
                    for item, why in snap.bad
                ],
            )
        result = apply_wms_snapshot(
            conn,
            location_code,
            counts,
            snapshot_id=snap.reference,
            taken_at=snap.as_of or datetime.now(UTC),
            full=not snap.bad,
            actor=actor,
        )
    record_success(conn, feed, len(snap.counts))
    return result


def sync_all(
    conn: psycopg.Connection, client: WmsClient, *, only: list[str] | None = None
) -> dict[str, SnapshotResult]:
    """Every WMS location mapped in ``connectors.channel_locations`` (system 'wms')."""
    rows = conn.execute(
        "SELECT external_id, location_code FROM connectors.channel_locations WHERE system = 'wms' AND active "
        "ORDER BY location_code"
    ).fetchall()
    out = {}
    for wms_code, loc in rows:
        if only and loc not in only and wms_code not in only:
            continue
        out[loc] = sync_location(conn, client, wms_code, loc)
    return out
