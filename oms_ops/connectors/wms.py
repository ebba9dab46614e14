"""The WMS: stock snapshots applied to the OMS ledger, the customer-return leg (announce, receipts), and the
inbound supply feed (purchase orders and transfers on their way: :func:`inbound_to_supply` maps a document to
an OMS supply; reading the feed, arrivals and promise dates are ``oms_ops.services.supply.sync_wms``).

Stock snapshots: absolute on-hand per SKU for one warehouse or store.

``GET /wms/v1/stock?warehouse=…`` pins a snapshot on its first page; the following pages (``page_token``) read
the same snapshot, so the pages add up to one consistent count even while stock moves. The whole snapshot is
collected first and applied in one transaction by ``inventory.apply_wms_snapshot`` (differences become
ledger adjustments; a count below reserved releases the newest orders' reservations; a re-delivered snapshot
is a no-op by its reference ``wms:<code>:<as_of>:<snapshot_id>``). An evicted snapshot (410) restarts from
page one. A page with unusable items (no SKU, a count that is not a number) is read again once — the WMS
sends the same pinned data — and if it is still bad those items are quarantined and the snapshot is applied
as *partial* (SKUs not in it keep their stock instead of being counted as zero).

Customer returns: a requested return writes the outbox effect 'wms.announce_return'; the drain calls
:func:`deliver_return_announcement`, which posts the RMA to the warehouse that is expected to receive the parcel
(``POST /wms/v1/returns``, idempotent on the RMA number). When the parcel arrives the WMS lists a receipt in
``GET /wms/v1/returns/receipts`` (cursor-paged, oldest first), with a condition per line: :func:`read_receipt_page`
reads a page and :func:`plan_receipts` matches it to the OMS — each receipt to its return by RMA number, its
lines by SKU, its warehouse to the mapped OMS location, ``resellable`` → restock and ``damaged`` → write-off —
without writing anything. A receipt that cannot be applied (unknown RMA or warehouse, SKUs or quantities the
return does not have, an unknown condition, a return cancelled or already received by hand) becomes a reject
with the reason (:func:`quarantine_receipts`, source ``wms:returns``); one seen before is a duplicate (its id
is kept in the return's 'received' event, or it was quarantined already). Applying the plans, the cursor
(``connectors.cursors``, name ``wms:returns:receipts``) and the feed health are the returns use case
``oms_ops.services.returns.sync_return_receipts``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import psycopg

from oms_ops.connectors.config import NotConfigured
from oms_ops.connectors.http import ApiClient, ApiError, RetryPolicy
from oms_ops.connectors.state import external_location_id, record_failure, record_success
from oms_ops.quarantine import quarantine_many
from oms_ops.stock_counts import SnapshotResult, apply_wms_snapshot

PAGE_SIZE = 1000
RETURNS_PAGE_SIZE = 100
#: cursor (connectors.cursors), feed health (connectors.feed_status) and quarantine source of the receipts
RETURNS_CURSOR = "wms:returns:receipts"
RETURNS_FEED = "wms:returns"
RETURNS_SOURCE = "wms:returns"
#: inbound supply (purchase orders and transfers on their way): cursor, feed health, page size
INBOUND_CURSOR = "wms:inbound"
INBOUND_FEED = "wms:inbound"
INBOUND_PAGE_SIZE = 100
INBOUND_KINDS = {"purchase_order": "purchase_order", "transfer": "transfer"}
#: WMS condition of a returned unit → the OMS disposition
CONDITIONS = {"resellable": "restock", "damaged": "write_off"}


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

    def announce_return(
        self, rma: str, warehouse: str, lines: list[dict], *, order_ref: str | None = None
    ) -> dict:
        """Tell the warehouse to expect a returned parcel. Idempotent on ``rma`` (a repeat answers 200 with
        the announcement as first made), so it is safe to retry after a timeout."""
        body: dict[str, Any] = {"rma": rma, "warehouse": warehouse, "lines": lines}
        if order_ref:
            body["order_ref"] = order_ref
        return self.request("POST", "/wms/v1/returns", json=body, expect=(200, 201), idempotent=True).json()[
            "return"
        ]

    def inbound(self, after: str | None = None, limit: int = INBOUND_PAGE_SIZE) -> dict:
        """One page of the inbound supply feed after ``after`` (a ``next_cursor``; None: from the start):
        ``{inbound, next_cursor, has_more}`` — each purchase order or transfer as it is now, listed again
        whenever it changes (received quantities, date, cancellation)."""
        params: dict[str, Any] = {"limit": limit}
        if after:
            params["after"] = after
        return self.request("GET", "/wms/v1/inbound", params=params).json()

    def return_receipts(self, after: str | None = None, limit: int = RETURNS_PAGE_SIZE) -> dict:
        """One page of the returned-parcel receipts after ``after`` (a ``next_cursor``; None: from the
        start): ``{receipts, next_cursor, has_more}``."""
        params: dict[str, Any] = {"limit": limit}
        if after:
            params["after"] = after
        return self.request("GET", "/wms/v1/returns/receipts", params=params).json()


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


# -- customer returns ------------------------------------------------------------------------------------------


def deliver_return_announcement(
    conn: psycopg.Connection, clients, payload: dict
) -> tuple[str, str | None, Any]:
    """Deliver one 'wms.announce_return' effect: ``(outcome, note, result)`` for the outbox drain.

    The return's expected OMS location is mapped to the WMS's warehouse code (``connectors.channel_locations``,
    system 'wms'). A location the WMS does not run, or no WMS at all, is not an error that retrying fixes:
    the effect is recorded as skipped and the parcel is received by hand on the operations page."""
    location = payload.get("location_code")
    warehouse = external_location_id(conn, "wms", location) if location else None
    if warehouse is None:
        return "skipped", f"location {location!r} is not run by the WMS: receive the parcel by hand", None
    try:
        client = clients.get("wms")
    except NotConfigured as exc:
        return "skipped", f"{exc}: receive the parcel by hand", None
    record = client.announce_return(
        payload["rma_number"], warehouse, payload["lines"], order_ref=payload.get("order_number")
    )
    return "sent", None, {"warehouse": warehouse, "status": record.get("status")}


@dataclass
class ReceiptPlan:
    """How one WMS receipt applies to its return."""

    record: dict
    receipt_id: str
    return_id: int
    location_code: str
    received_at: datetime | None
    received: dict[int, int]  # return_line_id → units in the parcel (0 for lines not in it)
    dispositions: dict[int, str]  # return_line_id → restock / write_off (lines with units only)
    receive: bool  # False: already received by this very receipt (a rerun after a crash) — inspect only

    def units(self, disposition: str) -> int:
        return sum(self.received[rl] for rl, d in self.dispositions.items() if d == disposition)


@dataclass
class PagePlan:
    """A page of receipts matched to the OMS: what to apply, what to quarantine, what was seen already."""

    plans: list[ReceiptPlan] = field(default_factory=list)
    #: (record, receipt id, reason)
    rejects: list[tuple[Any, str | None, str]] = field(default_factory=list)
    duplicates: int = 0


def read_receipt_page(client: WmsClient, after: str | None, limit: int = RETURNS_PAGE_SIZE) -> dict:
    """One page of the receipt feed. A page with unreadable receipts (no id, no RMA, lines without SKU,
    quantity or a known condition) is read once more — a garbled answer is not the WMS's data; what is still
    unreadable then is the WMS's and gets quarantined."""
    body = client.return_receipts(after, limit)
    if any(_unusable(r) for r in body.get("receipts") or []):
        body = client.return_receipts(after, limit)
    return body


