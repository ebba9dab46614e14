"""Wildberries simulator over real HTTP: token auth, orders/new, next-cursor paging, stocks, rate limits."""

import pytest


@pytest.fixture
def wb(make_stack, fake_time):
    stack = make_stack(only=["wildberries"], rate=3.0, protocol_time=fake_time,
                       options={"wildberries": {"rate_limit": False}})  # fmt: skip
    return (
        stack,
        stack.urls["wildberries"],
        {"Authorization": "Bearer " + stack.credentials["wildberries"]["token"]},
    )


def unix(stack, hours_from_start: float) -> int:
    return int(stack.clock.start.timestamp() + hours_from_start * 3600)


def test_token_is_required(wb, client):
    stack, url, headers = wb
    r = client.get(url + "/api/v3/orders/new")
    assert r.status_code == 401
    assert set(r.json()) == {
        "title",
        "detail",
        "code",
        "requestId",
        "origin",
        "status",
        "statusText",
        "timestamp",
    }
    raw_token = {"Authorization": stack.credentials["wildberries"]["token"]}
    assert client.get(url + "/api/v3/orders/new", headers=raw_token).status_code == 200


def test_orders_new_and_order_shape(wb, client):
    stack, url, headers = wb
    stack.advance(2 * 3600)
    orders = client.get(url + "/api/v3/orders/new", headers=headers).json()["orders"]
    waiting = [
        o for o in stack["wildberries"].orders if o.wb_status == "waiting"
    ]  # minus buyer cancellations
    assert orders and [o["id"] for o in orders] == [o.id for o in waiting]
    o = orders[0]
    for key in ("id", "rid", "orderUid", "article", "nmId", "chrtId", "skus", "price", "salePrice", "finalPrice",
                "convertedPrice", "convertedFinalPrice", "currencyCode", "createdAt", "warehouseId", "officeId",
                "offices", "deliveryType", "cargoType", "isZeroOrder", "options", "address", "comment", "ddate",
                "sellerDate", "requiredMeta", "optionalMeta", "isPickupPointShipmentAllowed"):  # fmt: skip
        assert key in o
    assert "supplyId" not in o  # OrderNew has none
    assert isinstance(o["price"], int) and o["currencyCode"] == 643 and o["deliveryType"] == "fbs"
    product = next(p for p in stack.catalog if p.wb_chrt_id == o["chrtId"])
    assert o["skus"] == [product.barcode] and o["article"] == product.sku
    # salePrice: after the seller's discount; price: after WB's too; finalPrice: after the WB Wallet too
    assert all(x["salePrice"] <= int(product.price * 100) for x in orders if x["chrtId"] == o["chrtId"])
    assert all(x["salePrice"] >= x["price"] >= x["finalPrice"] > 0 for x in orders)
    assert any(x["price"] > x["finalPrice"] for x in orders) and any(
        x["salePrice"] > x["price"] for x in orders
    )
    # offices: the WB office the seller warehouse delivers to, the same for every order of that warehouse
    offices = {(x["warehouseId"], x["officeId"], tuple(x["offices"])) for x in orders}
    assert len(offices) == len({x["warehouseId"] for x in orders}) and all(
        x[2][0].startswith("СЦ ") for x in offices
    )
    # a basket of several units becomes several assembly tasks with one orderUid
    uids = {}
    for order in orders:
        uids.setdefault(order["orderUid"], []).append(order["id"])
    assert any(len(ids) > 1 for ids in uids.values())


def test_history_serves_the_order_shape(wb, client):
    stack, url, headers = wb
    stack.advance(3600)
    new = {o["id"]: o for o in client.get(url + "/api/v3/orders/new", headers=headers).json()["orders"]}
    history = client.get(url + "/api/v3/orders", headers=headers, params={"limit": 1000, "next": 0}).json()
    for o in history["orders"]:
        assert not {"finalPrice", "salePrice", "requiredMeta", "convertedFinalPrice"} & set(o)
        if o["id"] in new:
            assert o["price"] == new[o["id"]]["price"] and o["createdAt"] == new[o["id"]]["createdAt"]


def test_next_cursor_paging_returns_every_order_once(wb, client):
    stack, url, headers = wb
    stack.advance(5 * 3600)
    expected = [o["id"] for o in stack["wildberries"].rendered_orders()]
    assert len(expected) > 100
    got, nxt = [], 0
    while True:
        params = {"limit": 33, "next": nxt, "dateFrom": unix(stack, -1), "dateTo": unix(stack, 24)}
        data = client.get(url + "/api/v3/orders", headers=headers, params=params).json()
        if not data["orders"]:
            break
        got += [o["id"] for o in data["orders"]]
        nxt = data["next"]
    assert got == expected


