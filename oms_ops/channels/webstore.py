"""Own web store in the Shopify Admin REST shape: orders in (``orders.json`` + webhooks), stock out
(GraphQL ``inventorySetQuantities``).

Feed: windows of ``updated_at``. A run fixes its window first — ``updated_at_min`` = the persisted watermark,
``updated_at_max`` = the newest order's time as the store reports it (a probe of one order) — so the set of
orders it pages through (``status=any``, ``Link: rel="next"`` with opaque ``page_info``) cannot change under it:
any later change has a later ``updated_at`` and falls into the next window. The watermark moves to the
window's end only when the window is complete; meanwhile each page is stored together with the ``page_info``
of the next page, so a run after a crash resumes at the first page it did not store (a rejected, stale
``page_info`` restarts the window, re-fetching — duplicates are no-ops). Both bounds are inclusive, so an
order updated exactly at the boundary is read twice, never missed.

Webhooks (``orders/create``, ``orders/cancelled``) land in the same raw table through
:mod:`oms_ops.channels.webhooks` (signatures checked by
:func:`verify_signature`); polling and webhooks dedupe against each other by payload.

Discovery (:func:`discover`): the account's locations (``locations.json``) and its variants (``products.json``,
followed through its ``Link`` pages: variant ``sku`` = the seller's article, ``barcode``, ``inventory_item_id``).

API version 2024-10, as the official ``ShopifyAPI`` library speaks it (``tests/contract/test_shopify_contract.py``
drives that library and this connector against the simulator). Headers are read case-insensitively (httpx).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qs, urlsplit

import psycopg
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, model_validator

from oms_ops.channels import fastcheck as fc
from oms_ops.channels.ats import AtsItem, Outcome, PushResult
from oms_ops.channels.base import (
    AtsPush,
    Channel,
    Discovery,
    ExternalListing,
    ExternalLocation,
    Float,
    IngestResult,
    Int,
    Mapped,
    MappingContext,
    PageHook,
    delivery_fields,
    normalize_phone,
)
from oms_ops.channels.normalize import normalize_pending
from oms_ops.channels.rawstore import fetch_ahead, iso, parse_time, split_by_id, store_polled_page
from oms_ops.connectors.http import ApiClient, ApiError, ConnectorError, RetryPolicy
from oms_ops.connectors.state import get_cursor, record_success
from oms_ops.wire.shopify import verify_shopify_hmac

CODE = "webstore"
CURSOR = "webstore:orders"
PAGE_LIMIT = 250  # Shopify maximum
COD_METHODS = frozenset({"cash_on_delivery", "card_on_delivery"})
_LINK = re.compile(r'<([^>]+)>\s*;\s*rel="?([a-z]+)"?')


class ShopifyClient(ApiClient):
    api = "Shopify Admin API"

    def __init__(
        self,
        base_url: str,
        access_token: str,
        *,
        api_version: str = "2024-10",
        policy: RetryPolicy | None = None,
        rate: float | None = 2.0,
        burst: float = 40.0,
        **kw: Any,
    ):
        super().__init__(
            base_url,
            headers={"X-Shopify-Access-Token": access_token},
            policy=policy,
            rate=rate,
            burst=burst,
            **kw,
        )
        self.api_version = api_version

    @classmethod
    def from_endpoint(cls, ep, **kw) -> ShopifyClient:
        return cls(ep.base_url, ep.get("access_token"), api_version=ep.get("api_version", "2024-10"), **kw)

    def _path(self, name: str) -> str:
        return f"/admin/api/{self.api_version}/{name}"

    def _page(self, name: str, root: str, params: dict[str, Any]) -> tuple[list[dict], str | None]:
        """One page of a ``Link``-paged list and the ``page_info`` of the next page (None on the last).
        ``r.headers`` is httpx's case-insensitive mapping: ``Link`` and ``link`` are the same header."""
        r = self.request("GET", self._path(name), params=params)
        return r.json().get(root) or [], next_page_info(r.headers.get("Link"))

    def _all_pages(self, name: str, root: str, params: dict[str, Any]):
        """Every record of a ``Link``-paged list: the first call with ``params``, the next ones with only
        ``page_info`` and ``limit`` (Shopify refuses other filters next to a ``page_info``)."""
        records, info = self._page(name, root, params)
        yield from records
        while info:
            records, info = self._page(name, root, {"page_info": info, "limit": params.get("limit", 50)})
            yield from records

    def orders_page(self, params: dict[str, Any]) -> tuple[list[dict], str | None]:
        """One page of orders and the ``page_info`` of the next page (None on the last)."""
        return self._page("orders.json", "orders", params)

    def locations(self) -> list[dict]:
        """The account's locations (``locations.json``: one call, Shopify does not page it)."""
        return self.request("GET", self._path("locations.json")).json().get("locations") or []

    def products(self, limit: int = PAGE_LIMIT):
        """Every product with its variants (``products.json``, ``Link`` pages), as an iterator."""
        return self._all_pages("products.json", "products", {"limit": limit})

    def variant(self, variant_id: int) -> dict:
        """One variant (``variants/{id}.json``): how a variant id is resolved to its ``inventory_item_id``."""
        return self.request("GET", self._path(f"variants/{int(variant_id)}.json")).json()["variant"]

    def returns_page(self, since_id: int, limit: int = PAGE_LIMIT) -> list[dict]:
        """Customers' return requests with an id above ``since_id``, ascending (Shopify's ``Return``)."""
        r = self.request("GET", self._path("returns.json"), params={"since_id": since_id, "limit": limit})
        return r.json().get("returns") or []

    def set_inventory(self, *, inventory_item_id: int, location_id: int, available: int) -> dict:
        """Absolute ``available`` (safe to replay); returns Shopify's ``inventory_level``."""
        body = {"location_id": location_id, "inventory_item_id": inventory_item_id, "available": available}
        return self.request(
            "POST", self._path("inventory_levels/set.json"), json=body, idempotent=True
        ).json()["inventory_level"]

    def set_available(self, quantities: list[tuple[int, int, int]]) -> dict:
        """Absolute ``available`` for up to 250 ``(inventory item, location, quantity)`` in one GraphQL
        ``inventorySetQuantities`` call (REST takes one value per call at 2 calls/s: a sale that moves 30
        values would take 15 s). The OMS is the source of truth for what the store may sell, so the
        compare-and-set check is opted out of (``ignoreCompareQuantity`` before 2026-04, an explicit null
        ``changeFromQuantity`` from 2026-04). Safe to replay: the values are absolute.

        Returns ``{"payload": inventorySetQuantities, "cost": extensions.cost}``; a call the store throttled
        (cost bucket empty) is waited for as the answer's ``throttleStatus`` says and sent again, at most
        3 times; other top-level GraphQL errors raise :class:`ApiError`."""
        change_from = self.api_version >= "2026-04"
        entries = []
        for item, location, qty in quantities:
            q = {
                "inventoryItemId": f"gid://shopify/InventoryItem/{int(item)}",
                "locationId": f"gid://shopify/Location/{int(location)}",
                "quantity": int(qty),
            }
            if change_from:
                q["changeFromQuantity"] = None
            entries.append(q)
        data: dict[str, Any] = {"name": "available", "reason": "correction", "quantities": entries}
        if not change_from:
            data["ignoreCompareQuantity"] = True
        body = {"query": SET_QUANTITIES_MUTATION, "variables": {"input": data}}
        call = f"POST {self._path('graphql.json')} inventorySetQuantities"
        for attempt in range(1, 4):
            answer = self.request("POST", self._path("graphql.json"), json=body, idempotent=True).json()
            errors = answer.get("errors") if isinstance(answer, dict) else None
            cost = (answer.get("extensions") or {}).get("cost") or {} if isinstance(answer, dict) else {}
            if not errors:
                payload = (
                    ((answer.get("data") or {}).get("inventorySetQuantities"))
                    if isinstance(answer, dict)
                    else None
                )
                if not isinstance(payload, dict):
                    raise ApiError(
                        self.api, call, f"no inventorySetQuantities in the answer: {str(answer)[:300]}"
                    )
                return {"payload": payload, "cost": cost}
            throttled = any(((e or {}).get("extensions") or {}).get("code") == "THROTTLED" for e in errors)
            if not throttled:
                raise ApiError(self.api, call, "; ".join(str((e or {}).get("message")) for e in errors)[:500])
            status = cost.get("throttleStatus") or {}
            short = float(cost.get("requestedQueryCost") or 10) - float(status.get("currentlyAvailable") or 0)
            wait = min(max(short, 1.0) / float(status.get("restoreRate") or 50.0), 5.0)
            if attempt < 3:
                self.policy.sleep(wait)
        raise ConnectorError(self.api, call, "throttled (cost bucket empty)", attempts=3)


