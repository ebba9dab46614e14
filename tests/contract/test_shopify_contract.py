"""Contract: the official ``ShopifyAPI`` library (pyactiveresource over urllib) against the web store simulator,
and our connector's requests and readings against the library's.

The library is pointed at the simulator through its supported ``ShopifyResource.site`` attribute after
``activate_session`` (it would call ``https://<shop>.myshopify.com/admin/api/<version>``); the package is never
edited, and the session is cleared in teardown. Covered: ``orders.json`` (``Link`` paging with the library's
``has_next_page`` / ``next_page``, ``fields``), ``orders/{id}.json``, ``orders/count.json``, ``locations.json``,
``locations/{id}.json``, ``locations/count.json``, ``locations/{id}/inventory_levels.json``, ``products.json``
(paged), ``products/{id}.json``, ``products/count.json``, ``variants/{id}.json``, ``inventory_levels/set.json``, ``graphql.json`` (``inventorySetQuantities``
through the library's ``GraphQL`` client),
``inventory_levels.json`` (paged), the ``X-Shopify-Shop-Api-Call-Limit`` header (``shopify.Limits``), and the
401 / 404 / 400 / 429 error bodies. The returns endpoints are not here: the library has no ``Return`` resource
(Shopify serves returns through GraphQL only). Nor has it a webhook verifier (``Session.validate_hmac`` checks
OAuth redirect parameters, a hex digest of sorted query parameters): webhook signatures are checked against
Shopify's documented algorithm instead.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import http.server
import json
import re
import threading
from collections.abc import Iterator
from decimal import Decimal
from urllib.parse import urlsplit

import httpx
import pytest
import shopify
from pyactiveresource.connection import BadRequest, ClientError, ResourceNotFound, UnauthorizedAccess
from shopify.collection import PaginatedCollection
from shopify.resources import graphql as shopify_graphql

from oms_ops.channels import webstore
from oms_ops.channels.ats import AtsItem, PushResult
from oms_ops.channels.base import MappingContext
from simulators import SimulatorStack
from simulators.network import BY_SHOPIFY_LOCATION, LOCATION_BY_CODE

API_VERSION = "2024-10"
CALL_LIMIT = "X-Shopify-Shop-Api-Call-Limit"


def _activate(stack: SimulatorStack) -> None:
    creds = stack.credentials["shopify"]
    assert creds["api_version"] == API_VERSION
    shopify.ShopifyResource.activate_session(
        shopify.Session(creds["shop_domain"], creds["api_version"], creds["access_token"])
    )
    assert shopify.ShopifyResource.site == f"https://{creds['shop_domain']}/admin/api/{API_VERSION}"
    shopify.ShopifyResource.site = f"{stack.urls['shopify']}/admin/api/{API_VERSION}"


@pytest.fixture
def library() -> Iterator[None]:
    """Whatever a test activates, the library's global (thread-local) session is cleared afterwards."""
    try:
        yield
    finally:
        shopify.ShopifyResource.clear_session()


@pytest.fixture
def shop(make_stack, library) -> SimulatorStack:
    """45 simulated minutes of orders (~180: the library parses ~50 a second), the leaky bucket on (real time:
    a test makes far fewer than 40 calls)."""
    stack = make_stack(only=["shopify"], options={"shopify": {"rate_limit": True}})
    stack.advance(45 * 60)
    _activate(stack)
    return stack


def _client(stack: SimulatorStack, **kw) -> webstore.ShopifyClient:
    creds = stack.credentials["shopify"]
    return webstore.ShopifyClient(
        stack.urls["shopify"], creds["access_token"], api_version=creds["api_version"], rate=None, **kw
    )


def _headers() -> dict[str, str]:
    """The headers of the library's last response, as it holds them (a plain, case-sensitive dict)."""
    return shopify.ShopifyResource.connection.response.headers


def _money(money_set) -> Decimal:
    assert money_set.shop_money.currency_code == money_set.presentment_money.currency_code == "RUB"
    return Decimal(money_set.shop_money.amount)


