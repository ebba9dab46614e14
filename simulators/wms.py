"""Warehouse management system simulator: absolute on-hand per SKU and location, over HTTP with paging.

Why HTTP (not JSON files): the OMS treats the WMS as the truth about physical stock and reconciles its
ledger against it; a paged HTTP endpoint with a pinned snapshot lets a connector read a consistent picture
even while stock moves between pages, and exercises the same retry/paging code as the channels.

API (our own, documented in ``docs/simulators.md``; header ``X-Api-Key``):

* ``GET /wms/v1/warehouses`` → ``{"warehouses": [{code, kind, name, city, address}]}`` (warehouses and stores);
* ``GET /wms/v1/stock?warehouse=MSK1&page_size=500&page_token=…`` → ``{warehouse, snapshot_id, as_of,
  items: [{sku, on_hand, updated_at}], next_page_token}``. The first page pins a snapshot; every following page
  (``page_token``) reads the same snapshot, so the pages add up to one consistent picture. Every catalog SKU
  is listed, zeros included (absolute stock: a missing SKU would be ambiguous). ``page_size`` 1..1000;
  an evicted snapshot → 410 ``page_token_expired`` (start again without a token);
* ``POST /wms/v1/receipts`` ``{receipt_id, warehouse, lines: [{sku, qty}]}`` — goods received: adds to on-hand.
  Idempotent on ``receipt_id`` (same content → 200 with the original, other content → 409);
* ``POST /wms/v1/shipments`` ``{shipment_id, warehouse, lines}`` — goods picked and shipped: subtracts;
  all-or-nothing, 409 ``insufficient_stock`` listing every short line; idempotent like receipts;
* ``GET /wms/v1/receipts?since=ISO`` and ``GET /wms/v1/movements?after_id=N&limit=M`` (append-only log of
  receipts, shipments, store sales, customer returns and adjustments — lets the OMS reconcile incrementally);
* ``POST /wms/v1/returns`` ``{rma, warehouse, lines: [{sku, qty}], order_ref?}`` — the OMS announces a customer
  return (an RMA) so the warehouse expects the parcel. Idempotent on ``rma`` (same content → 200, other content
  → 409). ``GET /wms/v1/returns/{rma}`` → the announced return with ``status`` ``expected`` | ``received`` and
  its ``receipt_id`` once received;
* ``GET /wms/v1/returns/receipts?after=<cursor>&limit=N`` → ``{receipts: [{receipt_id, warehouse, rma,
  received_at, lines: [{sku, qty, condition}]}], next_cursor, has_more}``: the feed of returned parcels the
  warehouse received, oldest first. ``after`` is the ``next_cursor`` of the previous page (none: from the
  start), opaque to the client; ``limit`` 1..500 (100). ``condition`` is ``resellable`` (back on the shelf:
  the WMS's on-hand grows) or ``damaged`` (kept aside, not on hand).

* ``GET /wms/v1/inbound?after=<cursor>&limit=N`` → ``{inbound: [{inbound_id, kind, warehouse, from_warehouse,
  supplier, expected_date, status, lines: [{sku, qty, qty_received}], updated_at, version}], next_cursor,
  has_more}``: purchase orders and transfers on their way to a warehouse or store (expected supply), each listed
  again whenever it changes (goods received, cancelled), oldest change first. ``kind`` is ``purchase_order`` or
  ``transfer`` (``from_warehouse`` set); ``status`` ``expected`` | ``partially_received`` | ``received`` |
  ``cancelled``; ``expected_date`` is the day it is due (Moscow). ``after`` is the previous ``next_cursor``
  (none: from the start), ``limit`` 1..500 (100). Goods received against one also appear in
  ``GET /wms/v1/receipts`` (``inbound_id`` set) and raise on-hand; a transfer's goods leave ``from_warehouse``
  when it is dispatched.

Inbound supply: with ``planned_inbound`` the world starts with a purchase order per warehouse for the SKUs it
has none of, due ``inbound_lead_days`` days later (seeded), delivered in full at ``inbound_hour`` Moscow time on
that day; the daily replenishment leaves alone SKUs already on order. The control endpoints ``POST
/_sim/inbound`` (plan one: ``{inbound_id?, kind?, warehouse, from_warehouse?, supplier?, expected_date | in_days,
lines}``), ``/_sim/inbound/receive`` (``{inbound_id, lines?}``: goods arrive now, all or part) and
``/_sim/inbound/cancel`` (``{inbound_id}``) play the purchasing department.

Customer returns: an announced parcel arrives after a simulated transit of one to five days (times
``transit_scale``, so a demo that compresses carrier transit compresses returns too); its receipt lists
every announced line, each ``damaged`` with probability ``damaged_share`` — drawn from an RNG seeded by the
RMA, so the same seed and RMA always give the same arrival time and conditions.

The WMS also replenishes warehouses by itself once a simulated day (``auto_receipt_hour`` Moscow time): SKUs
below ``reorder_point`` get an ``AUTO-…`` receipt, as supplier deliveries would. Store stock drops when the
POS simulator closes a business day (sales are applied, floored at zero).
Errors: ``{"error": {"code", "message", "details"?}}``.

State across restarts (``persist``): on-hand and its update times, receipts, shipments, the movement log,
announced returns, their receipts and pending arrivals, the next replenishment and the snapshot counter are
kept (pinned snapshots are not: a page token of an earlier run answers 410, and the client starts again).
"""

