"""Contract: WB's official client (``wildberries-sdk``, generated from WB's OpenAPI specs, spec of 2026-10)
against our Wildberries simulator, and our connector's requests against the sdk's request models.

Two directions:

* the sdk calls every endpoint the simulator serves and the connector uses (orders/new, orders history with
  ``next`` paging, orders/status, cancel, supplies, the batch supply PATCH, stocks PUT/POST with the 409
  array, warehouses, the content API's cards list with its cursor) and deserialises every answer with its
  pydantic models — success bodies and error bodies alike; on top, :func:`assert_exact` fails on any field
  the official schema does not have (the generated ``from_dict`` would drop it silently);
* the bodies ``WildberriesClient`` sends, recorded by a transport around the real one, must validate against
  the sdk's request models, exactly, and every call must be one the sdk knows (method and path).

The sdk's operations hard-code WB's hosts (marketplace-api / content-api); ``ignore_operation_servers`` makes
them use ``Configuration.host``, the simulator.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from decimal import Decimal

import httpx
import pytest
from pydantic import BaseModel
from wildberries_sdk import items as wb_items
from wildberries_sdk import orders_fbs as wb_fbs

from oms_ops.channels import wildberries as wbc
from oms_ops.channels.ats import AtsItem, PushResult
from oms_ops.channels.base import MappingContext
from simulators.network import BY_WB_WAREHOUSE


# -- helpers ------------------------------------------------------------------------------------------------
def assert_exact(raw, parsed, path: str = "$") -> None:
    """Every field of ``raw`` (the JSON as sent) is a field of the sdk model it parsed into, recursively."""
    if isinstance(parsed, BaseModel):
        assert isinstance(raw, dict), f"{path}: expected an object, got {raw!r:.80}"
        fields = {(f.alias or name): name for name, f in type(parsed).model_fields.items()}
        unknown = sorted(set(raw) - set(fields))
        assert not unknown, f"{path}: not in the official {type(parsed).__name__}: {unknown}"
        for key, value in raw.items():
            assert_exact(value, getattr(parsed, fields[key]), f"{path}.{key}")
    elif isinstance(parsed, list):
        assert isinstance(raw, list) and len(raw) == len(parsed), path
        for i, (r, p) in enumerate(zip(raw, parsed, strict=True)):
            assert_exact(r, p, f"{path}[{i}]")


def parsed(resp):
    """The sdk's ``ApiResponse`` → (model, raw JSON), after checking the model covers the raw body."""
    raw = json.loads(resp.raw_data)
    assert_exact(raw, resp.data)
    return resp.data, raw


def error_body(exc) -> object:
    assert exc.data is not None, f"the sdk could not parse the error body: {exc.body}"
    assert_exact(json.loads(exc.body), exc.data)
    return exc.data


def sdk(stack, module, token: str | None = None):
    config = module.Configuration(
        host=stack.urls["wildberries"],
        api_key={"HeaderApiKey": token or stack.credentials["wildberries"]["token"]},
        ignore_operation_servers=True,  # the operations name WB's hosts: use the simulator
    )
    return module.DefaultApi(module.ApiClient(config))


@pytest.fixture
def wb(make_stack):
    stack = make_stack(only=["wildberries"], options={"wildberries": {"confirm_deadline_hours": None}})
    stack.advance(3 * 3600)
    return stack


# -- the sdk against the simulator --------------------------------------------------------------------------
def test_orders_new_history_paging_and_statuses_parse(wb):
    fbs = sdk(wb, wb_fbs)
    new, _ = parsed(fbs.get_v3_orders_new_with_http_info())
    assert new.orders and all(isinstance(o, wb_fbs.OrderNew) for o in new.orders)
    o = new.orders[0]
    assert o.final_price is not None and o.sale_price >= o.price >= o.final_price > 0
    assert o.offices and o.offices[0].startswith("СЦ ")  # WB's office, not the buyer's city
    # the history: Order shape (no finalPrice), paged by next until an empty page
    got, nxt, pages = [], 0, 0
    while True:
        page, raw = parsed(fbs.get_v3_orders_with_http_info(limit=40, next=nxt))
        pages += 1
        assert all("finalPrice" not in r and "requiredMeta" not in r for r in raw["orders"])
        if not page.orders:
            break
        got += [x.id for x in page.orders]
        nxt = page.next
    assert got == [x.id for x in wb["wildberries"].orders] and pages > 2
    statuses, _ = parsed(
        fbs.post_v3_orders_status_with_http_info(wb_fbs.PostV3OrdersStatusRequest(orders=got[:5]))
    )
    assert [s.id for s in statuses.orders] == got[:5]
    assert all(isinstance(s.is_cancellable, bool) and s.is_transferable is False for s in statuses.orders)
    # errors parse too: 400 {code, message, data}, 401 the gateway's body
    with pytest.raises(wb_fbs.ApiException) as bad:
        fbs.get_v3_orders(limit=10, next=0, date_from=0, date_to=40 * 86400)
    assert bad.value.status == 400 and isinstance(error_body(bad.value), wb_fbs.Error)
    with pytest.raises(wb_fbs.ApiException) as unauthorized:
        sdk(wb, wb_fbs, token="nope").get_v3_orders_new()
    assert unauthorized.value.status == 401 and error_body(unauthorized.value).status == 401


