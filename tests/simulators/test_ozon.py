"""Ozon Seller API simulator over real HTTP: auth, validation, cursor paging, statuses, stocks, faults."""

from decimal import Decimal

import httpx
import pytest

SINCE, TO = "2025-03-01T00:00:00Z", "2025-03-10T00:00:00Z"


@pytest.fixture
def ozon(make_stack, fake_time):
    stack = make_stack(only=["ozon"], rate=3.0, protocol_time=fake_time)
    creds = stack.credentials["ozon"]
    headers = {"Client-Id": creds["client_id"], "Api-Key": creds["api_key"]}
    return stack, stack.urls["ozon"], headers


def list_body(**kw):
    body = {"filter": {"since": SINCE, "to": TO}, "limit": 50, "cursor": ""}
    body.update(kw)
    return body


def page_through(client, url, headers, body) -> list[dict]:
    out = []
    while True:
        r = client.post(url + "/v4/posting/fbs/list", headers=headers, json=body)
        assert r.status_code == 200, r.text
        data = r.json()
        assert set(data) == {"postings", "cursor", "has_next"}
        out += data["postings"]
        if not data["has_next"]:
            return out
        body = {**body, "cursor": data["cursor"]}


def test_credentials_are_required(ozon, client):
    _, url, headers = ozon
    r = client.post(url + "/v4/posting/fbs/list", json=list_body())
    assert r.status_code == 403
    assert set(r.json()) == {"code", "message", "details"}
    r = client.post(url + "/v4/posting/fbs/list", headers={**headers, "Api-Key": "wrong"}, json=list_body())
    assert r.status_code == 403 and r.json()["code"] == 7


@pytest.mark.parametrize(
    "body, fragment",
    [
        ({"limit": 10}, "filter is required"),
        ({"filter": {"since": SINCE}, "limit": 10}, "filter.to"),
        ({"filter": {"since": SINCE, "to": TO}}, "limit is required"),
        ({"filter": {"since": SINCE, "to": TO}, "limit": 1001}, "limit must be in"),
        (
            {"filter": {"since": "2024-01-01T00:00:00Z", "to": "2025-03-01T00:00:00Z"}, "limit": 10},
            "PERIOD_IS_TOO_LONG",
        ),
        ({"filter": {"since": SINCE, "to": TO, "statuses": ["lost"]}, "limit": 10}, "unknown status"),
    ],
)
def test_request_validation(ozon, client, body, fragment):
    _, url, headers = ozon
    r = client.post(url + "/v4/posting/fbs/list", headers=headers, json=body)
    assert r.status_code == 400
    data = r.json()
    assert data["code"] == 3 and fragment in data["message"] and data["details"] == []


def test_cursor_paging_returns_every_posting_once(ozon, client):
    stack, url, headers = ozon
    stack.advance(4 * 3600)
    expected = [p["posting_number"] for p in stack["ozon"].rendered_postings()]
    assert len(expected) > 120
    got = page_through(client, url, headers, list_body(limit=37))
    numbers = [p["posting_number"] for p in got]
    assert numbers == expected  # ASC by in_process_at, each exactly once
    desc = page_through(client, url, headers, list_body(limit=50, sort_dir="DESC"))
    assert [p["posting_number"] for p in desc] == expected[::-1]


def test_posting_has_the_reference_fields(ozon, client):
    stack, url, headers = ozon
    stack.advance(1800)
    r = client.post(
        url + "/v4/posting/fbs/list", headers=headers,
        json=list_body(limit=1, **{"with": {"analytics_data": True, "financial_data": True}}),
    )  # fmt: skip
    p = r.json()["postings"][0]
    for key in ("posting_number", "order_id", "order_number", "status", "substatus", "in_process_at",
                "shipment_date", "delivering_date", "delivery_method", "tracking_number", "products", "barcodes",
                "cancellation", "available_actions", "is_express", "parent_posting_number", "financial_data"):  # fmt: skip
        assert key in p
    assert p["status"] == "awaiting_packaging"
    assert set(p["delivery_method"]) >= {
        "id",
        "name",
        "warehouse_id",
        "warehouse",
        "tpl_provider_id",
        "tpl_provider",
    }
    product = p["products"][0]
    assert isinstance(product["sku"], int) and isinstance(product["price"]["amount"], str)
    assert product["price"]["currency"] == "RUB" and "mandatory_mark" not in product
    # FBS: Ozon delivers and hides the buyer (region and city are for rFBS postings only)
    assert p["tpl_integration_type"] == "ozon" and p["customer"] is None
    assert p["analytics_data"]["region"] == "" and p["analytics_data"]["city"] == ""
    assert p["analytics_data"]["delivery_date_end"] and p["barcodes"] is None  # barcodes not asked for
    fin = p["financial_data"]["products"][0]
    assert fin["product_id"] == product["sku"] and fin["payout"] > 0
    assert set(fin["commission"]) == {"amount", "currency", "percent"} and "commission_amount" not in fin
    assert set(fin["customer_price"]) == {"amount", "currency"}
    assert Decimal(fin["customer_price"]["amount"]) <= Decimal(product["price"]["amount"])


