"""Web store (Shopify Admin REST) simulator: Link pagination, filters, leaky bucket, inventory, webhooks, money
fields, discovery endpoints (products, variants, locations) and Shopify's header spelling."""

import http.client
import json
import re
from decimal import ROUND_HALF_UP, Decimal

import pytest

from simulators import verify_shopify_hmac
from simulators.network import LOCATIONS

API = "/admin/api/2024-10"


@pytest.fixture
def shop(make_stack, fake_time):
    stack = make_stack(only=["shopify"], rate=2.0, options={"shopify": {"rate_limit": False}})
    return (
        stack,
        stack.urls["shopify"],
        {"X-Shopify-Access-Token": stack.credentials["shopify"]["access_token"]},
    )


def links(response) -> dict[str, str]:
    out = {}
    for part in response.headers.get("link", "").split(", "):
        m = re.match(r'<([^>]+)>; rel="(next|previous)"', part)
        if m:
            out[m.group(2)] = m.group(1)
    return out


def follow(client, headers, url) -> tuple[list[dict], int]:
    orders, pages = [], 0
    while url:
        r = client.get(url, headers=headers)
        assert r.status_code == 200, r.text
        orders += r.json()["orders"]
        pages += 1
        url = links(r).get("next")
    return orders, pages


def test_access_token_is_required(shop, client):
    _, url, _ = shop
    r = client.get(url + API + "/orders.json")
    assert r.status_code == 401 and "Invalid API key or access token" in r.json()["errors"]