def test_supplies_batch_add_and_cancel(wb):
    fbs = sdk(wb, wb_fbs)
    new = fbs.get_v3_orders_new().orders
    by_wh: dict[int, list[int]] = {}
    for o in new:
        by_wh.setdefault(o.warehouse_id, []).append(o.id)
    (wh, ids), (other_wh, other) = sorted(by_wh.items(), key=lambda kv: -len(kv[1]))[:2]
    supply, _ = parsed(fbs.post_v3_supplies_with_http_info(wb_fbs.PostV3SuppliesRequest(name="Поставка 1")))
    assert re.fullmatch(r"WB-GI-\d+", supply.id)
    batch = wb_fbs.PatchV3SuppliesSupplyIdOrdersRequest(orders=ids[:3])
    assert fbs.patch_v3_supplies_supply_id_orders_with_http_info(supply.id, batch).status_code == 204
    assert fbs.patch_v3_supplies_supply_id_orders(supply.id, batch) is None  # repeating changes nothing
    # a supply takes one warehouse's orders: another warehouse's order refuses the whole batch
    mixed = wb_fbs.PatchV3SuppliesSupplyIdOrdersRequest(orders=[ids[3], other[0]])
    with pytest.raises(wb_fbs.ApiException) as conflict:
        fbs.patch_v3_supplies_supply_id_orders(supply.id, mixed)
    assert conflict.value.status == 409 and error_body(conflict.value).code == "FailedToAddSupplyOrder"
    with pytest.raises(wb_fbs.ApiException) as missing:
        fbs.patch_v3_supplies_supply_id_orders("WB-GI-1", batch)
    assert missing.value.status == 404 and error_body(missing.value).code == "NotFound"
    history = fbs.get_v3_orders(limit=1000, next=0).orders
    in_supply = {o.id for o in history if o.supply_id == supply.id}
    assert in_supply == set(ids[:3]) and other[0] not in in_supply and ids[3] not in in_supply
    assert fbs.patch_v3_orders_order_id_cancel_with_http_info(ids[0]).status_code == 204
    with pytest.raises(wb_fbs.ApiException) as again:
        fbs.patch_v3_orders_order_id_cancel(ids[0])
    assert again.value.status == 409 and error_body(again.value).code == "StatusMismatch"
    states = fbs.post_v3_orders_status(wb_fbs.PostV3OrdersStatusRequest(orders=ids[:3])).orders
    assert [(s.supplier_status, s.is_cancellable) for s in states] == [
        ("cancel", False),
        ("confirm", True),
        ("confirm", True),
    ]
    assert other_wh != wh


def test_warehouses_and_stocks_with_the_409_array(wb):
    items = sdk(wb, wb_items)
    warehouses, _ = parsed(items.get_v3_warehouses_with_http_info())
    assert {w.id: w.name for w in warehouses} == {i: loc.name for i, loc in BY_WB_WAREHOUSE.items()}
    wid, p = warehouses[0].id, wb.catalog[0]
    put = wb_items.PutV3StocksWarehouseIdRequest.from_dict(
        {"stocks": [{"chrtId": p.wb_chrt_id, "amount": 7}]}
    )
    assert items.put_v3_stocks_warehouse_id_with_http_info(wid, put).status_code == 204
    read, _ = parsed(
        items.post_v3_stocks_warehouse_id_with_http_info(
            wid, wb_items.PostV3StocksWarehouseIdRequest(chrtIds=[p.wb_chrt_id, 1])
        )
    )
    assert [(s.chrt_id, s.amount) for s in read.stocks] == [(p.wb_chrt_id, 7)]
    # an unknown chrtId: 409 with the official array, parsed by the sdk's model; the known item is applied
    mixed = wb_items.PutV3StocksWarehouseIdRequest.from_dict(
        {"stocks": [{"chrtId": 1, "amount": 3}, {"chrtId": p.wb_chrt_id, "amount": 4}]}
    )
    with pytest.raises(wb_items.ApiException) as conflict:
        items.put_v3_stocks_warehouse_id(wid, mixed)
    errors = error_body(conflict.value)
    assert conflict.value.status == 409 and isinstance(json.loads(conflict.value.body), list)
    assert [(e.code, [(d.chrt_id, d.amount) for d in e.data]) for e in errors] == [("NotFound", [(1, 3)])]
    assert (
        items.post_v3_stocks_warehouse_id(
            wid, wb_items.PostV3StocksWarehouseIdRequest(chrtIds=[p.wb_chrt_id])
        )
        .stocks[0]
        .amount
        == 4
    )
    with pytest.raises(wb_items.ApiException) as unknown:
        items.put_v3_stocks_warehouse_id(999, put)
    assert unknown.value.status == 404 and error_body(unknown.value).code == "NotFound"


