"""Wildberries marketplace (FBS) simulator: v3 assembly tasks ("orders"), supplies and seller stocks.

Shapes follow ``reference/channel-apis.md`` §2 (WB seller API docs, rate-limit headers from 2nd-hand code):

* ``Authorization: <token>`` or ``Authorization: Bearer <token>``; a bad token → 401 with WB's
  ``{title, detail, code, requestId, origin, status, statusText, timestamp}`` body;
* one rate limit bucket for the whole marketplace API: 300 req/min (5/s refill), burst 20; a 4xx response
  costs 10 requests in total; 429 carries ``X-Ratelimit-Retry`` / ``X-Ratelimit-Reset`` /
  ``X-Ratelimit-Limit`` (no ``Retry-After``: WB does not send it); other responses carry
  ``X-Ratelimit-Remaining``;
* one WB "order" is one unit (an assembly task): a basket of 3 units becomes 3 orders sharing ``orderUid``;
* prices are integers ×100 in kopecks (``price`` = list price, ``salePrice``/``finalPrice`` = after the
  seller's discount, ``convertedPrice`` = in the seller's currency), ``currencyCode`` 643 (RUB);
* ``GET /api/v3/orders/new`` = every order still ``supplierStatus=new`` (no paging);
  ``GET /api/v3/orders`` = history by ``next`` cursor (order id) within a ≤ 30-day Unix-time window;
* ``PUT /api/v3/stocks/{warehouseId}`` → 204; items with misnamed fields are silently ignored (still 204);
  unknown ``chrtId`` or amounts out of 0..100000 → 409 listing them in ``data`` (valid items are applied).

Orders leave "new" when the seller adds them to a supply (``POST /api/v3/supplies`` then
``PATCH /api/v3/supplies/{supplyId}/orders/{orderId}``), when the seller cancels them
(``PATCH /api/v3/orders/{orderId}/cancel``), when the buyer cancels (a share of orders, in simulated time)
or — simulator approximation of WB's shipping deadline — when still unconfirmed ``confirm_deadline_hours``
after creation (``wbStatus=canceled``).

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
from simulators.clock import iso_z
from simulators.faults import FaultRule, FaultSet
from simulators.generator import GeneratedOrder, OrderGenerator
from simulators.limits import TokenBucket
from simulators.network import BY_WB_WAREHOUSE, LOCATION_BY_CODE, WAREHOUSES, warehouses_near

MAX_WINDOW = timedelta(days=30)
BURST = 20
PER_MINUTE = 300
FOURXX_COST = 10
STOCK_MAX = 100_000


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


def _wb_error(status: int, code: str, message: str, data=None) -> ApiError:
    return ApiError(status, {"code": code, "message": message, "data": data})


def _kop(value: Decimal) -> int:
    return int((value * 100).quantize(Decimal("1"), rounding=ROUND_HALF_UP))


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
        self._discount = {
            p.sku: random.Random(f"{ctx.seed}:wb-discount:{p.sku}").choice((0, 0, 10, 15, 20, 30))
            for p in ctx.catalog
        }

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
    def render(self, wb: WbOrder) -> dict:
        o, p = wb.order, wb.product
        wh = LOCATION_BY_CODE[wb.warehouse_code or o.warehouse_code]
        price = _kop(p.price)
        sale = _kop((p.price * (100 - self._discount[p.sku]) / 100).quantize(Decimal("1")))
        user_id = 100_000_000 + o.entropy % 900_000_000
        uid_hash = hashlib.md5(f"{self.ctx.seed}:wb-uid:{o.seq}".encode()).hexdigest()
        return {
            "id": wb.id,
            "rid": hashlib.md5(f"{self.ctx.seed}:wb-rid:{wb.id}".encode()).hexdigest(),
            "orderUid": f"{user_id}_{uid_hash}",
            "article": p.sku,
            "nmId": p.wb_nm_id,
            "chrtId": p.wb_chrt_id,
            "skus": [p.barcode],
            "price": price,
            "salePrice": sale,
            "finalPrice": sale,
            "convertedPrice": price,
            "currencyCode": 643,
            "convertedCurrencyCode": 643,
            "createdAt": iso_z(wb.created_at),
            "warehouseId": wh.wb_warehouse_id,
            "officeId": 200 + WAREHOUSES.index(wh),
            "offices": [o.address.city],
            "supplyId": wb.supply_id,
            "deliveryType": "fbs",
            "cargoType": 2 if p.weight_g > 25_000 else 1,
            "isZeroOrder": False,
            "options": {"isB2B": False},
            "address": (
                {"fullAddress": o.address.full, "latitude": o.address.lat, "longitude": o.address.lon}
                if o.delivery_method == "courier"
                else None
            ),
            "comment": o.comment,
            "colorCode": "",
            "requiredMeta": [],
            "scanPrice": None,
        }

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

    def _too_many(self, retry: float, reset: float) -> Response:
        body = self._gateway_error(429, "too many requests", "Limited by seller token", "api-gateway")
        return JSONResponse(
            body,
            status_code=429,
            headers={
                "X-Ratelimit-Retry": str(max(1, math.ceil(retry))),
                "X-Ratelimit-Reset": str(max(1, math.ceil(reset))),
                "X-Ratelimit-Limit": str(BURST),
            },
        )

    def before_request(self, request: Request) -> Response | None:
        if self.limiter:
            ok, wait = self.limiter.try_take()
            if not ok:
                return self._too_many(wait, self.limiter.seconds_until_full())
        header = request.headers.get("authorization", "").strip()
        token = header[7:].strip() if header.lower().startswith("bearer ") else header
        if not token:
            return JSONResponse(
                self._gateway_error(
                    401, "unauthorized", "empty Authorization header", "s2s-api-auth-marketplace"
                ),
                status_code=401,
            )
        if token != self.token:
            return JSONResponse(
                self._gateway_error(
                    401,
                    "unauthorized",
                    "token problem; token is malformed or unknown",
                    "s2s-api-auth-marketplace",
                ),
                status_code=401,
            )
        return None

    def after_request(self, request: Request, response: Response) -> None:
        if not self.limiter or response.status_code == 429:
            return
        if 400 <= response.status_code < 500:
            self.limiter.charge(FOURXX_COST - 1)
        response.headers["X-Ratelimit-Remaining"] = str(self.limiter.remaining)

    def fault_rate_limited(self, rule: FaultRule) -> Response:
        return self._too_many(rule.retry_after, rule.retry_after)

    def fault_server_error(self, rule: FaultRule) -> Response:
        status = rule.status or 500
        return JSONResponse(
            {"code": "InternalServerError", "message": "Внутренняя ошибка сервиса", "data": None},
            status_code=status,
        )

    def not_found(self, request: Request) -> Response:
        return JSONResponse({"code": "NotFound", "message": "Не найдено", "data": None}, status_code=404)

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
            ("/api/v3/supplies/{supplyId}/orders/{orderId}", self.add_to_supply, ["PATCH"]),
            ("/api/v3/stocks/{warehouseId}", self.stocks_put, ["PUT"]),
            ("/api/v3/stocks/{warehouseId}", self.stocks_get, ["POST"]),
        ]

    # -- orders -------------------------------------------------------------------------------------------
    async def orders_new(self, request: Request, faults: FaultSet) -> Response:
        with self.lock:
            records = [
                self.render(wb)
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

    async def orders_status(self, request: Request, faults: FaultSet) -> Response:
        try:
            body = await read_json(request)
            ids = body["orders"]
            if not isinstance(ids, list) or not all(isinstance(i, int) for i in ids):
                raise ValueError("orders must be a list of integers")
        except (ValueError, KeyError, TypeError) as exc:
            raise _wb_error(400, "IncorrectRequestBody", f"Некорректное тело запроса: {exc}") from exc
        if len(ids) > 1000:
            raise _wb_error(400, "IncorrectRequestBody", "Не больше 1000 сборочных заданий")
        with self.lock:
            out = [
                {
                    "id": i,
                    "supplierStatus": self.by_id[i].supplier_status,
                    "wbStatus": self.by_id[i].wb_status,
                }
                for i in ids
                if i in self.by_id
            ]
        return JSONResponse({"orders": out})

    def _order_or_404(self, raw: str) -> WbOrder:
        wb = self.by_id.get(int(raw)) if raw.isdigit() else None
        if wb is None:
            raise _wb_error(404, "NotFound", "Сборочное задание не найдено")
        return wb

    async def cancel_order(self, request: Request, faults: FaultSet) -> Response:
        with self.lock:
            wb = self._order_or_404(request.path_params["orderId"])
            if wb.supplier_status not in ("new", "confirm") or wb.wb_status != "waiting":
                raise _wb_error(409, "StatusMismatch", "Сборочное задание нельзя отменить в текущем статусе")
            wb.supplier_status, wb.wb_status, wb.status_changed_at = "cancel", "canceled", self.now
        return Response(status_code=204)

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
                "orders": [],
            }
        return JSONResponse({"id": supply_id}, status_code=201)

    async def add_to_supply(self, request: Request, faults: FaultSet) -> Response:
        with self.lock:
            supply = self.supplies.get(request.path_params["supplyId"])
            if supply is None:
                raise _wb_error(404, "NotFound", "Поставка не найдена")
            wb = self._order_or_404(request.path_params["orderId"])
            if wb.supplier_status == "confirm" and wb.supply_id == supply["id"]:
                return Response(status_code=204)  # repeating the same move changes nothing
            if wb.supplier_status != "new" or wb.wb_status != "waiting":
                raise _wb_error(409, "StatusMismatch", "Сборочное задание нельзя добавить в поставку")
            wb.supplier_status, wb.supply_id, wb.status_changed_at = "confirm", supply["id"], self.now
            supply["orders"].append(wb.id)
        return Response(status_code=204)

    # -- stocks -------------------------------------------------------------------------------------------
    def _warehouse_or_404(self, raw: str) -> int:
        wid = int(raw) if raw.isdigit() else None
        if wid is None or wid not in BY_WB_WAREHOUSE:
            raise _wb_error(404, "NotFound", "Склад не найден")
        return wid

    async def stocks_put(self, request: Request, faults: FaultSet) -> Response:
        wid = self._warehouse_or_404(request.path_params["warehouseId"])
        try:
            body = await read_json(request)
            items = body["stocks"]
            if not isinstance(items, list):
                raise ValueError("stocks must be a list")
        except (ValueError, KeyError, TypeError) as exc:
            raise _wb_error(400, "IncorrectRequestBody", f"Некорректное тело запроса: {exc}") from exc
        if len(items) > 1000:
            raise _wb_error(400, "IncorrectRequestBody", "Не больше 1000 товаров в запросе")
        failed = []
        with self.lock:
            for item in items:
                if not isinstance(item, dict) or "chrtId" not in item or "amount" not in item:
                    continue  # as the real API: misnamed fields are ignored and the call still returns 204
                chrt, amount = item["chrtId"], item["amount"]
                product = self._by_chrt.get(chrt) if isinstance(chrt, int) else None
                if product is None or not isinstance(amount, int) or not 0 <= amount <= STOCK_MAX:
                    failed.append(
                        {"sku": product.barcode if product else "", "chrtId": chrt, "amount": amount}
                    )
                    continue
                record = {"warehouseId": wid, "chrtId": chrt, "sku": product.sku, "amount": amount,
                          "updated_at": iso_z(self.now)}  # fmt: skip
                self.stocks[(wid, chrt)] = record
                self.stock_pushes.append(record)
        if failed:
            raise _wb_error(409, "UpdateStocksError", "Остатки не обновлены для части товаров", failed)
        return Response(status_code=204)

    async def stocks_get(self, request: Request, faults: FaultSet) -> Response:
        wid = self._warehouse_or_404(request.path_params["warehouseId"])
        try:
            body = await read_json(request)
            chrts = body["chrtIds"]
            if not isinstance(chrts, list):
                raise ValueError("chrtIds must be a list")
        except (ValueError, KeyError, TypeError) as exc:
            raise _wb_error(400, "IncorrectRequestBody", f"Некорректное тело запроса: {exc}") from exc
        with self.lock:
            out = [
                {"chrtId": c, "amount": self.stocks[(wid, c)]["amount"]}
                for c in chrts
                if (wid, c) in self.stocks
            ]
        return JSONResponse({"stocks": out})

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

    def rendered_orders(self) -> list[dict]:
        with self.lock:
            self.sync()
            return [self.render(wb) for wb in self.orders]

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
