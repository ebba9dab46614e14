"""Own web store simulator in the Shopify Admin REST shape, plus its outgoing order webhooks.

Shapes follow ``reference/channel-apis.md`` §3 (Shopify REST Admin docs; rate-limit details 2nd-hand):

* ``X-Shopify-Access-Token`` on every call (401 ``{"errors": "[API] Invalid API key or access token …"}``);
* ``GET /admin/api/{version}/orders.json`` — ``limit`` (default 50, max 250), ``since_id``,
  ``created_at_min/max``, ``updated_at_min/max``, ``status`` (``open`` by default! pass ``status=any`` to see
  cancelled/closed orders), ``financial_status``, ``fulfillment_status``, ``ids``, ``fields``;
  results newest first (id descending), oldest first when ``since_id`` is given;
* cursor pagination through the ``Link`` header (``rel="next"`` / ``rel="previous"``) with an opaque
  ``page_info``; a request with ``page_info`` may only add ``limit`` and ``fields`` (anything else → 400,
  as Shopify does); no ``Link`` header when everything fits on one page;
* ``GET /admin/api/{version}/orders/{id}.json``; ``POST …/inventory_levels/set.json``;
  ``GET …/inventory_levels.json?inventory_item_ids=&location_ids=``;
* leaky bucket of 40 calls leaking 2/s; ``X-Shopify-Shop-Api-Call-Limit: n/40`` on every response and 429 with
  ``Retry-After`` when full;
* webhooks ``orders/create`` and ``orders/cancelled`` POSTed to ``webhook_url`` with ``X-Shopify-Topic``,
  ``X-Shopify-Hmac-SHA256`` (see :mod:`oms_ops.wire.shopify`), ``X-Shopify-Shop-Domain``,
  ``X-Shopify-Webhook-Id``, ``X-Shopify-API-Version``, ``X-Shopify-Triggered-At``; a non-2xx answer or a
  network error is retried 8 times over ~4 simulated hours, then the delivery is marked failed;
  ``webhook_topics`` chooses the topics sent (default those two; ``returns/request`` is opt-in);
* customer return requests (:mod:`simulators.customers`: customers of delivered parcels ask to send items
  back) in the shape of Shopify's ``Return``: ``GET …/returns.json?since_id=&limit=&order_id=`` (ascending
  ids; a simulator convenience — Shopify serves returns through GraphQL), ``GET …/returns/{id}.json``,
  ``GET …/orders/{id}/returns.json``, and the ``returns/request`` webhook.

Store conventions: prices are strings in RUB with VAT included (``taxes_included: true``, 20 % НДС);
cancelling an order also closes (archives) it, so it drops out of the default ``status=open`` list.

State across restarts (``persist``): every order (content derived again from its stream number and time),
its financial / cancel / close state, pending customer cancellations, inventory levels and the webhook
deliveries (pending ones keep their body and go to the receiver configured at the new start) are kept; the
order stream numbers on past the last order, so order ids and numbers are never reused.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import random
import re
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import httpx
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from oms_ops.wire.shopify import shopify_hmac, verify_shopify_hmac  # noqa: F401  (re-exported for receivers)
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
from simulators.clock import iso_z, parse_rfc3339
from simulators.customers import ReturnBehaviour, ShopReturns
from simulators.faults import FaultRule, FaultSet
from simulators.generator import GeneratedOrder, OrderGenerator
from simulators.limits import LeakyBucket
from simulators.network import BY_SHOPIFY_LOCATION, LOCATION_BY_CODE

log = logging.getLogger("simulators.shopify")

MSK = timezone(timedelta(hours=3))
API_VERSION_RE = re.compile(r"^(\d{4}-(01|04|07|10)|unstable)$")
PAGE_INFO_ALLOWED = {"page_info", "limit", "fields"}
STATUS_VALUES = ("open", "closed", "cancelled", "any")
BUCKET_SIZE, LEAK_PER_S = 40, 2.0
#: Shopify retries a failed webhook 8 times over 4 hours (delays after attempt 1..8), simulated seconds.
WEBHOOK_RETRY_DELAYS = (10, 30, 60, 300, 900, 1800, 3600, 7200)
SHIPPING = {"courier": Decimal("390.00"), "pickup_point": Decimal("199.00"), "store_pickup": Decimal("0.00")}
FREE_SHIPPING_FROM = Decimal("3000.00")
VAT = Decimal("20")


def _ts(dt: datetime | None) -> str | None:
    return None if dt is None else dt.astimezone(MSK).isoformat(timespec="seconds")


def _money(value: Decimal) -> str:
    return f"{value.quantize(Decimal('0.01')):.2f}"


def _errors(status: int, errors) -> ApiError:
    return ApiError(status, {"errors": errors})


@dataclass
class ShopOrder:
    id: int
    number: int
    order: GeneratedOrder
    created_at: datetime
    updated_at: datetime
    financial_status: str
    cancelled_at: datetime | None = None
    cancel_reason: str | None = None
    closed_at: datetime | None = None
    fulfillment_status: str | None = None


@dataclass
class Delivery:
    webhook_id: str
    topic: str
    order_id: int
    body: bytes
    triggered_at: datetime
    due_at: datetime
    attempts: int = 0
    status: str = "pending"  # pending | delivered | failed
    last_status: int | None = None
    last_error: str | None = None


class ShopifySimulator(Simulator):
    name = "shopify"

    def __init__(
        self,
        ctx: SimContext,
        *,
        access_token: str = "shpat_sim_5d1c0f7b2a9e4e21",
        webhook_secret: str = "sim-shopify-webhook-secret",
        webhook_url: str | None = None,
        shop_domain: str = "oms-sim.myshopify.com",
        api_version: str = "2024-10",
        rate: float | None = None,
        cancel_share: float = 0.04,
        rate_limit: bool = True,
        webhook_timeout: float = 5.0,
        webhook_topics: tuple[str, ...] = ("orders/create", "orders/cancelled"),
        return_share: float = 0.12,
        exchange_share: float = 0.5,
        return_delay_scale: float = 1.0,
        faults=(),
    ) -> None:
        super().__init__(ctx, faults=faults)
        self.webhook_topics = frozenset(webhook_topics)
        self.customer_returns = ShopReturns(
            self,
            ReturnBehaviour(
                ctx.seed,
                return_share=return_share,
                exchange_share=exchange_share,
                delay_scale=return_delay_scale,
            ),
        )
        self.access_token = access_token
        self.webhook_secret = webhook_secret
        self.webhook_url = webhook_url
        self.shop_domain = shop_domain
        self.api_version = api_version
        self.webhook_timeout = webhook_timeout
        self.gen = OrderGenerator(
            ctx.seed, "shopify", ctx.rate if rate is None else rate, catalog=ctx.catalog,
            start=ctx.clock.start, cancel_share=cancel_share, profile=ctx.profile,
        )  # fmt: skip
        self.orders: list[ShopOrder] = []
        self.by_id: dict[int, ShopOrder] = {}
        self._cancel_due: list[tuple[datetime, int]] = []
        self.webhooks: list[Delivery] = []
        self._delivery_lock = threading.Lock()
        self.inventory: dict[tuple[int, int], dict] = {}
        self.inventory_sets: list[dict] = []
        self._by_inventory_item = {p.shopify_inventory_item_id: p for p in ctx.catalog}
        self.bucket = LeakyBucket(BUCKET_SIZE, LEAK_PER_S, ctx.protocol_time) if rate_limit else None

    def credentials(self) -> dict:
        return {
            "access_token": self.access_token,
            "webhook_secret": self.webhook_secret,
            "shop_domain": self.shop_domain,
            "api_version": self.api_version,
        }

    # -- world ------------------------------------------------------------------------------------------
    def sync(self) -> None:
        now = self.now
        for order in self.gen.until(now):
            self._add(order)
            self.dirty = True
        if self._cancel_due and self._cancel_due[0][0] <= now:
            due = [c for c in self._cancel_due if c[0] <= now]
            self._cancel_due = [c for c in self._cancel_due if c[0] > now]
            for at, order_id in due:
                self._cancel(self.by_id[order_id], at, "customer")
        self.customer_returns.sync(now)

    @staticmethod
    def _shop_order(order: GeneratedOrder) -> ShopOrder:
        """The store's order for a generated one; id and number derive from its stream number."""
        financial = "paid" if order.payment_method in ("card_online", "sbp") else "pending"
        return ShopOrder(
            id=5_600_000_000_000 + order.seq * 1000 + order.entropy % 1000,
            number=1000 + order.seq,
            order=order,
            created_at=order.created_at,
            updated_at=order.created_at,
            financial_status=financial,
        )

    def _add(self, order: GeneratedOrder) -> None:
        so = self._shop_order(order)
        self.orders.append(so)
        self.by_id[so.id] = so
        if order.cancel_after_s is not None:
            self._cancel_due.append((order.created_at + timedelta(seconds=order.cancel_after_s), so.id))
            self._cancel_due.sort()
        self._queue_webhook("orders/create", so, order.created_at)

    # -- state across restarts ----------------------------------------------------------------------------
    def dump_state(self) -> dict:
        return {
            "produced": self.gen.produced,
            "orders": [
                {
                    "seq": so.order.seq, "created_at": dt_out(so.created_at), "updated_at": dt_out(so.updated_at),
                    "financial_status": so.financial_status, "cancelled_at": dt_out(so.cancelled_at),
                    "cancel_reason": so.cancel_reason, "closed_at": dt_out(so.closed_at),
                    "fulfillment_status": so.fulfillment_status,
                }
                for so in self.orders
            ],
            "cancel_due": [[dt_out(at), order_id] for at, order_id in self._cancel_due],
            "inventory": list(self.inventory.values()),
            "webhooks": [
                {
                    "webhook_id": d.webhook_id, "topic": d.topic, "order_id": d.order_id,
                    "body": d.body.decode("utf-8"), "triggered_at": dt_out(d.triggered_at),
                    "due_at": dt_out(d.due_at), "attempts": d.attempts, "status": d.status,
                    "last_status": d.last_status, "last_error": d.last_error,
                }
                for d in self.webhooks
            ],
            "returns": self.customer_returns.dump_state(),
        }  # fmt: skip

    def load_state(self, data: dict, *, clean: bool) -> None:
        for saved in data["orders"]:
            so = self._shop_order(self.gen.order(saved["seq"], dt_in(saved["created_at"])))
            so.updated_at, so.financial_status = dt_in(saved["updated_at"]), saved["financial_status"]
            so.cancelled_at, so.cancel_reason = dt_in(saved["cancelled_at"]), saved["cancel_reason"]
            so.closed_at, so.fulfillment_status = dt_in(saved["closed_at"]), saved["fulfillment_status"]
            self.orders.append(so)
            self.by_id[so.id] = so
        self._cancel_due = sorted((dt_in(at), order_id) for at, order_id in data["cancel_due"])
        self.inventory = {(r["inventory_item_id"], r["location_id"]): r for r in data["inventory"]}
        self.webhooks = [
            Delivery(
                d["webhook_id"], d["topic"], d["order_id"], d["body"].encode("utf-8"), dt_in(d["triggered_at"]),
                dt_in(d["due_at"]), attempts=d["attempts"], status=d["status"], last_status=d["last_status"],
                last_error=d["last_error"],
            )
            for d in data["webhooks"]
        ]  # fmt: skip
        resume_stream(self.gen, int(data["produced"]) + (0 if clean else UNCLEAN_ID_GAP))
        self.customer_returns.load_state(data.get("returns"), clean=clean)

    def _cancel(self, so: ShopOrder, at: datetime, reason: str) -> bool:
        if so.cancelled_at is not None or so.fulfillment_status == "fulfilled":
            return False
        so.cancelled_at = so.closed_at = so.updated_at = at
        so.cancel_reason = reason
        so.financial_status = "refunded" if so.financial_status == "paid" else "voided"
        self._queue_webhook("orders/cancelled", so, at)
        return True

    def _queue_webhook(self, topic: str, so: ShopOrder, at: datetime, record: dict | None = None) -> None:
        """Queue a delivery of ``topic`` about ``so`` (body: the order, or ``record`` — a return) if the shop
        sends that topic; the webhook id is stable per (seed, topic, record)."""
        if not self.webhook_url or topic not in self.webhook_topics:
            return
        key = record["id"] if record is not None else so.id
        digest = hashlib.md5(f"{self.ctx.seed}:{topic}:{key}".encode()).digest()
        payload = record if record is not None else self.render(so)
        body = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()
        self.webhooks.append(
            Delivery(str(uuid.UUID(bytes=digest, version=4)), topic, so.id, body, at, due_at=at)
        )

    def queue_return_webhook(self, record: dict, so: ShopOrder, at: datetime) -> None:
        """``returns/request`` for a customer's new return request (called by :class:`ShopReturns`)."""
        self._queue_webhook("returns/request", so, at, record)

    # -- rendering ----------------------------------------------------------------------------------------
    def render(self, so: ShopOrder) -> dict:
        o = so.order
        c = o.customer
        subtotal = o.total
        shipping = SHIPPING[o.delivery_method] if subtotal < FREE_SHIPPING_FROM else Decimal("0.00")
        total = subtotal + shipping
        vat = total * VAT / (100 + VAT)
        customer_id = 7_000_000_000_000 + int(hashlib.md5(c.phone.encode()).hexdigest()[:8], 16) % 10**9
        address = {
            "first_name": c.first_name, "last_name": c.last_name, "name": f"{c.first_name} {c.last_name}",
            "address1": o.address.street, "address2": None, "city": o.address.city,
            "province": o.address.region, "province_code": o.address.region_code.split("-")[1],
            "country": "Russia", "country_code": "RU", "zip": o.address.postcode, "phone": c.phone,
            "company": None, "latitude": o.address.lat, "longitude": o.address.lon,
        }  # fmt: skip
        line_items = []
        for i, line in enumerate(o.lines):
            p = self.ctx.products[line.sku]
            line_vat = line.amount * VAT / (100 + VAT)
            line_items.append({
                "id": 14_000_000_000_000 + o.seq * 100 + i,
                "admin_graphql_api_id": f"gid://shopify/LineItem/{14_000_000_000_000 + o.seq * 100 + i}",
                "variant_id": p.shopify_variant_id, "product_id": p.shopify_product_id, "sku": p.sku,
                "title": p.name, "name": p.name, "variant_title": None, "vendor": p.brand,
                "quantity": line.qty, "current_quantity": 0 if so.cancelled_at else line.qty,
                "fulfillable_quantity": 0 if so.cancelled_at else line.qty,
                "price": _money(line.unit_price), "total_discount": "0.00", "grams": p.weight_g,
                "requires_shipping": True, "taxable": True, "gift_card": False, "fulfillment_service": "manual",
                "fulfillment_status": None, "properties": [],
                "tax_lines": [{"title": "НДС", "rate": 0.2, "price": _money(line_vat)}],
            })  # fmt: skip
        if o.delivery_method == "store_pickup":
            store = LOCATION_BY_CODE[o.store_code] if o.store_code else None
            ship_title = f"Самовывоз из магазина: {store.name}" if store else "Самовывоз"
        elif o.delivery_method == "pickup_point":
            ship_title = f"Пункт выдачи СДЭК {o.pickup_point_code}"
        else:
            ship_title = "Курьерская доставка"
        note_attributes = [{"name": "payment_method", "value": o.payment_method}]
        if o.pickup_point_code:
            note_attributes.append({"name": "pickup_point_code", "value": o.pickup_point_code})
        if o.store_code:
            note_attributes.append({"name": "store_code", "value": o.store_code})
        gateway = {"card_online": "ЮKassa", "sbp": "СБП", "cash_on_delivery": "Наложенный платёж",
                   "card_on_delivery": "Оплата картой при получении"}.get(o.payment_method, o.payment_method)  # fmt: skip
        return {
            "id": so.id,
            "admin_graphql_api_id": f"gid://shopify/Order/{so.id}",
            "name": f"#{so.number}",
            "order_number": so.number,
            "number": so.number - 1000,
            "token": hashlib.md5(f"{self.ctx.seed}:shop-token:{so.id}".encode()).hexdigest(),
            "email": c.email,
            "contact_email": c.email,
            "phone": c.phone,
            "created_at": _ts(so.created_at),
            "updated_at": _ts(so.updated_at),
            "processed_at": _ts(so.created_at),
            "cancelled_at": _ts(so.cancelled_at),
            "cancel_reason": so.cancel_reason,
            "closed_at": _ts(so.closed_at),
            "currency": "RUB",
            "presentment_currency": "RUB",
            "subtotal_price": _money(subtotal),
            "total_line_items_price": _money(subtotal),
            "total_discounts": "0.00",
            "total_shipping_price_set": {"shop_money": {"amount": _money(shipping), "currency_code": "RUB"}},
            "total_tax": _money(vat),
            "taxes_included": True,
            "total_price": _money(total),
            "total_weight": sum(self.ctx.products[ln.sku].weight_g * ln.qty for ln in o.lines),
            "financial_status": so.financial_status,
            "fulfillment_status": so.fulfillment_status,
            "confirmed": True,
            "test": False,
            "source_name": "web",
            "payment_gateway_names": [gateway],
            "buyer_accepts_marketing": o.entropy % 3 == 0,
            "note": o.comment or None,
            "note_attributes": note_attributes,
            "tags": "",
            "location_id": LOCATION_BY_CODE[o.store_code].shopify_location_id if o.store_code else None,
            "customer": {
                "id": customer_id,
                "email": c.email,
                "first_name": c.first_name,
                "last_name": c.last_name,
                "phone": c.phone,
                "state": "enabled",
                "currency": "RUB",
                "verified_email": True,
            },  # fmt: skip
            "billing_address": address,
            "shipping_address": None if o.delivery_method == "store_pickup" else address,
            "line_items": line_items,
            "shipping_lines": [
                {
                    "id": 4_400_000_000_000 + o.seq,
                    "code": o.delivery_method,
                    "title": ship_title,
                    "price": _money(shipping),
                    "discounted_price": _money(shipping),
                    "source": "shopify",
                    "carrier_identifier": None,
                }
            ],  # fmt: skip
            "fulfillments": [],
            "refunds": [],
        }

    @staticmethod
    def malform(record: dict, rng: random.Random) -> None:
        choice = rng.randrange(3)
        if choice == 0:
            record.pop("id", None)
        elif choice == 1 and record.get("line_items"):
            record["line_items"][0]["quantity"] = "two"
        else:
            record.pop("line_items", None)

    # -- protocol -----------------------------------------------------------------------------------------
    def before_request(self, request: Request) -> Response | None:
        if self.bucket:
            ok, _wait = self.bucket.try_add()
            if not ok:
                return self._too_many(1.0 / LEAK_PER_S * 4)
        if request.headers.get("x-shopify-access-token") != self.access_token:
            return JSONResponse(
                {"errors": "[API] Invalid API key or access token (unrecognized login or wrong password)"},
                status_code=401,
            )
        return None

    def _too_many(self, retry_after: float) -> Response:
        return JSONResponse(
            {
                "errors": "Exceeded 2 calls per second for api client. Reduce request rates to resume uninterrupted service."
            },
            status_code=429,
            headers={"Retry-After": f"{float(retry_after):.1f}"},
        )

    def after_request(self, request: Request, response: Response) -> None:
        if self.bucket:
            response.headers["X-Shopify-Shop-Api-Call-Limit"] = f"{self.bucket.level}/{self.bucket.capacity}"
        version = request.path_params.get("version")
        if version:
            response.headers["X-Shopify-API-Version"] = version

    def fault_rate_limited(self, rule: FaultRule) -> Response:
        return self._too_many(rule.retry_after)

    def fault_server_error(self, rule: FaultRule) -> Response:
        status = rule.status or 500
        headers = {"Retry-After": f"{float(rule.retry_after):.1f}"} if status == 503 else {}
        return JSONResponse({"errors": "Internal Server Error"}, status_code=status, headers=headers)

    def not_found(self, request: Request) -> Response:
        return JSONResponse({"errors": "Not Found"}, status_code=404)

    def internal_error(self) -> Response:
        return JSONResponse({"errors": "Internal Server Error"}, status_code=500)

    def api_routes(self):
        return [
            ("/admin/api/{version}/orders.json", self.list_orders, ["GET"]),
            ("/admin/api/{version}/orders/{order_id:int}.json", self.get_order, ["GET"]),
            ("/admin/api/{version}/inventory_levels/set.json", self.set_inventory, ["POST"]),
            ("/admin/api/{version}/inventory_levels.json", self.list_inventory, ["GET"]),
            ("/admin/api/{version}/returns.json", self.list_returns, ["GET"]),
            ("/admin/api/{version}/returns/{return_id:int}.json", self.get_return, ["GET"]),
            ("/admin/api/{version}/orders/{order_id:int}/returns.json", self.list_returns, ["GET"]),
        ]

    @staticmethod
    def _check_version(request: Request) -> None:
        if not API_VERSION_RE.match(request.path_params["version"]):
            raise _errors(404, "Not Found")

    # -- orders -------------------------------------------------------------------------------------------
    @staticmethod
    def _encode_page_info(data: dict) -> str:
        raw = json.dumps(data, separators=(",", ":"), sort_keys=True).encode()
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    @staticmethod
    def _decode_page_info(value: str) -> dict:
        try:
            data = json.loads(base64.urlsafe_b64decode((value + "=" * (-len(value) % 4)).encode()))
            if (
                not isinstance(data, dict)
                or data.get("d") not in ("next", "prev")
                or not isinstance(data["id"], int)
            ):
                raise ValueError
            if not isinstance(data.get("f"), dict) or data.get("o") not in ("asc", "desc"):
                raise ValueError
            return data
        except (ValueError, KeyError, TypeError) as exc:
            raise _errors(400, {"page_info": "Invalid value."}) from exc

    @staticmethod
    def _parse_filters(params) -> dict:
        f: dict = {}
        if "since_id" in params:
            try:
                f["since_id"] = int(params["since_id"])
            except ValueError as exc:
                raise _errors(400, {"since_id": "Invalid value."}) from exc
        for key in ("created_at_min", "created_at_max", "updated_at_min", "updated_at_max"):
            if key in params:
                try:
                    f[key] = iso_z(parse_rfc3339(params[key]))
                except ValueError as exc:
                    raise _errors(400, {key: "Invalid value."}) from exc
        status = params.get("status", "open")
        if status not in STATUS_VALUES:
            raise _errors(400, {"status": "Invalid value."})
        f["status"] = status
        for key in ("financial_status", "fulfillment_status"):
            if key in params:
                f[key] = params[key]
        if "ids" in params:
            try:
                f["ids"] = sorted({int(x) for x in params["ids"].split(",") if x.strip()})
            except ValueError as exc:
                raise _errors(400, {"ids": "Invalid value."}) from exc
        return f

    @staticmethod
    def _matcher(f: dict):
        """Compile the filters once per request (lists are scanned in full, so this is the hot loop)."""
        bounds = [
            (attr, parse_rfc3339(f[key]), is_min)
            for key, attr, is_min in (
                ("created_at_min", "created_at", True), ("created_at_max", "created_at", False),
                ("updated_at_min", "updated_at", True), ("updated_at_max", "updated_at", False),
            )
            if key in f
        ]  # fmt: skip
        since_id, ids = f.get("since_id"), set(f["ids"]) if "ids" in f else None
        status, fin, ful = f.get("status", "open"), f.get("financial_status"), f.get("fulfillment_status")

        def matches(so: ShopOrder) -> bool:
            if since_id is not None and so.id <= since_id:
                return False
            if ids is not None and so.id not in ids:
                return False
            for attr, bound, is_min in bounds:
                value = getattr(so, attr)
                if (is_min and value < bound) or (not is_min and value > bound):
                    return False
            if status == "open" and so.closed_at is not None:
                return False
            if status == "closed" and so.closed_at is None:
                return False
            if status == "cancelled" and so.cancelled_at is None:
                return False
            if fin and fin != "any" and so.financial_status != fin:
                return False
            if ful and ful != "any":
                if ful in ("unshipped", "unfulfilled") and so.fulfillment_status is not None:
                    return False
                if ful == "shipped" and so.fulfillment_status != "fulfilled":
                    return False
                if ful == "partial" and so.fulfillment_status != "partial":
                    return False
            return True

        return matches

    async def list_orders(self, request: Request, faults: FaultSet) -> Response:
        self._check_version(request)
        params = request.query_params
        try:
            limit = int(params.get("limit", "50"))
        except ValueError as exc:
            raise _errors(400, {"limit": "Invalid value."}) from exc
        if not 1 <= limit <= 250:
            raise _errors(400, {"limit": "Limit must be between 1 and 250."})
        fields = [x.strip() for x in params.get("fields", "").split(",") if x.strip()]
        page_info = params.get("page_info")
        if page_info:
            for key in params:
                if key not in PAGE_INFO_ALLOWED:
                    raise _errors(400, {key: f"{key} cannot be passed when page_info is present."})
            cursor = self._decode_page_info(page_info)
            filters, order = cursor["f"], cursor["o"]
        else:
            cursor = None
            filters = self._parse_filters(params)
            order = "asc" if "since_id" in filters else "desc"

        with self.lock:
            matches = self._matcher(filters)
            matching = [so for so in self.orders if matches(so)]
            if order == "desc":
                matching.reverse()
            if cursor is None:
                start = 0
                page = matching[:limit]
            else:
                anchor = cursor["id"]
                before = (lambda so: so.id < anchor) if order == "asc" else (lambda so: so.id > anchor)
                if cursor["d"] == "next":
                    start = next(
                        (i for i, so in enumerate(matching) if not before(so) and so.id != anchor),
                        len(matching),
                    )
                else:
                    end = next((i for i, so in enumerate(matching) if not before(so)), len(matching))
                    start = max(end - limit, 0)
                page = matching[start : start + limit] if cursor["d"] == "next" else matching[start:end]
            has_next = start + len(page) < len(matching)
            has_prev = cursor is not None and start > 0
            records = [self.render(so) for so in page]

        if fields:
            records = [{k: v for k, v in r.items() if k in fields} for r in records]
        links = []
        base = f"{str(request.base_url).rstrip('/')}{request.url.path}"
        extra = f"&fields={','.join(fields)}" if fields else ""
        if has_prev and page:
            token = self._encode_page_info({"d": "prev", "id": page[0].id, "f": filters, "o": order})
            links.append(f'<{base}?limit={limit}{extra}&page_info={token}>; rel="previous"')
        if has_next and page:
            anchor_so = page[-2] if faults.get("duplicate") and len(page) > 1 else page[-1]
            token = self._encode_page_info({"d": "next", "id": anchor_so.id, "f": filters, "o": order})
            links.append(f'<{base}?limit={limit}{extra}&page_info={token}>; rel="next"')
        if faults:
            records = faults.apply_records(records, self.malform)
        headers = {"Link": ", ".join(links)} if links else {}
        return JSONResponse({"orders": records}, headers=headers)

    async def get_order(self, request: Request, faults: FaultSet) -> Response:
        self._check_version(request)
        with self.lock:
            so = self.by_id.get(request.path_params["order_id"])
            if so is None:
                raise _errors(404, "Not Found")
            record = self.render(so)
        if faults:
            record = faults.apply_records([record], self.malform)[0]
        return JSONResponse({"order": record})

    # -- returns ------------------------------------------------------------------------------------------
    async def list_returns(self, request: Request, faults: FaultSet) -> Response:
        """Customers' return requests, ascending ids: ``since_id`` (the last id seen), ``limit`` (50, ≤ 250),
        ``order_id`` — or the path's order."""
        self._check_version(request)
        params = request.query_params
        try:
            limit = int(params.get("limit", "50"))
        except ValueError as exc:
            raise _errors(400, {"limit": "Invalid value."}) from exc
        if not 1 <= limit <= 250:
            raise _errors(400, {"limit": "Limit must be between 1 and 250."})
        ints: dict[str, int | None] = {}
        for key in ("since_id", "order_id"):
            try:
                ints[key] = int(params[key]) if key in params else None
            except ValueError as exc:
                raise _errors(400, {key: "Invalid value."}) from exc
        since_id, order_id = ints["since_id"], request.path_params.get("order_id", ints["order_id"])
        with self.lock:
            if "order_id" in request.path_params and order_id not in self.by_id:
                raise _errors(404, "Not Found")
            records = self.customer_returns.listed(since_id=since_id, order_id=order_id, limit=limit)
        if faults:
            records = faults.apply_records(records, self.malform)
        return JSONResponse({"returns": records})

    async def get_return(self, request: Request, faults: FaultSet) -> Response:
        self._check_version(request)
        with self.lock:
            record = self.customer_returns.by_id.get(request.path_params["return_id"])
        if record is None:
            raise _errors(404, "Not Found")
        return JSONResponse({"return": record})

    # -- inventory ----------------------------------------------------------------------------------------
    def _level(self, item_id: int, location_id: int) -> dict:
        rec = self.inventory.get((item_id, location_id))
        return {
            "inventory_item_id": item_id,
            "location_id": location_id,
            "available": rec["available"] if rec else None,
            "updated_at": rec["updated_at"] if rec else None,
            "admin_graphql_api_id": f"gid://shopify/InventoryLevel/{location_id}?inventory_item_id={item_id}",
        }

    async def set_inventory(self, request: Request, faults: FaultSet) -> Response:
        self._check_version(request)
        try:
            body = await read_json(request)
        except ValueError as exc:
            raise _errors(400, "Bad Request") from exc
        if not isinstance(body, dict):
            raise _errors(400, "Bad Request")
        for key in ("location_id", "inventory_item_id", "available"):
            value = body.get(key)
            if value is None or isinstance(value, bool) or not isinstance(value, int):
                raise _errors(400, {key: "Required parameter missing or invalid"})
        item_id, location_id, available = body["inventory_item_id"], body["location_id"], body["available"]
        if item_id not in self._by_inventory_item or location_id not in BY_SHOPIFY_LOCATION:
            raise _errors(404, "Not Found")
        if not -1_000_000_000 <= available <= 1_000_000_000:
            raise _errors(422, {"available": ["must be within -1000000000 and 1000000000"]})
        with self.lock:
            record = {
                "inventory_item_id": item_id,
                "location_id": location_id,
                "sku": self._by_inventory_item[item_id].sku,
                "available": available,
                "updated_at": _ts(self.now),
            }
            self.inventory[(item_id, location_id)] = record
            self.inventory_sets.append(record)
            level = self._level(item_id, location_id)
        return JSONResponse({"inventory_level": level})

    async def list_inventory(self, request: Request, faults: FaultSet) -> Response:
        self._check_version(request)
        try:
            items = [int(x) for x in request.query_params.get("inventory_item_ids", "").split(",") if x]
            locations = [int(x) for x in request.query_params.get("location_ids", "").split(",") if x]
        except ValueError as exc:
            raise _errors(400, {"inventory_item_ids": "Invalid value."}) from exc
        if not items and not locations:
            raise _errors(422, {"errors": "inventory_item_ids or location_ids is required"})
        with self.lock:
            levels = [
                self._level(i, loc)
                for (i, loc) in sorted(self.inventory)
                if (not items or i in items) and (not locations or loc in locations)
            ]
        return JSONResponse({"inventory_levels": levels})

    # -- webhooks -----------------------------------------------------------------------------------------
    def tick(self) -> None:
        with self.lock:
            self.sync()
        self.deliver_due()

    def deliver_due(self) -> dict:
        """POST every due webhook (blocking, up to 8 in parallel). One pass at a time; returns counts.

        Faults are drawn in delivery order before sending, so they stay deterministic; the order in which the
        receiver sees the deliveries is not guaranteed (nor is it with Shopify).
        """
        result = {"attempted": 0, "delivered": 0, "failed": 0, "retrying": 0}
        with self._delivery_lock:
            with self.lock:
                self.sync()
                url, now = self.webhook_url, self.now
                due = [d for d in self.webhooks if d.status == "pending" and d.due_at <= now] if url else []
            if not due:
                return result
            plan = []
            for d in due:
                fs = self.faults.draw("WEBHOOK", f"webhook:{d.topic}")
                body = d.body
                if fs.get("malformed"):
                    record = json.loads(body)
                    self.malform(record, fs.rng)
                    body = json.dumps(record, ensure_ascii=False, separators=(",", ":")).encode()
                plan.append((d, body, 2 if fs.get("duplicate") else 1))

            def send(
                client: httpx.Client, d: Delivery, body: bytes, times: int
            ) -> tuple[bool, int | None, str | None]:
                headers = {
                    "Content-Type": "application/json",
                    "X-Shopify-Topic": d.topic,
                    "X-Shopify-Hmac-SHA256": shopify_hmac(body, self.webhook_secret),
                    "X-Shopify-Shop-Domain": self.shop_domain,
                    "X-Shopify-Webhook-Id": d.webhook_id,
                    "X-Shopify-API-Version": self.api_version,
                    "X-Shopify-Triggered-At": iso_z(d.triggered_at, ms=True),
                    "X-Shopify-Event-Id": d.webhook_id,
                }
                ok, status, error = False, None, None
                for _ in range(times):
                    try:
                        resp = client.post(url, content=body, headers=headers)
                        status, error = resp.status_code, None
                        ok = ok or 200 <= resp.status_code < 300
                    except httpx.HTTPError as exc:
                        status, error = None, f"{type(exc).__name__}: {exc}"
                return ok, status, error

            with (
                httpx.Client(timeout=self.webhook_timeout) as client,
                ThreadPoolExecutor(max_workers=8) as pool,
            ):
                outcomes = list(pool.map(lambda item: send(client, *item), plan))
            with self.lock:
                self.dirty = True  # deliveries moved on: their log is part of the saved state
                for (d, _body, times), (ok, status, error) in zip(plan, outcomes, strict=True):
                    result["attempted"] += times
                    d.attempts += 1
                    d.last_status, d.last_error = status, error
                    if ok:
                        d.status, d.body = "delivered", b""  # keep the log, not the payload
                        result["delivered"] += 1
                    elif d.attempts > len(WEBHOOK_RETRY_DELAYS):
                        d.status, d.body = "failed", b""
                        result["failed"] += 1
                    else:
                        d.due_at = now + timedelta(seconds=WEBHOOK_RETRY_DELAYS[d.attempts - 1])
                        result["retrying"] += 1
        return result

    def set_webhook(self, url: str | None, secret: str | None = None) -> None:
        with self.lock:
            self.webhook_url = url
            if secret:
                self.webhook_secret = secret

    def cancel_order(self, order_id: int, reason: str = "customer") -> bool:
        with self.lock:
            self.sync()
            so = self.by_id[order_id]
            return self._cancel(so, self.now, reason)

    def rendered_orders(self) -> list[dict]:
        with self.lock:
            self.sync()
            return [self.render(so) for so in self.orders]

    def control_routes(self) -> list[Route]:
        async def flush(request: Request) -> Response:
            return JSONResponse(await run_in_threadpool(self.deliver_due))

        async def deliveries(request: Request) -> Response:
            with self.lock:
                return JSONResponse(
                    {"url": self.webhook_url, "deliveries": [self._delivery_view(d) for d in self.webhooks]}
                )

        async def config(request: Request) -> Response:
            try:
                body = await read_json(request)
                self.set_webhook(body.get("url"), body.get("secret"))
            except (ValueError, AttributeError) as exc:
                return JSONResponse({"error": str(exc)}, status_code=400)
            return JSONResponse({"url": self.webhook_url})

        async def inventory(request: Request) -> Response:
            with self.lock:
                return JSONResponse(
                    {"inventory_levels": list(self.inventory.values()), "sets": len(self.inventory_sets)}
                )

        async def cancel(request: Request) -> Response:
            try:
                changed = self.cancel_order(int(request.path_params["order_id"]))
            except (KeyError, ValueError):
                return JSONResponse({"error": "unknown order"}, status_code=404)
            return JSONResponse({"cancelled": changed})

        return [
            Route("/_sim/webhooks/flush", flush, methods=["POST"]),
            Route("/_sim/webhooks", deliveries, methods=["GET"]),
            Route("/_sim/webhooks/config", config, methods=["POST"]),
            Route("/_sim/inventory", inventory, methods=["GET"]),
            Route("/_sim/orders/{order_id}/cancel", cancel, methods=["POST"]),
        ]

    @staticmethod
    def _delivery_view(d: Delivery) -> dict:
        return {
            "webhook_id": d.webhook_id, "topic": d.topic, "order_id": d.order_id, "status": d.status,
            "attempts": d.attempts, "due_at": iso_z(d.due_at), "last_status": d.last_status,
            "last_error": d.last_error,
        }  # fmt: skip

    def state(self) -> dict:
        by_status: dict[str, int] = {}
        for d in self.webhooks:
            by_status[d.status] = by_status.get(d.status, 0) + 1
        return {
            "orders": len(self.orders),
            "cancelled": sum(1 for so in self.orders if so.cancelled_at),
            "returns": self.customer_returns.state(),
            "webhook_url": self.webhook_url,
            "webhooks": by_status,
            "inventory_levels": list(self.inventory.values()),
            "call_limit": f"{self.bucket.level}/{self.bucket.capacity}" if self.bucket else None,
        }