def test_content_cards_list_pages_by_cursor(wb):
    items = sdk(wb, wb_items)
    seen, after, pages = [], {}, 0
    while True:
        req = wb_items.PostV2GetCardsListRequest.from_dict(
            {"settings": {"sort": {"ascending": True}, "cursor": {"limit": 7, **after},
                          "filter": {"withPhoto": -1}}}
        )  # fmt: skip
        page, _ = parsed(items.post_v2_get_cards_list_with_http_info(req))
        pages += 1
        seen += page.cards
        if page.cursor.total < 7:
            break
        after = {"updatedAt": page.cursor.updated_at, "nmID": page.cursor.nm_id}
    by_sku = {p.sku: p for p in wb.catalog}
    assert len(seen) == len(by_sku) and pages == len(by_sku) // 7 + 1
    assert [c.updated_at for c in seen] == sorted(c.updated_at for c in seen)
    for card in seen:
        p = by_sku[card.vendor_code]  # vendorCode: the seller's article
        assert card.nm_id == p.wb_nm_id and [(s.chrt_id, s.skus) for s in card.sizes] == [
            (p.wb_chrt_id, [p.barcode])
        ]
    # the default order is newest change first; textSearch finds a card by barcode
    first = items.post_v2_get_cards_list(wb_items.PostV2GetCardsListRequest.from_dict({"settings": {}}))
    assert first.cards[0].nm_id == seen[-1].nm_id and len(first.cards) == 10
    found = items.post_v2_get_cards_list(
        wb_items.PostV2GetCardsListRequest.from_dict(
            {"settings": {"filter": {"textSearch": seen[3].sizes[0].skus[0], "withPhoto": -1}}}
        )
    )
    assert [c.nm_id for c in found.cards] == [seen[3].nm_id]


# -- our connector's requests against the sdk's request models ----------------------------------------------
#: (method, path template) → the sdk's request model of the body (None: no body)
SDK_CALLS = {
    ("GET", "/api/v3/orders/new"): None,
    ("GET", "/api/v3/orders"): None,
    ("POST", "/api/v3/orders/status"): wb_fbs.PostV3OrdersStatusRequest,
    ("PATCH", "/api/v3/orders/{orderId}/cancel"): None,
    ("POST", "/api/v3/supplies"): wb_fbs.PostV3SuppliesRequest,
    ("PATCH", "/api/marketplace/v3/supplies/{supplyId}/orders"): wb_fbs.PatchV3SuppliesSupplyIdOrdersRequest,
    ("GET", "/api/v3/warehouses"): None,
    ("PUT", "/api/v3/stocks/{warehouseId}"): wb_items.PutV3StocksWarehouseIdRequest,
    ("POST", "/api/v3/stocks/{warehouseId}"): wb_items.PostV3StocksWarehouseIdRequest,
    ("POST", "/content/v2/get/cards/list"): wb_items.PostV2GetCardsListRequest,
}


def _template(path: str) -> str:
    path = re.sub(r"/supplies/WB-GI-\d+/", "/supplies/{supplyId}/", path)
    path = re.sub(r"/orders/\d+/cancel$", "/orders/{orderId}/cancel", path)
    return re.sub(r"/stocks/\d+$", "/stocks/{warehouseId}", path)


class Recorder(httpx.BaseTransport):
    """Records every request's method, path and JSON body, then sends it for real."""

    def __init__(self) -> None:
        self.inner = httpx.HTTPTransport()
        self.calls: list[tuple[str, str, object]] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content) if request.content else None
        self.calls.append((request.method, _template(request.url.path), body))
        return self.inner.handle_request(request)


def assert_calls_are_official(calls) -> Counter:
    seen = Counter()
    for method, path, body in calls:
        assert (method, path) in SDK_CALLS, f"{method} {path} is not an official call"
        model = SDK_CALLS[(method, path)]
        if model is None:
            assert body is None, f"{method} {path} takes no body"
        else:
            assert_exact(body, model.from_dict(body))  # the sdk's strict pydantic validation, then no extras
        seen[(method, path)] += 1
    return seen


