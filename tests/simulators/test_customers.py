"""Customers who return things: delivered CDEK parcels of web-store orders come back as Shopify return requests."""

import json
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest

from oms_ops.wire.shopify import verify_shopify_hmac
from simulators.customers import (
    EXCHANGEABLE,
    RETURN_REASONS,
    DeliveredParcel,
    ReturnBehaviour,
    ShopReturns,
    phone_key,
)

API = "/admin/api/2024-10"


def book(client, stack, shop_order: dict, number: str, phone: str | None = None) -> str:
    """Ship a web-store order with CDEK as the OMS does: recipient phone and the order's lines as items."""
    cdek, creds = stack.urls["cdek"], stack.credentials["cdek"]
    token = client.post(cdek + "/v2/oauth/token", data={"grant_type": "client_credentials", **creds}).json()
    items = [
        {"name": li["title"], "ware_key": li["sku"], "payment": {"value": 0}, "cost": float(li["price"]),
         "weight": li["grams"], "amount": li["quantity"]}
        for li in shop_order["line_items"]
    ]  # fmt: skip
    body = {
        "type": 1, "number": number, "tariff_code": 137, "shipment_point": "PDL12",
        "to_location": {"city": shop_order["billing_address"]["city"], "address": "ул. Ленина, 1"},
        "recipient": {"name": shop_order["billing_address"]["name"], "phones": [{"number": phone or shop_order["phone"]}]},
        "packages": [{"number": f"{number}-1", "weight": 1000, "items": items}],
    }  # fmt: skip
    r = client.post(
        cdek + "/v2/orders", headers={"Authorization": "Bearer " + token["access_token"]}, json=body
    )
    assert r.status_code == 202, r.text
    return r.json()["entity"]["uuid"]


def shop_orders(client, stack) -> list[dict]:
    headers = {"X-Shopify-Access-Token": stack.credentials["shopify"]["access_token"]}
    r = client.get(
        stack.urls["shopify"] + f"{API}/orders.json", headers=headers, params={"status": "any", "limit": 250}
    )
    return r.json()["orders"]


def all_returns(client, stack, limit=3) -> list[dict]:
    """Every return request, page by page with ``since_id`` as a poller would."""
    headers = {"X-Shopify-Access-Token": stack.credentials["shopify"]["access_token"]}
    out, since = [], 0
    while True:
        page = client.get(
            stack.urls["shopify"] + f"{API}/returns.json",
            headers=headers,
            params={"since_id": since, "limit": limit},
        ).json()["returns"]
        if not page:
            return out
        out += page
        since = page[-1]["id"]


#: every customer returns something; transit and the customers' hesitation compressed tenfold (as a demo does)
OPTIONS = {
    "shopify": {"return_share": 1.0, "return_delay_scale": 0.1, "rate_limit": False},
    "cdek": {"not_delivered_share": 0.0, "transit_scale": 0.1},
}
#: long enough for every parcel to arrive (≤ ~1.3 days compressed) and every customer to ask (≤ 7.2 h)
ALL_DONE = 3 * 24 * 3600


@pytest.fixture
def world(make_stack):
    return make_stack(only=["shopify", "cdek"], rate=1.0, profile="steady", options=OPTIONS)


