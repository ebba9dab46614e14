"""Wildberries seller API simulator (FBS): assembly tasks ("orders"), supplies, seller warehouses and stocks,
and the content API's card list.

Follows the official seller API as published in WB's OpenAPI specs (the ``wildberries-sdk`` package generated
from them, spec of 2026-10: modules ``orders_fbs`` and ``items``); ``reference/channel-apis.md`` §2 for what
only second-hand sources say (rate-limit headers). ``tests/contract/test_wildberries_contract.py`` drives the
sdk against this simulator.

* ``Authorization: <token>`` or ``Authorization: Bearer <token>``; a bad token → 401 with WB's gateway body
  ``{title, detail, code, requestId, origin, status, statusText, timestamp}``;
* rate limits: the marketplace methods share one bucket of 300 req/min (5/s refill), burst 20, a 4xx response
  costing 10 requests in total; the content API (``/content/…``) has its own bucket of 100 req/min, burst 5.
  429 carries ``X-Ratelimit-Retry`` / ``X-Ratelimit-Reset`` / ``X-Ratelimit-Limit`` (no ``Retry-After``: WB
  does not send it); other responses carry ``X-Ratelimit-Remaining``;
* one WB "order" is one unit (an assembly task): a basket of 3 units becomes 3 orders sharing ``orderUid``;
* two order shapes, as in the spec: ``GET /api/v3/orders/new`` serves ``OrderNew`` (with ``salePrice``,
  ``finalPrice``, ``convertedFinalPrice``, ``requiredMeta``/``optionalMeta``, ``ddate``/``sellerDate``,
  ``isPickupPointShipmentAllowed``); ``GET /api/v3/orders`` (history by ``next`` cursor, ≤ 30-day Unix-time
  window) serves ``Order`` (with ``supplyId`` once the order is in a supply, no ``finalPrice``);
* prices are integers ×100 in the sale currency (``currencyCode`` 643, RUB; the seller's currency is RUB too,
  so the ``converted*`` prices equal the others): ``salePrice`` = list price after the seller's discount;
  ``price`` = after every discount except the WB Wallet one (WB's own discount, per buyer); ``finalPrice`` =
  what the buyer pays (also after the WB Wallet discount, which a share of buyers get);
* ``officeId`` / ``offices`` name the WB office (sorting centre) the seller warehouse delivers to — not the
  buyer's city; the buyer's address is in ``address`` (courier orders only);
* supplies: ``POST /api/v3/supplies`` then ``PATCH /api/marketplace/v3/supplies/{supplyId}/orders`` with
  ``{"orders": [≤ 100 ids]}`` (the old per-order ``PATCH /api/v3/supplies/{supplyId}/orders/{orderId}`` is
  kept as deprecated). A supply takes the orders of one seller warehouse and one ``cargoType`` (those of its
  first order); an order may move between supplies. A batch that cannot be applied whole is refused whole
  (409 ``FailedToAddSupplyOrder``);
* ``PUT /api/v3/stocks/{warehouseId}`` → 204; items with misnamed fields are silently ignored (still 204);
  an ill-typed or out-of-range amount → 400 (nothing applied); unknown ``chrtId`` → 409 with the official
  array body ``[{code, message, data: [{sku, chrtId, amount}]}]`` (the valid items are applied);
* discovery: ``GET /api/v3/warehouses`` lists the seller warehouses of ``simulators.network``;
  ``POST /content/v2/get/cards/list`` lists the catalog's cards (``vendorCode`` = the seller's article),
  sorted by ``updatedAt`` and paged by the ``{updatedAt, nmID}`` cursor.

Orders leave "new" when the seller adds them to a supply, when the seller cancels them
(``PATCH /api/v3/orders/{orderId}/cancel``), when the buyer cancels (a share of orders, in simulated time)
or — simulator approximation of WB's shipping deadline — when still unconfirmed ``confirm_deadline_hours``
after creation (``wbStatus=canceled``).

Not simulated: stickers, marking codes (``requiredMeta`` is always empty), delivering a supply (``deliver``),
cross-border orders (``trackNumber``), the 3-month archive, oversized goods (the catalog is all ``cargoType``
1, so ``ddate``/``sellerDate`` stay null), stock-warehouse cargo restrictions, card photos.

State across restarts (``persist``): every order (its generated basket is derived again from the stream
number and time), statuses, supplies, published stocks and pending cancellations are kept; order ids,
supply ids and the order stream go on past everything handed out, so ``next`` cursors of an earlier run stay
valid and no id is reused.
"""

from __future__ import annotations

import hashlib
import heapq
import math
import random
import uuid
from bisect import bisect_right
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

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
)
from simulators.catalog import Product
from simulators.clock import iso_z, parse_rfc3339
from simulators.faults import FaultRule, FaultSet
from simulators.generator import GeneratedOrder, OrderGenerator
from simulators.limits import TokenBucket
from simulators.network import BY_WB_WAREHOUSE, LOCATION_BY_CODE, Location, warehouses_near