def _unusable(rec: Any) -> bool:
    """A receipt that cannot even be read (as opposed to one that does not match the OMS)."""
    if not isinstance(rec, dict) or not rec.get("receipt_id") or not rec.get("rma"):
        return True
    lines = rec.get("lines")
    return not isinstance(lines, list) or any(
        not isinstance(ln, dict)
        or not ln.get("sku")
        or isinstance(ln.get("qty"), bool)
        or not isinstance(ln.get("qty"), int)
        or ln.get("condition") not in CONDITIONS
        for ln in lines
    )


def quarantine_receipts(conn: psycopg.Connection, rejects: list[tuple[Any, str | None, str]]) -> None:
    """Keep receipts that cannot be applied, with the reason (own transaction; source ``wms:returns``)."""
    with conn.transaction():
        quarantine_many(conn, [(RETURNS_SOURCE, rid, record, why) for record, rid, why in rejects])


def plan_receipts(conn: psycopg.Connection, records: list) -> PagePlan:
    """Match a page of receipts to the OMS returns with a few set-based reads; writes nothing.

    A receipt is applied when its RMA is a requested return and its warehouse, SKUs, quantities and
    conditions fit; it is a duplicate when the return was received by this very receipt id (or the receipt
    was quarantined before); anything else is a reject with the reason."""
    out = PagePlan()
    unique: dict[str, dict] = {}
    for rec in records:
        rid = rec.get("receipt_id") if isinstance(rec, dict) else None
        if not isinstance(rid, str) or not rid:
            out.rejects.append((rec, None, "return receipt without receipt_id: cannot be identified"))
        elif rid in unique:
            out.duplicates += 1  # repeated inside the page
        else:
            unique[rid] = rec
    if not unique:
        return out
    seen_bad = {
        r[0]
        for r in conn.execute(
            "SELECT DISTINCT external_id FROM raw.quarantine WHERE source = %s AND external_id = ANY(%s)",
            (RETURNS_SOURCE, list(unique)),
        ).fetchall()
    }
    rmas = sorted({str(r.get("rma")) for r in unique.values() if r.get("rma")})
    returns = {
        r[1]: {"return_id": r[0], "rma": r[1], "state": r[2], "location_code": r[3]}
        for r in conn.execute(
            "SELECT return_id, rma_number, state, location_code FROM oms.returns WHERE rma_number = ANY(%s)",
            (rmas,),
        ).fetchall()
    }
    ids = [r["return_id"] for r in returns.values()]
    lines: dict[int, list[tuple[int, str, int, int]]] = {}
    for return_id, rl_id, sku, qty, got in conn.execute(
        """SELECT return_id, return_line_id, sku, qty, qty_received FROM oms.return_lines
           WHERE return_id = ANY(%s) ORDER BY return_id, return_line_id""",
        (ids,),
    ).fetchall():
        lines.setdefault(return_id, []).append((rl_id, sku, qty, got))
    received_by = dict(
        conn.execute(
            """SELECT DISTINCT ON (entity_id) entity_id, data->>'receipt' FROM oms.order_events
               WHERE entity = 'return' AND to_state = 'received' AND entity_id = ANY(%s)
               ORDER BY entity_id, event_id DESC""",
            (ids,),
        ).fetchall()
    )
    locations = dict(
        conn.execute(
            "SELECT external_id, location_code FROM connectors.channel_locations WHERE system = 'wms' AND active"
        ).fetchall()
    )
    claimed: dict[str, str] = {}  # rma → receipt id, inside this page
    for rid, rec in unique.items():
        if rid in seen_bad:
            out.duplicates += 1
            continue
        plan_or_reason = _plan_one(rid, rec, returns, lines, received_by, locations, claimed)
        if isinstance(plan_or_reason, ReceiptPlan):
            out.plans.append(plan_or_reason)
            claimed[rec["rma"]] = rid
        elif plan_or_reason is None:
            out.duplicates += 1
        else:
            out.rejects.append((rec, rid, plan_or_reason))
    return out