def test_customers_ask_to_return_what_was_delivered_to_them(world, client):
    stack = world
    stack.advance(1800)
    orders = [o for o in shop_orders(client, stack) if o["shipping_lines"][0]["code"] != "store_pickup"][:6]
    assert len(orders) == 6
    uuids = {}
    for n, o in enumerate(orders):
        phone = o["phone"] if n % 2 else "8 (" + o["phone"][2:5] + ") " + o["phone"][5:]  # any phone format
        uuids[o["id"]] = book(client, stack, o, f"SHP-{n}", phone)
    book(client, stack, orders[0], "SHP-STRANGER", "+79990000000")  # nobody's web-store order
    stack.advance(600)
    assert all_returns(client, stack) == []  # nothing delivered yet: nothing to return
    stack.advance(ALL_DONE)  # every parcel delivered; every customer asked (return_share 1)
    returns = all_returns(client, stack)
    assert len(returns) == 6 and [r["id"] for r in returns] == sorted(r["id"] for r in returns)
    by_order = {r["order"]["id"]: r for r in returns}
    assert set(by_order) == {o["id"] for o in orders}
    cdek = stack["cdek"]
    for o in orders:
        r = by_order[o["id"]]
        assert r["status"] == "requested" and r["name"] == f"{o['name']}-R1"
        assert r["order"]["admin_graphql_api_id"] == o["admin_graphql_api_id"]
        ordered = {li["id"]: li for li in o["line_items"]}
        for rli in r["return_line_items"]:
            li = rli["fulfillment_line_item"]["line_item"]
            assert li["id"] in ordered and li["sku"] == ordered[li["id"]]["sku"]
            assert 1 <= rli["quantity"] <= ordered[li["id"]]["quantity"]
            assert rli["return_reason"] in RETURN_REASONS
        delivered = cdek.orders[uuids[o["id"]]].statuses[-1]
        assert delivered["code"] == "DELIVERED"
        delivered_at = datetime.strptime(delivered["date_time"], "%Y-%m-%dT%H:%M:%S%z")
        assert delivered_at < datetime.fromisoformat(r["requested_at"])  # asked after it arrived
        if r["exchange_line_items"]:  # a replacement of the same article
            assert r["return_line_items"][0]["return_reason"] in EXCHANGEABLE
            assert {x["line_item"]["sku"] for x in r["exchange_line_items"]} == {
                x["fulfillment_line_item"]["line_item"]["sku"] for x in r["return_line_items"]
            }


def test_returns_endpoints(world, client):
    stack = world
    stack.advance(1800)
    orders = [o for o in shop_orders(client, stack) if o["shipping_lines"][0]["code"] != "store_pickup"][:2]
    for n, o in enumerate(orders):
        book(client, stack, o, f"SHP-{n}")
    stack.advance(ALL_DONE)
    url, headers = (
        stack.urls["shopify"],
        {"X-Shopify-Access-Token": stack.credentials["shopify"]["access_token"]},
    )
    listed = client.get(url + f"{API}/returns.json", headers=headers).json()["returns"]
    assert len(listed) == 2
    mine = client.get(url + f"{API}/orders/{orders[1]['id']}/returns.json", headers=headers).json()["returns"]
    assert [r["order"]["id"] for r in mine] == [orders[1]["id"]]
    by_query = client.get(url + f"{API}/returns.json", headers=headers, params={"order_id": orders[1]["id"]})
    assert by_query.json()["returns"] == mine
    one = client.get(url + f"{API}/returns/{mine[0]['id']}.json", headers=headers).json()["return"]
    assert one == mine[0]
    assert client.get(url + f"{API}/returns/1.json", headers=headers).status_code == 404
    assert client.get(url + f"{API}/orders/1/returns.json", headers=headers).status_code == 404
    assert client.get(url + f"{API}/returns.json", headers=headers, params={"limit": 251}).status_code == 400
    assert (
        client.get(url + f"{API}/returns.json", headers=headers, params={"since_id": "x"}).status_code == 400
    )
    assert client.get(url + f"{API}/returns.json").status_code == 401


def test_return_requests_go_out_as_webhooks_only_when_subscribed(make_stack, client, receiver):
    def run(topics):
        receiver.calls.clear()
        options = {k: dict(v) for k, v in OPTIONS.items()}
        if topics:
            options["shopify"]["webhook_topics"] = topics
        stack = make_stack(only=["shopify", "cdek"], rate=0.5, profile="steady", webhook_url=receiver.url,
                           options=options)  # fmt: skip
        stack.advance(1800)
        order = next(
            o for o in shop_orders(client, stack) if o["shipping_lines"][0]["code"] != "store_pickup"
        )
        book(client, stack, order, "SHP-1")
        stack.advance(ALL_DONE)
        stack["shopify"].deliver_due()
        stack.stop()
        return [(body, h) for body, h in receiver.calls if h["x-shopify-topic"] == "returns/request"], stack

    default, _ = run(None)
    assert default == []  # not subscribed: the OMS's receiver would take a return for an order
    sent, stack = run(["orders/create", "orders/cancelled", "returns/request"])
    assert len(sent) == 1
    body, headers = sent[0]
    assert verify_shopify_hmac(
        body, headers["x-shopify-hmac-sha256"], stack.credentials["shopify"]["webhook_secret"]
    )
    assert json.loads(body) == stack["shopify"].customer_returns.returns[0]