from __future__ import annotations

import base64
import heapq
import json
import random
from collections import OrderedDict
from datetime import UTC, date, datetime, timedelta

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from simulators.base import (
    ApiError,
    SimContext,
    Simulator,
    cursor_page_params,
    dt_in,
    dt_out,
    read_json,
    secs_header,
)
from simulators.clock import iso_z, parse_rfc3339
from simulators.faults import FaultRule, FaultSet
from simulators.generator import MOSCOW_UTC_OFFSET, popularity_ranking
from simulators.network import LOCATION_BY_CODE, LOCATIONS

SNAPSHOTS_KEPT = 32
#: suppliers named on the simulated purchase orders
SUPPLIERS = ("ООО «ТехноПоставка»", "АО «Дом и Быт»", "ООО «Склад-Импорт»")


def _error(status: int, code: str, message: str, details=None) -> ApiError:
    body = {"error": {"code": code, "message": message}}
    if details is not None:
        body["error"]["details"] = details
    return ApiError(status, body)


class WmsSimulator(Simulator):
    name = "wms"

    def __init__(
        self,
        ctx: SimContext,
        *,
        api_key: str = "sim-wms-key-3a7d",
        auto_receipts: bool = True,
        auto_receipt_hour: int = 6,
        reorder_point: int = 10,
        reorder_qty: int = 60,
        transit_scale: float = 1.0,
        damaged_share: float = 0.1,
        planned_inbound: bool = True,
        inbound_lead_days: tuple[int, int] = (2, 6),
        inbound_hour: int = 10,
        faults=(),
    ) -> None:
        super().__init__(ctx, faults=faults)
        if transit_scale <= 0:
            raise ValueError("transit_scale must be > 0")
        if not 0 <= damaged_share <= 1:
            raise ValueError("damaged_share must be within 0..1")
        self.api_key = api_key
        #: multiplies the return transit (days in the carrier's network before the parcel reaches the dock)
        self.transit_scale = transit_scale
        self.damaged_share = damaged_share
        self.auto_receipts = auto_receipts
        self.auto_receipt_hour = auto_receipt_hour
        self.reorder_point = reorder_point
        self.reorder_qty = reorder_qty
        start = ctx.clock.start
        self.on_hand: dict[str, dict[str, int]] = {}
        self.updated_at: dict[tuple[str, str], datetime] = {}
        ranking = {p.sku: i for i, p in enumerate(popularity_ranking(ctx.seed, ctx.catalog))}
        for loc in LOCATIONS:
            stock: dict[str, int] = {}
            for p in ctx.catalog:
                rng = random.Random(f"{ctx.seed}:wms:{loc.code}:{p.sku}")
                hot = ranking[p.sku] < max(5, len(ctx.catalog) // 20)
                if loc.kind == "warehouse":
                    qty = 0 if rng.random() < 0.08 else rng.randint(5, 120) * (4 if hot else 1)
                else:
                    qty = rng.randint(1, 12) if rng.random() < 0.45 or hot else 0
                stock[p.sku] = qty
                self.updated_at[(loc.code, p.sku)] = start
            self.on_hand[loc.code] = stock
        self.receipts: dict[str, dict] = {}
        self.shipments: dict[str, dict] = {}
        self.movements: list[dict] = []
        self.snapshots: OrderedDict[str, dict] = OrderedDict()
        self._snapshot_seq = 0
        #: announced customer returns by RMA, and the receipts of those that arrived (in arrival order)
        self.returns: dict[str, dict] = {}
        self.return_receipts: list[dict] = []
        self._return_due: list[tuple[datetime, str]] = []  # (arrival time, rma), a heap
        self._next_auto = self._next_auto_after(start)
        #: expected inbound supply by id; ``version`` orders the feed (bumped by every change)
        self.inbound: dict[str, dict] = {}
        self._inbound_version = 0
        self.inbound_hour = inbound_hour
        if planned_inbound:
            self._plan_initial_inbound(start, inbound_lead_days)

    def credentials(self) -> dict:
        return {"api_key": self.api_key}

    # -- state across restarts ------------------------------------------------------------------------------
    def dump_state(self) -> dict:
        return {
            "on_hand": self.on_hand,
            "updated_at": [[loc, sku, dt_out(at)] for (loc, sku), at in self.updated_at.items()],
            "receipts": self.receipts,
            "shipments": self.shipments,
            "movements": self.movements,
            "snapshot_seq": self._snapshot_seq,
            "returns": self.returns,
            "return_receipts": self.return_receipts,
            "return_due": [[dt_out(at), rma] for at, rma in self._return_due],
            "next_auto": dt_out(self._next_auto),
            "inbound": self.inbound,
            "inbound_version": self._inbound_version,
        }

    def load_state(self, data: dict, *, clean: bool) -> None:
        # SKUs or locations the saved world did not have keep their initial stock
        for loc, stock in data["on_hand"].items():
            if loc in self.on_hand:
                self.on_hand[loc].update({sku: qty for sku, qty in stock.items() if sku in self.on_hand[loc]})
        for loc, sku, at in data["updated_at"]:
            if (loc, sku) in self.updated_at:
                self.updated_at[(loc, sku)] = dt_in(at)
        self.receipts = data["receipts"]
        self.shipments = data["shipments"]
        self.movements = data["movements"]
        self._snapshot_seq = int(data["snapshot_seq"])
        self.returns = data["returns"]
        self.return_receipts = data["return_receipts"]
        self._return_due = [(dt_in(at), rma) for at, rma in data["return_due"]]
        heapq.heapify(self._return_due)
        self._next_auto = dt_in(data["next_auto"])
        if "inbound" in data:  # a world saved before inbound supply existed keeps its planned orders
            self.inbound = data["inbound"]
            self._inbound_version = int(data["inbound_version"])

    # -- world ------------------------------------------------------------------------------------------
    def _next_auto_after(self, t: datetime) -> datetime:
        local = t + timedelta(hours=MOSCOW_UTC_OFFSET)
        at = local.replace(hour=self.auto_receipt_hour, minute=0, second=0, microsecond=0)
        if at <= local:
            at += timedelta(days=1)
        return at - timedelta(hours=MOSCOW_UTC_OFFSET)

    def sync(self) -> None:
        now = self.now
        self._receive_due_returns(now)
        self._receive_due_inbound(now)
        if not self.auto_receipts:
            return
        while self._next_auto <= now:
            at = self._next_auto
            for loc in LOCATIONS:
                if loc.kind != "warehouse":
                    continue
                on_order = self._on_order(loc.code)
                lines = [
                    {"sku": sku, "qty": self.reorder_qty}
                    for sku, qty in sorted(self.on_hand[loc.code].items())
                    if qty < self.reorder_point and sku not in on_order
                ]
                if lines:
                    rid = f"AUTO-{loc.code}-{(at + timedelta(hours=MOSCOW_UTC_OFFSET)):%Y%m%d}"
                    self._post_receipt(rid, loc.code, lines, at, source="supplier")
            self._next_auto += timedelta(days=1)

    def _move(self, kind: str, location: str, sku: str, delta: int, ref: str, at: datetime) -> None:
        new = self.on_hand[location][sku] + delta
        self.on_hand[location][sku] = new
        self.updated_at[(location, sku)] = at
        self.movements.append({
            "id": len(self.movements) + 1, "at": iso_z(at), "type": kind, "warehouse": location, "sku": sku,
            "qty_delta": delta, "on_hand_after": new, "ref": ref,
        })  # fmt: skip

    def _post_receipt(
        self, receipt_id: str, location: str, lines: list[dict], at: datetime, source: str
    ) -> dict:
        for line in lines:
            self._move("receipt", location, line["sku"], line["qty"], receipt_id, at)
        record = {"receipt_id": receipt_id, "warehouse": location, "lines": lines, "received_at": iso_z(at),
                  "status": "posted", "source": source}  # fmt: skip
        self.receipts[receipt_id] = record
        return record

    # -- inbound supply -----------------------------------------------------------------------------------
    def _due_at(self, day: date) -> datetime:
        """``inbound_hour`` Moscow time on ``day``, in UTC."""
        local = datetime(day.year, day.month, day.day, self.inbound_hour, tzinfo=UTC)
        return local - timedelta(hours=MOSCOW_UTC_OFFSET)

    def _local_date(self, t: datetime) -> date:
        return (t + timedelta(hours=MOSCOW_UTC_OFFSET)).date()

    def _on_order(self, warehouse: str) -> set[str]:
        return {
            ln["sku"]
            for doc in self.inbound.values()
            if doc["warehouse"] == warehouse and doc["status"] in ("expected", "partially_received")
            for ln in doc["lines"]
            if ln["qty_received"] < ln["qty"]
        }

    def _touch(self, doc: dict, at: datetime) -> None:
        self._inbound_version += 1
        doc["version"] = self._inbound_version
        doc["updated_at"] = iso_z(at)

    def _plan_initial_inbound(self, start: datetime, lead_days: tuple[int, int]) -> None:
        """A purchase order per warehouse for the SKUs it starts without (what the demo's backorders wait for)."""
        for loc in LOCATIONS:
            if loc.kind != "warehouse":
                continue
            missing = sorted(sku for sku, qty in self.on_hand[loc.code].items() if qty == 0)
            if not missing:
                continue
            rng = random.Random(f"{self.ctx.seed}:wms:inbound:{loc.code}")
            day = self._local_date(start) + timedelta(days=rng.randint(*lead_days))
            self.plan_inbound(
                f"PO-{loc.code}-{self._local_date(start):%Y%m%d}",
                loc.code,
                [{"sku": sku, "qty": self.reorder_qty} for sku in missing],
                expected_date=day,
                supplier=rng.choice(SUPPLIERS),
                at=start,
            )

    def plan_inbound(
        self,
        inbound_id: str,
        warehouse: str,
        lines: list[dict],
        *,
        expected_date: date,
        kind: str = "purchase_order",
        from_warehouse: str | None = None,
        supplier: str | None = None,
        at: datetime | None = None,
    ) -> dict:
        """Expect goods at ``warehouse`` on ``expected_date``; a transfer's goods leave ``from_warehouse`` now
        (all of them or nothing: 409 ``insufficient_stock`` when it does not have them)."""
        at = at or self.now
        if kind not in ("purchase_order", "transfer"):
            raise _error(400, "invalid_argument", "kind must be purchase_order or transfer")
        if (kind == "transfer") != (from_warehouse is not None):
            raise _error(400, "invalid_argument", "a transfer (and only a transfer) names from_warehouse")
        if from_warehouse is not None and from_warehouse not in LOCATION_BY_CODE:
            raise _error(400, "invalid_argument", f"unknown warehouse {from_warehouse!r}")
        if from_warehouse == warehouse:
            raise _error(400, "invalid_argument", "a transfer goes to another warehouse")
        existing = self.inbound.get(inbound_id)
        if existing is not None:
            raise _error(409, "conflict", f"inbound {inbound_id} exists")
        if from_warehouse is not None:
            short = [
                {"sku": ln["sku"], "on_hand": self.on_hand[from_warehouse][ln["sku"]], "requested": ln["qty"]}
                for ln in lines
                if self.on_hand[from_warehouse][ln["sku"]] < ln["qty"]
            ]
            if short:
                raise _error(409, "insufficient_stock", "not enough stock to send", short)
            for ln in lines:
                self._move("transfer_out", from_warehouse, ln["sku"], -ln["qty"], inbound_id, at)
        doc = {
            "inbound_id": inbound_id, "kind": kind, "warehouse": warehouse, "from_warehouse": from_warehouse,
            "supplier": supplier if kind == "purchase_order" else None,
            "expected_date": expected_date.isoformat(), "status": "expected",
            "lines": [{"sku": ln["sku"], "qty": ln["qty"], "qty_received": 0} for ln in lines],
            "due_at": iso_z(self._due_at(expected_date)), "created_at": iso_z(at),
        }  # fmt: skip
        self._touch(doc, at)
        self.inbound[inbound_id] = doc
        return doc

    def receive_inbound(
        self, inbound_id: str, lines: list[dict] | None = None, at: datetime | None = None
    ) -> dict:
        """Goods of an inbound document arrive (``lines``: part of it; None: everything outstanding)."""
        at = at or self.now
        doc = self.inbound.get(inbound_id)
        if doc is None:
            raise _error(404, "not_found", f"no inbound {inbound_id}")
        if doc["status"] not in ("expected", "partially_received"):
            raise _error(409, "conflict", f"inbound {inbound_id} is {doc['status']}")
        by_sku = {ln["sku"]: ln for ln in doc["lines"]}
        want = (
            [
                {"sku": s, "qty": ln["qty"] - ln["qty_received"]}
                for s, ln in by_sku.items()
                if ln["qty"] > ln["qty_received"]
            ]
            if lines is None
            else lines
        )
        bad = [
            w
            for w in want
            if w["sku"] not in by_sku
            or not 0 < w["qty"] <= by_sku[w["sku"]]["qty"] - by_sku[w["sku"]]["qty_received"]
        ]
        if bad or not want:
            raise _error(400, "invalid_argument", "lines are not outstanding on this inbound", bad)
        n = sum(1 for r in self.receipts.values() if r.get("inbound_id") == inbound_id)
        record = self._post_receipt(
            f"IN-{inbound_id}-{n + 1}", doc["warehouse"], want, at,
            source="transfer" if doc["kind"] == "transfer" else "supplier",
        )  # fmt: skip
        record["inbound_id"] = inbound_id
        for w in want:
            by_sku[w["sku"]]["qty_received"] += w["qty"]
        done = all(ln["qty_received"] >= ln["qty"] for ln in doc["lines"])
        doc["status"] = "received" if done else "partially_received"
        self._touch(doc, at)
        return doc

    def cancel_inbound(self, inbound_id: str, at: datetime | None = None) -> dict:
        doc = self.inbound.get(inbound_id)
        if doc is None:
            raise _error(404, "not_found", f"no inbound {inbound_id}")
        if doc["status"] in ("expected", "partially_received"):
            doc["status"] = "cancelled"
            self._touch(doc, at or self.now)
        return doc

    def _receive_due_inbound(self, now: datetime) -> None:
        """Purchase orders and transfers whose day has come are delivered in full (what is outstanding)."""
        due = sorted(
            (doc["due_at"], doc["inbound_id"])
            for doc in self.inbound.values()
            if doc["status"] in ("expected", "partially_received")
        )
        for at, inbound_id in due:
            when = parse_rfc3339(at)
            if when > now:
                break
            self.receive_inbound(inbound_id, at=when)

    # -- customer returns ---------------------------------------------------------------------------------
    def _return_rng(self, rma: str) -> random.Random:
        return random.Random(f"{self.ctx.seed}:wms:return:{rma}")

    def _announce_return(self, rma: str, warehouse: str, lines: list[dict], order_ref, at: datetime) -> dict:
        rng = self._return_rng(rma)
        due = at + timedelta(hours=rng.uniform(24, 120) * self.transit_scale)
        record = {"rma": rma, "warehouse": warehouse, "order_ref": order_ref, "lines": lines,
                  "announced_at": iso_z(at), "status": "expected", "receipt_id": None}  # fmt: skip
        self.returns[rma] = record
        heapq.heappush(self._return_due, (due, rma))
        return record

    def _receive_due_returns(self, now: datetime) -> None:
        """Parcels whose transit is over reach the dock: one receipt each, conditions drawn per line."""
        while self._return_due and self._return_due[0][0] <= now:
            at, rma = heapq.heappop(self._return_due)
            record = self.returns[rma]
            rng = self._return_rng(rma)
            rng.random()  # the draw that fixed the arrival time
            receipt_id = f"RR-{len(self.return_receipts) + 1:08d}"
            lines = [
                {"sku": line["sku"], "qty": line["qty"],
                 "condition": "damaged" if rng.random() < self.damaged_share else "resellable"}
                for line in record["lines"]
            ]  # fmt: skip
            for line in lines:
                if line["condition"] == "resellable":
                    self._move("return", record["warehouse"], line["sku"], line["qty"], receipt_id, at)
            self.return_receipts.append(
                {"receipt_id": receipt_id, "warehouse": record["warehouse"], "rma": rma,
                 "received_at": iso_z(at), "lines": lines}
            )  # fmt: skip
            record["status"], record["receipt_id"] = "received", receipt_id

    def apply_sales(self, location: str, sold: dict[str, int], ref: str, at: datetime) -> None:
        """Store sales of a closed business day (called by the POS simulator). Floored at zero: a till can sell
        what the WMS did not know about (misplaced stock) — the floor is where the OMS sees drift."""
        with self.lock:
            for sku, qty in sorted(sold.items()):
                if sku not in self.on_hand[location] or qty == 0:
                    continue
                delta = -min(qty, self.on_hand[location][sku]) if qty > 0 else -qty
                if delta:
                    self._move("sale", location, sku, delta, ref, at)

    def adjust(self, location: str, sku: str, on_hand: int, reason: str = "cycle count") -> None:
        with self.lock:
            delta = on_hand - self.on_hand[location][sku]
            self._move("adjustment", location, sku, delta, reason, self.now)

    # -- protocol -----------------------------------------------------------------------------------------
    def before_request(self, request: Request) -> Response | None:
        if request.headers.get("x-api-key") != self.api_key:
            return JSONResponse(
                {"error": {"code": "unauthenticated", "message": "missing or invalid X-Api-Key"}},
                status_code=401,
            )
        return None

    def fault_rate_limited(self, rule: FaultRule) -> Response:
        return JSONResponse(
            {"error": {"code": "rate_limited", "message": "too many requests"}},
            status_code=429,
            headers={"Retry-After": secs_header(rule.retry_after)},
        )

    def fault_server_error(self, rule: FaultRule) -> Response:
        status = rule.status or 500
        headers = {"Retry-After": secs_header(rule.retry_after)} if status == 503 else {}
        return JSONResponse(
            {"error": {"code": "internal", "message": "internal error"}}, status, headers=headers
        )

    def not_found(self, request: Request) -> Response:
        return JSONResponse({"error": {"code": "not_found", "message": "no such endpoint"}}, status_code=404)

    def internal_error(self) -> Response:
        return JSONResponse({"error": {"code": "internal", "message": "internal error"}}, status_code=500)

    def api_routes(self):
        return [
            ("/wms/v1/warehouses", self.list_warehouses, ["GET"]),
            ("/wms/v1/stock", self.stock, ["GET"]),
            ("/wms/v1/receipts", self.post_receipt, ["POST"]),
            ("/wms/v1/receipts", self.list_receipts, ["GET"]),
            ("/wms/v1/shipments", self.post_shipment, ["POST"]),
            ("/wms/v1/movements", self.list_movements, ["GET"]),
            ("/wms/v1/inbound", self.list_inbound, ["GET"]),
            ("/wms/v1/returns", self.post_return, ["POST"]),
            ("/wms/v1/returns/receipts", self.list_return_receipts, ["GET"]),
            ("/wms/v1/returns/{rma}", self.get_return, ["GET"]),
        ]

    async def list_warehouses(self, request: Request, faults: FaultSet) -> Response:
        return JSONResponse({
            "warehouses": [
                {"code": loc.code, "kind": loc.kind, "name": loc.name, "city": loc.city, "address": loc.address}
                for loc in LOCATIONS
            ]
        })  # fmt: skip

    @staticmethod
    def _token(snapshot_id: str, offset: int) -> str:
        raw = json.dumps({"s": snapshot_id, "o": offset}, separators=(",", ":")).encode()
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    async def stock(self, request: Request, faults: FaultSet) -> Response:
        params = request.query_params
        warehouse = params.get("warehouse")
        if not warehouse:
            raise _error(400, "invalid_argument", "warehouse is required")
        if warehouse not in LOCATION_BY_CODE:
            raise _error(404, "not_found", f"unknown warehouse {warehouse}")
        try:
            page_size = int(params.get("page_size", "500"))
        except ValueError as exc:
            raise _error(400, "invalid_argument", "page_size must be an integer") from exc
        if not 1 <= page_size <= 1000:
            raise _error(400, "invalid_argument", "page_size must be within 1..1000")
        token = params.get("page_token")
        with self.lock:
            if token:
                try:
                    data = json.loads(base64.urlsafe_b64decode((token + "=" * (-len(token) % 4)).encode()))
                    snapshot_id, offset = str(data["s"]), int(data["o"])
                except (ValueError, KeyError, TypeError) as exc:
                    raise _error(400, "invalid_argument", "invalid page_token") from exc
                snap = self.snapshots.get(snapshot_id)
                if snap is None:
                    raise _error(
                        410, "page_token_expired", "snapshot expired; start again without page_token"
                    )
                if snap["warehouse"] != warehouse:
                    raise _error(400, "invalid_argument", "page_token belongs to another warehouse")
            else:
                self._snapshot_seq += 1
                snapshot_id = f"snap-{self._snapshot_seq:06d}"
                snap = {
                    "warehouse": warehouse,
                    "as_of": iso_z(self.now),
                    "items": [
                        {"sku": sku, "on_hand": qty, "updated_at": iso_z(self.updated_at[(warehouse, sku)])}
                        for sku, qty in sorted(self.on_hand[warehouse].items())
                    ],
                }
                self.snapshots[snapshot_id] = snap
                while len(self.snapshots) > SNAPSHOTS_KEPT:
                    self.snapshots.popitem(last=False)
                offset = 0
            items = snap["items"][offset : offset + page_size]
            end = offset + len(items)
            next_token = self._token(snapshot_id, end) if end < len(snap["items"]) else None
        if faults:
            items = faults.apply_records(items, _malform_item)
        return JSONResponse({
            "warehouse": warehouse, "snapshot_id": snapshot_id, "as_of": snap["as_of"], "items": items,
            "next_page_token": next_token,
        })  # fmt: skip

    def _parse_lines(self, body: dict, id_key: str) -> tuple[str, str, list[dict]]:
        doc_id, warehouse, lines = body.get(id_key), body.get("warehouse"), body.get("lines")
        if not isinstance(doc_id, str) or not doc_id:
            raise _error(400, "invalid_argument", f"{id_key} is required")
        if warehouse not in LOCATION_BY_CODE:
            raise _error(400, "invalid_argument", f"unknown warehouse {warehouse!r}")
        if not isinstance(lines, list) or not lines:
            raise _error(400, "invalid_argument", "lines must be a non-empty list")
        problems = []
        clean = []
        for i, line in enumerate(lines):
            sku = line.get("sku") if isinstance(line, dict) else None
            qty = line.get("qty") if isinstance(line, dict) else None
            if sku not in self.ctx.products:
                problems.append({"line": i, "problem": f"unknown sku {sku!r}"})
            elif not isinstance(qty, int) or isinstance(qty, bool) or qty <= 0:
                problems.append({"line": i, "problem": "qty must be a positive integer"})
            else:
                clean.append({"sku": sku, "qty": qty})
        if problems:
            raise _error(400, "invalid_argument", "invalid lines", problems)
        return doc_id, warehouse, clean

    async def post_receipt(self, request: Request, faults: FaultSet) -> Response:
        try:
            body = await read_json(request)
        except ValueError as exc:
            raise _error(400, "invalid_argument", str(exc)) from exc
        if not isinstance(body, dict):
            raise _error(400, "invalid_argument", "expected an object")
        receipt_id, warehouse, lines = self._parse_lines(body, "receipt_id")
        with self.lock:
            existing = self.receipts.get(receipt_id)
            if existing is not None:
                if existing["warehouse"] == warehouse and existing["lines"] == lines:
                    return JSONResponse({"receipt": existing}, status_code=200)
                raise _error(409, "conflict", "receipt_id already used with different content")
            record = self._post_receipt(receipt_id, warehouse, lines, self.now, source="api")
        return JSONResponse({"receipt": record}, status_code=201)

    async def list_receipts(self, request: Request, faults: FaultSet) -> Response:
        since = request.query_params.get("since")
        try:
            since_dt = parse_rfc3339(since) if since else None
        except ValueError as exc:
            raise _error(400, "invalid_argument", "since must be RFC 3339") from exc
        with self.lock:
            items = [
                r
                for r in self.receipts.values()
                if since_dt is None or parse_rfc3339(r["received_at"]) >= since_dt
            ]
        return JSONResponse({"receipts": items})

    async def post_shipment(self, request: Request, faults: FaultSet) -> Response:
        try:
            body = await read_json(request)
        except ValueError as exc:
            raise _error(400, "invalid_argument", str(exc)) from exc
        if not isinstance(body, dict):
            raise _error(400, "invalid_argument", "expected an object")
        shipment_id, warehouse, lines = self._parse_lines(body, "shipment_id")
        with self.lock:
            existing = self.shipments.get(shipment_id)
            if existing is not None:
                if existing["warehouse"] == warehouse and existing["lines"] == lines:
                    return JSONResponse({"shipment": existing}, status_code=200)
                raise _error(409, "conflict", "shipment_id already used with different content")
            need: dict[str, int] = {}
            for line in lines:
                need[line["sku"]] = need.get(line["sku"], 0) + line["qty"]
            short = [
                {"sku": sku, "on_hand": self.on_hand[warehouse][sku], "requested": qty}
                for sku, qty in sorted(need.items())
                if self.on_hand[warehouse][sku] < qty
            ]
            if short:
                raise _error(409, "insufficient_stock", "not enough stock for some lines", short)
            now = self.now
            for line in lines:
                self._move("shipment", warehouse, line["sku"], -line["qty"], shipment_id, now)
            record = {
                "shipment_id": shipment_id,
                "warehouse": warehouse,
                "lines": lines,
                "shipped_at": iso_z(now),
            }
            self.shipments[shipment_id] = record
        return JSONResponse({"shipment": record}, status_code=201)

    async def list_movements(self, request: Request, faults: FaultSet) -> Response:
        try:
            after = int(request.query_params.get("after_id", "0"))
            limit = int(request.query_params.get("limit", "500"))
        except ValueError as exc:
            raise _error(400, "invalid_argument", "after_id and limit must be integers") from exc
        if not 1 <= limit <= 1000:
            raise _error(400, "invalid_argument", "limit must be within 1..1000")
        with self.lock:
            items = self.movements[max(after, 0) : max(after, 0) + limit]
            last = self.movements[-1]["id"] if self.movements else 0
        next_after = items[-1]["id"] if items else after
        return JSONResponse({"movements": items, "next_after_id": next_after, "has_more": next_after < last})

    async def post_return(self, request: Request, faults: FaultSet) -> Response:
        try:
            body = await read_json(request)
        except ValueError as exc:
            raise _error(400, "invalid_argument", str(exc)) from exc
        if not isinstance(body, dict):
            raise _error(400, "invalid_argument", "expected an object")
        rma, warehouse, lines = self._parse_lines(body, "rma")
        order_ref = body.get("order_ref")
        with self.lock:
            existing = self.returns.get(rma)
            if existing is not None:
                if existing["warehouse"] == warehouse and existing["lines"] == lines:
                    return JSONResponse({"return": existing}, status_code=200)
                raise _error(409, "conflict", "rma already announced with different content")
            record = self._announce_return(rma, warehouse, lines, order_ref, self.now)
        return JSONResponse({"return": record}, status_code=201)

    async def get_return(self, request: Request, faults: FaultSet) -> Response:
        rma = request.path_params["rma"]
        with self.lock:
            record = self.returns.get(rma)
            if record is None:
                raise _error(404, "not_found", f"no announced return {rma}")
            return JSONResponse({"return": dict(record)})

    async def list_return_receipts(self, request: Request, faults: FaultSet) -> Response:
        after, limit = cursor_page_params(request.query_params)
        with self.lock:
            page = self.return_receipts[after : after + limit]
            total = len(self.return_receipts)
        end = after + len(page)
        if faults.get("duplicate") and len(page) > 1:
            end -= 1  # the last record of this page shows up again on the next one
        records = faults.apply_records(page, _malform_return_receipt) if faults else page
        return JSONResponse({"receipts": records, "next_cursor": str(end), "has_more": end < total})

    async def list_inbound(self, request: Request, faults: FaultSet) -> Response:
        after, limit = cursor_page_params(request.query_params)
        with self.lock:
            docs = sorted(
                (d for d in self.inbound.values() if d["version"] > after), key=lambda d: d["version"]
            )
            page = [{k: v for k, v in d.items() if k not in ("due_at", "created_at")} for d in docs[:limit]]
            more = len(docs) > limit
        end = page[-1]["version"] if page else after
        return JSONResponse({"inbound": page, "next_cursor": str(end), "has_more": more})

    def control_routes(self) -> list[Route]:
        async def adjust(request: Request) -> Response:
            try:
                body = await read_json(request)
                self.adjust(
                    body["warehouse"], body["sku"], int(body["on_hand"]), body.get("reason", "cycle count")
                )
            except (ValueError, KeyError, TypeError) as exc:
                return JSONResponse(
                    {"error": f"expected {{warehouse, sku, on_hand}}: {exc}"}, status_code=400
                )
            return JSONResponse({"ok": True})

        async def inbound(request: Request) -> Response:
            try:
                body = await read_json(request)
                lines = [{"sku": str(ln["sku"]), "qty": int(ln["qty"])} for ln in body["lines"]]
                if "expected_date" in body:
                    day = date.fromisoformat(body["expected_date"])
                else:
                    day = self._local_date(self.now) + timedelta(days=int(body.get("in_days", 3)))
                unknown = [ln["sku"] for ln in lines if ln["sku"] not in self.ctx.products]
                if unknown or body["warehouse"] not in LOCATION_BY_CODE:
                    raise ValueError(f"unknown warehouse or sku(s): {body['warehouse']}, {unknown}")
            except (ValueError, KeyError, TypeError) as exc:
                return JSONResponse(
                    {"error": f"expected {{warehouse, lines, expected_date | in_days}}: {exc}"}, 400
                )
            with self.lock:
                try:
                    doc = self.plan_inbound(
                        body.get("inbound_id") or f"PO-SIM-{self._inbound_version + 1:06d}",
                        body["warehouse"],
                        lines,
                        expected_date=day,
                        kind=body.get("kind", "purchase_order"),
                        from_warehouse=body.get("from_warehouse"),
                        supplier=body.get("supplier"),
                    )
                except ApiError as exc:
                    return exc.response()
            return JSONResponse({"inbound": doc}, status_code=201)

        async def receive(request: Request) -> Response:
            try:
                body = await read_json(request)
                lines = body.get("lines")
                lines = (
                    None if lines is None else [{"sku": str(x["sku"]), "qty": int(x["qty"])} for x in lines]
                )
                inbound_id = str(body["inbound_id"])
            except (ValueError, KeyError, TypeError) as exc:
                return JSONResponse({"error": f"expected {{inbound_id, lines?}}: {exc}"}, status_code=400)
            with self.lock:
                try:
                    return JSONResponse({"inbound": self.receive_inbound(inbound_id, lines)})
                except ApiError as exc:
                    return exc.response()

        async def cancel(request: Request) -> Response:
            try:
                inbound_id = str((await read_json(request))["inbound_id"])
            except (ValueError, KeyError, TypeError) as exc:
                return JSONResponse({"error": f"expected {{inbound_id}}: {exc}"}, status_code=400)
            with self.lock:
                try:
                    return JSONResponse({"inbound": self.cancel_inbound(inbound_id)})
                except ApiError as exc:
                    return exc.response()

        return [
            Route("/_sim/adjust", adjust, methods=["POST"]),
            Route("/_sim/inbound", inbound, methods=["POST"]),
            Route("/_sim/inbound/receive", receive, methods=["POST"]),
            Route("/_sim/inbound/cancel", cancel, methods=["POST"]),
        ]

    def state(self) -> dict:
        return {
            "locations": {loc: sum(stock.values()) for loc, stock in self.on_hand.items()},
            "receipts": len(self.receipts),
            "shipments": len(self.shipments),
            "movements": len(self.movements),
            "returns_expected": sum(1 for r in self.returns.values() if r["status"] == "expected"),
            "return_receipts": len(self.return_receipts),
            "inbound_open": sum(
                1 for d in self.inbound.values() if d["status"] in ("expected", "partially_received")
            ),
        }


def _malform_item(record: dict, rng: random.Random) -> None:
    if rng.random() < 0.5:
        record["on_hand"] = "n/a"
    else:
        record.pop("sku", None)


def _malform_return_receipt(record: dict, rng: random.Random) -> None:
    lines = record.get("lines") or []
    if lines and rng.random() < 0.5:
        lines[0]["qty"] = "one"
    elif lines:
        lines[0]["condition"] = "unknown"
    else:
        record.pop("rma", None)