def _check_order(o) -> None:
    """The library parsed the order into its resources, and its money adds up the way Shopify defines it."""
    assert isinstance(o, shopify.Order) and o.line_items
    assert all(isinstance(li, shopify.LineItem) for li in o.line_items)
    assert all(isinstance(t, shopify.TaxLine) for t in o.tax_lines)
    items = sum((Decimal(li.price) * li.quantity for li in o.line_items), Decimal(0))
    allocated = sum((Decimal(a.amount) for li in o.line_items for a in li.discount_allocations), Decimal(0))
    shipping = _money(o.total_shipping_price_set)
    assert Decimal(o.total_line_items_price) == _money(o.total_line_items_price_set) == items
    assert Decimal(o.total_discounts) == _money(o.total_discounts_set) == allocated
    assert sum((Decimal(d.amount) for d in o.discount_codes), Decimal(0)) == allocated
    assert Decimal(o.subtotal_price) == _money(o.subtotal_price_set) == items - allocated
    assert Decimal(o.total_price) == _money(o.total_price_set) == items - allocated + shipping  # VAT included
    assert Decimal(o.total_tax) == _money(o.total_tax_set) == sum(Decimal(t.price) for t in o.tax_lines)
    line_tax = sum((Decimal(t.price) for li in o.line_items for t in li.tax_lines), Decimal(0))
    assert Decimal(o.total_tax) == line_tax + sum(
        Decimal(t.price) for s in o.shipping_lines for t in s.tax_lines
    )
    for li in o.line_items:
        assert _money(li.price_set) == Decimal(li.price)
    if o.cancelled_at:
        (refund,) = o.refunds
        back = sum((Decimal(r.subtotal) for r in refund.refund_line_items), Decimal(0))
        back -= sum((Decimal(a.amount) for a in refund.order_adjustments), Decimal(0))  # negative amounts
        assert back == Decimal(o.total_price) and Decimal(o.current_total_price) == 0
    else:
        assert Decimal(o.current_total_price) == Decimal(o.total_price) and not o.refunds