def test_connector_requests_validate_against_the_sdk_models(wb, conn):
    rec = Recorder()
    client = wbc.WildberriesClient(
        wb.urls["wildberries"], wb.credentials["wildberries"]["token"], rate=None, transport=rec
    )
    with client:
        res = wbc.ingest_wildberries(conn, client, page_limit=50, normalize=False)
        assert res.fetched and res.pages > 2
        found = wbc.discover(client)
        assert {loc.external_id for loc in found.locations} == {str(i) for i in BY_WB_WAREHOUSE}
        assert {(x.article, x.chrt_id, x.channel_sku, x.barcode) for x in found.listings} == {
            (p.sku, p.wb_chrt_id, p.wb_nm_id, p.barcode) for p in wb.catalog
        }
        # shipped orders of two warehouses go to two supplies, one per warehouse
        sim = wb["wildberries"]
        firsts = {}
        for o in sim.orders:
            if o.wb_status == "waiting":
                firsts.setdefault(sim.render(o)["warehouseId"], o)
        assert len(firsts) >= 2
        notes = {}
        for wid, o in firsts.items():
            p = {"status": "shipped", "external_id": str(o.id), "channel_code": "wildberries"}
            outcome, note, result = wbc.push_status(conn, client, p)
            assert outcome == "sent" and note is None and result["warehouse_id"] == wid
            notes[wid] = result["supply"]
        assert len(set(notes.values())) == len(firsts)
        assert {w: sim.supplies[s]["warehouseId"] for w, s in notes.items()} == {w: w for w in notes}
        cancel = next(o for o in sim.orders if o.supplier_status == "new" and o.wb_status == "waiting")
        assert (
            wbc.push_status(conn, client, {"status": "cancelled", "external_id": str(cancel.id)})[0] == "sent"
        )
        # stocks: one pushed and read back, one refused by WB (unknown chrtId) — reported, not fatal
        wid = next(iter(BY_WB_WAREHOUSE))
        items = [
            AtsItem("wildberries", "L", wb.catalog[0].sku, 5, str(wid), chrt_id=wb.catalog[0].wb_chrt_id),
            AtsItem("wildberries", "L", "GONE", 2, str(wid), chrt_id=1),
        ]
        outcomes = wbc.push_stock(client, items, PushResult("wildberries"))
        assert [(o[1], o[2]) for o in outcomes] == [("failed", False), ("pushed", True)]
        assert outcomes[0][3] == "refused by WB (409): NotFound: Не найдено"
        client.statuses([cancel.id])
    seen = assert_calls_are_official(rec.calls)
    assert set(seen) == set(SDK_CALLS)  # every call the connector makes, each checked


def test_stock_push_survives_any_error_body():
    """A 409 whose body is not the official array (an object, text, garbage) fails the batch's items with
    the reason; the run goes on to the next warehouse."""
    answers = iter([
        httpx.Response(409, json={"code": "Odd", "message": "object, not array", "data": None}),
        httpx.Response(409, text="<html>conflict</html>"),
        httpx.Response(204),
    ])  # fmt: skip

    def handler(request: httpx.Request) -> httpx.Response:
        if request.method == "PUT":
            return next(answers)
        chrts = json.loads(request.content)["chrtIds"]
        return httpx.Response(200, json={"stocks": [{"chrtId": c, "amount": 0} for c in chrts]})

    client = wbc.WildberriesClient("http://wb.test", "t", rate=None, transport=httpx.MockTransport(handler))
    items = [AtsItem("wildberries", "L", f"S{w}", 3, str(w), chrt_id=100 + w) for w in (1, 2, 3)]
    res = PushResult("wildberries")
    outcomes = wbc.push_stock(client, items, res)
    assert [o[1] for o in outcomes] == ["failed", "failed", "failed"]
    assert "Odd: object, not array" in outcomes[0][3] and "conflict" in outcomes[1][3]
    assert outcomes[2][3] == "read back 0 after setting 3" and res.requests == 6


def test_both_order_shapes_map_to_the_buyers_price(wb):
    """``OrderNew`` → ``finalPrice`` (what the buyer pays); the history ``Order`` → ``price`` (all discounts
    but the WB Wallet); the fast mapper agrees with the pydantic one on both."""
    sim = wb["wildberries"]
    ctx = MappingContext(locations={"wildberries": {str(i): f"L{i}" for i in BY_WB_WAREHOUSE}})
    for new in (True, False):
        for payload in sim.rendered_orders(new=new)[:50]:
            mapped = wbc.map_order(payload, ctx)
            unit = payload["finalPrice"] if new else payload["price"]
            assert mapped.order["lines"][0]["unit_price"] == Decimal(unit) / 100
            _, _, fast = wbc.fast_order(payload, ctx, None)
            assert fast.staging_lines()[0][3] == Decimal(unit) / 100
            if payload["address"]:
                assert mapped.order["city"] and mapped.order["city"] in payload["address"]["fullAddress"]
            else:
                assert mapped.order["city"] is None