def test_return_decisions_are_reproducible_and_shaped_like_returns():
    parcels = [
        DeliveredParcel(f"uuid-{n}", f"SHP-{n}", "9161234567", (("CLO-1", 2), ("ELC-2", 1)), datetime(2025, 3, 3, tzinfo=UTC))
        for n in range(2000)
    ]  # fmt: skip
    behaviour = ReturnBehaviour(5, return_share=0.12, delay_hours=(2, 72), delay_scale=1 / 240)
    decided = [behaviour.decide(p, p.items) for p in parcels]
    again = [ReturnBehaviour(5, return_share=0.12, delay_scale=1 / 240).decide(p, p.items) for p in parcels]
    assert decided == again  # the same parcel always gives the same request
    asked = [d for d in decided if d is not None]
    assert 0.09 < len(asked) / len(parcels) < 0.15
    reasons = Counter(line.reason for d in asked for line in d.lines)
    assert reasons.most_common(1)[0][0] == "unwanted" and len(reasons) >= 6
    assert all(
        timedelta(hours=2 / 240) <= d.requested_at - d.parcel.delivered_at <= timedelta(hours=72 / 240)
        for d in asked
    )
    assert all(not d.exchange or d.lines[0].reason in EXCHANGEABLE for d in asked)
    assert any(d.exchange for d in asked) and any(not d.exchange for d in asked)
    assert all(
        1 <= line.qty <= dict(p.items)[line.sku] for d in asked for p in [d.parcel] for line in d.lines
    )
    assert behaviour.decide(parcels[0], []) is None  # nothing left to return: nothing asked


@pytest.mark.parametrize(
    "raw,key",
    [("+79161234567", "9161234567"), ("8 (916) 123-45-67", "9161234567"), ("12345", None), (None, None)],
)
def test_phone_key(raw, key):
    assert phone_key(raw) == key


def test_return_requests_and_pending_decisions_survive_a_restart(make_stack, client):
    options = {k: dict(v) for k, v in OPTIONS.items()}
    options["shopify"]["return_delay_scale"] = 1.0  # customers take 2–72 h: some are still deciding
    stack = make_stack(only=["shopify", "cdek"], rate=1.0, profile="steady", options=options)
    stack.advance(1800)
    orders = [o for o in shop_orders(client, stack) if o["shipping_lines"][0]["code"] != "store_pickup"][:8]
    for n, o in enumerate(orders):
        book(client, stack, o, f"SHP-{n}")
    stack.advance(2 * 24 * 3600)
    shop, live = stack["shopify"], stack["shopify"].customer_returns
    saved = json.loads(json.dumps(live.dump_state()))  # as a state file holds it
    assert live.returns and live.state()["waiting_to_ask"]  # some asked, some still deciding
    restored = ShopReturns(shop, live.behaviour)
    restored.load_state(saved)
    assert restored.listed(limit=250) == live.listed(limit=250)
    stack.advance(5 * 24 * 3600)
    with shop.lock:
        restored.sync(stack.clock.now())
    assert [r["id"] for r in restored.returns] == [r["id"] for r in live.returns]  # the same requests, once
    assert len(live.returns) == len(orders)
    crashed = ShopReturns(shop, live.behaviour)
    crashed.load_state(saved, clean=False)
    with shop.lock:
        crashed.sync(stack.clock.now())
    later = [r["id"] for r in crashed.returns[len(saved["returns"]) :]]
    assert later and min(later) > max(r["id"] for r in live.returns)  # no id a poller saw comes out again