def next_page_info(link: str | None) -> str | None:
    """``page_info`` of the ``rel="next"`` URL of a Link header."""
    if not link:
        return None
    for url, rel in _LINK.findall(link):
        if rel == "next":
            values = parse_qs(urlsplit(url).query).get("page_info")
            return values[0] if values else None
    return None


def ingest_webstore(
    conn: psycopg.Connection,
    client: ShopifyClient,
    *,
    page_limit: int = PAGE_LIMIT,
    max_pages: int | None = None,
    initial_since: datetime | None = None,
    normalize: bool = True,
    on_fetched: PageHook | None = None,
    before_commit=None,
) -> IngestResult:
    res = IngestResult(CODE)
    state = get_cursor(conn, CURSOR) or {}
    watermark = parse_time(state.get("watermark")) or initial_since or datetime.now(UTC) - timedelta(days=30)
    run = state.get("run") or None
    if run is None:
        newest, _ = client.orders_page({"status": "any", "limit": 1})
        until = watermark
        for o in newest:
            for key in ("updated_at", "created_at"):
                t = parse_time(o.get(key))
                if t is not None and t > until:
                    until = t
        run = {"until": iso(until), "page_info": None}
    until = parse_time(run["until"]) or watermark
    page_info = run.get("page_info")
    first = {
        "status": "any",
        "limit": page_limit,
        "updated_at_min": iso(watermark),
        "updated_at_max": iso(until),
    }
    done = False

    def page(info: str | None):
        return client.orders_page({"page_info": info, "limit": page_limit} if info else first)

    with fetch_ahead() as ahead:
        fut = ahead.submit(page, page_info) if max_pages is None or max_pages > 0 else None
        while fut is not None:
            try:
                orders, nxt = fut.result()
            except ApiError as exc:
                if (
                    page_info and exc.status == 400
                ):  # stale page_info: restart the window (re-fetch, never skip)
                    res.notes.append(f"page_info refused ({exc.cause}); window restarted")
                    page_info = None
                    fut = ahead.submit(page, None)
                    continue
                raise
            fut = None
            res.pages += 1
            if nxt and (max_pages is None or res.pages < max_pages):
                fut = ahead.submit(page, nxt)
            res.fetched += len(orders)
            items, rejects = split_by_id(orders, "id")
            if on_fetched:
                on_fetched(res.pages, orders)
            if nxt:
                cursor = {"watermark": iso(watermark), "run": {"until": iso(until), "page_info": nxt}}
            else:
                cursor = {"watermark": iso(until), "run": None}
            store_polled_page(
                conn,
                CHANNEL,
                items,
                rejects,
                res,
                cursor_name=CURSOR,
                cursor_value=cursor,
                normalize=normalize,
                before_commit=before_commit,
            )
            if not nxt:
                done = True
                break
            page_info = nxt
    res.cursor = {"watermark": iso(until if done else watermark), "complete": done}
    record_success(conn, CODE, res.fetched)
    if normalize:
        res.normalized.add(normalize_pending(conn, CHANNEL))
    return res