MAX_WINDOW = timedelta(days=30)
BURST = 20
PER_MINUTE = 300
FOURXX_COST = 10
#: the content API (cards) has its own, slower bucket
CONTENT_BURST = 5
CONTENT_PER_MINUTE = 100
STOCK_MAX = 100_000
SUPPLY_BATCH = 100
CARDS_MAX_LIMIT = 100
#: a cargo type above which WB calls goods oversized (СГТ): heavier than 25 kg
OVERSIZED_G = 25_000
#: the WB Wallet discount (percent) and the share of buyers who pay with the wallet
WALLET_DISCOUNT = 2
WALLET_SHARE = 0.3
#: WB's own discount (СПП / WB Club), percent, drawn per buyer
WB_DISCOUNTS = (0, 0, 3, 5, 7, 10)
NOT_FOUND = "Не найдено"
SUPPLY_REFUSED = (
    "Не удалось закрепить сборочное задание за поставкой. "
    "Убедитесь, что сборочное задание и поставка удовлетворяют всем необходимым требованиям."
)


@dataclass
class WbOrder:
    id: int
    order: GeneratedOrder
    product: Product
    unit: int  # 1-based unit number within the generated order
    created_at: datetime
    supplier_status: str = "new"  # new | confirm | complete | cancel
    wb_status: str = "waiting"  # waiting | sorted | sold | canceled | canceled_by_client | ...
    supply_id: str | None = None
    status_changed_at: datetime | None = None
    #: the seller warehouse WB assigned the order to (None: the generator's nearest one)
    warehouse_code: str | None = None


def _wb_error(status: int, code: str, message: str, data: Any = None, *, with_data: bool = True) -> ApiError:
    """The marketplace API's error body: ``{code, message, data}`` for the orders/supplies methods;
    ``with_data=False`` for the seller-warehouse and stock methods, whose schema is ``{code, message}``."""
    body = {"code": code, "message": message}
    if with_data:
        body["data"] = data
    return ApiError(status, body)


def _content_error(message: str) -> ApiError:
    """The content API's 400 body (``ResponseBodyContentError400``)."""
    return ApiError(400, {"data": {}, "error": True, "errorText": message, "additionalErrors": {}})


def _kop(value: Decimal) -> int:
    return int((value * 100).quantize(Decimal("1"), rounding=ROUND_HALF_UP))


def wb_office(wh: Location) -> tuple[int, str]:
    """The WB office (sorting centre) a seller warehouse delivers its supplies to: ``(officeId, name)``.
    Derived from the warehouse so that orders and ``/api/v3/warehouses`` agree."""
    return 300 + (wh.wb_warehouse_id or 0) % 1000, f"СЦ {wh.city}"


def _warehouse(wb: WbOrder) -> Location:
    return LOCATION_BY_CODE[wb.warehouse_code or wb.order.warehouse_code]


def _cargo_type(p: Product) -> int:
    return 2 if p.weight_g > OVERSIZED_G else 1