def _plan_one(rid, rec, returns, lines, received_by, locations, claimed) -> ReceiptPlan | str | None:
    """A plan, a reason to quarantine, or None for a receipt already applied."""
    rma = rec.get("rma")
    ret = returns.get(rma) if isinstance(rma, str) else None
    if ret is None:
        return f"unknown RMA {rma!r}"
    if rma in claimed:
        return f"{rma}: a second receipt for the same return (first: {claimed[rma]})"
    location = locations.get(rec.get("warehouse"))
    if location is None:
        return (
            f"{rma}: warehouse {rec.get('warehouse')!r} is not mapped to an OMS location "
            "(connectors.channel_locations, system 'wms')"
        )
    at = None
    if rec.get("received_at") is not None:
        try:
            at = datetime.fromisoformat(str(rec["received_at"]).replace("Z", "+00:00"))
        except ValueError:
            return f"{rma}: received_at {rec['received_at']!r} is not an ISO 8601 time"
        if at.tzinfo is None:
            at = at.replace(tzinfo=UTC)
    state, by = ret["state"], received_by.get(ret["return_id"])
    how = f"by receipt {by}" if by else "by hand"
    if state in ("inspected", "closed"):
        return None if by == rid else f"{rma} is already {state} (received {how})"
    if state == "cancelled":
        return f"{rma} is cancelled, but the warehouse received a parcel for it"
    if state == "received" and not (by == rid and ret["location_code"] == location):
        return f"{rma} was already received {how} at {ret['location_code']}: inspect it by hand"
    matched = _match_lines(rma, rec.get("lines"), lines.get(ret["return_id"], []))
    if isinstance(matched, str):
        return matched
    received, dispositions = matched
    return ReceiptPlan(
        rec, rid, ret["return_id"], location, at, received, dispositions, receive=state == "requested"
    )