# -- mapping --------------------------------------------------------------------------------------------------
class _M(BaseModel):
    model_config = ConfigDict(extra="ignore")


class _DiscountAllocation(_M):
    amount: Decimal = Field(ge=0)


class _LineItem(_M):
    sku: str = Field(min_length=1)
    quantity: Int = Field(gt=0)
    #: the quantity left after order edits and refunds (Shopify 2023-01+); absent in older payloads
    current_quantity: Int | None = Field(default=None, ge=0)
    price: Decimal = Field(ge=0)  # the unit price before discounts
    #: the line's share of each discount application (the discount code's money lands here, not in ``price``)
    discount_allocations: list[_DiscountAllocation] = []
    name: str | None = None

    @model_validator(mode="after")
    def _current_within_ordered(self) -> _LineItem:
        if self.current_quantity is not None and self.current_quantity > self.quantity:
            raise ValueError("current_quantity is more than quantity")
        return self


class _Address(_M):
    address1: str | None = None
    city: str | None = None
    province: str | None = None
    latitude: Float | None = None
    longitude: Float | None = None
    phone: str | None = None
    first_name: str | None = None
    last_name: str | None = None


class _Customer(_M):
    first_name: str | None = None
    last_name: str | None = None
    phone: str | None = None
    email: str | None = None