@pytest.mark.parametrize(
    "params",
    [
        {"next": 0},  # limit missing
        {"limit": 1001, "next": 0},
        {"limit": "ten", "next": 0},
        {"limit": 10},  # next missing
        {"limit": 10, "next": 0, "dateFrom": 0, "dateTo": 31 * 86400},  # > 30 days
    ],
)
def test_orders_list_validation(wb, client, params):
    _, url, headers = wb
    r = client.get(url + "/api/v3/orders", headers=headers, params=params)
    assert r.status_code == 400 and set(r.json()) == {"code", "message", "data"}


def test_stocks_put_records_and_ignores_misnamed_fields(wb, client):
    stack, url, headers = wb
    p = stack.catalog[0]
    wid = 1207430
    r = client.put(
        f"{url}/api/v3/stocks/{wid}",
        headers=headers,
        json={"stocks": [{"chrtId": p.wb_chrt_id, "amount": 7}]},
    )
    assert r.status_code == 204
    r = client.put(
        f"{url}/api/v3/stocks/{wid}", headers=headers, json={"stocks": [{"sku": p.barcode, "amount": 3}]}
    )
    assert r.status_code == 204  # as the real API: misnamed fields → 204 and nothing updated
    read = client.post(f"{url}/api/v3/stocks/{wid}", headers=headers, json={"chrtIds": [p.wb_chrt_id]}).json()
    assert read == {"stocks": [{"chrtId": p.wb_chrt_id, "amount": 7}]}
    assert client.get(url + "/_sim/stocks").json()["pushes"] == 1
    r = client.put(
        f"{url}/api/v3/stocks/{wid}", headers=headers, json={"stocks": [{"chrtId": 1, "amount": 3}]}
    )  # the official 409: an array of errors, each listing its items
    assert r.status_code == 409
    assert r.json() == [
        {"code": "NotFound", "message": "Не найдено", "data": [{"sku": "", "chrtId": 1, "amount": 3}]}
    ]
    r = client.put(
        f"{url}/api/v3/stocks/{wid}",
        headers=headers,
        json={"stocks": [{"chrtId": p.wb_chrt_id, "amount": 100_001}]},
    )
    assert r.status_code == 400 and set(r.json()) == {"code", "message"}  # the stock methods' error schema
    assert client.put(f"{url}/api/v3/stocks/999", headers=headers, json={"stocks": []}).status_code == 404


def test_warehouses_list_the_networks_seller_warehouses(wb, client):
    from simulators.network import BY_WB_WAREHOUSE

    _, url, headers = wb
    listed = client.get(url + "/api/v3/warehouses", headers=headers).json()
    assert [(w["id"], w["name"]) for w in listed] == [
        (i, loc.name) for i, loc in sorted(BY_WB_WAREHOUSE.items())
    ]
    assert all(w["deliveryType"] == 1 and w["isDeleting"] is False for w in listed)


def test_cards_cursor_paging_and_content_errors(wb, client):
    stack, url, headers = wb
    got, cursor = [], {}
    while True:
        body = {
            "settings": {
                "sort": {"ascending": True},
                "cursor": {"limit": 4, **cursor},
                "filter": {"withPhoto": -1},
            }
        }
        page = client.post(url + "/content/v2/get/cards/list", headers=headers, json=body).json()
        got += page["cards"]
        if page["cursor"]["total"] < 4:
            break
        cursor = {k: page["cursor"][k] for k in ("updatedAt", "nmID")}
    assert sorted(c["vendorCode"] for c in got) == sorted(p.sku for p in stack.catalog)
    assert len({c["nmID"] for c in got}) == len(got)
    bad = client.post(url + "/content/v2/get/cards/list", headers=headers,
                      json={"settings": {"cursor": {"limit": 101}}})  # fmt: skip
    assert bad.status_code == 400 and bad.json()["error"] is True and bad.json()["errorText"]


