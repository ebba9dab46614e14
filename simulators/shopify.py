"""Own web store simulator in the Shopify Admin REST shape (API version 2024-10), plus its outgoing webhooks.

Shapes follow ``reference/channel-apis.md`` §3 and the official ``ShopifyAPI`` Python library, which
``tests/contract/test_shopify_contract.py`` drives against this simulator:

* ``X-Shopify-Access-Token`` on every call (401 ``{"errors": "[API] Invalid API key or access token …"}``);
* ``GET /admin/api/{version}/orders.json`` — ``limit`` (default 50, max 250), ``since_id``,
  ``created_at_min/max``, ``updated_at_min/max``, ``status`` (``open`` by default! pass ``status=any`` to see
  cancelled/closed orders), ``financial_status``, ``fulfillment_status``, ``ids``, ``fields``;
  results newest first (id descending), oldest first when ``since_id`` is given; ``orders/count.json``;
* cursor pagination through the ``Link`` header (``<url>; rel="previous", <url>; rel="next"``) with an
  opaque ``page_info``; a request with ``page_info`` may only add ``limit`` and ``fields`` (anything else →
  400, as Shopify does); no ``Link`` header when everything fits on one page — for orders, products and
  inventory levels alike;
* ``GET …/orders/{id}.json``; ``POST …/inventory_levels/set.json``; ``POST …/graphql.json`` with the
  ``inventorySetQuantities`` mutation (up to 250 absolute values per call, its own cost bucket — see
  :meth:`ShopifySimulator.graphql`);
  ``GET …/inventory_levels.json?inventory_item_ids=&location_ids=`` and ``…/locations/{id}/inventory_levels.json``;
* discovery: ``GET …/locations.json`` (``locations/{id}.json``, ``locations/count.json``) — the fulfilment
  network's locations with a ``shopify_location_id``; ``GET …/products.json`` (ascending ids, ``Link``
  pages; ``products/{id}.json``, ``products/count.json``) — one product per catalog SKU with one variant
  whose ``sku`` is the seller's article, with its ``barcode`` and ``inventory_item_id``;
  ``GET …/variants/{id}.json``;
* orders carry Shopify's money fields: the ``*_set`` objects (shop and presentment money), ``discount_codes``
  / ``discount_applications`` and the line items' ``discount_allocations``, order-level ``tax_lines``, the
  ``current_*`` totals and, for cancelled orders, the ``refunds`` (see :meth:`ShopifySimulator.render`);
* leaky bucket of 40 calls leaking 2/s; ``X-Shopify-Shop-Api-Call-Limit: n/40`` on every response and 429 with
  ``Retry-After`` when full;
* header names spelled as Shopify sends them over HTTP/1.1 (``X-Shopify-Shop-Api-Call-Limit``, ``Link``,
  ``Retry-After``, ``X-Shopify-API-Version``): the official library reads them case-sensitively
  (:func:`exact_case_headers`);
* webhooks ``orders/create`` and ``orders/cancelled`` POSTed to ``webhook_url`` with ``X-Shopify-Topic``,
  ``X-Shopify-Hmac-SHA256`` (see :mod:`oms_ops.wire.shopify`), ``X-Shopify-Shop-Domain``,
  ``X-Shopify-Webhook-Id``, ``X-Shopify-API-Version``, ``X-Shopify-Triggered-At``; a non-2xx answer or a
  network error is retried 8 times over ~4 simulated hours, then the delivery is marked failed;
  ``webhook_topics`` chooses the topics sent (default those two; ``returns/request`` is opt-in);
* customer return requests (:mod:`simulators.customers`: customers of delivered parcels ask to send items
  back) in the shape of Shopify's ``Return``: ``GET …/returns.json?since_id=&limit=&order_id=`` (ascending
  ids; a simulator convenience — Shopify serves returns through GraphQL), ``GET …/returns/{id}.json``,
  ``GET …/orders/{id}/returns.json``, and the ``returns/request`` webhook.

Not simulated: writes other than inventory levels (creating or editing orders, products,
fulfillments, refunds), order edits (``current_quantity`` only drops on cancellation), shipping discounts,
multi-currency presentment (shop and presentment money are both RUB), GraphQL other than
``inventorySetQuantities``.

Store conventions: prices are strings in RUB with VAT included (``taxes_included: true``, 20 % НДС);
cancelling an order also closes (archives) it, so it drops out of the default ``status=open`` list.

State across restarts (``persist``): every order (content derived again from its stream number and time),
its financial / cancel / close state, pending customer cancellations, inventory levels and the webhook
deliveries (pending ones keep their body and go to the receiver configured at the new start) are kept; the
order stream numbers on past the last order, so order ids and numbers are never reused. Products and
locations derive from the catalog and the network, their timestamps from the fixed :data:`SHOP_OPENED`.
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
from datetime import UTC, datetime, timedelta, timezone
from decimal import ROUND_HALF_UP, Decimal

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
from simulators.catalog import Product
from simulators.clock import iso_z, parse_rfc3339
from simulators.customers import ReturnBehaviour, ShopReturns
from simulators.faults import FaultRule, FaultSet
from simulators.generator import GeneratedOrder, OrderGenerator
from simulators.limits import LeakyBucket, TokenBucket
from simulators.network import BY_SHOPIFY_LOCATION, LOCATION_BY_CODE, Location

log = logging.getLogger("simulators.shopify")

MSK = timezone(timedelta(hours=3))
API_VERSION_RE = re.compile(r"^(\d{4}-(01|04|07|10)|unstable)$")
PAGE_INFO_ALLOWED = {"page_info", "limit", "fields"}
STATUS_VALUES = ("open", "closed", "cancelled", "any")
BUCKET_SIZE, LEAK_PER_S = 40, 2.0
#: GraphQL Admin API: its own cost bucket (1000 points restored at 50/s); a mutation costs 10 points
GRAPHQL_BUCKET, GRAPHQL_RESTORE_PER_S, MUTATION_COST = 1000, 50.0, 10
#: ``inventorySetQuantities`` takes at most this many quantities per call
MAX_SET_QUANTITIES = 250
#: API versions from which every quantity must carry ``changeFromQuantity`` (``compareQuantity`` and
#: ``ignoreCompareQuantity`` before that)
CHANGE_FROM_SINCE = "2026-04"
INVENTORY_NAMES = frozenset({"available", "on_hand"})
INVENTORY_REASONS = frozenset(
    {
        "correction", "cycle_count_available", "damaged", "movement_created", "movement_updated",
        "movement_received", "movement_canceled", "other", "promotion", "quality_control", "received",
        "reservation_created", "reservation_deleted", "reservation_updated", "restock", "safety_stock",
        "shrinkage",
    }
)  # fmt: skip
_GID = re.compile(r"^gid://shopify/(InventoryItem|Location)/(\d+)$")
#: Shopify retries a failed webhook 8 times over 4 hours (delays after attempt 1..8), simulated seconds.
WEBHOOK_RETRY_DELAYS = (10, 30, 60, 300, 900, 1800, 3600, 7200)
SHIPPING = {"courier": Decimal("390.00"), "pickup_point": Decimal("199.00"), "store_pickup": Decimal("0.00")}
FREE_SHIPPING_FROM = Decimal("3000.00")  # compared with the subtotal after discounts, as Shopify's rates do
VAT = Decimal("20")
CENT = Decimal("0.01")
ZERO = Decimal("0.00")
#: Discount codes customers type at checkout: (code, percent off every line item). One order in
#: ``DISCOUNT_SHARE`` carries one (chosen from the order's entropy, so a re-render never changes it).
DISCOUNT_CODES = (("WELCOME10", 10), ("SPRING15", 15), ("LOYAL5", 5))
DISCOUNT_SHARE = 6
#: When the shop's catalog and locations were set up: fixed, so their timestamps never move across restarts.
SHOP_OPENED = datetime(2024, 9, 2, 6, 0, tzinfo=UTC)
#: Header names as Shopify spells them on HTTP/1.1 where plain title case is not it.
_HEADER_CASE = {b"x-shopify-api-version": b"X-Shopify-API-Version"}


def _ts(dt: datetime | None) -> str | None:
    return None if dt is None else dt.astimezone(MSK).isoformat(timespec="seconds")


def _money(value: Decimal) -> str:
    return f"{value.quantize(CENT):.2f}"


def _money_set(value: Decimal) -> dict:
    """A ``*_set`` money object: the amount in the shop's and the customer's (presentment) currency."""
    amount = _money(value)
    return {
        "shop_money": {"amount": amount, "currency_code": "RUB"},
        "presentment_money": {"amount": amount, "currency_code": "RUB"},
    }


def _vat(gross: Decimal) -> Decimal:
    """The VAT inside a VAT-inclusive amount (``taxes_included``), rounded to the kopeck."""
    return (gross * VAT / (100 + VAT)).quantize(CENT, ROUND_HALF_UP)


def _tax_lines(tax: Decimal) -> list[dict]:
    """``tax_lines`` of a VAT-inclusive amount whose VAT is ``tax``."""
    return [{"title": "НДС", "rate": 0.2, "price": _money(tax), "price_set": _money_set(tax), "channel_liable": False}]  # fmt: skip


def exact_case_headers(response: Response) -> Response:
    """Give the response's header names Shopify's spelling (``X-Shopify-Shop-Api-Call-Limit``, ``Link``,
    ``Retry-After``). Why: Starlette stores names in lower case, and the official ``ShopifyAPI`` library
    (pyactiveresource over urllib) copies the headers into a plain dict and reads
    ``X-Shopify-Shop-Api-Call-Limit`` by its exact name. HTTP says names are case-insensitive, so clients that
    follow it see no difference; the server writes them as given only with the h11 protocol
    (:attr:`ShopifySimulator.http_protocol`)."""
    response.raw_headers[:] = [
        (_HEADER_CASE.get(k) or b"-".join(part[:1].upper() + part[1:] for part in k.split(b"-")), v)
        for k, v in response.raw_headers
    ]
    return response


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
    #: uvicorn's HTTP protocol for this simulator (read by the stack): h11 writes header names as the app
    #: gives them, httptools lower-cases them — and the official library needs ``X-Shopify-Shop-Api-Call-Limit``
    #: spelled exactly (see :func:`exact_case_headers`)
    http_protocol = "h11"

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
        self._by_product = {p.shopify_product_id: p for p in ctx.catalog}
        self._by_variant = {p.shopify_variant_id: p for p in ctx.catalog}
        self._catalog_pos = {p.sku: i for i, p in enumerate(ctx.catalog)}
        self.bucket = LeakyBucket(BUCKET_SIZE, LEAK_PER_S, ctx.protocol_time) if rate_limit else None
        self.cost_bucket = (
            TokenBucket(GRAPHQL_BUCKET, GRAPHQL_RESTORE_PER_S, ctx.protocol_time) if rate_limit else None
        )
        self._adjustment_seq = 0

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
    @staticmethod
    def discount_code(o: GeneratedOrder) -> tuple[str, int] | None:
        """The discount code the customer typed for ``o`` (code, percent), or None."""
        if (o.entropy >> 20) % DISCOUNT_SHARE:
            return None
        return DISCOUNT_CODES[(o.entropy >> 28) % len(DISCOUNT_CODES)]

    def render(self, so: ShopOrder) -> dict:
        """The order as ``orders.json`` serves it (and webhooks carry it).

        Money follows Shopify's definitions, every amount a kopeck sum of the ones it is made of:
        ``total_line_items_price`` = Σ price × quantity (before discounts); a percentage discount code gives
        each line item a ``discount_allocations`` entry of (percent of its price, rounded) × quantity;
        ``subtotal_price`` = line items − ``total_discounts``; ``total_price`` = subtotal + shipping (prices
        include VAT, ``taxes_included``); ``total_tax`` = Σ of the line items' and shipping lines' VAT. The
        ``current_*`` fields are the totals after refunds: a cancelled order is refunded in full (one
        ``refunds`` entry with every line, the shipping and — when money was taken — the refund transaction),
        so they are zero there and equal the originals otherwise.
        """
        o = so.order
        c = o.customer
        code = self.discount_code(o)
        cancelled = so.cancelled_at is not None
        priced = []  # (index, line, product, discount, net amount, VAT)
        for i, line in enumerate(o.lines):
            per_unit = (line.unit_price * code[1] / 100).quantize(CENT, ROUND_HALF_UP) if code else ZERO
            discount = per_unit * line.qty
            net = line.amount - discount
            priced.append((i, line, self.ctx.products[line.sku], discount, net, _vat(net)))
        line_items_price = sum((line.amount for line in o.lines), ZERO)
        discounts = sum((d for _, _, _, d, _, _ in priced), ZERO)
        subtotal = line_items_price - discounts
        shipping = SHIPPING[o.delivery_method] if subtotal < FREE_SHIPPING_FROM else ZERO
        shipping_tax = _vat(shipping)
        total = subtotal + shipping
        tax = sum((t for *_, t in priced), ZERO) + shipping_tax
        customer_id = 7_000_000_000_000 + int(hashlib.md5(c.phone.encode()).hexdigest()[:8], 16) % 10**9
        address = {
            "first_name": c.first_name, "last_name": c.last_name, "name": f"{c.first_name} {c.last_name}",
            "address1": o.address.street, "address2": None, "city": o.address.city,
            "province": o.address.region, "province_code": o.address.region_code.split("-")[1],
            "country": "Russia", "country_code": "RU", "zip": o.address.postcode, "phone": c.phone,
            "company": None, "latitude": o.address.lat, "longitude": o.address.lon,
        }  # fmt: skip
        line_items = []
        for i, line, p, discount, _net, line_tax in priced:
            line_id = 14_000_000_000_000 + o.seq * 100 + i
            line_items.append({
                "id": line_id,
                "admin_graphql_api_id": f"gid://shopify/LineItem/{line_id}",
                "variant_id": p.shopify_variant_id, "product_id": p.shopify_product_id, "sku": p.sku,
                "title": p.name, "name": p.name, "variant_title": None, "vendor": p.brand,
                "quantity": line.qty, "current_quantity": 0 if cancelled else line.qty,
                "fulfillable_quantity": 0 if cancelled else line.qty,
                "price": _money(line.unit_price), "price_set": _money_set(line.unit_price),
                "total_discount": _money(discount), "total_discount_set": _money_set(discount),
                "discount_allocations": [
                    {"amount": _money(discount), "amount_set": _money_set(discount), "discount_application_index": 0}
                ] if code else [],
                "grams": p.weight_g, "requires_shipping": True, "taxable": True, "gift_card": False,
                "fulfillment_service": "manual", "fulfillment_status": None, "properties": [],
                "tax_lines": _tax_lines(line_tax),
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
        discount_codes, discount_applications = [], []
        if code:
            discount_codes.append({"code": code[0], "amount": _money(discounts), "type": "percentage"})
            discount_applications.append({
                "type": "discount_code", "code": code[0], "value": f"{code[1]}.0", "value_type": "percentage",
                "allocation_method": "across", "target_selection": "all", "target_type": "line_item",
            })  # fmt: skip

        def current(value: Decimal) -> Decimal:
            """A ``current_*`` total: everything was refunded on a cancelled order, nothing otherwise."""
            return ZERO if cancelled else value

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
            "total_line_items_price": _money(line_items_price),
            "total_line_items_price_set": _money_set(line_items_price),
            "total_discounts": _money(discounts),
            "total_discounts_set": _money_set(discounts),
            "subtotal_price": _money(subtotal),
            "subtotal_price_set": _money_set(subtotal),
            "total_shipping_price_set": _money_set(shipping),
            "total_tax": _money(tax),
            "total_tax_set": _money_set(tax),
            "taxes_included": True,
            "estimated_taxes": False,
            "tax_lines": _tax_lines(tax),
            "total_price": _money(total),
            "total_price_set": _money_set(total),
            "total_tip_received": "0.00",
            "total_outstanding": _money(total if so.financial_status == "pending" else ZERO),
            "current_subtotal_price": _money(current(subtotal)),
            "current_subtotal_price_set": _money_set(current(subtotal)),
            "current_total_discounts": _money(current(discounts)),
            "current_total_discounts_set": _money_set(current(discounts)),
            "current_total_tax": _money(current(tax)),
            "current_total_tax_set": _money_set(current(tax)),
            "current_total_price": _money(current(total)),
            "current_total_price_set": _money_set(current(total)),
            "current_total_duties_set": None,
            "original_total_duties_set": None,
            "current_total_additional_fees_set": None,
            "original_total_additional_fees_set": None,
            "discount_codes": discount_codes,
            "discount_applications": discount_applications,
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
                    "price_set": _money_set(shipping),
                    "discounted_price": _money(shipping),
                    "discounted_price_set": _money_set(shipping),
                    "discount_allocations": [],
                    "tax_lines": _tax_lines(shipping_tax),
                    "source": "shopify",
                    "carrier_identifier": None,
                }
            ],  # fmt: skip
            "fulfillments": [],
            "refunds": [self._refund(so, priced, shipping, total, gateway)] if cancelled else [],
        }

    @staticmethod
    def _refund(so: ShopOrder, priced: list, shipping: Decimal, total: Decimal, gateway: str) -> dict:
        """The refund a cancellation makes: every line item back to stock, the shipping refunded, and the
        money returned when it had been taken (``financial_status`` refunded; an unpaid order is voided)."""
        seq, at = so.order.seq, _ts(so.cancelled_at)
        shipping_tax = _vat(shipping)
        refund_id = 9_300_000_000_000 + seq
        adjustments = [
            {
                "id": 9_600_000_000_000 + seq, "order_id": so.id, "refund_id": refund_id, "kind": "shipping_refund",
                "reason": "Shipping refund", "amount": _money(-shipping), "amount_set": _money_set(-shipping),
                "tax_amount": _money(-shipping_tax), "tax_amount_set": _money_set(-shipping_tax),
            }
        ] if shipping else []  # fmt: skip
        transactions = [
            {
                "id": 9_500_000_000_000 + seq, "admin_graphql_api_id": f"gid://shopify/OrderTransaction/{9_500_000_000_000 + seq}",
                "order_id": so.id, "kind": "refund", "gateway": gateway, "status": "success",
                "amount": _money(total), "currency": "RUB", "created_at": at, "processed_at": at, "test": False,
            }
        ] if so.financial_status == "refunded" else []  # fmt: skip
        return {
            "id": refund_id,
            "admin_graphql_api_id": f"gid://shopify/Refund/{refund_id}",
            "order_id": so.id,
            "created_at": at,
            "processed_at": at,
            "note": "Отмена заказа",
            "restock": True,
            "user_id": None,
            "refund_line_items": [
                {
                    "id": 9_400_000_000_000 + seq * 100 + i,
                    "line_item_id": 14_000_000_000_000 + seq * 100 + i,
                    "quantity": line.qty,
                    "restock_type": "cancel",
                    "location_id": None,
                    "subtotal": _money(net),
                    "subtotal_set": _money_set(net),
                    "total_tax": _money(line_tax),
                    "total_tax_set": _money_set(line_tax),
                }
                for i, line, _p, _d, net, line_tax in priced
            ],  # fmt: skip
            "order_adjustments": adjustments,
            "transactions": transactions,
            "duties": [],
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
        if self.bucket and not request.url.path.endswith("/graphql.json"):  # GraphQL: its own cost bucket
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
        exact_case_headers(response)

    def fault_rate_limited(self, rule: FaultRule) -> Response:
        return self._too_many(rule.retry_after)

    def fault_server_error(self, rule: FaultRule) -> Response:
        status = rule.status or 500
        headers = {"Retry-After": f"{float(rule.retry_after):.1f}"} if status == 503 else {}
        return JSONResponse({"errors": "Internal Server Error"}, status_code=status, headers=headers)

    def not_found(self, request: Request) -> Response:
        return exact_case_headers(JSONResponse({"errors": "Not Found"}, status_code=404))

    def internal_error(self) -> Response:
        return JSONResponse({"errors": "Internal Server Error"}, status_code=500)

    def api_routes(self):
        return [
            ("/admin/api/{version}/orders.json", self.list_orders, ["GET"]),
            ("/admin/api/{version}/orders/count.json", self.count_orders, ["GET"]),
            ("/admin/api/{version}/orders/{order_id:int}.json", self.get_order, ["GET"]),
            ("/admin/api/{version}/products.json", self.list_products, ["GET"]),
            ("/admin/api/{version}/products/count.json", self.count_products, ["GET"]),
            ("/admin/api/{version}/products/{product_id:int}.json", self.get_product, ["GET"]),
            ("/admin/api/{version}/variants/{variant_id:int}.json", self.get_variant, ["GET"]),
            ("/admin/api/{version}/locations.json", self.list_locations, ["GET"]),
            ("/admin/api/{version}/locations/count.json", self.count_locations, ["GET"]),
            ("/admin/api/{version}/locations/{location_id:int}.json", self.get_location, ["GET"]),
            (
                "/admin/api/{version}/locations/{location_id:int}/inventory_levels.json",
                self.list_inventory,
                ["GET"],
            ),
            ("/admin/api/{version}/inventory_levels/set.json", self.set_inventory, ["POST"]),
            ("/admin/api/{version}/graphql.json", self.graphql, ["POST"]),
            ("/admin/api/{version}/inventory_levels.json", self.list_inventory, ["GET"]),
            ("/admin/api/{version}/returns.json", self.list_returns, ["GET"]),
            ("/admin/api/{version}/returns/{return_id:int}.json", self.get_return, ["GET"]),
            ("/admin/api/{version}/orders/{order_id:int}/returns.json", self.list_returns, ["GET"]),
        ]

    @staticmethod
    def _check_version(request: Request) -> None:
        if not API_VERSION_RE.match(request.path_params["version"]):
            raise _errors(404, "Not Found")

    # -- cursor pagination (orders, products, inventory levels) --------------------------------------------
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

    def _page_request(self, params) -> tuple[int, list[str], dict | None]:
        """``(limit, fields, cursor)`` of a paged list call: ``limit`` 1..250 (default 50); with
        ``page_info`` only ``limit`` and ``fields`` may be passed (anything else → 400, as Shopify does)."""
        try:
            limit = int(params.get("limit", "50"))
        except ValueError as exc:
            raise _errors(400, {"limit": "Invalid value."}) from exc
        if not 1 <= limit <= 250:
            raise _errors(400, {"limit": "Limit must be between 1 and 250."})
        fields = [x.strip() for x in params.get("fields", "").split(",") if x.strip()]
        page_info = params.get("page_info")
        if not page_info:
            return limit, fields, None
        for key in params:
            if key not in PAGE_INFO_ALLOWED:
                raise _errors(400, {key: f"{key} cannot be passed when page_info is present."})
        return limit, fields, self._decode_page_info(page_info)

    @staticmethod
    def _window(rows: list, key, cursor: dict | None, order: str, limit: int) -> tuple[list, bool, bool]:
        """The page of ``rows`` (already filtered and sorted) a cursor points at: ``(page, has_next,
        has_previous)``. A cursor holds the id of the row it was cut at, so rows added since never shift a
        page (Shopify's ``page_info`` is keyset-based too)."""
        if cursor is None:
            start, page = 0, rows[:limit]
        else:
            anchor = cursor["id"]
            before = (lambda r: key(r) < anchor) if order == "asc" else (lambda r: key(r) > anchor)
            if cursor["d"] == "next":
                start = next((i for i, r in enumerate(rows) if not before(r) and key(r) != anchor), len(rows))
                page = rows[start : start + limit]
            else:
                end = next((i for i, r in enumerate(rows) if not before(r)), len(rows))
                start = max(end - limit, 0)
                page = rows[start:end]
        return page, start + len(page) < len(rows), cursor is not None and start > 0

    def _link(
        self,
        request: Request,
        page: list,
        key,
        *,
        has_next: bool,
        has_prev: bool,
        limit: int,
        fields: list[str],
        filters: dict,
        order: str,
        skip_back: bool = False,
    ) -> dict[str, str]:
        """The ``Link`` header of a page (none when everything fits on one): ``<url>; rel="previous"`` and
        ``<url>; rel="next"``, joined by ``", "`` — the exact shape the official library splits.
        ``skip_back``: the injected ``duplicate`` fault cuts the next cursor one row early."""
        links = []
        base = f"{str(request.base_url).rstrip('/')}{request.url.path}"
        extra = f"&fields={','.join(fields)}" if fields else ""
        if has_prev and page:
            token = self._encode_page_info({"d": "prev", "id": key(page[0]), "f": filters, "o": order})
            links.append(f'<{base}?limit={limit}{extra}&page_info={token}>; rel="previous"')
        if has_next and page:
            anchor = page[-2] if skip_back and len(page) > 1 else page[-1]
            token = self._encode_page_info({"d": "next", "id": key(anchor), "f": filters, "o": order})
            links.append(f'<{base}?limit={limit}{extra}&page_info={token}>; rel="next"')
        return {"Link": ", ".join(links)} if links else {}

    @staticmethod
    def _ids_param(params, key: str) -> list[int] | None:
        if key not in params:
            return None
        try:
            return sorted({int(x) for x in params[key].split(",") if x.strip()})
        except ValueError as exc:
            raise _errors(400, {key: "Invalid value."}) from exc

    @staticmethod
    def _time_filters(params, f: dict) -> None:
        for key in ("created_at_min", "created_at_max", "updated_at_min", "updated_at_max"):
            if key in params:
                try:
                    f[key] = iso_z(parse_rfc3339(params[key]))
                except ValueError as exc:
                    raise _errors(400, {key: "Invalid value."}) from exc

    @staticmethod
    def _time_bounds(f: dict) -> list[tuple[str, datetime, bool]]:
        return [
            (attr, parse_rfc3339(f[key]), is_min)
            for key, attr, is_min in (
                ("created_at_min", "created_at", True), ("created_at_max", "created_at", False),
                ("updated_at_min", "updated_at", True), ("updated_at_max", "updated_at", False),
            )
            if key in f
        ]  # fmt: skip

    # -- orders -------------------------------------------------------------------------------------------
    def _parse_filters(self, params) -> dict:
        f: dict = {}
        if "since_id" in params:
            try:
                f["since_id"] = int(params["since_id"])
            except ValueError as exc:
                raise _errors(400, {"since_id": "Invalid value."}) from exc
        self._time_filters(params, f)
        status = params.get("status", "open")
        if status not in STATUS_VALUES:
            raise _errors(400, {"status": "Invalid value."})
        f["status"] = status
        for key in ("financial_status", "fulfillment_status"):
            if key in params:
                f[key] = params[key]
        ids = self._ids_param(params, "ids")
        if ids is not None:
            f["ids"] = ids
        return f

    def _matcher(self, f: dict):
        """Compile the filters once per request (lists are scanned in full, so this is the hot loop)."""
        bounds = self._time_bounds(f)
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
        """``orders.json``: newest first (oldest first with ``since_id``), ``Link`` cursor pages."""
        self._check_version(request)
        limit, fields, cursor = self._page_request(request.query_params)
        if cursor is None:
            filters = self._parse_filters(request.query_params)
            order = "asc" if "since_id" in filters else "desc"
        else:
            filters, order = cursor["f"], cursor["o"]

        def key(so: ShopOrder) -> int:
            return so.id

        with self.lock:
            matches = self._matcher(filters)
            matching = [so for so in self.orders if matches(so)]
            if order == "desc":
                matching.reverse()
            page, has_next, has_prev = self._window(matching, key, cursor, order, limit)
            records = [self.render(so) for so in page]

        if fields:
            records = [{k: v for k, v in r.items() if k in fields} for r in records]
        headers = self._link(
            request, page, key, has_next=has_next, has_prev=has_prev, limit=limit, fields=fields,
            filters=filters, order=order, skip_back=bool(faults.get("duplicate")),
        )  # fmt: skip
        if faults:
            records = faults.apply_records(records, self.malform)
        return JSONResponse({"orders": records}, headers=headers)

    async def count_orders(self, request: Request, faults: FaultSet) -> Response:
        """``orders/count.json``: the filters of ``orders.json`` (``status`` open by default); ``since_id`` and
        ``ids`` are not among the count's parameters and are ignored, as Shopify ignores unknown ones."""
        self._check_version(request)
        filters = self._parse_filters(request.query_params)
        filters.pop("since_id", None)
        filters.pop("ids", None)
        with self.lock:
            matches = self._matcher(filters)
            return JSONResponse({"count": sum(1 for so in self.orders if matches(so))})

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

    # -- catalog: products and their variants -------------------------------------------------------------
    def _listed_at(self, p: Product) -> datetime:
        """When the product was added to the shop: its ``created_at`` (nothing edits products later)."""
        return SHOP_OPENED + timedelta(minutes=37 * self._catalog_pos[p.sku])

    def _stock(self) -> dict[int, int]:
        """Inventory item → units available over all locations (the variant's ``inventory_quantity``)."""
        out: dict[int, int] = {}
        with self.lock:
            for (item, _location), rec in self.inventory.items():
                out[item] = out.get(item, 0) + rec["available"]
        return out

    def render_variant(self, p: Product, stock: dict[int, int]) -> dict:
        """The product's one variant (``Default Title``): the seller's article is its ``sku``, the stock is
        kept by its ``inventory_item_id``."""
        at = _ts(self._listed_at(p))
        qty = stock.get(p.shopify_inventory_item_id, 0)
        return {
            "id": p.shopify_variant_id, "product_id": p.shopify_product_id, "title": "Default Title",
            "price": _money(p.price), "compare_at_price": None, "position": 1, "inventory_policy": "deny",
            "option1": "Default Title", "option2": None, "option3": None, "created_at": at, "updated_at": at,
            "taxable": True, "barcode": p.barcode, "fulfillment_service": "manual", "grams": p.weight_g,
            "weight": p.weight_g / 1000, "weight_unit": "kg", "inventory_management": "shopify",
            "requires_shipping": True, "sku": p.sku, "inventory_item_id": p.shopify_inventory_item_id,
            "inventory_quantity": qty, "old_inventory_quantity": qty, "image_id": None,
            "admin_graphql_api_id": f"gid://shopify/ProductVariant/{p.shopify_variant_id}",
        }  # fmt: skip

    def render_product(self, p: Product, stock: dict[int, int]) -> dict:
        at = _ts(self._listed_at(p))
        return {
            "id": p.shopify_product_id, "title": p.name, "body_html": None, "vendor": p.brand,
            "product_type": p.category, "handle": p.sku.lower(), "created_at": at, "updated_at": at,
            "published_at": at, "template_suffix": None, "published_scope": "global", "tags": "",
            "status": "active", "admin_graphql_api_id": f"gid://shopify/Product/{p.shopify_product_id}",
            "variants": [self.render_variant(p, stock)],
            "options": [{
                "id": 10_500_000_000_000 + self._catalog_pos[p.sku], "product_id": p.shopify_product_id,
                "name": "Title", "position": 1, "values": ["Default Title"],
            }],
            "images": [], "image": None,
        }  # fmt: skip

    def _product_filters(self, params) -> dict:
        """``products.json``'s filters: ``ids``, ``since_id``, ``title`` (contains), ``vendor``, ``handle``,
        ``product_type``, ``status`` (active / archived / draft, comma-separated), ``created_at_min/max``,
        ``updated_at_min/max``."""
        f: dict = {}
        ids = self._ids_param(params, "ids")
        if ids is not None:
            f["ids"] = ids
        if "since_id" in params:
            try:
                f["since_id"] = int(params["since_id"])
            except ValueError as exc:
                raise _errors(400, {"since_id": "Invalid value."}) from exc
        for key in ("title", "product_type"):
            if key in params:
                f[key] = params[key]
        for key in ("vendor", "handle", "status"):
            if key in params:
                f[key] = [x.strip() for x in params[key].split(",") if x.strip()]
        if not set(f.get("status", ())) <= {"active", "archived", "draft"}:
            raise _errors(400, {"status": "Invalid value."})
        self._time_filters(params, f)
        return f

    def _product_matcher(self, f: dict):
        bounds = self._time_bounds(f)
        ids = set(f["ids"]) if "ids" in f else None
        title = f.get("title", "").casefold()

        def matches(p: Product) -> bool:
            if ids is not None and p.shopify_product_id not in ids:
                return False
            if "since_id" in f and p.shopify_product_id <= f["since_id"]:
                return False
            if title and title not in p.name.casefold():
                return False
            if "product_type" in f and p.category != f["product_type"]:
                return False
            if "vendor" in f and p.brand not in f["vendor"]:
                return False
            if "handle" in f and p.sku.lower() not in f["handle"]:
                return False
            if "status" in f and "active" not in f["status"]:  # every product of the shop is active
                return False
            listed = self._listed_at(p)  # created_at = updated_at
            return all((listed >= bound) if is_min else (listed <= bound) for _attr, bound, is_min in bounds)

        return matches

    async def list_products(self, request: Request, faults: FaultSet) -> Response:
        """``products.json``: ascending ids, ``Link`` cursor pages, each product with its variants."""
        self._check_version(request)
        limit, fields, cursor = self._page_request(request.query_params)
        filters = self._product_filters(request.query_params) if cursor is None else cursor["f"]

        def key(p: Product) -> int:
            return p.shopify_product_id

        matches = self._product_matcher(filters)
        rows = sorted((p for p in self.ctx.catalog if matches(p)), key=key)
        page, has_next, has_prev = self._window(rows, key, cursor, "asc", limit)
        stock = self._stock()
        records = [self.render_product(p, stock) for p in page]
        if fields:
            records = [{k: v for k, v in r.items() if k in fields} for r in records]
        headers = self._link(
            request, page, key, has_next=has_next, has_prev=has_prev, limit=limit, fields=fields,
            filters=filters, order="asc",
        )  # fmt: skip
        return JSONResponse({"products": records}, headers=headers)

    async def count_products(self, request: Request, faults: FaultSet) -> Response:
        self._check_version(request)
        matches = self._product_matcher(self._product_filters(request.query_params))
        return JSONResponse({"count": sum(1 for p in self.ctx.catalog if matches(p))})

    async def get_product(self, request: Request, faults: FaultSet) -> Response:
        self._check_version(request)
        p = self._by_product.get(request.path_params["product_id"])
        if p is None:
            raise _errors(404, "Not Found")
        return JSONResponse({"product": self.render_product(p, self._stock())})

    async def get_variant(self, request: Request, faults: FaultSet) -> Response:
        """``variants/{id}.json``: how a client resolves a variant id to its ``inventory_item_id``."""
        self._check_version(request)
        p = self._by_variant.get(request.path_params["variant_id"])
        if p is None:
            raise _errors(404, "Not Found")
        return JSONResponse({"variant": self.render_variant(p, self._stock())})

    # -- locations ------------------------------------------------------------------------------------------
    @staticmethod
    def render_location(loc: Location) -> dict:
        """A fulfilment network location as Shopify's ``Location`` (warehouses and the click & collect stores
        alike: Shopify does not tell them apart); ``address1`` is the street part of the network address."""
        city = loc.city_info
        parts = loc.address.split(", ")
        street = next(
            (", ".join(parts[i + 1 :]) for i, part in enumerate(parts) if part.startswith("г. ")), loc.address
        )
        at = _ts(SHOP_OPENED)
        return {
            "id": loc.shopify_location_id, "name": loc.name, "address1": street, "address2": None,
            "city": loc.city, "zip": f"{city.postcode_prefix}{loc.shopify_location_id % 1000:03d}",
            "province": city.region, "province_code": city.region_code.split("-")[1], "country": "RU",
            "country_code": "RU", "country_name": "Russia", "localized_country_name": "Россия",
            "localized_province_name": city.region, "phone": None, "created_at": at, "updated_at": at,
            "legacy": False, "active": True,
            "admin_graphql_api_id": f"gid://shopify/Location/{loc.shopify_location_id}",
        }  # fmt: skip

    async def list_locations(self, request: Request, faults: FaultSet) -> Response:
        """``locations.json``: every location of the shop, ascending ids, on one page (Shopify does not page
        it)."""
        self._check_version(request)
        return JSONResponse(
            {"locations": [self.render_location(BY_SHOPIFY_LOCATION[i]) for i in sorted(BY_SHOPIFY_LOCATION)]}
        )

    async def count_locations(self, request: Request, faults: FaultSet) -> Response:
        self._check_version(request)
        return JSONResponse({"count": len(BY_SHOPIFY_LOCATION)})

    async def get_location(self, request: Request, faults: FaultSet) -> Response:
        self._check_version(request)
        loc = BY_SHOPIFY_LOCATION.get(request.path_params["location_id"])
        if loc is None:
            raise _errors(404, "Not Found")
        return JSONResponse({"location": self.render_location(loc)})

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

    def _cost(self, requested: int, actual: int | None) -> dict:
        """GraphQL's ``extensions.cost``: what the call costs and what is left in the bucket."""
        left = float(self.cost_bucket.remaining) if self.cost_bucket else float(GRAPHQL_BUCKET)
        return {
            "requestedQueryCost": requested,
            "actualQueryCost": actual,
            "throttleStatus": {
                "maximumAvailable": float(GRAPHQL_BUCKET),
                "currentlyAvailable": left,
                "restoreRate": GRAPHQL_RESTORE_PER_S,
            },
        }

    async def graphql(self, request: Request, faults: FaultSet) -> Response:
        """``POST …/graphql.json`` serving the ``inventorySetQuantities`` mutation (the one GraphQL call the
        OMS makes: many absolute values in one call, where REST takes one per call).

        Faithful parts: the cost bucket (1000 points, 50/s, a mutation costs 10) answered with HTTP 200 and
        ``errors[].extensions.code = THROTTLED`` when empty; ``extensions.cost`` on every answer; at most
        250 quantities (``MAX_INPUT_SIZE_EXCEEDED``); ``name`` ``available``/``on_hand``; the documented
        reasons; compare-and-set (``compareQuantity`` or ``ignoreCompareQuantity: true`` before 2026-04,
        ``changeFromQuantity`` — explicitly null to opt out — on every quantity from 2026-04); any user
        error applies nothing; ``changes`` lists the quantities that moved (a quantity set to what it already
        was has no change). Not faithful: the selection set is not read — the whole payload is returned."""
        self._check_version(request)
        version = request.path_params["version"]
        try:
            body = await read_json(request)
        except ValueError as exc:
            raise _errors(400, "Bad Request") from exc
        if not isinstance(body, dict) or not isinstance(body.get("query"), str):
            raise _errors(400, {"query": "Required parameter missing or invalid"})
        if not re.search(r"\binventorySetQuantities\s*\(", body["query"]):
            return JSONResponse(
                {
                    "errors": [
                        {
                            "message": "the simulator serves only the inventorySetQuantities mutation",
                            "extensions": {"code": "undefinedField"},
                        }
                    ]
                }
            )
        variables = body.get("variables") or {}
        data = variables.get("input") if isinstance(variables, dict) else None
        if not isinstance(data, dict) or not isinstance(data.get("quantities"), list):
            return JSONResponse(
                {
                    "errors": [
                        {
                            "message": "Variable $input of type InventorySetQuantitiesInput! was provided invalid value",
                            "extensions": {"code": "INVALID_VARIABLE"},
                        }
                    ]
                }
            )
        quantities = data["quantities"]
        if len(quantities) > MAX_SET_QUANTITIES:
            return JSONResponse(
                {
                    "errors": [
                        {
                            "message": f"The input array size of {len(quantities)} is greater than the maximum "
                            f"allowed of {MAX_SET_QUANTITIES}.",
                            "path": ["inventorySetQuantities", "input", "quantities"],
                            "extensions": {"code": "MAX_INPUT_SIZE_EXCEEDED"},
                        }
                    ]
                }
            )
        if self.cost_bucket:
            ok, _ = self.cost_bucket.try_take(MUTATION_COST)
            if not ok:
                return JSONResponse(
                    {
                        "errors": [
                            {
                                "message": "Throttled",
                                "extensions": {
                                    "code": "THROTTLED",
                                    "documentation": "https://shopify.dev/api/usage/rate-limits",
                                },
                            }
                        ],
                        "extensions": {"cost": self._cost(MUTATION_COST, None)},
                    }
                )
        errors: list[dict] = []
        name, reason = data.get("name"), data.get("reason")
        if name not in INVENTORY_NAMES:
            errors.append({"field": ["input", "name"], "message": "The quantity name must be either 'available' or 'on_hand'.", "code": "INVALID_NAME"})  # fmt: skip
        if reason not in INVENTORY_REASONS:
            errors.append({"field": ["input", "reason"], "message": "The specified reason is invalid.", "code": "INVALID_REASON"})  # fmt: skip
        cas_by_key = version >= CHANGE_FROM_SINCE  # "unstable" sorts after every dated version
        ignore = data.get("ignoreCompareQuantity") is True
        planned: list[tuple[int, int, int]] = []
        with self.lock:
            for i, q in enumerate(quantities):
                at = ["input", "quantities", str(i)]
                if not isinstance(q, dict):
                    errors.append({"field": at, "message": "Invalid quantity.", "code": "INVALID_QUANTITY"})
                    continue
                item = _GID.match(str(q.get("inventoryItemId") or ""))
                loc = _GID.match(str(q.get("locationId") or ""))
                qty = q.get("quantity")
                item_id = int(item[2]) if item and item[1] == "InventoryItem" else None
                loc_id = int(loc[2]) if loc and loc[1] == "Location" else None
                if item_id not in self._by_inventory_item:
                    errors.append({"field": [*at, "inventoryItemId"], "message": "The specified inventory item could not be found.", "code": "INVALID_INVENTORY_ITEM"})  # fmt: skip
                    continue
                if loc_id not in BY_SHOPIFY_LOCATION:
                    errors.append({"field": [*at, "locationId"], "message": "The specified location could not be found.", "code": "INVALID_LOCATION"})  # fmt: skip
                    continue
                if isinstance(qty, bool) or not isinstance(qty, int):
                    errors.append({"field": [*at, "quantity"], "message": "Invalid quantity.", "code": "INVALID_QUANTITY"})  # fmt: skip
                    continue
                if qty > 1_000_000_000:
                    errors.append({"field": [*at, "quantity"], "message": "The quantity can't be higher than 1,000,000,000.", "code": "INVALID_QUANTITY_TOO_HIGH"})  # fmt: skip
                    continue
                if qty < -1_000_000_000:
                    errors.append({"field": [*at, "quantity"], "message": "The quantity can't be lower than -1,000,000,000.", "code": "INVALID_QUANTITY_TOO_LOW"})  # fmt: skip
                    continue
                rec = self.inventory.get((item_id, loc_id)) or {}
                current = rec.get(name if name in INVENTORY_NAMES else "available", 0) or 0
                if cas_by_key:
                    if "changeFromQuantity" not in q:
                        errors.append({"field": [*at, "changeFromQuantity"], "message": "changeFromQuantity is required: pass the expected quantity, or null to skip the check.", "code": "CHANGE_FROM_QUANTITY_REQUIRED"})  # fmt: skip
                        continue
                    expected = q["changeFromQuantity"]
                    if expected is not None and expected != current:
                        errors.append({"field": [*at, "changeFromQuantity"], "message": "The specified compare quantity does not match the current quantity.", "code": "CHANGE_FROM_QUANTITY_STALE"})  # fmt: skip
                        continue
                elif not ignore:
                    expected = q.get("compareQuantity")
                    if expected is None:
                        errors.append({"field": [*at, "compareQuantity"], "message": "The compareQuantity argument must be given to each quantity or ignored using ignoreCompareQuantity.", "code": "COMPARE_QUANTITY_REQUIRED"})  # fmt: skip
                        continue
                    if expected != current:
                        errors.append({"field": [*at, "compareQuantity"], "message": "The specified compare quantity does not match the current quantity.", "code": "COMPARE_QUANTITY_STALE"})  # fmt: skip
                        continue
                planned.append((item_id, loc_id, qty))
            if errors:
                payload = {"inventoryAdjustmentGroup": None, "userErrors": errors}
            else:
                changes = []
                stamp = _ts(self.now)
                for item_id, loc_id, qty in planned:
                    rec = self.inventory.get((item_id, loc_id)) or {
                        "inventory_item_id": item_id,
                        "location_id": loc_id,
                        "sku": self._by_inventory_item[item_id].sku,
                        "available": None,
                        "updated_at": stamp,
                    }
                    before = rec.get(name) or 0
                    rec = {**rec, name: qty, "updated_at": stamp}
                    self.inventory[(item_id, loc_id)] = rec
                    self.inventory_sets.append(rec)
                    if qty != before:
                        changes.append(
                            {
                                "name": name,
                                "delta": qty - before,
                                "quantityAfterChange": qty,
                                "item": {"id": f"gid://shopify/InventoryItem/{item_id}"},
                                "location": {"id": f"gid://shopify/Location/{loc_id}"},
                            }
                        )
                self._adjustment_seq += 1
                payload = {
                    "inventoryAdjustmentGroup": {
                        "id": f"gid://shopify/InventoryAdjustmentGroup/{self._adjustment_seq}",
                        "createdAt": stamp,
                        "reason": reason,
                        "referenceDocumentUri": data.get("referenceDocumentUri"),
                        "changes": changes,
                    },
                    "userErrors": [],
                }
        return JSONResponse(
            {
                "data": {"inventorySetQuantities": payload},
                "extensions": {"cost": self._cost(MUTATION_COST, MUTATION_COST)},
            }
        )

    async def list_inventory(self, request: Request, faults: FaultSet) -> Response:
        """``inventory_levels.json?inventory_item_ids=&location_ids=`` (one of them required) and
        ``locations/{id}/inventory_levels.json``: the levels set so far, by location then item, ``limit``
        (50, ≤ 250) with ``Link`` cursor pages."""
        self._check_version(request)
        params = request.query_params
        limit, fields, cursor = self._page_request(params)
        if cursor is not None:
            filters = cursor["f"]
        else:
            filters = {
                "items": self._ids_param(params, "inventory_item_ids") or [],
                "locations": self._ids_param(params, "location_ids") or [],
            }
            if "location_id" in request.path_params:
                if request.path_params["location_id"] not in BY_SHOPIFY_LOCATION:
                    raise _errors(404, "Not Found")
                filters["locations"] = [request.path_params["location_id"]]
            if not filters["items"] and not filters["locations"]:
                raise _errors(422, "inventory_item_ids or location_ids is required")
        items, locations = set(filters["items"]), set(filters["locations"])

        def key(pair: tuple[int, int]) -> int:  # one sortable int per (location, item): the cursor's anchor
            return pair[0] * 10**15 + pair[1]

        with self.lock:
            pairs = sorted(
                (loc, item)
                for (item, loc) in self.inventory
                if (not items or item in items) and (not locations or loc in locations)
            )
            page, has_next, has_prev = self._window(pairs, key, cursor, "asc", limit)
            levels = [self._level(item, loc) for loc, item in page]
        if fields:
            levels = [{k: v for k, v in r.items() if k in fields} for r in levels]
        headers = self._link(
            request, page, key, has_next=has_next, has_prev=has_prev, limit=limit, fields=fields,
            filters=filters, order="asc",
        )  # fmt: skip
        return JSONResponse({"inventory_levels": levels}, headers=headers)

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