class _Money(_M):
    amount: Decimal


class _MoneySet(_M):
    shop_money: _Money


class _ShippingLine(_M):
    code: str | None = None
    title: str | None = None


class _Attr(_M):
    name: str
    value: Any = None


class _Order(_M):
    id: Int
    name: str | None = None
    created_at: AwareDatetime
    cancelled_at: AwareDatetime | None = None
    currency: str = "RUB"
    total_price: Decimal | None = None
    #: the total after order edits and refunds (Shopify 2023-01+); absent in older payloads
    current_total_price: Decimal | None = None
    financial_status: str | None = None
    email: str | None = None
    phone: str | None = None
    customer: _Customer | None = None
    shipping_address: _Address | None = None
    billing_address: _Address | None = None
    line_items: list[_LineItem] = Field(min_length=1)
    shipping_lines: list[_ShippingLine] = []
    total_shipping_price_set: _MoneySet | None = None
    note_attributes: list[_Attr] = []


_CENT = Decimal("0.01")


def unit_price(price: Decimal, quantity: int, discount: Decimal) -> Decimal:
    """What one unit of a line item was sold for: Shopify's ``price`` is before discounts, the line's
    ``discount_allocations`` carry its share of the discount codes; the difference per unit, to the kopeck
    (refunds of returned units are paid at this price). Shared by both mappers, so they round alike."""
    if not discount:
        return price
    return ((price * quantity - discount) / quantity).quantize(_CENT)


def map_order(payload: dict, ctx: MappingContext) -> Mapped:
    """A Shopify order → a ``NormalizedOrder`` mapping, in Shopify's own terms: each line's units are its
    ``current_quantity`` (what is left after edits and refunds; ``quantity`` when absent) at the discounted
    unit price (:func:`unit_price`), the order total is ``current_total_price`` (``total_price`` when absent),
    shipping is ``total_shipping_price_set``. Lines with nothing left are dropped; an order that is not
    cancelled yet has nothing left is quarantined with the reason."""
    o = _Order.model_validate(payload)
    lines = []
    for li in o.line_items:
        qty = li.quantity if li.current_quantity is None else li.current_quantity
        if qty:
            discount = sum((a.amount for a in li.discount_allocations), Decimal(0))
            price = unit_price(li.price, li.quantity, discount)
            lines.append({"sku": li.sku.strip(), "qty": qty, "unit_price": price, "name": li.name})
    cancelled = o.cancelled_at is not None
    if not lines and not cancelled:
        return Mapped(
            str(o.id), error="line_items: current_quantity is 0 on every line: nothing left to ship"
        )
    attrs = {a.name: a.value for a in o.note_attributes}
    method = (o.shipping_lines[0].code if o.shipping_lines else None) or "courier"
    if method not in ("courier", "pickup_point", "store_pickup"):
        method = "courier"
    addr = o.shipping_address or o.billing_address or _Address()
    c = o.customer or _Customer()
    name = " ".join(x for x in (c.first_name or addr.first_name, c.last_name or addr.last_name) if x) or None
    payment = str(attrs.get("payment_method") or "")
    for attr in ("pickup_point_code", "store_code"):
        if attrs.get(attr) is not None and not isinstance(attrs[attr], str):
            return Mapped(
                str(o.id),
                error=f"note_attributes {attr}: expected a string, got {type(attrs[attr]).__name__}",
            )
    order: dict[str, Any] = {
        "channel_code": CODE,
        "external_id": str(o.id),
        "channel_order_number": o.name,
        "placed_at": o.created_at,
        "customer_name": name,
        "customer_phone": normalize_phone(o.phone or c.phone or addr.phone),
        "customer_email": o.email or c.email,
        "region": addr.province,
        "city": addr.city,
        "address": addr.address1,
        "lat": addr.latitude,
        "lon": addr.longitude,
        "payment_method": "cod" if payment in COD_METHODS else "prepaid",
        "payment_status": "paid"
        if o.financial_status in ("paid", "refunded", "partially_refunded")
        else "pending",
        "currency": o.currency,
        "shipping_amount": o.total_shipping_price_set.shop_money.amount if o.total_shipping_price_set else 0,
        "lines": lines,
        **delivery_fields(
            ctx,
            method,
            pickup_point_code=attrs.get("pickup_point_code"),
            store_code=attrs.get("store_code"),
            address=addr.address1,
        ),
    }
    total = o.current_total_price if o.current_total_price is not None else o.total_price
    if total is not None:
        order["total_amount"] = total
    if order.get("address") is None:
        order["address"] = addr.address1
    return Mapped(str(o.id), order, cancelled=cancelled)


