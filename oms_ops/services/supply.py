"""Incoming supply for the entry points (CLI, worker, Dagster, API, dashboards): imports from files and the
WMS, arrivals, promise recomputation and the reads — each a call of ``oms_ops.supply`` (docs/allocation.md,
"Incoming supply and promise dates").

After anything that changes supply (an import, the WMS's feed) the promises are computed again; after an
arrival the orders promised from the arrived supplies are allocated first, in promise order, then every
other backorder (the allocator's FIFO), then the promises are computed again.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any

import psycopg

from oms_ops import supply
from oms_ops.allocation import allocate_backorders, allocate_batch
from oms_ops.business_config import BusinessConfig
from oms_ops.connectors import wms
from oms_ops.connectors.state import get_cursor, record_failure, record_success, set_cursor
from oms_ops.errors import ValidationFailed
from oms_ops.supply import ImportResult, PromiseResult, ReceiptResult

__all__ = [
    "ArrivalResult",
    "ImportReport",
    "after_arrival",
    "import_file",
    "list_supplies",
    "order_promises",
    "overpromised",
    "receive",
    "recompute",
    "set_preorder",
    "sync_wms",
]

FORMATS = ("csv", "1c")


@dataclass
class ArrivalResult:
    """What an arrival allocated: the orders promised from it (in promise order), then other backorders."""

    promised_orders: list[int] = field(default_factory=list)
    allocated: list[int] = field(default_factory=list)
    partially_allocated: list[int] = field(default_factory=list)
    from_backorders: int = 0
    promises: PromiseResult = field(default_factory=PromiseResult)

    def metadata(self) -> dict[str, int]:
        return {
            "promised_orders": len(self.promised_orders),
            "arrival_allocated": len(self.allocated),
            "arrival_partially_allocated": len(self.partially_allocated),
            "arrival_from_backorders": self.from_backorders,
            **self.promises.metadata(),
        }


@dataclass
class ImportReport:
    result: ImportResult
    promises: PromiseResult
    rejected_rows: int = 0

    def as_dict(self) -> dict[str, Any]:
        r = self.result
        return {
            "inserted": r.inserted,
            "updated": r.updated,
            "unchanged": r.unchanged,
            "quarantined": r.quarantined,
            **self.promises.metadata(),
        }


def after_arrival(
    conn: psycopg.Connection,
    config: BusinessConfig,
    supply_ids: list[int],
    *,
    now: datetime | None = None,
    actor: str = supply.ACTOR,
) -> ArrivalResult:
    """Stock of ``supply_ids`` is in: allocate the orders promised from them first, in promise order (the
    allocator serves them by order time, which is the order promises were given in), then every other
    backorder with a chance, then compute the promises again."""
    res = ArrivalResult()
    res.promised_orders = supply.promised_orders(conn, supply_ids) if supply_ids else []
    if res.promised_orders:
        a = allocate_batch(conn, res.promised_orders, config=config, actor=actor, now=now)
        res.allocated, res.partially_allocated = a.allocated, a.partially_allocated
    b = allocate_backorders(conn, config=config, actor=actor, now=now)
    res.from_backorders = len(b.allocated) + len(b.partially_allocated)
    res.promises = supply.recompute_promises(conn, config, now=now, actor=actor)
    return res


def recompute(
    conn: psycopg.Connection, config: BusinessConfig, *, now: datetime | None = None
) -> PromiseResult:
    """Every waiting line's promise, computed again from the open supply."""
    return supply.recompute_promises(conn, config, now=now)


def parse_file(path: str | Path, fmt: str | None = None) -> tuple[str, supply.Parsed]:
    """Read a supply file: ``csv`` (supply.CSV_COLUMNS) or ``1c`` (CommerceML 2 purchase orders); the format
    follows the extension (``.xml`` → 1c) unless given."""
    p = Path(path)
    fmt = (fmt or ("1c" if p.suffix.lower() == ".xml" else "csv")).lower()
    if fmt not in FORMATS:
        raise ValidationFailed(f"supply file format must be one of {', '.join(FORMATS)}, not {fmt!r}")
    if fmt == "1c":
        return fmt, supply.parse_commerceml(p.read_bytes(), name=p.name)
    return fmt, supply.parse_csv(p.read_text(encoding="utf-8-sig"), name=p.name)


def import_file(
    conn: psycopg.Connection,
    config: BusinessConfig,
    path: str | Path,
    *,
    fmt: str | None = None,
    actor: str = "import",
    now: datetime | None = None,
) -> ImportReport:
    """Import a CSV or 1C purchase-order file (bad rows quarantined one by one with the reason), then compute
    the promises again."""
    fmt, parsed = parse_file(path, fmt)
    res = supply.upsert_supplies(conn, parsed.documents, source=fmt, actor=actor, rejected=parsed.rejected)
    return ImportReport(res, supply.recompute_promises(conn, config, now=now), len(parsed.rejected))