def test_supply_moves_orders_out_of_new_and_buyers_cancel(wb, client):
    stack, url, headers = wb
    stack.advance(3600)
    new = client.get(url + "/api/v3/orders/new", headers=headers).json()["orders"]
    supply = client.post(url + "/api/v3/supplies", headers=headers, json={"name": "Поставка 1"})
    assert supply.status_code == 201
    sid = supply.json()["id"]
    batch = f"{url}/api/marketplace/v3/supplies/{sid}/orders"
    assert client.patch(batch, headers=headers, json={"orders": [new[0]["id"]]}).status_code == 204
    assert client.patch(batch, headers=headers, json={"orders": [new[0]["id"]]}).status_code == 204  # no-op
    # the deprecated per-order call still works
    assert (
        client.patch(f"{url}/api/v3/supplies/{sid}/orders/{new[0]['id']}", headers=headers).status_code == 204
    )
    assert client.patch(batch, headers=headers, json={"orders": []}).status_code == 400
    assert client.patch(batch, headers=headers, json={"orders": list(range(1, 102))}).status_code == 400
    # one supply, one warehouse: an order of another warehouse is refused
    other = next(o for o in new if o["warehouseId"] != new[0]["warehouseId"])
    refused = client.patch(batch, headers=headers, json={"orders": [other["id"]]})
    assert refused.status_code == 409 and refused.json()["code"] == "FailedToAddSupplyOrder"
    assert client.patch(f"{url}/api/v3/orders/{new[1]['id']}/cancel", headers=headers).status_code == 204
    still_new = {o["id"] for o in client.get(url + "/api/v3/orders/new", headers=headers).json()["orders"]}
    assert new[0]["id"] not in still_new and new[1]["id"] not in still_new
    statuses = client.post(
        url + "/api/v3/orders/status", headers=headers, json={"orders": [new[0]["id"], new[1]["id"]]}
    )
    assert [(s["supplierStatus"], s["wbStatus"], s["isCancellable"]) for s in statuses.json()["orders"]] == [
        ("confirm", "waiting", True),
        ("cancel", "canceled", False),
    ]
    assert stack["wildberries"].supplies[sid]["orders"] == [new[0]["id"]]
    stack.advance(9 * 3600)
    by_client = [o for o in stack["wildberries"].orders if o.wb_status == "canceled_by_client"]
    assert by_client and all(o.order.cancel_after_s is not None for o in by_client)


def test_rate_limit_burst_and_4xx_cost(make_stack, client, fake_time):
    stack = make_stack(only=["wildberries"], protocol_time=fake_time)
    url, token = stack.urls["wildberries"], stack.credentials["wildberries"]["token"]
    ok = [client.get(url + "/api/v3/orders/new", headers={"Authorization": token}) for _ in range(20)]
    assert all(r.status_code == 200 for r in ok)
    assert ok[0].headers["X-Ratelimit-Remaining"] == "19" and ok[-1].headers["X-Ratelimit-Remaining"] == "0"
    r = client.get(url + "/api/v3/orders/new", headers={"Authorization": token})
    assert r.status_code == 429 and r.json()["status"] == 429
    assert r.headers["X-Ratelimit-Retry"] == "1" and r.headers["X-Ratelimit-Limit"] == "20"
    assert int(r.headers["X-Ratelimit-Reset"]) >= 4
    fake_time.advance(4)  # 300/min refill = 5 tokens/s → 20 tokens
    bad = client.get(url + "/api/v3/orders/new", headers={"Authorization": "nope"})
    assert bad.status_code == 401 and bad.headers["X-Ratelimit-Remaining"] == "10"  # a 4xx costs 10
    client.get(url + "/api/v3/orders/new", headers={"Authorization": "nope"})
    assert client.get(url + "/api/v3/orders/new", headers={"Authorization": token}).status_code == 429
    # the content API has its own bucket: 100 req/min, burst 5
    cards = [client.post(url + "/content/v2/get/cards/list", headers={"Authorization": token}, json={})
             for _ in range(6)]  # fmt: skip
    assert [r.status_code for r in cards] == [200] * 5 + [429]
    assert cards[0].headers["X-Ratelimit-Remaining"] == "4" and cards[-1].headers["X-Ratelimit-Limit"] == "5"


def test_injected_429_carries_wb_headers(wb, client):
    _, url, headers = wb
    client.post(url + "/_sim/faults", json=[{"kind": "rate_limit", "count": 1, "retry_after": 7}])
    r = client.get(url + "/api/v3/orders/new", headers=headers)
    assert r.status_code == 429 and r.headers["X-Ratelimit-Retry"] == "7" and "Retry-After" not in r.headers
    assert client.get(url + "/api/v3/orders/new", headers=headers).status_code == 200
