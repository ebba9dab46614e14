"""Ozon Seller API (FBS) simulator: ``POST /v4/posting/fbs/list`` and ``POST /v2/products/stocks``.

Shapes follow ``reference/channel-apis.md`` §1 (Ozon Seller API docs): ``Client-Id`` + ``Api-Key`` headers,
gRPC-style error bodies ``{code, message, details}``, cursor paging ``{postings, cursor, has_next}`` without a
``result`` wrapper, per-item ``TOO_MANY_REQUESTS`` inside a 200 for stock pushes.

Simulated behaviour worth knowing when you write a connector against it:

* postings are created by the order generator in ``awaiting_packaging``; a share is cancelled by the buyer
  later in simulated time (``cancelled``, ``cancellation.cancellation_initiator = "Покупатель"``), which also
  updates ``last_changed_status_date`` — a connector must re-read changed postings, not only new ones;
* the cursor is opaque and bound to the filter it was issued for (sending it with another filter → 400);
  paging is keyset-based, so postings created while you page never shift the pages;
* the list endpoint filters on ``in_process_at`` within ``filter.since``..``filter.to`` (period ≤ 1 year);
* stock pushes are recorded (``GET /_sim/stocks``) so tests can check what the OMS pushed; each
  (offer_id, warehouse_id) pair accepts one update per 30 s of *protocol* (real) time.
* the per-item error codes other than ``TOO_MANY_REQUESTS`` (``NOT_FOUND``, ``WAREHOUSE_NOT_FOUND``,
  ``INVALID_STOCK``) are the simulator's choice; treat any non-empty ``errors`` as "not updated".

Control: ``POST /_sim/postings/{posting_number}/status`` ``{"status": …, "substatus": …}`` moves a posting (e.g.
to ``awaiting_deliver``/``delivering``/``delivered`` or ``cancelled``); ``GET /_sim/stocks``.

State across restarts (``persist``): every posting (its stream number and time — the content is derived from
them again — warehouse, status history, cancellation), pending buyer cancellations and the published stocks
are kept, and the order stream numbers on from the last posting, so a restart neither replays old postings
as new ones nor reuses their numbers. Cursors of an earlier run stay valid (postings keep their positions).
"""

from __future__ import annotations

import base64
import hashlib
import heapq
import json
import random
from bisect import bisect_left, bisect_right
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from simulators.base import (
    UNCLEAN_ID_GAP,
    ApiError,
    SimContext,
    Simulator,
    dt_in,
    dt_out,
    read_json,
    resume_stream,
    secs_header,
)
from simulators.clock import iso_z, parse_rfc3339
from simulators.faults import FaultRule, FaultSet
from simulators.generator import GeneratedOrder, OrderGenerator
from simulators.limits import TokenBucket
from simulators.network import BY_OZON_WAREHOUSE, LOCATION_BY_CODE, WAREHOUSES, Location, warehouses_near

STATUSES = (
    "awaiting_registration", "acceptance_in_progress", "awaiting_approve", "awaiting_packaging",
    "awaiting_deliver", "arbitration", "client_arbitration", "delivering", "driver_pickup", "delivered",
    "cancelled", "not_accepted", "sent_by_seller",
)  # fmt: skip
SUBSTATUS = {
    "awaiting_registration": "posting_awaiting_registration",
    "acceptance_in_progress": "posting_acceptance_in_progress",
    "awaiting_approve": "posting_created",
    "awaiting_packaging": "posting_created",
    "awaiting_deliver": "posting_awaiting_courier",
    "arbitration": "posting_in_arbitration",
    "client_arbitration": "posting_in_client_arbitration",
    "delivering": "posting_in_carriage",
    "driver_pickup": "posting_driver_pick_up",
    "delivered": "posting_delivered",
    "cancelled": "posting_canceled",
    "not_accepted": "posting_not_in_sort_center",
    "sent_by_seller": "posting_sent_by_seller",
}
ACTIONS = {
    "awaiting_packaging": ["cancel", "product_cancel", "ship", "set_timeslot"],
    "awaiting_deliver": ["cancel", "label_download", "label_download_big", "label_download_small"],
    "delivering": ["arbitration"],
}
_FINAL = {"delivered", "cancelled", "not_accepted"}
MAX_PERIOD = timedelta(days=365)
STOCK_ITEMS_MAX = 100
TPL_PROVIDER = (24, "Ozon Логистика")
COMMISSION_PERCENT = Decimal("15")