def test_with_flags_add_blocks_only_when_asked(ozon, client):
    stack, url, headers = ozon
    stack.advance(3 * 3600)
    sim = stack["ozon"]
    packed = next(p for p in sim.postings if p.status == "awaiting_packaging")
    client.post(f"{url}/_sim/postings/{packed.posting_number}/status", json={"status": "awaiting_deliver"})
    bare = page_through(client, url, headers, list_body(limit=1000))
    assert all(
        p[k] is None for p in bare for k in ("analytics_data", "financial_data", "barcodes", "legal_info")
    )
    flags = {"analytics_data": True, "financial_data": True, "barcodes": True, "legal_info": True}
    full = {
        p["posting_number"]: p
        for p in page_through(client, url, headers, list_body(limit=1000, **{"with": flags}))
    }
    # barcodes exist once a posting is packed
    assert full[packed.posting_number]["barcodes"]["lower_barcode"]
    assert all(p["barcodes"] is None for n, p in full.items() if n != packed.posting_number)
    # Ozon funds a discount of its own on a share of the postings: the buyer pays less than the price
    discounted = [
        f for p in full.values() for f in p["financial_data"]["products"]
        if Decimal(f["customer_price"]["amount"]) < Decimal(str(f["price"]))
    ]  # fmt: skip
    assert discounted and all(f["actions"] for f in discounted)


def test_unfulfilled_list(ozon, client):
    stack, url, headers = ozon
    stack.advance(3 * 3600)
    sim = stack["ozon"]
    shipped = next(p for p in sim.postings if p.status == "awaiting_packaging")
    client.post(f"{url}/_sim/postings/{shipped.posting_number}/status", json={"status": "delivering"})
    expected = [
        p.posting_number for p in sim.postings if p.status in ("awaiting_packaging", "awaiting_deliver")
    ]
    got, cursor, counts = [], "", set()
    while True:
        r = client.post(url + "/v4/posting/fbs/unfulfilled/list", headers=headers,
                        json={"filter": {}, "limit": 40, "cursor": cursor})  # fmt: skip
        assert r.status_code == 200, r.text
        data = r.json()
        assert set(data) == {"postings", "count", "cursor", "has_next"}
        got += [p["posting_number"] for p in data["postings"]]
        counts.add(data["count"])
        if not data["has_next"]:
            break
        cursor = data["cursor"]
    assert got == expected and counts == {len(expected)} and shipped.posting_number not in got
    # the ship-by window (cutoff) selects on shipment_date; cutoff and delivering_date together are refused
    first = sim.render(sim.by_number[expected[0]])["shipment_date"]
    due = client.post(url + "/v4/posting/fbs/unfulfilled/list", headers=headers,
                      json={"filter": {"cutoff_from": first, "cutoff_to": first}, "limit": 1000}).json()  # fmt: skip
    assert due["count"] == sum(1 for n in expected if sim.render(sim.by_number[n])["shipment_date"] == first)
    for body in (
        {"limit": 10},
        {"filter": {"cutoff_from": first, "delivering_date_to": first}, "limit": 10},
        {"filter": {"statuses": ["delivered"]}, "limit": 10},
    ):
        r = client.post(url + "/v4/posting/fbs/unfulfilled/list", headers=headers, json=body)
        assert r.status_code == 400 and set(r.json()) == {"code", "message", "details"}