class WildberriesSimulator(Simulator):
    name = "wildberries"

    def __init__(
        self,
        ctx: SimContext,
        *,
        token: str = "sim-wb-token-6f0e6a9d1c",
        rate: float | None = None,
        cancel_share: float = 0.05,
        confirm_deadline_hours: float | None = 48.0,
        rate_limit: bool = True,
        faults=(),
    ) -> None:
        super().__init__(ctx, faults=faults)
        self.token = token
        self.gen = OrderGenerator(
            ctx.seed, "wildberries", ctx.rate if rate is None else rate, catalog=ctx.catalog,
            start=ctx.clock.start, cancel_share=cancel_share, profile=ctx.profile,
        )  # fmt: skip
        self.orders: list[WbOrder] = []
        self.by_id: dict[int, WbOrder] = {}
        #: the last order id handed out (ids increase; after an unclean restart they jump ahead)
        self._last_id = 5_100_000_000
        self._events: list[tuple[datetime, int, int, str]] = []
        self._event_seq = 0
        self.confirm_deadline = timedelta(hours=confirm_deadline_hours) if confirm_deadline_hours else None
        self.stocks: dict[tuple[int, int], dict] = {}
        self.stock_pushes: list[dict] = []
        self.supplies: dict[str, dict] = {}
        self._by_chrt = {p.wb_chrt_id: p for p in ctx.catalog}
        self.limiter = TokenBucket(BURST, PER_MINUTE / 60, ctx.protocol_time) if rate_limit else None
        self.content_limiter = (
            TokenBucket(CONTENT_BURST, CONTENT_PER_MINUTE / 60, ctx.protocol_time) if rate_limit else None
        )
        self._discount = {
            p.sku: random.Random(f"{ctx.seed}:wb-discount:{p.sku}").choice((0, 0, 10, 15, 20, 30))
            for p in ctx.catalog
        }
        self.cards = self._build_cards()

    def credentials(self) -> dict:
        return {"token": self.token}

    # -- world ------------------------------------------------------------------------------------------
    def sync(self) -> None:
        now = self.now
        for order in self.gen.until(now):
            self._add(order)
            self.dirty = True
        while self._events and self._events[0][0] <= now:
            at, _, order_id, kind = heapq.heappop(self._events)
            wb = self.by_id[order_id]
            if (
                kind == "client_cancel"
                and wb.supplier_status in ("new", "confirm")
                and wb.wb_status == "waiting"
            ):
                wb.wb_status, wb.status_changed_at = "canceled_by_client", at
            elif kind == "deadline" and wb.supplier_status == "new" and wb.wb_status == "waiting":
                wb.wb_status, wb.supplier_status, wb.status_changed_at = "canceled", "cancel", at

    def _schedule(self, at: datetime, order_id: int, kind: str) -> None:
        self._event_seq += 1
        heapq.heappush(self._events, (at, self._event_seq, order_id, kind))

    def _add(self, order: GeneratedOrder) -> None:
        for line in order.lines:
            product = self.ctx.products[line.sku]
            warehouse = self._assign_warehouse(order, product, line.qty)
            for unit in range(1, line.qty + 1):
                self._last_id += 1
                wb = WbOrder(
                    id=self._last_id,
                    order=order,
                    product=product,
                    unit=unit,
                    created_at=order.created_at,
                    status_changed_at=order.created_at,
                    warehouse_code=warehouse,
                )
                self.orders.append(wb)
                self.by_id[wb.id] = wb
                if order.cancel_after_s is not None:
                    self._schedule(
                        order.created_at + timedelta(seconds=order.cancel_after_s), wb.id, "client_cancel"
                    )
                if self.confirm_deadline:
                    self._schedule(order.created_at + self.confirm_deadline, wb.id, "deadline")

    # -- state across restarts ----------------------------------------------------------------------------
    def dump_state(self) -> dict:
        return {
            "produced": self.gen.produced,
            "last_id": self._last_id,
            "orders": [
                {
                    "id": wb.id, "seq": wb.order.seq, "created_at": dt_out(wb.created_at), "sku": wb.product.sku,
                    "unit": wb.unit, "supplier_status": wb.supplier_status, "wb_status": wb.wb_status,
                    "supply_id": wb.supply_id, "status_changed_at": dt_out(wb.status_changed_at),
                    "warehouse_code": wb.warehouse_code,
                }
                for wb in self.orders
            ],
            "supplies": list(self.supplies.values()),
            "stocks": list(self.stocks.values()),
            "events": [[dt_out(at), seq, order_id, kind] for at, seq, order_id, kind in self._events],
            "event_seq": self._event_seq,
        }  # fmt: skip

    def load_state(self, data: dict, *, clean: bool) -> None:
        generated: dict[int, GeneratedOrder] = {}  # one basket → several WB orders: derive it once
        for saved in data["orders"]:
            created = dt_in(saved["created_at"])
            order = generated.get(saved["seq"]) or generated.setdefault(
                saved["seq"], self.gen.order(saved["seq"], created)
            )
            wb = WbOrder(
                id=saved["id"], order=order, product=self.ctx.products[saved["sku"]], unit=saved["unit"],
                created_at=created, supplier_status=saved["supplier_status"], wb_status=saved["wb_status"],
                supply_id=saved["supply_id"], status_changed_at=dt_in(saved["status_changed_at"]),
                warehouse_code=saved["warehouse_code"],
            )  # fmt: skip
            self.orders.append(wb)
            self.by_id[wb.id] = wb
        self.supplies = {s["id"]: s for s in data["supplies"]}
        self.stocks = {(r["warehouseId"], r["chrtId"]): r for r in data["stocks"]}
        self._events = [(dt_in(at), seq, order_id, kind) for at, seq, order_id, kind in data["events"]]
        heapq.heapify(self._events)
        self._event_seq = int(data["event_seq"])
        gap = 0 if clean else UNCLEAN_ID_GAP
        self._last_id = int(data["last_id"]) + gap
        resume_stream(self.gen, int(data["produced"]) + gap)

    def _assign_warehouse(self, order: GeneratedOrder, product: Product, qty: int) -> str:
        """WB assigns an order to the seller warehouse nearest the buyer with enough published stock of the
        item; before any stock was published, or when none has enough, to the nearest one."""
        if self.stocks:
            for wh in warehouses_near(order.warehouse_code):
                if wh.wb_warehouse_id and (
                    self.stocks.get((wh.wb_warehouse_id, product.wb_chrt_id), {}).get("amount", 0) >= qty
                ):
                    return wh.code
        return order.warehouse_code

    # -- rendering ----------------------------------------------------------------------------------------
    def prices(self, wb: WbOrder) -> tuple[int, int, int]:
        """``(salePrice, price, finalPrice)`` in kopecks: the list price after the seller's discount; after
        WB's own discount too (drawn per buyer); after the WB Wallet discount too (a share of buyers)."""
        o, p = wb.order, wb.product
        sale = (p.price * (100 - self._discount[p.sku]) / 100).quantize(Decimal("1"))
        buyer = random.Random(f"{self.ctx.seed}:wb-buyer:{o.seq}")
        wb_discount = buyer.choice(WB_DISCOUNTS)
        wallet = WALLET_DISCOUNT if buyer.random() < WALLET_SHARE else 0
        price = sale * (100 - wb_discount) / 100
        final = price * (100 - wallet) / 100
        return _kop(sale), _kop(price), _kop(final)

    def render(self, wb: WbOrder, *, new: bool = False) -> dict:
        """One assembly task: the ``OrderNew`` shape of ``/orders/new`` (``new=True``) or the ``Order``
        shape of the history ``/orders``."""
        o, p = wb.order, wb.product
        wh = _warehouse(wb)
        office_id, office = wb_office(wh)
        sale, price, final = self.prices(wb)
        cargo = _cargo_type(p)
        user_id = 100_000_000 + o.entropy % 900_000_000
        uid_hash = hashlib.md5(f"{self.ctx.seed}:wb-uid:{o.seq}".encode()).hexdigest()
        record: dict[str, Any] = {
            "address": (
                {"fullAddress": o.address.full, "longitude": o.address.lon, "latitude": o.address.lat}
                if o.delivery_method == "courier"
                else None
            ),
            "scanPrice": None,
            "deliveryType": "fbs",
            "orderUid": f"{user_id}_{uid_hash}",
            "article": p.sku,
            "colorCode": "",
            "rid": hashlib.md5(f"{self.ctx.seed}:wb-rid:{wb.id}".encode()).hexdigest(),
            "createdAt": iso_z(wb.created_at),
            "offices": [office],
            "skus": [p.barcode],
            "id": wb.id,
            "warehouseId": wh.wb_warehouse_id,
            "officeId": office_id,
            "nmId": p.wb_nm_id,
            "chrtId": p.wb_chrt_id,
            "price": price,
            "convertedPrice": price,
            "currencyCode": 643,
            "convertedCurrencyCode": 643,
            "cargoType": cargo,
            "crossBorderType": 0,
            "comment": o.comment[:300],
            "isZeroOrder": False,
            "options": {"isB2B": False},
        }
        if new:
            oversized = cargo != 1
            record.update(
                ddate=(wb.created_at + timedelta(days=5)).strftime("%d.%m.%Y") if oversized else None,
                sellerDate=(wb.created_at + timedelta(days=2)).strftime("%d.%m.%Y") if oversized else None,
                salePrice=sale,
                requiredMeta=[],
                optionalMeta=[],
                finalPrice=final,
                convertedFinalPrice=final,
                isPickupPointShipmentAllowed=not oversized,
            )
        else:
            if wb.supply_id:
                record["supplyId"] = wb.supply_id
            if wb.wb_status in ("sorted", "sold", "ready_for_pickup"):
                record["scanPrice"] = price  # the price at WB's acceptance scan
        return record

    @staticmethod
    def malform(record: dict, rng: random.Random) -> None:
        choice = rng.randrange(3)
        if choice == 0:
            record.pop("id", None)
        elif choice == 1:
            record["price"] = "1 299,00"
        else:
            record.pop("chrtId", None)

    # -- protocol -----------------------------------------------------------------------------------------
    def _gateway_error(self, status: int, title: str, detail: str, origin: str) -> dict:
        return {
            "title": title,
            "detail": detail,
            "code": f"{uuid.uuid4().hex[:8]}-{uuid.uuid4().hex[:12]}",
            "requestId": uuid.uuid4().hex,
            "origin": origin,
            "status": status,
            "statusText": {401: "Unauthorized", 429: "Too Many Requests"}.get(status, "Error"),
            "timestamp": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        }

    def _too_many(self, retry: float, reset: float, limit: int = BURST) -> Response:
        body = self._gateway_error(429, "too many requests", "Limited by seller token", "api-gateway")
        return JSONResponse(
            body,
            status_code=429,
            headers={
                "X-Ratelimit-Retry": str(max(1, math.ceil(retry))),
                "X-Ratelimit-Reset": str(max(1, math.ceil(reset))),
                "X-Ratelimit-Limit": str(limit),
            },
        )

    def _bucket(self, request: Request) -> tuple[TokenBucket | None, int]:
        if request.url.path.startswith("/content/"):
            return self.content_limiter, CONTENT_BURST
        return self.limiter, BURST

    def before_request(self, request: Request) -> Response | None:
        limiter, limit = self._bucket(request)
        if limiter:
            ok, wait = limiter.try_take()
            if not ok:
                return self._too_many(wait, limiter.seconds_until_full(), limit)
        header = request.headers.get("authorization", "").strip()
        token = header[7:].strip() if header.lower().startswith("bearer ") else header
        origin = (
            "s2s-api-auth-content" if request.url.path.startswith("/content/") else "s2s-api-auth-marketplace"
        )
        if not token:
            return JSONResponse(
                self._gateway_error(401, "unauthorized", "empty Authorization header", origin),
                status_code=401,
            )
        if token != self.token:
            return JSONResponse(
                self._gateway_error(
                    401, "unauthorized", "token problem; token is malformed or unknown", origin
                ),
                status_code=401,
            )
        return None

    def after_request(self, request: Request, response: Response) -> None:
        limiter, _ = self._bucket(request)
        if not limiter or response.status_code == 429:
            return
        if limiter is self.limiter and 400 <= response.status_code < 500:
            limiter.charge(FOURXX_COST - 1)
        response.headers["X-Ratelimit-Remaining"] = str(limiter.remaining)

    def fault_rate_limited(self, rule: FaultRule) -> Response:
        return self._too_many(rule.retry_after, rule.retry_after)

    def fault_server_error(self, rule: FaultRule) -> Response:
        status = rule.status or 500
        return JSONResponse(
            {"code": "InternalServerError", "message": "Внутренняя ошибка сервиса", "data": None},
            status_code=status,
        )

    def not_found(self, request: Request) -> Response:
        return JSONResponse({"code": "NotFound", "message": NOT_FOUND, "data": None}, status_code=404)

    def internal_error(self) -> Response:
        return JSONResponse(
            {"code": "InternalServerError", "message": "Внутренняя ошибка сервиса", "data": None},
            status_code=500,
        )

    def api_routes(self):
        return [
            ("/api/v3/orders/new", self.orders_new, ["GET"]),
            ("/api/v3/orders", self.orders_list, ["GET"]),
            ("/api/v3/orders/status", self.orders_status, ["POST"]),
            ("/api/v3/orders/{orderId}/cancel", self.cancel_order, ["PATCH"]),
            ("/api/v3/supplies", self.create_supply, ["POST"]),
            ("/api/marketplace/v3/supplies/{supplyId}/orders", self.add_orders_to_supply, ["PATCH"]),
            # deprecated by WB (superseded by the batch call above); kept for old clients
            ("/api/v3/supplies/{supplyId}/orders/{orderId}", self.add_to_supply, ["PATCH"]),
            ("/api/v3/warehouses", self.warehouses, ["GET"]),
            ("/api/v3/stocks/{warehouseId}", self.stocks_put, ["PUT"]),
            ("/api/v3/stocks/{warehouseId}", self.stocks_get, ["POST"]),
            ("/content/v2/get/cards/list", self.cards_list, ["POST"]),
        ]

    # -- orders -------------------------------------------------------------------------------------------
    async def orders_new(self, request: Request, faults: FaultSet) -> Response:
        with self.lock:
            records = [
                self.render(wb, new=True)
                for wb in self.orders
                if wb.supplier_status == "new" and wb.wb_status == "waiting"
            ]
        if faults:
            records = faults.apply_records(records, self.malform)
        return JSONResponse({"orders": records})

    @staticmethod
    def _int_param(request: Request, name: str, *, required: bool) -> int | None:
        raw = request.query_params.get(name)
        if raw is None or raw == "":
            if required:
                raise _wb_error(400, "IncorrectParameter", f"Не передан обязательный параметр {name}")
            return None
        try:
            return int(raw)
        except ValueError as exc:
            raise _wb_error(400, "IncorrectParameter", f"Некорректный параметр {name}") from exc

    async def orders_list(self, request: Request, faults: FaultSet) -> Response:
        limit = self._int_param(request, "limit", required=True)
        after = self._int_param(request, "next", required=True)
        date_from = self._int_param(request, "dateFrom", required=False)
        date_to = self._int_param(request, "dateTo", required=False)
        if not 1 <= limit <= 1000:
            raise _wb_error(400, "IncorrectParameter", "Некорректный параметр limit: от 1 до 1000")
        if after < 0:
            raise _wb_error(400, "IncorrectParameter", "Некорректный параметр next")
        now_ts = int(self.now.timestamp())
        if date_to is None:
            date_to = now_ts
        if date_from is None:
            date_from = date_to - int(MAX_WINDOW.total_seconds())
        if date_to < date_from:
            raise _wb_error(400, "IncorrectParameter", "dateFrom больше dateTo")
        if date_to - date_from > MAX_WINDOW.total_seconds():
            raise _wb_error(400, "IncorrectParameter", "Период не должен превышать 30 дней")
        with self.lock:
            page: list[WbOrder] = []
            start = _first_index_after(self.orders, after)
            for wb in self.orders[start:]:
                ts = int(wb.created_at.timestamp())
                if ts < date_from or ts > date_to:
                    continue
                page.append(wb)
                if len(page) == limit:
                    break
            records = [self.render(wb) for wb in page]
        nxt = page[-1].id if page else after
        if faults.get("duplicate") and len(page) > 1:
            nxt = page[-2].id
        if faults:
            records = faults.apply_records(records, self.malform)
        return JSONResponse({"next": nxt, "orders": records})

    @staticmethod
    def _cancellable(wb: WbOrder) -> bool:
        return wb.supplier_status in ("new", "confirm") and wb.wb_status == "waiting"

    async def orders_status(self, request: Request, faults: FaultSet) -> Response:
        try:
            body = await read_json(request)
            ids = body["orders"]
            if not isinstance(ids, list) or not all(type(i) is int for i in ids):
                raise ValueError("orders must be a list of integers")
        except (ValueError, KeyError, TypeError) as exc:
            raise _wb_error(400, "IncorrectRequestBody", f"Некорректное тело запроса: {exc}") from exc
        if not 1 <= len(ids) <= 1000:
            raise _wb_error(400, "IncorrectRequestBody", "От 1 до 1000 сборочных заданий")
        with self.lock:
            out = [
                {
                    "id": i,
                    "isCancellable": self._cancellable(wb),
                    # a task in delivery may go back to assembly (supplies are never delivered here)
                    "isTransferable": wb.supplier_status == "complete" and wb.wb_status == "waiting",
                    "supplierStatus": wb.supplier_status,
                    "wbStatus": wb.wb_status,
                }
                for i in ids
                if (wb := self.by_id.get(i)) is not None
            ]
        return JSONResponse({"orders": out})

    def _order_or_404(self, raw: str) -> WbOrder:
        wb = self.by_id.get(int(raw)) if raw.isdigit() else None
        if wb is None:
            raise _wb_error(404, "NotFound", NOT_FOUND)
        return wb

    async def cancel_order(self, request: Request, faults: FaultSet) -> Response:
        with self.lock:
            wb = self._order_or_404(request.path_params["orderId"])
            if not self._cancellable(wb):
                raise _wb_error(409, "StatusMismatch", "Сборочное задание нельзя отменить в текущем статусе")
            wb.supplier_status, wb.wb_status, wb.status_changed_at = "cancel", "canceled", self.now
            self._leave_supply(wb)  # a cancelled task leaves its supply
        return Response(status_code=204)

    # -- supplies -----------------------------------------------------------------------------------------
    async def create_supply(self, request: Request, faults: FaultSet) -> Response:
        try:
            body = await read_json(request)
            name = body["name"]
            if not isinstance(name, str) or not 1 <= len(name) <= 128:
                raise ValueError("name must be 1..128 characters")
        except (ValueError, KeyError, TypeError) as exc:
            raise _wb_error(400, "IncorrectRequestBody", f"Некорректное тело запроса: {exc}") from exc
        with self.lock:
            supply_id = f"WB-GI-{10_000_000 + len(self.supplies) + 1}"
            while supply_id in self.supplies:  # never reuse a supply id (e.g. after a restart)
                supply_id = f"WB-GI-{int(supply_id.rsplit('-', 1)[1]) + 1}"
            self.supplies[supply_id] = {
                "id": supply_id,
                "name": name,
                "createdAt": iso_z(self.now),
                "done": False,
                # set by the first order added: a supply holds one warehouse's orders of one cargo type
                "warehouseId": None,
                "cargoType": None,
                "orders": [],
            }
        return JSONResponse({"id": supply_id}, status_code=201)

    def _leave_supply(self, wb: WbOrder) -> None:
        held = self.supplies.get(wb.supply_id or "", {}).get("orders", [])
        if wb.id in held:
            held.remove(wb.id)
        wb.supply_id = None

    def _supply_or_404(self, supply_id: str) -> dict:
        supply = self.supplies.get(supply_id)
        if supply is None:
            raise _wb_error(404, "NotFound", NOT_FOUND)
        return supply

    def _add_orders(self, supply: dict, orders: list[WbOrder]) -> None:
        """Add ``orders`` to ``supply`` all or nothing (caller holds the lock): each must be new (or already
        on assembly in an open supply: it moves), of one warehouse and cargo type, the supply's if set."""
        if supply.get("done"):
            raise _wb_error(409, "FailedToAddSupplyOrder", SUPPLY_REFUSED)
        warehouse, cargo = supply.get("warehouseId"), supply.get("cargoType")
        for wb in orders:
            wid = _warehouse(wb).wb_warehouse_id
            warehouse = wid if warehouse is None else warehouse
            cargo = _cargo_type(wb.product) if cargo is None else cargo
            moving = wb.supplier_status == "confirm" and not self.supplies.get(wb.supply_id, {}).get("done")
            if (
                wb.wb_status != "waiting"
                or not (wb.supplier_status == "new" or moving)
                or wid != warehouse
                or _cargo_type(wb.product) != cargo
            ):
                raise _wb_error(409, "FailedToAddSupplyOrder", SUPPLY_REFUSED)
        supply["warehouseId"], supply["cargoType"] = warehouse, cargo
        for wb in orders:
            if wb.supply_id == supply["id"]:
                continue  # repeating the same move changes nothing
            self._leave_supply(wb)
            wb.supplier_status, wb.supply_id, wb.status_changed_at = "confirm", supply["id"], self.now
            supply["orders"].append(wb.id)

    async def add_orders_to_supply(self, request: Request, faults: FaultSet) -> Response:
        try:
            body = await read_json(request)
            ids = body["orders"]
            if not isinstance(ids, list) or not all(type(i) is int for i in ids):
                raise ValueError("orders must be a list of integers")
        except (ValueError, KeyError, TypeError) as exc:
            raise _wb_error(400, "IncorrectRequestBody", f"Некорректное тело запроса: {exc}") from exc
        if not 1 <= len(ids) <= SUPPLY_BATCH:
            raise _wb_error(400, "IncorrectRequestBody", f"От 1 до {SUPPLY_BATCH} сборочных заданий")
        with self.lock:
            supply = self._supply_or_404(request.path_params["supplyId"])
            orders = [self.by_id.get(i) for i in dict.fromkeys(ids)]
            if any(wb is None for wb in orders):
                raise _wb_error(409, "FailedToAddSupplyOrder", SUPPLY_REFUSED)
            self._add_orders(supply, orders)
        return Response(status_code=204)

    async def add_to_supply(self, request: Request, faults: FaultSet) -> Response:
        """Deprecated per-order form of :meth:`add_orders_to_supply`."""
        with self.lock:
            supply = self._supply_or_404(request.path_params["supplyId"])
            wb = self._order_or_404(request.path_params["orderId"])
            self._add_orders(supply, [wb])
        return Response(status_code=204)

    # -- seller warehouses and stocks ---------------------------------------------------------------------
    async def warehouses(self, request: Request, faults: FaultSet) -> Response:
        out = []
        for wid, wh in sorted(BY_WB_WAREHOUSE.items()):
            office_id, _ = wb_office(wh)
            out.append({
                "name": wh.name, "officeId": office_id, "id": wid, "cargoType": 1, "deliveryType": 1,
                "isDeleting": False, "isProcessing": False,
            })  # fmt: skip
        return JSONResponse(out)

    def _warehouse_or_404(self, raw: str) -> int:
        wid = int(raw) if raw.isdigit() else None
        if wid is None or wid not in BY_WB_WAREHOUSE:
            raise _wb_error(404, "NotFound", NOT_FOUND, with_data=False)
        return wid

    async def stocks_put(self, request: Request, faults: FaultSet) -> Response:
        wid = self._warehouse_or_404(request.path_params["warehouseId"])
        try:
            body = await read_json(request)
            items = body["stocks"]
            if not isinstance(items, list):
                raise ValueError("stocks must be a list")
            if not 1 <= len(items) <= 1000:
                raise ValueError("от 1 до 1000 товаров в запросе")
            taken = []
            for item in items:
                if not isinstance(item, dict) or "chrtId" not in item or "amount" not in item:
                    continue  # as the real API: misnamed fields are ignored and the call still returns 204
                chrt, amount = item["chrtId"], item["amount"]
                if type(chrt) is not int or type(amount) is not int or not 0 <= amount <= STOCK_MAX:
                    raise ValueError(f"chrtId must be an integer and amount an integer 0..{STOCK_MAX}")
                taken.append((chrt, amount))
        except (ValueError, KeyError, TypeError) as exc:
            raise _wb_error(
                400, "IncorrectRequestBody", f"Некорректное тело запроса: {exc}", with_data=False
            ) from exc
        unknown = []
        with self.lock:
            for chrt, amount in taken:
                product = self._by_chrt.get(chrt)
                if product is None:
                    unknown.append({"sku": "", "chrtId": chrt, "amount": amount})
                    continue
                record = {"warehouseId": wid, "chrtId": chrt, "sku": product.sku, "amount": amount,
                          "updated_at": iso_z(self.now)}  # fmt: skip
                self.stocks[(wid, chrt)] = record
                self.stock_pushes.append(record)
        if unknown:
            raise ApiError(409, [{"code": "NotFound", "message": NOT_FOUND, "data": unknown}])
        return Response(status_code=204)

    async def stocks_get(self, request: Request, faults: FaultSet) -> Response:
        wid = self._warehouse_or_404(request.path_params["warehouseId"])
        try:
            body = await read_json(request)
            chrts = body["chrtIds"]
            if not isinstance(chrts, list) or len(chrts) > 1000:
                raise ValueError("chrtIds must be a list of at most 1000")
        except (ValueError, KeyError, TypeError) as exc:
            raise _wb_error(
                400, "IncorrectRequestBody", f"Некорректное тело запроса: {exc}", with_data=False
            ) from exc
        with self.lock:
            out = [
                {"chrtId": c, "amount": self.stocks[(wid, c)]["amount"]}
                for c in chrts
                if (wid, c) in self.stocks
            ]
        return JSONResponse({"stocks": out})

    # -- content API: cards -------------------------------------------------------------------------------
    def _build_cards(self) -> list[dict]:
        """One card per catalog product (one size each), with creation/update times before the clock's
        start, in ascending ``(updatedAt, nmID)`` order."""
        start = self.ctx.clock.start.replace(microsecond=0)
        cards = []
        for p in self.ctx.catalog:
            rng = random.Random(f"{self.ctx.seed}:wb-card:{p.sku}")
            created = start - timedelta(days=rng.randint(30, 400), milliseconds=rng.randint(0, 86_400_000))
            updated = min(
                created + timedelta(days=rng.randint(0, 25), milliseconds=rng.randint(0, 999)), start
            )
            subject = 1000 + int(hashlib.md5(p.category.encode()).hexdigest()[:4], 16) % 9000
            cards.append({
                "nmID": p.wb_nm_id,
                "imtID": p.wb_nm_id - 50_000_000,
                "nmUUID": str(uuid.uuid5(uuid.NAMESPACE_URL, f"wb-card:{self.ctx.seed}:{p.wb_nm_id}")),
                "subjectID": subject,
                "subjectName": p.category,
                "vendorCode": p.sku,
                "brand": p.brand,
                "title": p.name[:60].rstrip(),  # WB caps titles at 60 characters
                "description": p.name,
                "needKiz": False,
                "photos": [],
                "dimensions": {"length": p.length_cm, "width": p.width_cm, "height": p.height_cm,
                               "weightBrutto": round(p.weight_g / 1000, 3), "isValid": True},
                "characteristics": [],
                "sizes": [{"chrtID": p.wb_chrt_id, "techSize": "0", "wbSize": "", "skus": [p.barcode]}],
                "tags": [],
                "createdAt": iso_z(created, ms=True),
                "updatedAt": iso_z(updated, ms=True),
                "_key": (updated, p.wb_nm_id),  # the sort and cursor key (whole milliseconds, as rendered)
            })  # fmt: skip
        cards.sort(key=lambda c: c["_key"])
        return cards

    @staticmethod
    def _card_matches(card: dict, flt: dict) -> bool:
        text = flt.get("textSearch")
        if text:
            t = str(text).strip().casefold()
            barcodes = {b for s in card["sizes"] for b in s["skus"]}
            if t != str(card["nmID"]) and t not in barcodes and t not in card["vendorCode"].casefold():
                return False
        with_photo = flt.get("withPhoto", 0)
        if (with_photo == 1 and not card["photos"]) or (with_photo == 2 and card["photos"]):
            return False
        if flt.get("brands") and card["brand"] not in flt["brands"]:
            return False
        if flt.get("objectIDs") and card["subjectID"] not in flt["objectIDs"]:
            return False
        if flt.get("imtID") and card["imtID"] != flt["imtID"]:
            return False
        tags = flt.get("tagIDs")
        return not tags or any(t["id"] in tags for t in card["tags"])

    async def cards_list(self, request: Request, faults: FaultSet) -> Response:
        try:
            body = await read_json(request)
            settings = body.get("settings") or {}
            sort, flt, cursor = (settings.get(k) or {} for k in ("sort", "filter", "cursor"))
            if not all(isinstance(x, dict) for x in (settings, sort, flt, cursor)):
                raise ValueError("settings, sort, filter and cursor must be objects")
            limit = cursor.get("limit", 10)
            if type(limit) is not int or not 1 <= limit <= CARDS_MAX_LIMIT:
                raise ValueError(f"cursor.limit must be 1..{CARDS_MAX_LIMIT}")
            ascending = sort.get("ascending", False)
            if not isinstance(ascending, bool):
                raise ValueError("sort.ascending must be a boolean")
            after = None
            if cursor.get("updatedAt") or cursor.get("nmID"):
                nm = cursor.get("nmID")
                if type(nm) is not int:
                    raise ValueError("cursor.nmID must be an integer")
                after = (parse_rfc3339(cursor.get("updatedAt") or ""), nm)
        except (ValueError, TypeError, AttributeError) as exc:
            raise _content_error(f"Bad request: {exc}") from exc
        ordered = self.cards if ascending else self.cards[::-1]
        page = []
        for card in ordered:
            if after is not None and (card["_key"] <= after if ascending else card["_key"] >= after):
                continue
            if not self._card_matches(card, flt):
                continue
            page.append({k: v for k, v in card.items() if k != "_key"})
            if len(page) == limit:
                break
        out_cursor: dict[str, Any] = {"total": len(page)}
        if page:
            out_cursor.update(updatedAt=page[-1]["updatedAt"], nmID=page[-1]["nmID"])
        elif after is not None:
            out_cursor.update(updatedAt=cursor["updatedAt"], nmID=cursor["nmID"])
        return JSONResponse({"cards": page, "cursor": out_cursor})

    # -- control ------------------------------------------------------------------------------------------
    def control_routes(self) -> list[Route]:
        async def stocks(request: Request) -> Response:
            with self.lock:
                return JSONResponse({"stocks": list(self.stocks.values()), "pushes": len(self.stock_pushes)})

        async def set_status(request: Request) -> Response:
            try:
                body = await read_json(request)
            except ValueError as exc:
                return JSONResponse({"error": str(exc)}, status_code=400)
            with self.lock:
                self.sync()
                raw = request.path_params["orderId"]
                wb = self.by_id.get(int(raw)) if raw.isdigit() else None
                if wb is None:
                    return JSONResponse({"error": "unknown order"}, status_code=404)
                wb.supplier_status = body.get("supplierStatus", wb.supplier_status)
                wb.wb_status = body.get("wbStatus", wb.wb_status)
                wb.status_changed_at = self.now
                return JSONResponse(
                    {"id": wb.id, "supplierStatus": wb.supplier_status, "wbStatus": wb.wb_status}
                )

        return [
            Route("/_sim/stocks", stocks, methods=["GET"]),
            Route("/_sim/orders/{orderId}/status", set_status, methods=["POST"]),
        ]

    def rendered_orders(self, *, new: bool = False) -> list[dict]:
        """Every order so far in the history shape (``new=True``: in the ``/orders/new`` shape)."""
        with self.lock:
            self.sync()
            return [self.render(wb, new=new) for wb in self.orders]

    def state(self) -> dict:
        counts: dict[str, int] = {}
        for wb in self.orders:
            key = f"{wb.supplier_status}/{wb.wb_status}"
            counts[key] = counts.get(key, 0) + 1
        return {
            "orders": len(self.orders),
            "by_status": counts,
            "supplies": len(self.supplies),
            "stocks": list(self.stocks.values()),
            "stock_pushes": len(self.stock_pushes),
            "rate_limit_remaining": self.limiter.remaining if self.limiter else None,
        }


def _first_index_after(orders: list[WbOrder], after_id: int) -> int:
    """Index of the first order with id > after_id (ids increase; they may jump after a restart)."""
    return bisect_right(orders, after_id, key=lambda wb: wb.id)
