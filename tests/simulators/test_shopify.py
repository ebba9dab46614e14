"""Web store (Shopify Admin REST) simulator: Link pagination, filters, leaky bucket, inventory, webhooks."""

import json
import re

import pytest

from simulators import verify_shopify_hmac

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