_ADDRESS_TEXT = ("address1", "city", "province", "phone", "first_name", "last_name")
_CUSTOMER_TEXT = ("first_name", "last_name", "phone", "email")


def _fast_address(v: Any) -> dict | None:
    if v is None:
        return None
    a = fc.required_mapping(v)
    for k in _ADDRESS_TEXT:
        fc.optional_str(a.get(k))
    fc.optional_number(a.get("latitude"))
    fc.optional_number(a.get("longitude"))
    return a


def fast_order(payload: Any, ctx: MappingContext, raw_id: int | None) -> tuple[str, bool, Any]:
    """``map_order`` + ``NormalizedOrder`` for the plain payloads (see ``fastcheck``); raises
    ``fastcheck.Unsure`` for anything the pydantic path must decide."""
    o = fc.required_mapping(payload)
    oid = str(fc.integer(o.get("id")))
    number = fc.text(o.get("name"))
    created = fc.timestamp(o.get("created_at"))
    cancelled = fc.optional_timestamp(o.get("cancelled_at")) is not None
    currency = fc.any_text(o.get("currency", "RUB"))
    total = None if o.get("total_price") is None else fc.money(o["total_price"])
    if o.get("current_total_price") is not None:
        total = fc.money(o["current_total_price"])
    financial = fc.optional_str(o.get("financial_status"))
    email, phone = fc.optional_str(o.get("email")), fc.optional_str(o.get("phone"))
    c = fc.mapping(o.get("customer"))
    for k in _CUSTOMER_TEXT:
        fc.optional_str(c.get(k))
    shipping_address = _fast_address(o.get("shipping_address"))
    billing_address = _fast_address(o.get("billing_address"))
    lines = []
    for li in fc.items(o.get("line_items"), required=True):
        li = fc.required_mapping(li)
        sku, quantity = fc.required_text(li.get("sku")), fc.quantity(li.get("quantity"))
        price, name = fc.money(li.get("price")), fc.text(li.get("name"))
        qty = fc.optional_integer(li.get("current_quantity"))
        if qty is None:
            qty = quantity
        elif not 0 <= qty <= quantity:
            raise fc.Unsure
        discount = _ZERO
        for a in fc.items(li.get("discount_allocations", [])):
            discount += fc.money(fc.required_mapping(a).get("amount"))
        price = unit_price(price, quantity, discount)
        if price < 0:
            raise fc.Unsure
        if qty:
            lines.append((sku, qty, price, name))
    shipping_lines = fc.items(o.get("shipping_lines", []))
    if not lines and not cancelled:
        raise fc.Unsure  # nothing left to ship: the pydantic path says why
    for sl in shipping_lines:
        sl = fc.required_mapping(sl)
        fc.optional_str(sl.get("code"))
        fc.optional_str(sl.get("title"))
    shipping = _ZERO_SHIPPING
    if o.get("total_shipping_price_set") is not None:
        money_set = fc.required_mapping(o["total_shipping_price_set"])
        shipping = fc.money(fc.required_mapping(money_set.get("shop_money")).get("amount"))
    attrs = {}
    for at in fc.items(o.get("note_attributes", [])):
        at = fc.required_mapping(at)
        attrs[fc.any_text(at.get("name"))] = at.get("value")
    method = (shipping_lines[0].get("code") if shipping_lines else None) or "courier"
    if method not in ("courier", "pickup_point", "store_pickup"):
        method = "courier"
    addr = (
        shipping_address
        if shipping_address is not None
        else billing_address
        if billing_address is not None
        else {}
    )
    name = (
        " ".join(
            x
            for x in (
                c.get("first_name") or addr.get("first_name"),
                c.get("last_name") or addr.get("last_name"),
            )
            if x
        )
        or None
    )
    payment = str(attrs.get("payment_method") or "")
    pickup_code, store_code = attrs.get("pickup_point_code"), attrs.get("store_code")
    fc.optional_str(pickup_code)
    fc.optional_str(store_code)
    delivery = delivery_fields(
        ctx, method, pickup_point_code=pickup_code, store_code=store_code, address=addr.get("address1")
    )
    if method == "store_pickup" and not (ctx.location("pos", store_code) or ctx.location("wms", store_code)):
        raise fc.Unsure  # a store the mapping does not know: acceptance says why
    order = fc.validated_order(
        lines,
        channel_code=CODE,
        external_id=oid,
        channel_order_number=number,
        placed_at=created,
        customer_name=fc.text(name),
        customer_phone=fc.text(normalize_phone(phone or c.get("phone") or addr.get("phone"))),
        customer_email=fc.text(email or c.get("email")),
        region=fc.text(addr.get("province")),
        city=fc.text(addr.get("city")),
        address=fc.text(delivery.get("address", addr.get("address1"))),
        lat=fc.optional_number(addr.get("latitude")),
        lon=fc.optional_number(addr.get("longitude")),
        payment_method="cod" if payment in COD_METHODS else "prepaid",
        payment_status="paid" if financial in ("paid", "refunded", "partially_refunded") else "pending",
        currency=currency,
        shipping_amount=shipping,
        total_amount=total,
        delivery_method=delivery["delivery_method"],
        pickup_location_code=delivery.get("pickup_location_code"),
        raw_id=raw_id,
    )
    return oid, cancelled, order