def test_warehouse_list_pages_and_is_limited_to_once_a_minute(ozon, client, fake_time):
    stack, url, headers = ozon
    first = client.post(url + "/v2/warehouse/list", headers=headers, json={"limit": 2})
    assert first.status_code == 200 and first.json()["has_next"] is True
    again = client.post(
        url + "/v2/warehouse/list", headers=headers, json={"limit": 2, "cursor": first.json()["cursor"]}
    )
    assert again.status_code == 429 and again.json()["code"] == 8 and int(again.headers["Retry-After"]) > 0
    fake_time.advance(60)
    rest = client.post(
        url + "/v2/warehouse/list", headers=headers, json={"limit": 2, "cursor": first.json()["cursor"]}
    )
    assert rest.status_code == 200 and rest.json()["has_next"] is False
    listed = first.json()["warehouses"] + rest.json()["warehouses"]
    assert [(w["warehouse_id"], w["name"]) for w in listed] == [
        (22142605386000, "Склад Подольск"), (22142605386001, "Склад Шушары"), (22142605386002, "Склад Екатеринбург"),
    ]  # fmt: skip


def test_product_list_and_info(ozon, client):
    stack, url, headers = ozon
    catalog = stack.catalog
    seen, last_id, totals = [], "", set()
    while True:
        r = client.post(url + "/v3/product/list", headers=headers,
                        json={"filter": {"visibility": "ALL"}, "last_id": last_id, "limit": 25})  # fmt: skip
        assert r.status_code == 200, r.text
        res = r.json()["result"]
        totals.add(res["total"])
        seen += [(i["offer_id"], i["product_id"]) for i in res["items"]]
        if len(res["items"]) < 25:
            break
        last_id = res["last_id"]
    assert seen == sorted(((p.offer_id, p.ozon_product_id) for p in catalog), key=lambda x: x[1])
    assert totals == {len(catalog)}
    p = catalog[3]
    for body in ({"offer_id": [p.offer_id]}, {"product_id": [p.ozon_product_id]}, {"sku": [str(p.ozon_sku)]}):
        items = client.post(url + "/v3/product/info/list", headers=headers, json=body).json()["items"]
        assert [(i["id"], i["offer_id"], i["sources"][0]["sku"], i["barcodes"]) for i in items] == [
            (p.ozon_product_id, p.offer_id, p.ozon_sku, [p.barcode])
        ]
    assert client.post(url + "/v3/product/info/list", headers=headers, json={"sku": [1]}).json() == {
        "items": []
    }
    both = client.post(url + "/v3/product/info/list", headers=headers,
                       json={"offer_id": [p.offer_id], "sku": [p.ozon_sku]})  # fmt: skip
    assert both.status_code == 400 and both.json()["code"] == 3
    # stock published for one item: it is "in sale", the others have an empty stock
    client.post(url + "/v2/products/stocks", headers=headers,
                json={"stocks": [{"offer_id": p.offer_id, "stock": 4, "warehouse_id": 22142605386001}]})  # fmt: skip
    in_sale = client.post(url + "/v3/product/list", headers=headers,
                          json={"filter": {"visibility": "IN_SALE"}, "limit": 100}).json()["result"]  # fmt: skip
    assert [i["offer_id"] for i in in_sale["items"]] == [p.offer_id] and in_sale["items"][0]["has_fbs_stocks"]
    info = client.post(url + "/v3/product/info/list", headers=headers, json={"offer_id": [p.offer_id]}).json()
    stocks = info["items"][0]["stocks"]
    assert stocks["has_stock"] and stocks["stocks"][0]["present"] - stocks["stocks"][0]["reserved"] == 4


def test_error_bodies_have_the_official_shape(ozon, client):
    _, url, headers = ozon
    client.post(
        url + "/_sim/faults", json=[{"kind": "server_error", "count": 1, "status": 409, "path": "/v2/"}]
    )
    r = client.post(url + "/v2/warehouse/list", headers=headers, json={})
    assert r.status_code == 409 and r.json() == {"code": 10, "message": r.json()["message"], "details": []}
    r = client.post(url + "/v3/nothing", headers=headers, json={})
    assert r.status_code == 404 and r.json() == {"code": 5, "message": "Not Found", "details": []}
    r = client.post(url + "/v3/product/list", headers=headers, content=b"{not json")
    assert r.status_code == 400 and r.json()["code"] == 3 and r.json()["details"] == []