def _match_lines(rma: str, raw_lines: Any, return_lines: list[tuple[int, str, int, int]]):
    """Receipt lines → (return_line_id → units, return_line_id → disposition), or the reasons they do not fit.
    Units of a SKU fill the return's lines of that SKU in line order, resellable first; one return line
    takes one disposition, so a line with units of both conditions is refused (inspect it by hand)."""
    if not isinstance(raw_lines, list) or not raw_lines:
        return f"{rma}: receipt without lines"
    problems: list[str] = []
    units: dict[tuple[str, str], int] = {}
    for i, line in enumerate(raw_lines):
        sku = line.get("sku") if isinstance(line, dict) else None
        qty = line.get("qty") if isinstance(line, dict) else None
        cond = line.get("condition") if isinstance(line, dict) else None
        if not isinstance(sku, str) or not sku:
            problems.append(f"line {i}: no sku")
        elif isinstance(qty, bool) or not isinstance(qty, int) or qty <= 0:
            problems.append(f"line {i} ({sku}): qty must be a positive integer, got {qty!r}")
        elif cond not in CONDITIONS:
            problems.append(f"line {i} ({sku}): condition must be one of {sorted(CONDITIONS)}, got {cond!r}")
        else:
            units[(sku, cond)] = units.get((sku, cond), 0) + qty
    by_sku: dict[str, list[tuple[int, int]]] = {}
    for rl_id, sku, qty, _ in return_lines:
        by_sku.setdefault(sku, []).append((rl_id, qty))
    received: dict[int, int] = {rl_id: 0 for rl_id, _, _, _ in return_lines}
    dispositions: dict[int, str] = {}
    for sku in sorted({s for s, _ in units}):
        if sku not in by_sku:
            problems.append(f"sku {sku} is not part of {rma}")
            continue
        wanted = sum(q for _, q in by_sku[sku])
        got = sum(q for (s, _), q in units.items() if s == sku)
        if got > wanted:
            problems.append(f"sku {sku}: {got} received, {wanted} requested")
            continue
        free = {rl_id: q for rl_id, q in by_sku[sku]}
        for cond in CONDITIONS:  # resellable first
            left = units.get((sku, cond), 0)
            for rl_id, _ in by_sku[sku]:
                take = min(left, free[rl_id])
                if take == 0:
                    continue
                if dispositions.get(rl_id, CONDITIONS[cond]) != CONDITIONS[cond]:
                    problems.append(
                        f"sku {sku}: resellable and damaged units on one return line: inspect by hand"
                    )
                    break
                dispositions[rl_id] = CONDITIONS[cond]
                received[rl_id] += take
                free[rl_id] -= take
                left -= take
    if problems:
        return f"{rma}: " + "; ".join(problems)
    return received, dispositions


# -- inbound supply ------------------------------------------------------------------------------------------


def inbound_to_supply(doc: Any, locations: dict[str, str]) -> dict | str:
    """One WMS inbound document → a supply document for ``oms_ops.supply.upsert_supplies`` (source 'wms'),
    or the reason it cannot be one. ``locations``: WMS warehouse code → OMS location (system 'wms')."""
    if not isinstance(doc, dict) or not doc.get("inbound_id"):
        return "inbound document without inbound_id"
    ref = doc["inbound_id"]
    kind = INBOUND_KINDS.get(doc.get("kind"))
    if kind is None:
        return f"{ref}: kind must be one of {sorted(INBOUND_KINDS)}, got {doc.get('kind')!r}"
    where = locations.get(doc.get("warehouse"))
    if where is None:
        return (
            f"{ref}: warehouse {doc.get('warehouse')!r} is not mapped to an OMS location "
            "(connectors.channel_locations, system 'wms')"
        )
    origin = None
    if kind == "transfer":
        origin = locations.get(doc.get("from_warehouse"))
        if origin is None:
            return f"{ref}: transfer from warehouse {doc.get('from_warehouse')!r}, which is not mapped to an OMS location"
    lines = doc.get("lines")
    if not isinstance(lines, list):
        return f"{ref}: lines must be a list"
    return {
        "external_id": str(ref),
        "kind": kind,
        "location_code": where,
        "from_location_code": origin,
        "supplier": doc.get("supplier") if kind == "purchase_order" else None,
        "expected_date": doc.get("expected_date"),
        "cancelled": doc.get("status") == "cancelled",
        "lines": [
            {"sku": ln.get("sku"), "qty": ln.get("qty"), "qty_received": ln.get("qty_received", 0)}
            if isinstance(ln, dict)
            else ln
            for ln in lines
        ],
    }


def wms_locations(conn: psycopg.Connection) -> dict[str, str]:
    """WMS warehouse code → OMS location, as mapped in ``connectors.channel_locations``."""
    return dict(
        conn.execute(
            "SELECT external_id, location_code FROM connectors.channel_locations WHERE system = 'wms' AND active"
        ).fetchall()
    )