_ZERO_SHIPPING = _ZERO = Decimal("0")


def verify_signature(body: bytes, header: str | None, secret: str) -> bool:
    """A webhook's ``X-Shopify-Hmac-SHA256``: HMAC-SHA256 of the raw body, base64, compared in constant time."""
    return verify_shopify_hmac(body, header, secret)


# -- stock out ------------------------------------------------------------------------------------------------
#: ``inventorySetQuantities`` takes at most this many quantities per call
SET_QUANTITIES_MAX = 250
SET_QUANTITIES_MUTATION = """
mutation SetAvailable($input: InventorySetQuantitiesInput!) {
  inventorySetQuantities(input: $input) {
    inventoryAdjustmentGroup { id reason changes { name delta quantityAfterChange item { id } location { id } } }
    userErrors { field message code }
  }
}
""".strip()


def push_stock(client: ShopifyClient, items: list[AtsItem], res: PushResult) -> list[Outcome]:
    """ATS through GraphQL ``inventorySetQuantities``: up to 250 values per call, all or nothing per call.

    Proof per value: a ``changes`` entry whose ``quantityAfterChange`` is the value sent (verified); a value
    the store already held has no change entry (``unverified``: accepted, nothing to compare). A call
    answered with ``userErrors`` applied nothing: the values its errors name are ``failed`` with the
    store's message, the others are sent again in a second call without them."""
    out: list[Outcome] = []
    ready = []
    for it in items:
        if it.inventory_item_id is None:  # stock is kept by inventory item: nothing to send it to
            reason = f"no inventory_item_id for {it.sku} (discovery has not read its variant yet)"
            res.errors.append(reason)
            out.append((it, "failed", False, reason))
        else:
            ready.append(it)
    for start in range(0, len(ready), SET_QUANTITIES_MAX):
        batch = ready[start : start + SET_QUANTITIES_MAX]
        for _ in range(2):  # a refused call applied nothing: once more without the values it named
            res.requests += 1
            res.batch_sizes.append(len(batch))
            try:
                answer = client.set_available(
                    [(int(it.inventory_item_id), int(it.external_location), it.qty) for it in batch]
                )
            except ConnectorError as exc:
                res.errors.append(str(exc))
                out += [(it, "failed", False, str(exc)[:500]) for it in batch]
                break
            payload = answer["payload"]
            refused = _refused_positions(payload.get("userErrors") or [], len(batch))
            if refused:
                for pos, message in sorted(refused.items()):
                    res.errors.append(f"{batch[pos].sku}@{batch[pos].location}: {message}")
                    out.append((batch[pos], "failed", False, message[:500]))
                batch = [it for pos, it in enumerate(batch) if pos not in refused]
                if batch:
                    continue
                break
            if payload.get("userErrors"):  # errors naming no quantity: nothing was applied
                message = "; ".join(str(e.get("message")) for e in payload["userErrors"])[:500]
                res.errors.append(message)
                out += [(it, "failed", False, message) for it in batch]
                break
            after = {
                (
                    str((c.get("item") or {}).get("id", "")).rsplit("/", 1)[-1],
                    str((c.get("location") or {}).get("id", "")).rsplit("/", 1)[-1],
                ): c.get("quantityAfterChange")
                for c in ((payload.get("inventoryAdjustmentGroup") or {}).get("changes") or [])
                if c.get("name") == "available"
            }
            for it in batch:
                got = after.get((str(int(it.inventory_item_id)), str(int(it.external_location))), _UNCHANGED)
                if got is _UNCHANGED:
                    out.append((it, "unverified", False, None))
                elif got == it.qty:
                    out.append((it, "pushed", True, None))
                else:
                    out.append((it, "failed", False, f"store answered {got!r}"))
            break
    return out