# -- orders ------------------------------------------------------------------------------------------------------
def test_orders_page_count_and_errors_through_the_library(shop):
    rendered = shop["shopify"].rendered_orders()
    expected = sorted((o["id"] for o in rendered), reverse=True)
    assert len(expected) > 120

    page = shopify.Order.find(status="any", limit=50)
    assert re.fullmatch(r"\d+/40", _headers()[CALL_LIMIT]) and 'rel="next"' in _headers()["Link"]
    seen, pages = [], [page]
    while True:
        assert isinstance(page, PaginatedCollection)
        for o in page:
            _check_order(o)
        seen += [o.id for o in page]
        if not page.has_next_page():
            break
        page = page.next_page()
        pages.append(page)
    assert seen == expected and len(pages) == -(-len(expected) // 50)
    back = shopify.Order.find(from_=pages[-1].previous_page_url)  # the server's rel="previous" link
    assert [o.id for o in back] == [o.id for o in pages[-2]]
    assert any(o.discount_codes for p in pages for o in p) and any(o.cancelled_at for p in pages for o in p)

    assert shopify.Order.count(status="any") == len(expected)
    assert shopify.Order.count() == sum(1 for o in rendered if o["closed_at"] is None)  # status=open default
    single = shopify.Order.find(expected[3])
    assert single.id == expected[3] and single.to_dict() == next(
        o for o in rendered if o["id"] == expected[3]
    )
    trimmed = shopify.Order.find(status="any", limit=3, fields="id,name,total_price")
    assert [set(o.attributes) for o in trimmed] == [{"id", "name", "total_price"}] * 3
    assert shopify.Limits.credit_limit() == 40 and 0 < shopify.Limits.credit_used() <= 40

    with pytest.raises(ResourceNotFound) as missing:
        shopify.Order.find(1)
    assert json.loads(missing.value.response.body) == {"errors": "Not Found"}
    with pytest.raises(BadRequest) as bad:
        shopify.Order.find(from_=pages[0].next_page_url + "&status=any")
    assert json.loads(bad.value.response.body) == {
        "errors": {"status": "status cannot be passed when page_info is present."}
    }
    shopify.ShopifyResource.headers["X-Shopify-Access-Token"] = "shpat_wrong"
    with pytest.raises(UnauthorizedAccess) as denied:
        shopify.Order.count()
    assert "Invalid API key or access token" in json.loads(denied.value.response.body)["errors"]


def test_call_limit_and_429_as_the_library_reads_them(make_stack, library):
    clock = [1000.0]  # the bucket's protocol clock stands still: 40 calls fill it
    stack = make_stack(
        only=["shopify"], options={"shopify": {"rate_limit": True}}, protocol_time=lambda: clock[0]
    )
    _activate(stack)
    for n in range(1, 41):
        shopify.Order.count()
        assert _headers()[CALL_LIMIT] == f"{n}/40"
    assert shopify.Limits.credit_maxed() and shopify.Limits.credit_left() == 0
    with pytest.raises(ClientError) as full:
        shopify.Order.count()
    assert full.value.code == 429 and float(full.value.response.headers["Retry-After"]) > 0
    assert "Exceeded 2 calls per second" in json.loads(full.value.response.body)["errors"]
    clock[0] += 1.0  # leaks 2 calls a second
    shopify.Order.count()
    assert _headers()[CALL_LIMIT] == "39/40"


def test_connector_maps_orders_as_the_library_reads_them(shop):
    """The library's view of an order (``to_dict``) maps in the connector by Shopify's semantics: each unit at
    its price less its discount allocations, the total the current one; the fast mapper agrees exactly; and
    an order without the optional money fields (an older API version) still maps."""
    discounted = [
        o for o in shopify.Order.find(status="any", limit=80) if o.discount_codes and not o.cancelled_at
    ]
    assert discounted
    ctx = MappingContext(locations={"pos": {loc.code: loc.code for loc in LOCATION_BY_CODE.values()}})
    for o in discounted:
        payload = o.to_dict()
        mapped = webstore.map_order(payload, ctx)
        assert mapped.error is None and not mapped.cancelled
        for line, li in zip(mapped.order["lines"], o.line_items, strict=True):
            paid = Decimal(li.price) * li.quantity - sum(Decimal(a.amount) for a in li.discount_allocations)
            assert line["unit_price"] == (paid / li.quantity).quantize(Decimal("0.01")) < Decimal(li.price)
        assert mapped.order["total_amount"] == Decimal(o.current_total_price)
        _, cancelled, fast = webstore.fast_order(payload, ctx, 1)
        assert not cancelled and fast.staging_lines() == [
            (i, ln["sku"], ln["qty"], ln["unit_price"], ln["name"])
            for i, ln in enumerate(mapped.order["lines"], 1)
        ]
    plain = next(o for o in shopify.Order.find(status="open", limit=50) if not o.discount_codes).to_dict()
    legacy = {  # as API versions before the *_set objects, current_* totals and discount fields sent it
        k: v
        for k, v in plain.items()
        if not k.startswith(("current_", "discount_"))
        and (k == "total_shipping_price_set" or not k.endswith("_set"))
    }
    legacy["line_items"] = [
        {k: v for k, v in li.items() if k not in ("current_quantity", "discount_allocations", "price_set")}
        for li in plain["line_items"]
    ]
    assert webstore.map_order(legacy, ctx).order == webstore.map_order(plain, ctx).order


# -- discovery ---------------------------------------------------------------------------------------------------
def test_locations_products_and_variants_match_the_connectors_discovery(shop):
    locations = shopify.Location.find()
    assert all(isinstance(loc, shopify.Location) for loc in locations)
    assert [(loc.id, loc.name, loc.city, loc.active) for loc in locations] == [
        (i, BY_SHOPIFY_LOCATION[i].name, BY_SHOPIFY_LOCATION[i].city, True)
        for i in sorted(BY_SHOPIFY_LOCATION)
    ]
    assert shopify.Location.count() == len(locations)
    assert shopify.Location.find(locations[2].id).to_dict() == locations[2].to_dict()

    products = []
    for page in shopify.PaginatedIterator(shopify.Product.find(limit=7)):  # follows the Link header
        products += list(page)
    catalog = {p.sku: p for p in shop.catalog}
    assert [p.id for p in products] == sorted(p.shopify_product_id for p in shop.catalog)
    assert shopify.Product.count() == len(products)
    # (the library files a variant's product_id among its URL prefix options: /products/$product_id/)
    variants = [(p.id, v) for p in products for v in p.variants]
    assert all(isinstance(v, shopify.Variant) for _, v in variants)
    assert {v.sku: (pid, v.id, v.barcode, v.inventory_item_id) for pid, v in variants} == {
        sku: (p.shopify_product_id, p.shopify_variant_id, p.barcode, p.shopify_inventory_item_id)
        for sku, p in catalog.items()
    }
    pid, listed = variants[5]
    one = shopify.Variant.find(listed.id)  # found by itself, the library keeps its product_id as an attribute
    assert isinstance(one, shopify.Variant) and one.to_dict() == {**listed.to_dict(), "product_id": pid}
    assert shopify.Product.find(products[1].id).to_dict() == products[1].to_dict()

    with _client(shop) as client:
        found = webstore.discover(client)
        assert [p["id"] for p in client.products(limit=4)] == [
            p.id for p in products
        ]  # the connector's paging
        assert client.variant(one.id)["inventory_item_id"] == one.inventory_item_id
    assert [(x.external_id, x.name, x.city, x.address, x.active) for x in found.locations] == [
        (str(loc.id), loc.name, loc.city, loc.address1, loc.active) for loc in locations
    ]
    assert sorted(
        (x.article, x.barcode, x.product_id, x.variant_id, x.inventory_item_id) for x in found.listings
    ) == (sorted((v.sku, v.barcode, pid, v.id, v.inventory_item_id) for pid, v in variants))


# -- inventory ---------------------------------------------------------------------------------------------------
class _Recording(httpx.HTTPTransport):
    """The connector's transport, keeping every request it sends."""

    def __init__(self) -> None:
        super().__init__()
        self.requests: list[httpx.Request] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return super().handle_request(request)


def test_inventory_levels_through_the_library(shop):
    location = LOCATION_BY_CODE["MSK1"].shopify_location_id
    items = [p.shopify_inventory_item_id for p in shop.catalog[:5]]
    level = shopify.InventoryLevel.set(location, items[0], 7)
    assert isinstance(level, shopify.InventoryLevel)
    assert (level.location_id, level.inventory_item_id, level.available) == (location, items[0], 7)
    for n, inventory_item in enumerate(items[1:], start=1):
        shopify.InventoryLevel.set(location, inventory_item, n)
    (only,) = shopify.InventoryLevel.find(inventory_item_ids=items[0], location_ids=location)
    assert isinstance(only, shopify.InventoryLevel) and only.available == 7
    first = shopify.InventoryLevel.find(location_ids=location, limit=2)
    levels = [lv for page in shopify.PaginatedIterator(first) for lv in page]
    assert first.has_next_page() and [lv.inventory_item_id for lv in levels] == sorted(items)
    at_location = shopify.Location.find(location).inventory_levels()
    assert {lv.inventory_item_id: lv.available for lv in at_location} == {
        lv.inventory_item_id: lv.available for lv in levels
    }


def test_set_quantities_through_the_librarys_graphql_and_the_connectors_request(shop, monkeypatch):
    """The library's ``GraphQL().execute`` runs the connector's own mutation text against the simulator; the
    connector's request goes to the same endpoint with the same headers and the same body keys."""
    location = LOCATION_BY_CODE["MSK1"].shopify_location_id
    items = [p.shopify_inventory_item_id for p in shop.catalog[:3]]
    sent: list = []
    opener = shopify_graphql.urllib.request  # six.moves' view of urllib.request, which the library calls
    real_urlopen = opener.urlopen
    monkeypatch.setattr(opener, "urlopen", lambda req, *a, **k: (sent.append(req), real_urlopen(req))[1])
    variables = {
        "input": {
            "name": "available",
            "reason": "correction",
            "ignoreCompareQuantity": True,
            "quantities": [
                {
                    "inventoryItemId": f"gid://shopify/InventoryItem/{i}",
                    "locationId": f"gid://shopify/Location/{location}",
                    "quantity": n,
                }  # fmt: skip
                for n, i in enumerate(items, start=4)
            ],
        }
    }
    answer = json.loads(shopify.GraphQL().execute(webstore.SET_QUANTITIES_MUTATION, variables))
    payload = answer["data"]["inventorySetQuantities"]
    assert payload["userErrors"] == []
    assert [c["quantityAfterChange"] for c in payload["inventoryAdjustmentGroup"]["changes"]] == [4, 5, 6]
    assert answer["extensions"]["cost"]["throttleStatus"]["maximumAvailable"] == 1000.0
    theirs = sent[-1]
    # a compare-and-set the library sends without opting out is refused, and nothing is applied
    stale = {"input": {**variables["input"], "ignoreCompareQuantity": False}}
    refused = json.loads(shopify.GraphQL().execute(webstore.SET_QUANTITIES_MUTATION, stale))
    assert {e["code"] for e in refused["data"]["inventorySetQuantities"]["userErrors"]} == {
        "COMPARE_QUANTITY_REQUIRED"
    }
    assert refused["data"]["inventorySetQuantities"]["inventoryAdjustmentGroup"] is None

    transport = _Recording()
    with _client(shop, transport=transport) as client:
        res = PushResult("webstore")
        batch = [
            AtsItem("webstore", "MSK1", shop.catalog[0].sku, 9, str(location), inventory_item_id=items[0]),
            AtsItem("webstore", "MSK1", shop.catalog[1].sku, 5, str(location), inventory_item_id=items[1]),
        ]
        outcomes = webstore.push_stock(client, batch, res)
    # 9 moved (verified by quantityAfterChange); 5 was already there (accepted, no change to compare)
    assert outcomes == [(batch[0], "pushed", True, None), (batch[1], "unverified", False, None)]
    assert res.requests == 1 and res.batch_sizes == [2]
    ours = transport.requests[-1]
    their_body, our_body = json.loads(theirs.data), json.loads(ours.content)
    assert urlsplit(theirs.full_url).path == ours.url.path == f"/admin/api/{API_VERSION}/graphql.json"
    assert theirs.get_method() == ours.method == "POST"
    assert theirs.get_header("Content-type") == ours.headers["Content-Type"] == "application/json"
    assert theirs.get_header("X-shopify-access-token") == ours.headers["X-Shopify-Access-Token"]
    assert set(our_body) <= set(their_body) and our_body["query"] == their_body["query"]
    assert set(our_body["variables"]["input"]) == set(variables["input"])
    assert shop["shopify"].inventory[(items[0], location)]["available"] == 9


# -- webhooks ----------------------------------------------------------------------------------------------------
class _Hooks(http.server.BaseHTTPRequestHandler):
    received: list[tuple[bytes, dict[str, str]]]

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.received.append((body, dict(self.headers.items())))  # names exactly as sent
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


def test_webhook_signatures_follow_shopifys_documented_algorithm(make_stack):
    received: list[tuple[bytes, dict[str, str]]] = []
    handler = type("Hooks", (_Hooks,), {"received": received})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        stack = make_stack(
            only=["shopify"], rate=1.0, webhook_url=f"http://127.0.0.1:{server.server_port}/hooks"
        )
        stack.advance(600)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
    secret = stack.credentials["shopify"]["webhook_secret"]
    assert received
    for body, headers in received:
        signature = headers["X-Shopify-Hmac-SHA256"]
        # https://shopify.dev/docs/apps/build/webhooks/subscribe/https#step-5-verify-the-webhook
        digest = base64.b64encode(hmac.new(secret.encode("utf-8"), body, hashlib.sha256).digest()).decode()
        assert hmac.compare_digest(digest, signature)
        assert webstore.verify_signature(body, signature, secret)
        assert not webstore.verify_signature(body + b" ", signature, secret)
        assert (
            headers["X-Shopify-Topic"] == "orders/create" and headers["X-Shopify-API-Version"] == API_VERSION
        )
        assert json.loads(body)["id"] in {so.id for so in stack["shopify"].orders}