def test_cursor_is_bound_to_its_filter(ozon, client):
    stack, url, headers = ozon
    stack.advance(3600)
    first = client.post(url + "/v4/posting/fbs/list", headers=headers, json=list_body(limit=5)).json()
    other = list_body(limit=5, cursor=first["cursor"])
    other["filter"]["statuses"] = ["cancelled"]
    r = client.post(url + "/v4/posting/fbs/list", headers=headers, json=other)
    assert r.status_code == 400 and r.json()["code"] == 3


def test_cancellations_advance_with_simulated_time(ozon, client):
    stack, url, headers = ozon
    stack.advance(3 * 3600)
    sim = stack["ozon"]
    pending = [
        p for p in sim.postings if p.order.cancel_after_s is not None and p.status == "awaiting_packaging"
    ]
    stack.advance(9 * 3600)  # every scheduled buyer cancellation is due by now
    cancelled = page_through(
        client, url, headers, list_body(filter={"since": SINCE, "to": TO, "statuses": ["cancelled"]})
    )
    numbers = {p["posting_number"] for p in cancelled}
    assert {p.posting_number for p in pending} <= numbers
    assert all(p["cancellation"]["cancellation_initiator"] == "Покупатель" for p in cancelled)
    # a control endpoint moves a posting explicitly (the seller shipped it)
    some = next(p for p in sim.postings if p.status == "awaiting_packaging")
    r = client.post(f"{url}/_sim/postings/{some.posting_number}/status", json={"status": "delivering"})
    assert r.status_code == 200 and r.json()["status"] == "delivering" and r.json()["tracking_number"]
    changed = page_through(
        client, url, headers, list_body(filter={"since": SINCE, "to": TO, "statuses": ["delivering"]})
    )
    assert [p["posting_number"] for p in changed] == [some.posting_number]


def test_stock_push_is_recorded_and_throttled_per_item(ozon, client, fake_time):
    stack, url, headers = ozon
    product = stack.catalog[0]
    wh = 22142605386000
    item = {
        "offer_id": product.offer_id,
        "product_id": product.ozon_product_id,
        "stock": 12,
        "warehouse_id": wh,
    }
    r = client.post(url + "/v2/products/stocks", headers=headers, json={"stocks": [item]})
    assert r.status_code == 200
    assert r.json()["result"] == [
        {
            "warehouse_id": wh,
            "product_id": product.ozon_product_id,
            "offer_id": product.offer_id,
            "updated": True,
            "errors": [],
        }
    ]
    again = client.post(
        url + "/v2/products/stocks", headers=headers, json={"stocks": [{**item, "stock": 11}]}
    ).json()
    assert again["result"][0]["updated"] is False
    assert again["result"][0]["errors"][0]["code"] == "TOO_MANY_REQUESTS"
    fake_time.advance(30)
    later = client.post(
        url + "/v2/products/stocks", headers=headers, json={"stocks": [{**item, "stock": 10}]}
    ).json()
    assert later["result"][0]["updated"] is True
    recorded = client.get(url + "/_sim/stocks").json()["stocks"]
    assert recorded == [{**recorded[0], "offer_id": product.offer_id, "warehouse_id": wh, "stock": 10}]


def test_stock_push_limits(ozon, client):
    stack, url, headers = ozon
    p = stack.catalog[1]
    too_many = [{"offer_id": p.offer_id, "stock": 1, "warehouse_id": 22142605386000}] * 101
    r = client.post(url + "/v2/products/stocks", headers=headers, json={"stocks": too_many})
    assert r.status_code == 400 and r.json()["code"] == 3
    bad = [{"offer_id": "NOPE", "stock": 1, "warehouse_id": 22142605386000},
           {"offer_id": p.offer_id, "stock": 1, "warehouse_id": 1}]  # fmt: skip
    result = client.post(url + "/v2/products/stocks", headers=headers, json={"stocks": bad}).json()["result"]
    assert [r["updated"] for r in result] == [False, False]
    assert [r["errors"][0]["code"] for r in result] == ["NOT_FOUND", "WAREHOUSE_NOT_FOUND"]