_UNCHANGED = object()


def _refused_positions(errors: list[dict], size: int) -> dict[int, str]:
    """``userErrors`` whose ``field`` is ``["input", "quantities", "<i>", …]`` → ``{i: message}``."""
    out: dict[int, str] = {}
    for e in errors:
        field_path = e.get("field") or []
        if len(field_path) >= 3 and field_path[1] == "quantities" and str(field_path[2]).isdigit():
            pos = int(field_path[2])
            if pos < size:
                out[pos] = f"{e.get('code') or 'refused'}: {e.get('message')}"
    return out


# -- customers' return requests ----------------------------------------------------------------------------------
RETURNS_CURSOR = "webstore:returns"
#: Shopify's return reasons → the OMS's (oms.return_reasons)
RETURN_REASONS = {
    "unwanted": "changed_mind",
    "style": "changed_mind",
    "color": "changed_mind",
    "size_too_small": "size_fit",
    "size_too_large": "size_fit",
    "defective": "defective",
    "not_as_described": "not_as_described",
    "wrong_item": "wrong_item",
    "other": "other",
}


@dataclass(frozen=True)
class ReturnAsk:
    """One customer return request in the OMS's terms: which order, which SKUs and units, why."""

    request_id: str
    order_external_id: str
    lines: tuple[tuple[str, int, str, str | None], ...]  # (sku, qty, reason code, customer note)
    exchange: bool
    note: str | None


def map_return(payload: Any) -> ReturnAsk:
    """A Shopify ``Return`` (request) → :class:`ReturnAsk`; ``ValueError`` naming the field that is wrong."""
    if not isinstance(payload, dict) or payload.get("id") in (None, ""):
        raise ValueError("return request without id")
    order = payload.get("order") or {}
    if order.get("id") in (None, ""):
        raise ValueError("order.id: missing")
    lines = []
    for i, item in enumerate(payload.get("return_line_items") or []):
        li = ((item or {}).get("fulfillment_line_item") or {}).get("line_item") or {}
        sku, qty = li.get("sku"), item.get("quantity")
        if not isinstance(sku, str) or not sku.strip():
            raise ValueError(f"return_line_items[{i}].fulfillment_line_item.line_item.sku: missing")
        if isinstance(qty, bool) or not isinstance(qty, int) or not 0 < qty <= 10_000:
            raise ValueError(f"return_line_items[{i}].quantity: {qty!r} is not a quantity")
        reason = RETURN_REASONS.get(str(item.get("return_reason")), "other")
        lines.append(
            (
                sku.strip(),
                qty,
                reason,
                fc.text(item.get("customer_note")) if item.get("customer_note") else None,
            )
        )
    if not lines:
        raise ValueError("return_line_items: empty")
    return ReturnAsk(
        str(payload["id"]),
        str(order["id"]),
        tuple(lines),
        bool(payload.get("exchange_line_items")),
        fc.text(payload.get("name")) if isinstance(payload.get("name"), str) else None,
    )


