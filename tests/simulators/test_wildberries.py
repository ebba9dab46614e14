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
                "convertedPrice", "currencyCode", "createdAt", "warehouseId", "officeId", "offices", "deliveryType",
                "cargoType", "isZeroOrder", "options", "address", "comment"):  # fmt: skip
        assert key in o
    assert isinstance(o["price"], int) and o["currencyCode"] == 643 and o["deliveryType"] == "fbs"
    product = next(p for p in stack.catalog if p.wb_chrt_id == o["chrtId"])
    assert o["price"] == int(product.price * 100) and o["skus"] == [product.barcode]
    # a basket of several units becomes several assembly tasks with one orderUid
    uids = {}
    for order in orders:
        uids.setdefault(order["orderUid"], []).append(order["id"])
    assert any(len(ids) > 1 for ids in uids.values())


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
    )
    assert r.status_code == 409 and r.json()["data"] == [{"sku": "", "chrtId": 1, "amount": 3}]
    assert client.put(f"{url}/api/v3/stocks/999", headers=headers, json={"stocks": []}).status_code == 404


def test_supply_moves_orders_out_of_new_and_buyers_cancel(wb, client):
    stack, url, headers = wb
    stack.advance(3600)
    new = client.get(url + "/api/v3/orders/new", headers=headers).json()["orders"]
    supply = client.post(url + "/api/v3/supplies", headers=headers, json={"name": "Поставка 1"})
    assert supply.status_code == 201
    sid = supply.json()["id"]
    assert (
        client.patch(f"{url}/api/v3/supplies/{sid}/orders/{new[0]['id']}", headers=headers).status_code == 204
    )
    assert (
        client.patch(f"{url}/api/v3/supplies/{sid}/orders/{new[0]['id']}", headers=headers).status_code == 204
    )
    assert client.patch(f"{url}/api/v3/orders/{new[1]['id']}/cancel", headers=headers).status_code == 204
    still_new = {o["id"] for o in client.get(url + "/api/v3/orders/new", headers=headers).json()["orders"]}
    assert new[0]["id"] not in still_new and new[1]["id"] not in still_new
    statuses = client.post(
        url + "/api/v3/orders/status", headers=headers, json={"orders": [new[0]["id"], new[1]["id"]]}
    )
    assert [(s["supplierStatus"], s["wbStatus"]) for s in statuses.json()["orders"]] == [
        ("confirm", "waiting"),
        ("cancel", "canceled"),
    ]
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


def test_injected_429_carries_wb_headers(wb, client):
    _, url, headers = wb
    client.post(url + "/_sim/faults", json=[{"kind": "rate_limit", "count": 1, "retry_after": 7}])
    r = client.get(url + "/api/v3/orders/new", headers=headers)
    assert r.status_code == 429 and r.headers["X-Ratelimit-Retry"] == "7" and "Retry-After" not in r.headers
    assert client.get(url + "/api/v3/orders/new", headers=headers).status_code == 200