def test_link_pagination_returns_every_order_once(shop, client):
    stack, url, headers = shop
    stack.advance(5 * 3600)
    expected = sorted(o["id"] for o in stack["shopify"].rendered_orders())
    assert len(expected) > 130
    orders, pages = follow(client, headers, f"{url}{API}/orders.json?status=any&limit=40")
    ids = [o["id"] for o in orders]
    assert ids == sorted(expected, reverse=True)  # newest first, each exactly once
    assert pages == -(-len(expected) // 40)


def test_previous_link_and_one_page_has_no_link(shop, client):
    stack, url, headers = shop
    stack.advance(3 * 3600)
    first = client.get(f"{url}{API}/orders.json?status=any&limit=10", headers=headers)
    assert "previous" not in links(first)
    second = client.get(links(first)["next"], headers=headers)
    back = client.get(links(second)["previous"], headers=headers)
    assert [o["id"] for o in back.json()["orders"]] == [o["id"] for o in first.json()["orders"]]
    since = first.json()["orders"][5]["id"]
    few = client.get(f"{url}{API}/orders.json?status=any&limit=250&since_id={since}", headers=headers)
    assert len(few.json()["orders"]) == 5 and "link" not in few.headers


def test_page_info_forbids_other_filters(shop, client):
    stack, url, headers = shop
    stack.advance(3 * 3600)
    nxt = links(client.get(f"{url}{API}/orders.json?limit=5", headers=headers))["next"]
    r = client.get(nxt + "&status=any", headers=headers)
    assert r.status_code == 400
    assert r.json() == {"errors": {"status": "status cannot be passed when page_info is present."}}
    assert client.get(f"{url}{API}/orders.json?page_info=garbage", headers=headers).status_code == 400
    assert client.get(f"{url}{API}/orders.json?limit=251", headers=headers).status_code == 400


def test_filters(shop, client):
    stack, url, headers = shop
    stack.advance(6 * 3600)
    sim = stack["shopify"]
    all_ids = sorted(so.id for so in sim.orders)
    since = all_ids[20]
    asc, _ = follow(client, headers, f"{url}{API}/orders.json?status=any&since_id={since}&limit=50")
    assert [o["id"] for o in asc] == all_ids[21:]  # since_id: ascending from there
    cancelled = [so.id for so in sim.orders if so.cancelled_at]
    assert cancelled
    default, _ = follow(client, headers, f"{url}{API}/orders.json?limit=250")
    assert not set(cancelled) & {o["id"] for o in default}  # default status=open hides cancelled orders
    only, _ = follow(client, headers, f"{url}{API}/orders.json?status=cancelled&limit=250")
    assert sorted(o["id"] for o in only) == sorted(cancelled)
    mid = sim.orders[len(sim.orders) // 2].created_at
    recent, _ = follow(
        client,
        headers,
        f"{url}{API}/orders.json?status=any&limit=250&created_at_min={mid:%Y-%m-%dT%H:%M:%SZ}",
    )
    assert sorted(o["id"] for o in recent) == sorted(so.id for so in sim.orders if so.created_at >= mid)
    fields = client.get(f"{url}{API}/orders.json?status=any&limit=3&fields=id,name", headers=headers).json()
    assert all(set(o) == {"id", "name"} for o in fields["orders"])


def test_order_shape(shop, client):
    stack, url, headers = shop
    stack.advance(3600)
    o = client.get(f"{url}{API}/orders.json?limit=1", headers=headers).json()["orders"][0]
    assert o["currency"] == "RUB" and o["name"].startswith("#") and o["created_at"].endswith("+03:00")
    assert isinstance(o["total_price"], str) and o["line_items"][0]["sku"] and o["shipping_lines"]
    single = client.get(f"{url}{API}/orders/{o['id']}.json", headers=headers).json()["order"]
    assert single == o
    assert client.get(f"{url}{API}/orders/1.json", headers=headers).json() == {"errors": "Not Found"}


def test_leaky_bucket(make_stack, client, fake_time):
    stack = make_stack(only=["shopify"], protocol_time=fake_time)
    url, headers = (
        stack.urls["shopify"],
        {"X-Shopify-Access-Token": stack.credentials["shopify"]["access_token"]},
    )
    responses = [client.get(f"{url}{API}/orders.json", headers=headers) for _ in range(41)]
    assert [r.status_code for r in responses[:40]] == [200] * 40
    assert responses[0].headers["X-Shopify-Shop-Api-Call-Limit"] == "1/40"
    assert responses[39].headers["X-Shopify-Shop-Api-Call-Limit"] == "40/40"
    assert responses[40].status_code == 429 and float(responses[40].headers["Retry-After"]) > 0
    fake_time.advance(1)  # leaks 2 calls per second
    r = client.get(f"{url}{API}/orders.json", headers=headers)
    assert r.status_code == 200 and r.headers["X-Shopify-Shop-Api-Call-Limit"] == "39/40"


def test_inventory_set(shop, client):
    stack, url, headers = shop
    p = stack.catalog[3]
    body = {"location_id": 71000001001, "inventory_item_id": p.shopify_inventory_item_id, "available": 42}
    r = client.post(f"{url}{API}/inventory_levels/set.json", headers=headers, json=body)
    assert r.status_code == 200
    level = r.json()["inventory_level"]
    assert (level["available"], level["location_id"], level["inventory_item_id"]) == (
        42,
        71000001001,
        p.shopify_inventory_item_id,
    )
    assert level["updated_at"]
    r = client.post(
        f"{url}{API}/inventory_levels/set.json", headers=headers, json={**body, "available": None}
    )
    assert r.status_code == 400 and r.json() == {
        "errors": {"available": "Required parameter missing or invalid"}
    }
    r = client.post(f"{url}{API}/inventory_levels/set.json", headers=headers, json={**body, "location_id": 5})
    assert r.status_code == 404
    assert client.get(url + "/_sim/inventory").json()["inventory_levels"][0]["available"] == 42


def _set_quantities(client, url, headers, quantities, *, version="2024-10", **extra):
    body = {
        "query": "mutation S($input: InventorySetQuantitiesInput!) { inventorySetQuantities(input: $input) "
        "{ inventoryAdjustmentGroup { id } userErrors { field code message } } }",
        "variables": {
            "input": {"name": "available", "reason": "correction", "quantities": quantities, **extra}
        },
    }
    r = client.post(f"{url}/admin/api/{version}/graphql.json", headers=headers, json=body)
    assert r.status_code == 200, r.text
    return r.json()


def _q(item: int, location: int, qty, **extra) -> dict:
    return {
        "inventoryItemId": f"gid://shopify/InventoryItem/{item}",
        "locationId": f"gid://shopify/Location/{location}",
        "quantity": qty,
        **extra,
    }


def test_graphql_set_quantities_is_all_or_nothing_and_reports_changes(shop, client):
    stack, url, headers = shop
    a, b = (p.shopify_inventory_item_id for p in stack.catalog[:2])
    ok = _set_quantities(client, url, headers, [_q(a, 71000001001, 3), _q(b, 71000001001, 8)], ignoreCompareQuantity=True)  # fmt: skip
    group = ok["data"]["inventorySetQuantities"]["inventoryAdjustmentGroup"]
    assert [(c["delta"], c["quantityAfterChange"]) for c in group["changes"]] == [(3, 3), (8, 8)]
    assert ok["extensions"]["cost"]["actualQueryCost"] == 10
    # the same values again: accepted, nothing moved, no change entries
    again = _set_quantities(client, url, headers, [_q(a, 71000001001, 3)], ignoreCompareQuantity=True)
    assert again["data"]["inventorySetQuantities"]["inventoryAdjustmentGroup"]["changes"] == []
    # one unknown item refuses the whole call: the good value next to it is not applied
    bad = _set_quantities(client, url, headers, [_q(a, 71000001001, 50), _q(999, 71000001001, 1)], ignoreCompareQuantity=True)  # fmt: skip
    payload = bad["data"]["inventorySetQuantities"]
    assert payload["inventoryAdjustmentGroup"] is None
    assert payload["userErrors"] == [
        {
            "field": ["input", "quantities", "1", "inventoryItemId"],
            "message": "The specified inventory item could not be found.",
            "code": "INVALID_INVENTORY_ITEM",
        }
    ]
    assert stack["shopify"].inventory[(a, 71000001001)]["available"] == 3
    # compare-and-set: a stale compareQuantity is refused; the right one applies
    stale = _set_quantities(client, url, headers, [_q(a, 71000001001, 4, compareQuantity=1)])
    assert stale["data"]["inventorySetQuantities"]["userErrors"][0]["code"] == "COMPARE_QUANTITY_STALE"
    cas = _set_quantities(client, url, headers, [_q(a, 71000001001, 4, compareQuantity=3)])
    assert cas["data"]["inventorySetQuantities"]["userErrors"] == []
    # from 2026-04 every quantity carries changeFromQuantity (null opts out)
    missing = _set_quantities(client, url, headers, [_q(a, 71000001001, 5)], version="2026-04")
    assert (
        missing["data"]["inventorySetQuantities"]["userErrors"][0]["code"] == "CHANGE_FROM_QUANTITY_REQUIRED"
    )
    opted_out = _set_quantities(client, url, headers, [_q(a, 71000001001, 5, changeFromQuantity=None)], version="2026-04")  # fmt: skip
    assert opted_out["data"]["inventorySetQuantities"]["userErrors"] == []
    levels = client.get(f"{url}{API}/inventory_levels.json?inventory_item_ids={a}", headers=headers).json()
    assert [lv["available"] for lv in levels["inventory_levels"]] == [5]
    # more than 250 quantities: a top-level error, nothing applied
    many = _set_quantities(client, url, headers, [_q(a, 71000001001, 1)] * 251, ignoreCompareQuantity=True)
    assert many["errors"][0]["extensions"]["code"] == "MAX_INPUT_SIZE_EXCEEDED"
    assert stack["shopify"].inventory[(a, 71000001001)]["available"] == 5


def test_graphql_has_its_own_cost_bucket(make_stack, fake_time, client):
    stack = make_stack(only=["shopify"], protocol_time=fake_time)
    url, headers = (
        stack.urls["shopify"],
        {"X-Shopify-Access-Token": stack.credentials["shopify"]["access_token"]},
    )
    item = stack.catalog[0].shopify_inventory_item_id
    answers = [
        _set_quantities(client, url, headers, [_q(item, 71000001001, n)], ignoreCompareQuantity=True) for n in range(101)
    ]  # fmt: skip
    assert all("data" in a for a in answers[:100])  # 1000 points, 10 per mutation
    throttled = answers[100]
    assert throttled["errors"][0]["extensions"]["code"] == "THROTTLED"
    assert throttled["extensions"]["cost"]["throttleStatus"]["currentlyAvailable"] < 10
    # the REST leaky bucket was not touched by the GraphQL calls
    r = client.get(f"{url}{API}/orders.json", headers=headers)
    assert r.status_code == 200 and r.headers["X-Shopify-Shop-Api-Call-Limit"] == "1/40"
    fake_time.advance(1)  # 50 points a second come back
    assert "data" in _set_quantities(
        client, url, headers, [_q(item, 71000001001, 7)], ignoreCompareQuantity=True
    )


def test_webhooks_are_signed_and_retried(make_stack, receiver, client):
    stack = make_stack(only=["shopify"], rate=1.0, webhook_url=receiver.url)
    secret = stack.credentials["shopify"]["webhook_secret"]
    receiver.status = 500  # the receiver is down at first: Shopify retries later
    stack.advance(600)
    assert receiver.calls
    first_ids = {h["x-shopify-webhook-id"] for _, h in receiver.calls}
    receiver.status = 200
    stack.advance(60)  # first retry is due 10 s later
    deliveries = client.get(stack.urls["shopify"] + "/_sim/webhooks").json()["deliveries"]
    assert deliveries and all(d["status"] == "delivered" for d in deliveries)
    retried = [h for _, h in receiver.calls if h["x-shopify-webhook-id"] in first_ids]
    assert len(retried) >= 2 * len(first_ids)
    for body, h in receiver.calls:
        assert h["x-shopify-topic"] == "orders/create"
        assert h["x-shopify-shop-domain"] == "oms-sim.myshopify.com"
        assert verify_shopify_hmac(body, h["x-shopify-hmac-sha256"], secret)
        assert not verify_shopify_hmac(body.replace(b'"RUB"', b'"USD"'), h["x-shopify-hmac-sha256"], secret)
    created = {json.loads(b)["id"] for b, _ in receiver.calls}
    assert created == {so.id for so in stack["shopify"].orders}


def test_duplicate_webhook_delivery_keeps_its_id(make_stack, receiver):
    stack = make_stack(only=["shopify"], rate=1.0, webhook_url=receiver.url,
                       faults={"shopify": [{"kind": "duplicate", "count": 1, "method": "WEBHOOK"}]})  # fmt: skip
    stack.advance(300)
    ids = [h["x-shopify-webhook-id"] for _, h in receiver.calls]
    assert len(ids) == len(set(ids)) + 1  # one delivery arrived twice with the same webhook id


def test_header_names_are_spelled_as_shopify_sends_them(make_stack, fake_time):
    """The official library reads ``X-Shopify-Shop-Api-Call-Limit`` from a plain dict: the simulator must put
    Shopify's spelling on the wire (http.client keeps names as received)."""
    stack = make_stack(only=["shopify"], protocol_time=fake_time)
    stack.advance(3600)
    host = stack.urls["shopify"].removeprefix("http://")
    headers = {"X-Shopify-Access-Token": stack.credentials["shopify"]["access_token"]}

    def names(path: str) -> tuple[int, set[str]]:
        conn = http.client.HTTPConnection(host, timeout=10)
        try:
            conn.request("GET", path, headers=headers)
            response = conn.getresponse()
            response.read()
            return response.status, {name for name, _ in response.getheaders()}
        finally:
            conn.close()

    status, got = names(f"{API}/orders.json?status=any&limit=5")
    assert status == 200 and {"X-Shopify-Shop-Api-Call-Limit", "Link", "X-Shopify-API-Version"} <= got
    assert "Content-Type" in got
    for _ in range(40):
        names(f"{API}/orders/count.json")
    status, got = names(f"{API}/orders/count.json")
    assert status == 429 and {"Retry-After", "X-Shopify-Shop-Api-Call-Limit"} <= got


def test_order_money_adds_up(shop):
    """Every amount is the kopeck sum of the amounts it is made of, in the ``*_set`` objects too; discount codes
    land in the line items' allocations; a cancelled order is refunded in full and its current totals are 0."""
    stack, _, _ = shop
    stack.advance(6 * 3600)
    orders = stack["shopify"].rendered_orders()
    assert sum(1 for o in orders if o["discount_codes"]) > len(orders) // 10
    assert any(o["cancelled_at"] for o in orders)

    def d(value: str) -> Decimal:
        return Decimal(value)

    for o in orders:
        for key, value in o.items():
            if key.endswith("_set") and value is not None and key.removesuffix("_set") in o:
                assert value["shop_money"]["amount"] == value["presentment_money"]["amount"] == o[key[:-4]]
        items = sum(d(li["price"]) * li["quantity"] for li in o["line_items"])
        allocated = sum(d(a["amount"]) for li in o["line_items"] for a in li["discount_allocations"])
        shipping = d(o["total_shipping_price_set"]["shop_money"]["amount"])
        assert d(o["total_line_items_price"]) == items
        assert d(o["total_discounts"]) == allocated == sum(d(c["amount"]) for c in o["discount_codes"])
        assert all(d(li["total_discount"]) == sum(d(a["amount"]) for a in li["discount_allocations"])
                   for li in o["line_items"])  # fmt: skip
        assert d(o["subtotal_price"]) == items - allocated
        assert (
            d(o["total_price"])
            == items - allocated + shipping
            == d(o["total_price_set"]["shop_money"]["amount"])
        )
        taxes = [t for li in o["line_items"] for t in li["tax_lines"]] + o["shipping_lines"][0]["tax_lines"]
        assert (
            d(o["total_tax"])
            == sum(d(t["price"]) for t in taxes)
            == sum(d(t["price"]) for t in o["tax_lines"])
        )
        if o["discount_codes"]:
            (code,) = o["discount_codes"]
            percent = Decimal(o["discount_applications"][0]["value"])
            for li in o["line_items"]:
                per_unit = (d(li["price"]) * percent / 100).quantize(Decimal("0.01"), ROUND_HALF_UP)
                assert d(li["discount_allocations"][0]["amount"]) == per_unit * li["quantity"]
        if o["cancelled_at"]:
            (refund,) = o["refunds"]
            back = sum(d(r["subtotal"]) for r in refund["refund_line_items"])
            back -= sum(d(a["amount"]) for a in refund["order_adjustments"])
            assert back == d(o["total_price"]) and d(o["current_total_price"]) == 0
            paid_back = sum(d(t["amount"]) for t in refund["transactions"])
            assert paid_back == (d(o["total_price"]) if o["financial_status"] == "refunded" else 0)
            assert all(li["current_quantity"] == 0 for li in o["line_items"])
        else:
            assert not o["refunds"]
            assert (o["current_total_price"], o["current_subtotal_price"]) == (
                o["total_price"],
                o["subtotal_price"],
            )
        outstanding = d(o["total_price"]) if o["financial_status"] == "pending" else 0
        assert d(o["total_outstanding"]) == outstanding


def test_orders_count(shop, client):
    stack, url, headers = shop
    stack.advance(3 * 3600)
    sim = stack["shopify"]

    def count(**params) -> int:
        r = client.get(f"{url}{API}/orders/count.json", headers=headers, params=params)
        assert r.status_code == 200, r.text
        return r.json()["count"]

    assert count(status="any") == len(sim.orders)
    assert count() == sum(1 for so in sim.orders if so.closed_at is None)
    assert count(status="cancelled") == sum(1 for so in sim.orders if so.cancelled_at)
    assert count(status="any", financial_status="paid") == sum(
        1 for so in sim.orders if so.financial_status == "paid"
    )
    mid = sim.orders[len(sim.orders) // 2].created_at
    assert count(status="any", created_at_min=f"{mid:%Y-%m-%dT%H:%M:%SZ}") == sum(
        1 for so in sim.orders if so.created_at >= mid
    )


def test_products_page_through_link_headers_with_their_variants(shop, client):
    stack, url, headers = shop
    catalog = sorted(stack.catalog, key=lambda p: p.shopify_product_id)
    products, pages = follow_products(client, headers, f"{url}{API}/products.json?limit=25")
    assert [p["id"] for p in products] == [p.shopify_product_id for p in catalog] and pages == 3
    for listed, p in zip(products, catalog, strict=True):
        (variant,) = listed["variants"]
        assert (listed["title"], listed["vendor"], listed["status"]) == (p.name, p.brand, "active")
        assert (variant["sku"], variant["barcode"], variant["inventory_item_id"], variant["product_id"]) == (
            p.sku, p.barcode, p.shopify_inventory_item_id, p.shopify_product_id,
        )  # fmt: skip
        assert variant["price"] == f"{p.price:.2f}" and variant["inventory_quantity"] == 0
    first = client.get(f"{url}{API}/products.json?limit=25", headers=headers)
    assert client.get(links(first)["next"] + "&vendor=x", headers=headers).status_code == 400
    since = catalog[9].shopify_product_id
    after = client.get(f"{url}{API}/products.json", headers=headers, params={"since_id": since, "limit": 250})
    assert [p["id"] for p in after.json()["products"]] == [p.shopify_product_id for p in catalog[10:]]
    assert "Link" not in after.headers
    picked = client.get(
        f"{url}{API}/products.json", headers=headers,
        params={"ids": f"{catalog[1].shopify_product_id},{catalog[4].shopify_product_id}", "fields": "id,variants"},
    ).json()["products"]  # fmt: skip
    assert [p["id"] for p in picked] == [catalog[1].shopify_product_id, catalog[4].shopify_product_id]
    assert all(set(p) == {"id", "variants"} for p in picked)
    handle = client.get(
        f"{url}{API}/products.json", headers=headers, params={"handle": catalog[3].sku.lower()}
    )
    assert [p["id"] for p in handle.json()["products"]] == [catalog[3].shopify_product_id]
    assert client.get(f"{url}{API}/products/count.json", headers=headers).json() == {"count": len(catalog)}
    single = client.get(f"{url}{API}/products/{catalog[2].shopify_product_id}.json", headers=headers).json()
    assert single["product"] == products[2]
    assert client.get(f"{url}{API}/products/1.json", headers=headers).json() == {"errors": "Not Found"}


def follow_products(client, headers, url) -> tuple[list[dict], int]:
    products, pages = [], 0
    while url:
        r = client.get(url, headers=headers)
        assert r.status_code == 200, r.text
        products += r.json()["products"]
        pages += 1
        url = links(r).get("next")
    return products, pages


def test_variant_and_locations(shop, client):
    stack, url, headers = shop
    p = stack.catalog[7]
    body = {"location_id": 71000001002, "inventory_item_id": p.shopify_inventory_item_id, "available": 4}
    client.post(f"{url}{API}/inventory_levels/set.json", headers=headers, json=body)
    client.post(
        f"{url}{API}/inventory_levels/set.json", headers=headers, json={**body, "location_id": 71000002001}
    )
    variant = client.get(f"{url}{API}/variants/{p.shopify_variant_id}.json", headers=headers).json()[
        "variant"
    ]
    assert (variant["id"], variant["sku"], variant["inventory_item_id"]) == (
        p.shopify_variant_id, p.sku, p.shopify_inventory_item_id,
    )  # fmt: skip
    assert variant["inventory_quantity"] == 8  # Σ available over the locations
    assert client.get(f"{url}{API}/variants/1.json", headers=headers).status_code == 404

    locations = client.get(f"{url}{API}/locations.json", headers=headers).json()["locations"]
    network = sorted(
        (loc for loc in LOCATIONS if loc.shopify_location_id), key=lambda loc: loc.shopify_location_id
    )
    assert [(x["id"], x["name"], x["city"]) for x in locations] == [
        (loc.shopify_location_id, loc.name, loc.city) for loc in network
    ]
    podolsk = locations[0]
    assert podolsk["address1"] == "ул. Поливановская, д. 9" and podolsk["province"] == "Московская область"
    assert podolsk["active"] is True and podolsk["legacy"] is False and podolsk["country_code"] == "RU"
    one = client.get(f"{url}{API}/locations/{podolsk['id']}.json", headers=headers).json()
    assert one == {"location": podolsk}
    assert client.get(f"{url}{API}/locations/count.json", headers=headers).json() == {"count": len(network)}
    assert client.get(f"{url}{API}/locations/5.json", headers=headers).status_code == 404
    levels = client.get(f"{url}{API}/locations/71000002001/inventory_levels.json", headers=headers).json()
    assert [(lv["inventory_item_id"], lv["available"]) for lv in levels["inventory_levels"]] == [
        (p.shopify_inventory_item_id, 4)
    ]


def test_inventory_levels_page_through_link_headers(shop, client):
    stack, url, headers = shop
    items = sorted(p.shopify_inventory_item_id for p in stack.catalog[:7])
    for n, item in enumerate(items):
        body = {"location_id": 71000001001, "inventory_item_id": item, "available": n}
        assert (
            client.post(f"{url}{API}/inventory_levels/set.json", headers=headers, json=body).status_code
            == 200
        )
    seen, nxt = [], f"{url}{API}/inventory_levels.json?location_ids=71000001001&limit=3"
    while nxt:
        r = client.get(nxt, headers=headers)
        seen += [lv["inventory_item_id"] for lv in r.json()["inventory_levels"]]
        nxt = links(r).get("next")
    assert seen == items
    r = client.get(f"{url}{API}/inventory_levels.json", headers=headers)
    assert r.status_code == 422 and r.json() == {"errors": "inventory_item_ids or location_ids is required"}
