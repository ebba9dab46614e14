"""Returns use cases: request, receive, inspect, refund, cancel, apply the WMS's return receipts — and the read
model of returns in flight.

Every entry point (the operations page's returns panel, the lookup page, the ``returns`` pipeline asset) calls
these and nothing below them. Each write is one transaction per chunk of
``CHUNK`` returns: the domain's batch functions (``oms_ops.returns.*_in_transaction``) lock the chunk's
orders and returns in id order, validate the whole chunk (every problem reported together, nothing
half-applied) and write with one statement per table. A chunk that fails leaves the chunks before it
committed; the error names the returns of the failing chunk.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Literal

import psycopg

from oms_ops import returns as domain
from oms_ops.channels import registry
from oms_ops.connectors import wms
from oms_ops.connectors.state import get_cursor, record_failure, record_success, set_cursor
from oms_ops.db import run_in_transaction
from oms_ops.errors import OmsError
from oms_ops.quarantine import quarantine_many
from oms_ops.returns import (
    STAGES,
    ReturnInspection,
    ReturnLineRequest,
    ReturnReceipt,
    ReturnResult,
)

__all__ = [
    "CHUNK",
    "STAGES",
    "InspectResult",
    "ReceiptSync",
    "RefundResult",
    "ReturnInspection",
    "ReturnLineRequest",
    "ReturnReceipt",
    "ReturnResult",
    "cancel_return",
    "in_flight",
    "inspect_returns",
    "lines_of",
    "receive_returns",
    "receiving_locations",
    "refund_inspected",
    "refund_returns",
    "request_return",
    "sync_return_receipts",
]

#: returns per transaction
CHUNK = 200


def _chunks(items: Sequence, size: int) -> list[Sequence]:
    if size < 1:
        raise ValueError(f"chunk size must be >= 1, got {size}")
    return [items[i : i + size] for i in range(0, len(items), size)]


def request_return(
    conn: psycopg.Connection,
    order_id: int,
    lines: Sequence[ReturnLineRequest | Mapping | tuple],
    *,
    actor: str,
    kind: Literal["refund", "exchange"] = "refund",
    channel_return_id: str | None = None,
    note: str | None = None,
) -> ReturnResult:
    """Open an RMA (one transaction): validated against what was delivered and not yet claimed; the customer
    notice and the announcement to the warehouse go to the outbox with it."""
    return domain.request_return(
        conn, order_id, lines, actor=actor, kind=kind, channel_return_id=channel_return_id, note=note
    )


def returnable(conn: psycopg.Connection, order_id: int) -> dict[int, int]:
    """Units per order line that can still be returned (delivered and not yet claimed)."""
    return domain.returnable(conn, order_id)


def exchange(conn: psycopg.Connection, return_id: int, *, actor: str) -> int:
    """Close an inspected exchange return with a replacement order for the returned lines; its id."""
    return domain.exchange_return(conn, return_id, actor=actor)


def receive_returns(
    conn: psycopg.Connection, receipts: Sequence[ReturnReceipt], *, actor: str, chunk: int = CHUNK
) -> list[int]:
    """Returned parcels arrived (requested → received), one transaction per chunk. A return already
    received at the same location is left alone. Returns the ids received now."""
    out: list[int] = []
    for part in _chunks(list(receipts), chunk):
        out += run_in_transaction(
            conn, lambda c, part=part: domain.receive_returns_in_transaction(c, part, actor=actor)
        )
    return out


@dataclass
class InspectResult:
    inspected: list[int] = field(default_factory=list)
    #: (return_id, sku, units) put back on the shelf (ledger 'return_restock')
    restocked: list[tuple[int, str, int]] = field(default_factory=list)

    @property
    def units_restocked(self) -> int:
        return sum(q for _, _, q in self.restocked)


def inspect_returns(
    conn: psycopg.Connection, inspections: Sequence[ReturnInspection], *, actor: str, chunk: int = CHUNK
) -> InspectResult:
    """Inspected (received → inspected), one transaction per chunk: 'restock' lines go back into stock at
    the receiving location, 'write_off' lines do not."""
    res = InspectResult()
    for part in _chunks(list(inspections), chunk):
        done = run_in_transaction(
            conn, lambda c, part=part: domain.inspect_returns_in_transaction(c, part, actor=actor)
        )
        for rid, restocked in done.items():
            res.inspected.append(rid)
            res.restocked += [(rid, sku, q) for sku, q in restocked]
    return res


@dataclass
class RefundResult:
    #: return_id → refund id (None: nothing was received, closed without a refund)
    refunds: dict[int, int | None] = field(default_factory=dict)

    @property
    def refunded(self) -> int:
        return len(self.refunds)

    @property
    def refund_ids(self) -> list[int]:
        return [r for r in self.refunds.values() if r is not None]


def refund_returns(
    conn: psycopg.Connection,
    return_ids: Sequence[int],
    *,
    actor: str,
    amounts: Mapping[int, Decimal] | None = None,
    chunk: int = CHUNK,
) -> RefundResult:
    """Refund and close the given inspected returns, one transaction per chunk (default amount: received
    units × unit price; the refund goes out through the outbox). Repeating is harmless."""
    res = RefundResult()
    for part in _chunks(list(return_ids), chunk):
        res.refunds.update(
            run_in_transaction(
                conn,
                lambda c, part=part: domain.refund_returns_in_transaction(
                    c, part, actor=actor, amounts=amounts
                ),
            )
        )
    return res


def refund_inspected(
    conn: psycopg.Connection, *, limit: int = 500, actor: str = "returns", chunk: int = CHUNK
) -> RefundResult:
    """Refund and close every inspected refund-kind return (oldest first, at most ``limit``); exchanges wait
    for their replacement order instead."""
    ids = [
        r[0]
        for r in conn.execute(
            """SELECT return_id FROM oms.returns WHERE state = 'inspected' AND kind = 'refund'
               ORDER BY return_id LIMIT %s""",
            (limit,),
        ).fetchall()
    ]
    return refund_returns(conn, ids, actor=actor, chunk=chunk)


def cancel_return(conn: psycopg.Connection, return_id: int, *, reason: str, actor: str) -> None:
    """Withdraw an RMA that has not been received; its units are returnable again."""
    domain.cancel_return(conn, return_id, reason=reason, actor=actor)


# -- the WMS's return receipts -------------------------------------------------------------------------------


@dataclass
class ReceiptSync:
    """What one run of :func:`sync_return_receipts` did."""

    receipts: int = 0
    received: int = 0
    inspected: int = 0
    duplicates: int = 0
    quarantined: int = 0
    units_restocked: int = 0
    units_written_off: int = 0
    pages: int = 0
    #: reasons of the receipts quarantined in this run
    errors: list[str] = field(default_factory=list)

    def metadata(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "errors"} | {"errors": self.errors[:20]}


def sync_return_receipts(
    conn: psycopg.Connection,
    client: wms.WmsClient,
    *,
    actor: str = "wms",
    page_size: int = wms.RETURNS_PAGE_SIZE,
    max_pages: int = 100,
) -> ReceiptSync:
    """Apply the returned parcels the WMS received, from the feed's stored cursor on.

    Per page: match it (``wms.plan_receipts``), quarantine what does not fit, then receive every matched
    return in one batch (at the mapped location and the WMS's time, the receipt id kept in the event) and
    inspect them in one batch by the reported condition; then move the cursor past the page. A batch refused
    because a return changed since the page was matched (cancelled or received by hand meanwhile) is applied
    receipt by receipt and only the refused ones are quarantined, with the domain's reason — the page always
    goes on. A crash between the steps reads the page again: receipts already applied are duplicates, and a
    return received but not inspected is inspected. A failing call to the WMS is recorded in the feed's
    health (``wms:returns``) and raised."""
    res = ReceiptSync()
    after = (get_cursor(conn, wms.RETURNS_CURSOR) or {}).get("after")
    try:
        for _ in range(max_pages):
            body = wms.read_receipt_page(client, after, page_size)
            records = body.get("receipts") or []
            res.pages += 1
            res.receipts += len(records)
            _apply_receipts(conn, wms.plan_receipts(conn, records), res, actor)
            nxt = body.get("next_cursor")
            if nxt is None or nxt == after:
                break
            with conn.transaction():
                set_cursor(conn, wms.RETURNS_CURSOR, {"after": nxt})
            after = nxt
            if not body.get("has_more"):
                break
    except Exception as exc:
        record_failure(conn, wms.RETURNS_FEED, str(exc))
        raise
    record_success(conn, wms.RETURNS_FEED, res.receipts)
    return res


def _apply_receipts(conn: psycopg.Connection, page: wms.PagePlan, res: ReceiptSync, actor: str) -> None:
    res.duplicates += page.duplicates
    if page.rejects:
        _quarantine(conn, page.rejects, res)
    to_receive = [p for p in page.plans if p.receive]
    received = _isolated(
        conn,
        to_receive,
        lambda part: receive_returns(
            conn,
            [
                ReturnReceipt(p.return_id, p.location_code, p.received, p.received_at, p.receipt_id)
                for p in part
            ],
            actor=actor,
        ),
        res,
    )
    res.received += len(received)
    failed = {p.receipt_id for p in to_receive} - {p.receipt_id for p in received}
    inspected = _isolated(
        conn,
        [p for p in page.plans if p.receipt_id not in failed],
        lambda part: inspect_returns(
            conn, [ReturnInspection(p.return_id, p.dispositions) for p in part], actor=actor
        ),
        res,
    )
    res.inspected += len(inspected)
    res.units_restocked += sum(p.units("restock") for p in inspected)
    res.units_written_off += sum(p.units("write_off") for p in inspected)


def _isolated(conn: psycopg.Connection, plans: list, step, res: ReceiptSync) -> list:
    """``step`` on all plans at once; if the batch is refused, per plan, quarantining the ones refused."""
    if not plans:
        return []
    try:
        step(plans)
        return plans
    except OmsError as exc:
        if len(plans) == 1:
            _quarantine(conn, [(plans[0].record, plans[0].receipt_id, _why(plans[0], exc))], res)
            return []
    done, refused = [], []
    for p in plans:
        try:
            step([p])
            done.append(p)
        except OmsError as exc:
            refused.append((p.record, p.receipt_id, _why(p, exc)))
    if refused:
        _quarantine(conn, refused, res)
    return done


def _why(plan: wms.ReceiptPlan, exc: Exception) -> str:
    return f"{plan.record.get('rma')}: cannot be applied: {exc}"


def _quarantine(conn: psycopg.Connection, rejects: list, res: ReceiptSync) -> None:
    wms.quarantine_receipts(conn, rejects)
    res.quarantined += len(rejects)
    res.errors += [why for _, _, why in rejects]


# -- reads -------------------------------------------------------------------------------------------------------


def in_flight(conn: psycopg.Connection, *, limit: int = 200) -> list[dict[str, Any]]:
    """Returns not closed or cancelled with their stage: requested / in transit / received / inspected."""
    return domain.returns_in_flight(conn, limit=limit)


def lines_of(conn: psycopg.Connection, return_id: int) -> list[dict[str, Any]]:
    """One return's lines (requested, received, reason, disposition)."""
    return domain.return_lines(conn, return_id)


def receiving_locations(conn: psycopg.Connection) -> list[str]:
    """Locations a returned parcel can be received at."""
    return domain.receiving_locations(conn)


# -- customers' return requests from the channels -----------------------------------------------------------------
@dataclass
class ChannelReturns:
    requested: int = 0
    already_open: int = 0
    quarantined: int = 0
    errors: list[str] = field(default_factory=list)

    def metadata(self) -> dict[str, Any]:
        return {
            "requested": self.requested,
            "already_open": self.already_open,
            "quarantined": self.quarantined,
        }


def _return_lines(conn: psycopg.Connection, order_id: int, ask) -> list[ReturnLineRequest]:
    """The customer's (sku, qty) over the order's lines of that SKU, as far as each is returnable."""
    open_qty = domain.returnable(conn, order_id)
    by_sku: dict[str, list[int]] = {}
    for line_id, sku in conn.execute(
        "SELECT line_id, sku FROM oms.order_lines WHERE order_id = %s ORDER BY line_id", (order_id,)
    ).fetchall():
        by_sku.setdefault(sku, []).append(line_id)
    out: list[ReturnLineRequest] = []
    problems = []
    for sku, qty, reason, note in ask.lines:
        left = qty
        for line_id in by_sku.get(sku, []):
            take = min(left, open_qty.get(line_id, 0))
            if take > 0:
                out.append(ReturnLineRequest(line_id, take, reason, note))
                left -= take
        if left:
            problems.append(f"{sku}: {left} of {qty} not returnable on order (not delivered, or claimed)")
    if problems:
        raise ValueError("; ".join(problems))
    return out


def sync_channel_returns(
    conn: psycopg.Connection, clients, *, actor: str = "channel-returns"
) -> ChannelReturns:
    """Customers' return requests from every channel that has a returns feed (``Channel.returns_feed``): each
    opens an RMA on its order (idempotent on the channel's request id, announced to the warehouse through the
    outbox); one that cannot be opened — unknown order, a SKU not delivered — is quarantined with the reason.
    The feed's cursor moves past the requests handled."""
    res = ChannelReturns()
    for channel in registry.CHANNELS:
        if channel.returns_feed is None or not clients.settings.configured(channel.system):
            continue
        asks, since = channel.returns_feed(conn, clients.get(channel.system))
        bad = []
        for rid, payload in asks:
            try:
                ask = channel.map_return(payload)
                row = conn.execute(
                    "SELECT order_id FROM oms.orders WHERE channel_code = %s AND external_id = %s",
                    (channel.code, ask.order_external_id),
                ).fetchone()
                if row is None:
                    raise ValueError(f"order {ask.order_external_id}: not in the OMS")
                existing = conn.execute(
                    "SELECT 1 FROM oms.returns WHERE order_id = %s AND channel_return_id = %s",
                    (row[0], ask.request_id),
                ).fetchone()
                if existing:
                    res.already_open += 1
                    continue
                lines = _return_lines(conn, row[0], ask)
                domain.request_return(
                    conn,
                    row[0],
                    lines,
                    actor=actor,
                    kind="exchange" if ask.exchange else "refund",
                    channel_return_id=ask.request_id,
                    note=ask.note,
                )
                res.requested += 1
            except (ValueError, OmsError) as exc:
                bad.append((f"{channel.code}:returns", str(rid), payload, str(exc)))
                res.errors.append(f"{channel.code} return {rid}: {exc}")
        with conn.transaction():
            if bad:
                quarantine_many(conn, bad)
                res.quarantined += len(bad)
            if asks:
                set_cursor(conn, f"{channel.code}:returns", {"since_id": max(rid for rid, _ in asks)})
    return res


def exchange_inspected(conn: psycopg.Connection, *, limit: int = 200, actor: str = "returns") -> list[int]:
    """Close every inspected exchange return with its replacement order (the same SKUs and received
    quantities at the original prices, already paid); the replacement goes through allocation like any
    order. One transaction per return; a return refused (e.g. a SKU no longer sold) is left inspected for
    ops, with the reason logged by the caller. Returns the replacement order ids."""
    ids = [
        r[0]
        for r in conn.execute(
            """SELECT return_id FROM oms.returns WHERE state = 'inspected' AND kind = 'exchange'
               ORDER BY return_id LIMIT %s""",
            (limit,),
        ).fetchall()
    ]
    out = []
    for rid in ids:
        try:
            out.append(domain.exchange_return(conn, rid, actor=actor))
        except OmsError:
            continue
    return out