def receive(
    conn: psycopg.Connection,
    config: BusinessConfig,
    supply_ref: str | int,
    lines: dict[str, int] | None = None,
    *,
    reference: str | None = None,
    actor: str,
    now: datetime | None = None,
) -> tuple[ReceiptResult, ArrivalResult | None]:
    """Goods of a supply arrived (entered in the OMS): the receipt, then what waited for it is allocated."""
    sid = supply.find_supply(conn, supply_ref)
    rec = supply.receive_supply(conn, sid, lines, reference=reference, actor=actor)
    if not rec.applied:
        return rec, None
    return rec, after_arrival(conn, config, [sid], now=now, actor=actor)


def cancel(conn: psycopg.Connection, config: BusinessConfig, supply_ref: str | int, *, actor: str) -> bool:
    """Cancel an open supply; the lines it covered are promised again from what else is coming."""
    changed = supply.cancel_supply(conn, supply.find_supply(conn, supply_ref), actor=actor)
    supply.recompute_promises(conn, config)
    return changed


def sync_wms(
    conn: psycopg.Connection,
    client: wms.WmsClient,
    config: BusinessConfig,
    *,
    actor: str = "wms",
    now: datetime | None = None,
    max_pages: int = 20,
    page_size: int = wms.INBOUND_PAGE_SIZE,
) -> dict[str, Any]:
    """The WMS's inbound feed from its stored cursor: purchase orders and transfers upserted (source 'wms';
    an unusable document quarantined with the reason), the cursor moved past each page in the page's
    transaction. Where the WMS received goods against a supply, the location's count is read at once (the
    WMS's stock arrives the usual way, as its snapshot) and what waited for it is allocated in promise
    order; finally the promises are computed again. A failing call is recorded in the feed health
    (``wms:inbound``) and raised."""
    after = (get_cursor(conn, wms.INBOUND_CURSOR) or {}).get("after")
    locations = wms.wms_locations(conn)
    total = ImportResult()
    seen = 0
    try:
        for _ in range(max_pages):
            body = client.inbound(after, page_size)
            docs = body.get("inbound") or []
            seen += len(docs)
            good, bad = [], []
            for doc in docs:
                mapped = wms.inbound_to_supply(doc, locations)
                if isinstance(mapped, str):
                    bad.append((doc.get("inbound_id") if isinstance(doc, dict) else None, doc, mapped))
                else:
                    good.append(mapped)
            res = supply.upsert_supplies(conn, good, source="wms", actor=actor, rejected=bad)
            for name in ("inserted", "updated", "unchanged", "quarantined", "arrived"):
                getattr(total, name).extend(getattr(res, name))
            nxt = body.get("next_cursor")
            if nxt is None or nxt == after:
                break
            with conn.transaction():
                set_cursor(conn, wms.INBOUND_CURSOR, {"after": nxt})
            after = nxt
            if not body.get("has_more"):
                break
    except Exception as exc:
        record_failure(conn, wms.INBOUND_FEED, str(exc))
        raise
    record_success(conn, wms.INBOUND_FEED, seen)
    meta: dict[str, Any] = total.metadata()
    if total.arrived:
        arrived_at = sorted(
            {
                r[0]
                for r in conn.execute(
                    "SELECT DISTINCT location_code FROM oms.supplies WHERE supply_id = ANY(%s)",
                    (total.arrived,),
                )
            }
        )
        codes = {loc: code for code, loc in locations.items()}
        for loc in arrived_at:
            wms.sync_location(conn, client, codes[loc], loc, actor=actor)
        arrival = after_arrival(conn, config, total.arrived, now=now, actor=actor)
        meta.update(arrival.metadata())
    else:
        meta.update(supply.recompute_promises(conn, config, now=now).metadata())
    return meta


def set_preorder(
    conn: psycopg.Connection, config: BusinessConfig, sku: str, release_date: date | None
) -> None:
    """Sell ``sku`` as a pre-order until ``release_date`` (None: an ordinary product again), then compute the
    promises again (its waiting lines are pre-order lines now, or no longer)."""
    supply.set_preorder(conn, sku, release_date)
    supply.recompute_promises(conn, config)


def list_supplies(conn: psycopg.Connection, *, include_closed: bool = False) -> list[dict[str, Any]]:
    return supply.list_supplies(conn, include_closed=include_closed)


def order_promises(conn: psycopg.Connection, order_id: int) -> list[dict[str, Any]]:
    return supply.order_promises(conn, order_id)


def overpromised(conn: psycopg.Connection) -> list[dict[str, Any]]:
    return supply.overpromised(conn)