def return_asks(conn: psycopg.Connection, client: ShopifyClient) -> tuple[list[tuple[int, Any]], int]:
    """New return requests since the stored cursor: ``([(request id, payload)], cursor)``; the caller applies
    them and then stores the cursor (``connectors.cursors``, ``webstore:returns``) in the same transaction."""
    since = int((get_cursor(conn, RETURNS_CURSOR) or {}).get("since_id") or 0)
    page = client.returns_page(since)
    return [(int(r["id"]), r) for r in page if isinstance(r, dict) and isinstance(r.get("id"), int)], since


# -- discovery ----------------------------------------------------------------------------------------------------
def _text(value: Any) -> str | None:
    """A stripped, non-empty string, or None (missing, blank or not a string)."""
    if not isinstance(value, str):
        return None
    return value.strip() or None


def discover(client: ShopifyClient) -> Discovery:
    """The account's locations and sellable variants, through Shopify's own endpoints.

    Locations: ``locations.json`` (id, name, city, street address, ``active``; Shopify does not say warehouse
    or store, so ``kind`` stays None). Listings: every variant of every product (``products.json``, all
    ``Link`` pages): the variant ``sku`` is the seller's article the OMS matches on, ``barcode`` the
    fallback, ``inventory_item_id`` the key stock is pushed by; a variant served without it (a trimmed
    ``fields`` list, an older API version) is resolved through ``variants/{id}.json``.
    """
    locations = []
    for loc in client.locations():
        street = [x for x in (_text(loc.get("address1")), _text(loc.get("address2"))) if x]
        locations.append(
            ExternalLocation(
                external_id=str(loc["id"]),
                name=_text(loc.get("name")) or str(loc["id"]),
                city=_text(loc.get("city")),
                address=", ".join(street) or None,
                active=loc.get("active") is not False,
            )
        )
    listings = []
    for product in client.products():
        title = _text(product.get("title"))
        for v in product.get("variants") or []:
            item = v.get("inventory_item_id")
            if item is None:
                item = client.variant(v["id"]).get("inventory_item_id")
            variant_title = _text(v.get("title"))
            name = title if variant_title in (None, "Default Title") else f"{title} — {variant_title}"
            listings.append(
                ExternalListing(
                    article=_text(v.get("sku")),
                    barcode=_text(v.get("barcode")),
                    product_id=int(product["id"]),
                    variant_id=int(v["id"]),
                    inventory_item_id=None if item is None else int(item),
                    name=name,
                )
            )
    return Discovery(locations=locations, listings=listings)


def _listing(p) -> tuple | None:
    return (
        None,
        p["shopify_product_id"],
        None,
        None,
        p["shopify_variant_id"],
        p["shopify_inventory_item_id"],
        p["barcode"],
    )


CHANNEL = Channel(
    code=CODE,
    title="Web store (Shopify REST)",
    system="shopify",
    env={
        "base_url": "OMS_SHOPIFY_URL",
        "access_token": "OMS_SHOPIFY_ACCESS_TOKEN",
        "api_version": "OMS_SHOPIFY_API_VERSION",
        "webhook_secret": "OMS_SHOPIFY_WEBHOOK_SECRET",
    },
    secrets=frozenset({"access_token", "webhook_secret"}),
    client=ShopifyClient.from_endpoint,
    poll=ingest_webstore,
    feed="Web store (Shopify REST) orders by updated_at window with Link paging, plus webhook deliveries "
    "already stored by the receiver → orders.",
    mapper=map_order,
    fast_mapper=fast_order,
    # GraphQL inventorySetQuantities: 250 values per call, so no per-run cap
    ats=AtsPush(push_stock),
    listing=_listing,
    network_key="shopify_location_id",
    start_cursor=lambda since: (CURSOR, {"watermark": since.isoformat(), "run": None}),
    returns_feed=return_asks,
    map_return=map_return,
    discover=discover,
)