def test_injected_faults_are_deterministic(ozon, client):
    stack, url, headers = ozon
    stack.advance(2 * 3600)
    r = client.post(url + "/_sim/faults", json={"faults": [
        {"kind": "rate_limit", "count": 2, "retry_after": 3, "path": "/v4/"},
        {"kind": "server_error", "count": 1, "status": 503, "path": "/v2/"},
    ]})  # fmt: skip
    assert r.status_code == 200
    codes = [
        client.post(url + "/v4/posting/fbs/list", headers=headers, json=list_body(limit=5)) for _ in range(3)
    ]
    assert [c.status_code for c in codes] == [429, 429, 200]
    assert codes[0].headers["Retry-After"] == "3" and set(codes[0].json()) == {"code", "message", "details"}
    r = client.post(
        url + "/v2/products/stocks", headers=headers, json={"stocks": [{"offer_id": "x", "stock": 1}]}
    )
    assert r.status_code == 503 and "Retry-After" in r.headers
    state = client.get(url + "/_sim/faults").json()["faults"]
    assert [f["remaining"] for f in state] == [0, 0]


def test_duplicate_malformed_and_out_of_order_pages(ozon, client):
    stack, url, headers = ozon
    stack.advance(3 * 3600)
    client.post(url + "/_sim/faults", json=[{"kind": "duplicate", "count": 1, "share": 0.1}])
    got = page_through(client, url, headers, list_body(limit=20))
    numbers = [p["posting_number"] for p in got]
    assert len(numbers) > len(set(numbers))  # the same posting twice (in a page and across pages)
    assert set(numbers) == {p["posting_number"] for p in stack["ozon"].rendered_postings()}

    client.post(url + "/_sim/faults", json=[{"kind": "malformed", "count": 1, "share": 0.5}])
    page = client.post(url + "/v4/posting/fbs/list", headers=headers, json=list_body(limit=20)).json()[
        "postings"
    ]
    broken = [p for p in page if "posting_number" not in p or "in_process_at" not in p
              or any(not isinstance(x["quantity"], int) or x["price"]["amount"] == "n/a" for x in p["products"])]  # fmt: skip
    assert len(broken) == 10

    client.post(url + "/_sim/faults", json=[{"kind": "out_of_order", "count": 1}])
    page = client.post(url + "/v4/posting/fbs/list", headers=headers, json=list_body(limit=20)).json()[
        "postings"
    ]
    times = [p["in_process_at"] for p in page]
    assert times != sorted(times) or [p["posting_number"] for p in page] != sorted(
        p["posting_number"] for p in page
    )


def test_timeout_fault_outlasts_the_client(ozon):
    stack, url, headers = ozon
    with httpx.Client(timeout=10) as c:
        c.post(url + "/_sim/faults", json=[{"kind": "timeout", "count": 1, "delay": 1.0}])
    with httpx.Client(timeout=0.2) as impatient, pytest.raises(httpx.TimeoutException):
        impatient.post(url + "/v4/posting/fbs/list", headers=headers, json=list_body(limit=1))


def test_control_endpoints(ozon, client):
    stack, url, _ = ozon
    assert client.get(url + "/_sim/health").json()["status"] == "ok"
    now = client.post(url + "/_sim/advance", json={"seconds": 600}).json()["now"]
    assert now == "2025-03-03T05:10:00Z"
    state = client.get(url + "/_sim/state").json()
    assert state["simulator"] == "ozon" and state["postings"] == len(stack["ozon"].postings)
    assert client.post(url + "/_sim/advance", json={"seconds": -5}).status_code == 400
    assert client.post(url + "/_sim/faults", json={"kind": "nope", "count": 1}).status_code == 400


def test_postings_go_to_the_nearest_warehouse_with_published_stock(ozon, client):
    stack, url, headers = ozon
    stack.advance(3600)
    before = {p["posting_number"] for p in stack["ozon"].rendered_postings()}
    # stock published at one warehouse only: every later posting is assigned there
    wh = 22142605386000
    items = [
        {"offer_id": p.offer_id, "product_id": p.ozon_product_id, "stock": 1000, "warehouse_id": wh}
        for p in stack.catalog
    ]
    for i in range(0, len(items), 100):
        r = client.post(url + "/v2/products/stocks", headers=headers, json={"stocks": items[i : i + 100]})
        assert all(x["updated"] for x in r.json()["result"])
    stack.advance(3600)
    later = [p for p in stack["ozon"].rendered_postings() if p["posting_number"] not in before]
    assert later and {p["delivery_method"]["warehouse_id"] for p in later} == {wh}
    earlier = {p["delivery_method"]["warehouse_id"] for p in stack["ozon"].rendered_postings()} - {wh}
    assert earlier  # before the push: the warehouse nearest the buyer, wherever it is