@dataclass
class Posting:
    idx: int
    order: GeneratedOrder
    order_id: int
    order_number: str
    posting_number: str
    warehouse: Location
    status: str = "awaiting_packaging"
    substatus: str = "posting_created"
    status_changed_at: datetime | None = None
    cancellation: dict | None = None
    tracking_number: str = ""
    delivering_date: datetime | None = None
    history: list[tuple[str, str]] = field(default_factory=list)

    @property
    def in_process_at(self) -> datetime:
        return self.order.created_at


def _ozon_error(status: int, code: int, message: str) -> ApiError:
    return ApiError(status, {"code": code, "message": message, "details": []})


def _bad_request(message: str) -> ApiError:
    return _ozon_error(400, 3, message)


class OzonSimulator(Simulator):
    name = "ozon"

    def __init__(
        self,
        ctx: SimContext,
        *,
        client_id: str = "100500",
        api_key: str = "sim-ozon-api-key-0b1f4c2e",
        rate: float | None = None,
        cancel_share: float = 0.05,
        stock_throttle_s: float = 30.0,
        rps_limit: float | None = 50.0,
        faults=(),
    ) -> None:
        super().__init__(ctx, faults=faults)
        self.client_id = client_id
        self.api_key = api_key
        self.gen = OrderGenerator(
            ctx.seed, "ozon", ctx.rate if rate is None else rate, catalog=ctx.catalog,
            start=ctx.clock.start, cancel_share=cancel_share, profile=ctx.profile,
        )  # fmt: skip
        self.postings: list[Posting] = []
        self.by_number: dict[str, Posting] = {}
        self._times: list[datetime] = []
        self._events: list[tuple[datetime, int, str, str]] = []
        self._event_seq = 0
        self.stocks: dict[tuple[str, int], dict] = {}
        self.stock_pushes: list[dict] = []
        self._last_push: dict[tuple[str, int], float] = {}
        self.stock_throttle_s = stock_throttle_s
        self.limiter = TokenBucket(rps_limit, rps_limit, ctx.protocol_time) if rps_limit else None
        self._by_product_id = {p.ozon_product_id: p for p in ctx.catalog}

    # -- world --------------------------------------------------------------------------------------
    def credentials(self) -> dict:
        return {"client_id": self.client_id, "api_key": self.api_key}

    def sync(self) -> None:
        now = self.now
        for order in self.gen.until(now):
            self._add(order)
            self.dirty = True
        while self._events and self._events[0][0] <= now:
            at, _, number, status = heapq.heappop(self._events)
            posting = self.by_number[number]
            if status == "cancelled" and posting.status in ("awaiting_packaging", "awaiting_deliver"):
                self._set_status(posting, "cancelled", at, initiator="Покупатель")

    def _posting(self, order: GeneratedOrder, warehouse: Location) -> Posting:
        """A new posting for a generated order; its numbers derive from the order's stream number."""
        seq = order.seq
        order_number = (
            f"{(self.ctx.seed * 1_000_003 + 10_000_000 + seq) % 10**8:08d}-{order.entropy % 10000:04d}"
        )
        return Posting(
            idx=len(self.postings),
            order=order,
            order_id=30_000_000_000 + seq * 10 + order.entropy % 10,
            order_number=order_number,
            posting_number=f"{order_number}-1",
            warehouse=warehouse,
            status_changed_at=order.created_at,
            history=[(iso_z(order.created_at), "awaiting_packaging")],
        )

    def _append(self, posting: Posting) -> None:
        self.postings.append(posting)
        self._times.append(posting.order.created_at)
        self.by_number[posting.posting_number] = posting

    def _add(self, order: GeneratedOrder) -> None:
        posting = self._posting(order, self._assign_warehouse(order))
        self._append(posting)
        if order.cancel_after_s is not None:
            self._schedule(order.created_at + timedelta(seconds=order.cancel_after_s), posting, "cancelled")

    # -- state across restarts ------------------------------------------------------------------------------
    def dump_state(self) -> dict:
        return {
            "produced": self.gen.produced,
            "postings": [
                {
                    "seq": p.order.seq, "created_at": dt_out(p.order.created_at), "warehouse": p.warehouse.code,
                    "status": p.status, "substatus": p.substatus, "status_changed_at": dt_out(p.status_changed_at),
                    "cancellation": p.cancellation, "tracking_number": p.tracking_number,
                    "delivering_date": dt_out(p.delivering_date), "history": p.history,
                }
                for p in self.postings
            ],
            "events": [[dt_out(at), seq, number, status] for at, seq, number, status in self._events],
            "event_seq": self._event_seq,
            "stocks": list(self.stocks.values()),
        }  # fmt: skip

    def load_state(self, data: dict, *, clean: bool) -> None:
        for saved in data["postings"]:
            posting = self._posting(
                self.gen.order(saved["seq"], dt_in(saved["created_at"])), LOCATION_BY_CODE[saved["warehouse"]]
            )
            posting.status, posting.substatus = saved["status"], saved["substatus"]
            posting.status_changed_at = dt_in(saved["status_changed_at"])
            posting.cancellation, posting.tracking_number = saved["cancellation"], saved["tracking_number"]
            posting.delivering_date = dt_in(saved["delivering_date"])
            posting.history = [tuple(h) for h in saved["history"]]
            self._append(posting)
        self._events = [(dt_in(at), seq, number, status) for at, seq, number, status in data["events"]]
        heapq.heapify(self._events)
        self._event_seq = int(data["event_seq"])
        self.stocks = {(r["offer_id"], r["warehouse_id"]): r for r in data["stocks"]}
        # new postings number on past every posting handed out (and past any made after the last save)
        resume_stream(self.gen, int(data["produced"]) + (0 if clean else UNCLEAN_ID_GAP))

    def _assign_warehouse(self, order: GeneratedOrder) -> Location:
        """Ozon assigns an FBS posting to the seller warehouse nearest the buyer that has published stock for
        every item; before any stock was published, or when none has enough, to the nearest one."""
        if self.stocks:
            for wh in warehouses_near(order.warehouse_code):
                if wh.ozon_warehouse_id and all(
                    self.stocks.get((self.ctx.products[line.sku].offer_id, wh.ozon_warehouse_id), {}).get(
                        "stock", 0
                    )
                    >= line.qty
                    for line in order.lines
                ):
                    return wh
        return LOCATION_BY_CODE[order.warehouse_code]

    def _schedule(self, at: datetime, posting: Posting, status: str) -> None:
        self._event_seq += 1
        heapq.heappush(self._events, (at, self._event_seq, posting.posting_number, status))

    def _set_status(
        self,
        posting: Posting,
        status: str,
        at: datetime,
        *,
        substatus: str | None = None,
        initiator: str = "",
    ) -> None:
        posting.status = status
        posting.substatus = substatus or SUBSTATUS.get(status, "")
        posting.status_changed_at = at
        posting.history.append((iso_z(at), status))
        if status == "cancelled":
            by_client = initiator == "Покупатель"
            posting.cancellation = {
                "cancel_reason_id": 507 if by_client else 402,
                "cancel_reason": "Покупатель отменил заказ" if by_client else "Отменено продавцом",
                "cancellation_type": "client" if by_client else "seller",
                "cancelled_after_ship": False,
                "affect_cancellation_rating": not by_client,
                "cancellation_initiator": initiator or "Продавец",
            }
        if status == "delivering" and posting.delivering_date is None:
            posting.delivering_date = at
        if status in ("awaiting_deliver", "delivering") and not posting.tracking_number:
            posting.tracking_number = f"{posting.order_id % 10**10:010d}OZ"

    # -- rendering ------------------------------------------------------------------------------------
    def render(self, p: Posting, *, analytics: bool = False, financial: bool = False) -> dict:
        o = p.order
        wh = p.warehouse
        products = []
        fin_products = []
        for line in o.lines:
            prod = self.ctx.products[line.sku]
            products.append({
                "sku": prod.ozon_sku,
                "offer_id": prod.offer_id,
                "name": prod.name,
                "quantity": line.qty,
                "price": {"amount": f"{line.unit_price:.2f}", "currency": "RUB"},
                "mandatory_mark": [],
                "is_marketplace_buyout": False,
            })  # fmt: skip
            commission = (line.unit_price * line.qty * COMMISSION_PERCENT / 100).quantize(Decimal("0.01"))
            fin_products.append({
                "product_id": prod.ozon_sku,
                "price": float(line.unit_price),
                "old_price": float(line.unit_price),
                "total_discount_value": 0.0,
                "total_discount_percent": 0.0,
                "payout": float(line.unit_price * line.qty - commission),
                "commission_amount": float(commission),
                "commission_percent": int(COMMISSION_PERCENT),
                "currency_code": "RUB",
                "actions": [],
                "quantity": line.qty,
            })  # fmt: skip
        packed = p.status not in ("awaiting_packaging", "awaiting_registration", "cancelled")
        no_cancel = {
            "cancel_reason_id": 0, "cancel_reason": "", "cancellation_type": "", "cancelled_after_ship": False,
            "affect_cancellation_rating": False, "cancellation_initiator": "",
        }  # fmt: skip
        wh_index = WAREHOUSES.index(wh)
        return {
            "posting_number": p.posting_number,
            "order_id": p.order_id,
            "order_number": p.order_number,
            "status": p.status,
            "substatus": p.substatus,
            "delivery_method": {
                "id": 1_020_000_000_000 + wh_index,
                "name": f"Ozon Логистика самостоятельно, {wh.city}",
                "warehouse_id": wh.ozon_warehouse_id,
                "warehouse": wh.name,
                "tpl_provider_id": TPL_PROVIDER[0],
                "tpl_provider": TPL_PROVIDER[1],
            },
            "tracking_number": p.tracking_number,
            "tpl_integration_type": "ozon",
            "in_process_at": iso_z(o.created_at),
            "shipment_date": iso_z((o.created_at + timedelta(days=1)).replace(hour=15, minute=0, second=0)),
            "delivering_date": iso_z(p.delivering_date) if p.delivering_date else None,
            "cancellation": p.cancellation or no_cancel,
            "customer": None,
            "addressee": None,
            "products": products,
            "barcodes": (
                {
                    "upper_barcode": f"%101%{p.order_id % 10**9}",
                    "lower_barcode": f"2{p.order_id % 10**11:011d}",
                }
                if packed
                else None
            ),
            "analytics_data": (
                {
                    "region": o.address.region,
                    "city": o.address.city,
                    "delivery_type": "PVZ" if o.delivery_method == "pickup_point" else "Courier",
                    "is_premium": False,
                    "payment_type_group_name": "Карты оплаты",
                    "warehouse_id": wh.ozon_warehouse_id,
                    "warehouse": wh.name,
                    "tpl_provider_id": TPL_PROVIDER[0],
                    "tpl_provider": TPL_PROVIDER[1],
                    "delivery_date_begin": iso_z(o.created_at + timedelta(days=2)),
                    "delivery_date_end": iso_z(o.created_at + timedelta(days=4)),
                    "is_legal": False,
                }
                if analytics
                else None
            ),
            "financial_data": (
                {"products": fin_products, "cluster_from": wh.city, "cluster_to": o.address.region}
                if financial
                else None
            ),
            "is_express": False,
            "is_multibox": False,
            "multi_box_qty": 1,
            "parent_posting_number": "",
            "available_actions": list(ACTIONS.get(p.status, [])),
            "requirements": {
                "products_requiring_gtd": [],
                "products_requiring_country": [],
                "products_requiring_mandatory_mark": [],
                "products_requiring_rnpt": [],
            },  # fmt: skip
        }

    @staticmethod
    def malform(record: dict, rng: random.Random) -> None:
        """Corrupt one posting the ways real feeds break: a missing required field or a non-numeric quantity."""
        choice = rng.randrange(4)
        if choice == 0:
            record.pop("posting_number", None)
        elif choice == 1 and record.get("products"):
            record["products"][0]["quantity"] = "2 шт."
        elif choice == 2:
            record.pop("in_process_at", None)
        elif record.get("products"):
            record["products"][0]["price"]["amount"] = "n/a"

    # -- protocol -------------------------------------------------------------------------------------
    def before_request(self, request: Request) -> Response | None:
        if self.limiter:
            ok, wait = self.limiter.try_take()
            if not ok:
                return JSONResponse(
                    {"code": 8, "message": "You have reached request rate limit per second", "details": []},
                    status_code=429,
                    headers={"Retry-After": secs_header(max(1, round(wait + 0.5)))},
                )
        client_id = request.headers.get("client-id")
        api_key = request.headers.get("api-key")
        if not client_id or not api_key:
            return JSONResponse(
                {"code": 7, "message": "Client-Id and Api-Key headers are required", "details": []},
                status_code=403,
            )
        if client_id != self.client_id or api_key != self.api_key:
            return JSONResponse(
                {"code": 7, "message": "Invalid Api-Key, please contact support", "details": []},
                status_code=403,
            )
        return None

    def fault_rate_limited(self, rule: FaultRule) -> Response:
        return JSONResponse(
            {"code": 8, "message": "You have reached request rate limit per second", "details": []},
            status_code=429,
            headers={"Retry-After": secs_header(rule.retry_after)},
        )

    def fault_server_error(self, rule: FaultRule) -> Response:
        status = rule.status or 500
        code, message = (14, "service unavailable") if status == 503 else (13, "internal error")
        headers = {"Retry-After": secs_header(rule.retry_after)} if status == 503 else {}
        return JSONResponse(
            {"code": code, "message": message, "details": []}, status_code=status, headers=headers
        )

    def not_found(self, request: Request) -> Response:
        return JSONResponse({"code": 5, "message": "Not Found", "details": []}, status_code=404)

    def internal_error(self) -> Response:
        return JSONResponse({"code": 13, "message": "internal error", "details": []}, status_code=500)

    def api_routes(self):
        return [
            ("/v4/posting/fbs/list", self.list_postings, ["POST"]),
            ("/v2/products/stocks", self.update_stocks, ["POST"]),
        ]

    # -- /v4/posting/fbs/list -------------------------------------------------------------------------
    @staticmethod
    def _fingerprint(filt: dict, sort_dir: str) -> str:
        raw = json.dumps([filt, sort_dir], sort_keys=True, ensure_ascii=False, default=str)
        return hashlib.sha256(raw.encode()).hexdigest()[:16]

    @staticmethod
    def _encode_cursor(idx: int, fp: str) -> str:
        raw = json.dumps({"i": idx, "f": fp}, separators=(",", ":")).encode()
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    @staticmethod
    def _decode_cursor(cursor: str, fp: str) -> int:
        try:
            padded = cursor + "=" * (-len(cursor) % 4)
            data = json.loads(base64.urlsafe_b64decode(padded.encode()))
            idx = int(data["i"])
        except (ValueError, KeyError, TypeError) as exc:
            raise _bad_request("invalid cursor") from exc
        if data.get("f") != fp:
            raise _bad_request("cursor does not match the request filter")
        return idx

    async def list_postings(self, request: Request, faults: FaultSet) -> Response:
        try:
            body = await read_json(request)
        except ValueError as exc:
            raise _bad_request(f"invalid request payload: {exc}") from exc
        if not isinstance(body, dict):
            raise _bad_request("invalid request payload: expected an object")
        filt = body.get("filter")
        if not isinstance(filt, dict):
            raise _bad_request("invalid request payload: filter is required")
        for key in ("since", "to"):
            if not filt.get(key):
                raise _bad_request(f"invalid request payload: filter.{key} is required")
        try:
            since, to = parse_rfc3339(filt["since"]), parse_rfc3339(filt["to"])
        except (ValueError, TypeError) as exc:
            raise _bad_request(
                "invalid request payload: filter.since/filter.to must be RFC 3339 dates"
            ) from exc
        if to < since:
            raise _bad_request("invalid request payload: filter.to must not be before filter.since")
        if to - since > MAX_PERIOD:
            raise _bad_request("PERIOD_IS_TOO_LONG")
        limit = body.get("limit")
        if limit is None:
            raise _bad_request("invalid request payload: limit is required")
        if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= 1000:
            raise _bad_request("invalid request payload: limit must be in [1, 1000]")
        sort_dir = str(body.get("sort_dir") or "ASC").upper()
        if sort_dir not in ("ASC", "DESC"):
            raise _bad_request("invalid request payload: sort_dir must be ASC or DESC")
        statuses = filt.get("statuses") or ([filt["status"]] if filt.get("status") else [])
        if not isinstance(statuses, list) or any(s not in STATUSES for s in statuses):
            raise _bad_request("invalid request payload: unknown status in filter.statuses")
        warehouse_ids = filt.get("warehouse_ids") or []
        if not isinstance(warehouse_ids, list):
            raise _bad_request("invalid request payload: filter.warehouse_ids must be a list")
        changed = filt.get("last_changed_status_date") or {}
        try:
            changed_from = parse_rfc3339(changed["from"]) if changed.get("from") else None
            changed_to = parse_rfc3339(changed["to"]) if changed.get("to") else None
        except (ValueError, TypeError, AttributeError) as exc:
            raise _bad_request("invalid request payload: filter.last_changed_status_date") from exc
        with_ = body.get("with") or {}
        analytics, financial = bool(with_.get("analytics_data")), bool(with_.get("financial_data"))

        fp = self._fingerprint(filt, sort_dir)
        cursor = body.get("cursor") or ""
        after = self._decode_cursor(cursor, fp) if cursor else None
        wh_set = {int(w) for w in warehouse_ids}

        with self.lock:
            lo, hi = bisect_left(self._times, since), bisect_right(self._times, to)
            if sort_dir == "ASC":
                start = lo if after is None else max(lo, after + 1)
                indices = range(start, hi)
            else:
                start = hi - 1 if after is None else min(hi - 1, after - 1)
                indices = range(start, lo - 1, -1)
            page: list[Posting] = []
            has_next = False
            for i in indices:
                p = self.postings[i]
                if statuses and p.status not in statuses:
                    continue
                if wh_set and p.warehouse.ozon_warehouse_id not in wh_set:
                    continue
                if changed_from and p.status_changed_at < changed_from:
                    continue
                if changed_to and p.status_changed_at > changed_to:
                    continue
                if len(page) == limit:
                    has_next = True
                    break
                page.append(p)
            records = [self.render(p, analytics=analytics, financial=financial) for p in page]

        next_cursor = ""
        if has_next and page:
            last = page[-1].idx
            if faults.get("duplicate") and len(page) > 1:
                last = page[-2].idx  # the last posting shows up again on the next page
            next_cursor = self._encode_cursor(last, fp)
        if faults:
            records = faults.apply_records(records, self.malform)
        return JSONResponse({"postings": records, "cursor": next_cursor, "has_next": has_next})

    # -- /v2/products/stocks --------------------------------------------------------------------------
    async def update_stocks(self, request: Request, faults: FaultSet) -> Response:
        try:
            body = await read_json(request)
        except ValueError as exc:
            raise _bad_request(f"invalid request payload: {exc}") from exc
        stocks = body.get("stocks") if isinstance(body, dict) else None
        if not isinstance(stocks, list) or not stocks:
            raise _bad_request("invalid request payload: stocks must be a non-empty list")
        if len(stocks) > STOCK_ITEMS_MAX:
            raise _bad_request(
                f"invalid request payload: stocks must contain at most {STOCK_ITEMS_MAX} items"
            )
        now_protocol = self.ctx.protocol_time()
        result = []
        with self.lock:
            for item in stocks:
                if not isinstance(item, dict):
                    raise _bad_request("invalid request payload: each stock item must be an object")
                result.append(self._apply_stock(item, now_protocol))
        return JSONResponse({"result": result})

    def _apply_stock(self, item: dict, now_protocol: float) -> dict:
        offer_id = item.get("offer_id") or ""
        product_id = item.get("product_id") or 0
        warehouse_id = item.get("warehouse_id") or 0
        if isinstance(warehouse_id, str) and warehouse_id.isdigit():  # int64 sent as a string is accepted
            warehouse_id = int(warehouse_id)
        stock = item.get("stock")
        product = self.ctx.by_offer_id.get(str(offer_id)) if offer_id else None
        if product is None and product_id:
            product = self._by_product_id.get(int(product_id)) if str(product_id).isdigit() else None
        out = {
            "warehouse_id": warehouse_id,
            "product_id": product.ozon_product_id if product else product_id,
            "offer_id": product.offer_id if product else offer_id,
            "updated": False,
            "errors": [],
        }
        if product is None:
            out["errors"].append({"code": "NOT_FOUND", "message": "Product not found"})
            return out
        if not isinstance(warehouse_id, int) or warehouse_id not in BY_OZON_WAREHOUSE:
            out["errors"].append({"code": "WAREHOUSE_NOT_FOUND", "message": "Warehouse not found"})
            return out
        if not isinstance(stock, int) or isinstance(stock, bool) or stock < 0:
            out["errors"].append({"code": "INVALID_STOCK", "message": "stock must be a non-negative integer"})
            return out
        key = (product.offer_id, warehouse_id)
        last = self._last_push.get(key)
        if last is not None and now_protocol - last < self.stock_throttle_s:
            out["errors"].append(
                {"code": "TOO_MANY_REQUESTS", "message": "Too many requests for this item, try again later"}
            )
            return out
        self._last_push[key] = now_protocol
        record = {
            "offer_id": product.offer_id,
            "product_id": product.ozon_product_id,
            "warehouse_id": warehouse_id,
            "stock": stock,
            "updated_at": iso_z(self.now),
        }
        self.stocks[key] = record
        self.stock_pushes.append(record)
        out["updated"] = True
        return out

    # -- control --------------------------------------------------------------------------------------
    def set_posting_status(self, posting_number: str, status: str, substatus: str | None = None) -> dict:
        if status not in STATUSES:
            raise ValueError(f"unknown status {status!r}")
        with self.lock:
            self.sync()
            posting = self.by_number.get(posting_number)
            if posting is None:
                raise KeyError(posting_number)
            self._set_status(posting, status, self.now, substatus=substatus, initiator="Продавец")
            return self.render(posting)

    def rendered_postings(self) -> list[dict]:
        with self.lock:
            self.sync()
            return [self.render(p) for p in self.postings]

    def control_routes(self) -> list[Route]:
        async def set_status(request: Request) -> Response:
            try:
                body = await read_json(request)
                status = body["status"]
            except (ValueError, KeyError, TypeError) as exc:
                return JSONResponse({"error": f"expected {{'status': …}}: {exc}"}, status_code=400)
            try:
                posting = self.set_posting_status(
                    request.path_params["posting_number"], status, body.get("substatus")
                )
            except KeyError as exc:
                return JSONResponse({"error": f"unknown posting {exc}"}, status_code=404)
            except ValueError as exc:
                return JSONResponse({"error": str(exc)}, status_code=400)
            return JSONResponse(posting)

        async def stocks(request: Request) -> Response:
            with self.lock:
                return JSONResponse({"stocks": list(self.stocks.values()), "pushes": len(self.stock_pushes)})

        return [
            Route("/_sim/postings/{posting_number}/status", set_status, methods=["POST"]),
            Route("/_sim/stocks", stocks, methods=["GET"]),
        ]

    def state(self) -> dict:
        by_status: dict[str, int] = {}
        for p in self.postings:
            by_status[p.status] = by_status.get(p.status, 0) + 1
        return {
            "postings": len(self.postings),
            "by_status": by_status,
            "stocks": list(self.stocks.values()),
            "stock_pushes": len(self.stock_pushes),
        }
