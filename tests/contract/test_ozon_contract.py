"""Ozon: the published ``ozonapi-async`` client against our simulator, and our connector against its models.

``ozonapi-async`` (0.89) mirrors the official Seller API spec in pydantic models. Its own ``SellerAPI`` is pointed
at the simulator through the ``base_url`` its ``SellerAPIConfig`` offers and calls every endpoint we serve or
call; its models must parse every answer, the simulator must accept every request it sends, and the raw
answers may carry no key the models do not know (a v3 leftover in a v4 answer fails here). Then the requests
our ``OzonClient`` sends (recorded by a transport wrapping the real one) are held to the package's request
models, and the connector's mapping of FBS and rFBS postings is checked on payloads in that shape.

The package is async (aiohttp): it runs under ``asyncio.run`` inside the test, all in one event loop, and its
class-level sessions and limiters are reset before and shut down after, so no state leaks into other tests.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import copy
import json
import types
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Union, get_args, get_origin

import httpx
import pytest
from ozonapi import SellerAPI, SellerAPIConfig
from ozonapi.seller.core.core import APIManager
from ozonapi.seller.core.exceptions import (
    APIClientError,
    APIConflictError,
    APIForbiddenError,
    APINotFoundError,
    APIServerError,
)
from ozonapi.seller.schemas.fbs import (
    PostingFBSListFilter,
    PostingFBSListRequest,
    PostingFBSListResponse,
    PostingFBSListWith,
    PostingFBSUnfulfilledListFilter,
    PostingFBSUnfulfilledListRequest,
    PostingFBSUnfulfilledListResponse,
)
from ozonapi.seller.schemas.prices_and_stocks import (
    ProductsStocksItem,
    ProductsStocksRequest,
    ProductsStocksResponse,
)
from ozonapi.seller.schemas.products import (
    ProductInfoListRequest,
    ProductInfoListResponse,
    ProductListFilter,
    ProductListRequest,
    ProductListResponse,
)
from ozonapi.seller.schemas.warehouses import WarehouseListRequest, WarehouseListResponse
from pydantic import BaseModel

from oms_ops.channels import ozon
from oms_ops.channels.ats import AtsItem, PushResult
from oms_ops.channels.base import MappingContext
from oms_ops.connectors.http import RetryPolicy
from oms_ops.orders import NormalizedOrder
from simulators.network import WAREHOUSES

SINCE, TO = "2025-03-01T00:00:00Z", "2025-03-10T00:00:00Z"
WITH_ALL = PostingFBSListWith(analytics_data=True, financial_data=True, barcodes=True, legal_info=True)


# -- strict shape: every key of a JSON document must be a field of the model (recursively) -----------------------
def unknown_keys(data: Any, model: type[BaseModel], path: str = "") -> list[str]:
    """Keys of ``data`` that ``model`` does not define (by alias), at any depth, as dotted paths."""
    out: list[str] = []
    _walk_model(data, model, path, out)
    return out


def _walk_model(data: Any, model: type[BaseModel], path: str, out: list[str]) -> None:
    if not isinstance(data, dict):
        return
    fields = {(f.alias or name): f for name, f in model.model_fields.items()}
    for key, value in data.items():
        f = fields.get(key)
        if f is None:
            out.append(f"{path}{key}")
        else:
            _walk_type(value, f.annotation, f"{path}{key}.", out)


def _walk_type(value: Any, ann: Any, path: str, out: list[str]) -> None:
    origin = get_origin(ann)
    if origin in (Union, types.UnionType):
        for arg in get_args(ann):
            if arg is not type(None):
                _walk_type(value, arg, path, out)
    elif origin is list and isinstance(value, list):
        for i, v in enumerate(value):
            _walk_type(v, get_args(ann)[0], f"{path}{i}.", out)
    elif isinstance(ann, type) and issubclass(ann, BaseModel):
        _walk_model(value, ann, path, out)


def as_sent(request: BaseModel) -> dict:
    """The JSON body the package sends for a request model (its methods dump by alias, nulls included)."""
    return request.model_dump(mode="json", by_alias=True)


@pytest.fixture
def ozon_stack(make_stack):
    stack = make_stack(only=["ozon"], rate=2.0)
    stack.advance(3 * 3600)
    sim = stack["ozon"]
    # a posting packed (barcodes exist) and one the seller cancelled, besides the generator's own
    waiting = [p.posting_number for p in sim.postings if p.status == "awaiting_packaging"]
    sim.set_posting_status(waiting[0], "awaiting_deliver")
    sim.set_posting_status(waiting[1], "cancelled")
    return stack


def _config(url: str) -> SellerAPIConfig:
    return SellerAPIConfig(base_url=url, max_retries=0, request_timeout=10.0, log_level="CRITICAL")


def _reset_package_state() -> None:
    """The package keeps its HTTP sessions and method limiters on the class: start from a clean slate."""
    APIManager._session_manager = None
    APIManager._method_rate_limiter_manager = None
    APIManager._initialized = False


def test_ozonapi_client_against_the_simulator(ozon_stack):
    stack = ozon_stack
    sim = stack["ozon"]
    url, creds = stack.urls["ozon"], stack.credentials["ozon"]
    headers = {"Client-Id": creds["client_id"], "Api-Key": creds["api_key"]}
    raw = httpx.Client(base_url=url, headers=headers, timeout=10)

    def strict(path: str, request: BaseModel, response_model: type[BaseModel]) -> dict:
        """The same request sent raw: the answer holds no key the package's model lacks, and parses."""
        r = raw.post(path, json=as_sent(request))
        assert r.status_code == 200, r.text
        body = r.json()
        assert unknown_keys(body, response_model) == [], path
        response_model.model_validate(body)
        return body

    expected = [p["posting_number"] for p in sim.rendered_postings()]
    product = stack.catalog[2]
    warehouse = WAREHOUSES[1].ozon_warehouse_id

    async def drive() -> None:
        async with SellerAPI(creds["client_id"], creds["api_key"], config=_config(url)) as api:
            # v4 posting list: every posting once, paging by cursor, with and without the `with` blocks
            for with_ in (None, WITH_ALL):
                seen, cursor = [], ""
                while True:
                    req = PostingFBSListRequest(
                        filter=PostingFBSListFilter(since=SINCE, to=TO), limit=7, cursor=cursor, with_=with_
                    )
                    page = await api.posting_fbs_list(req)
                    assert isinstance(page, PostingFBSListResponse)
                    seen += page.postings
                    if not page.has_next:
                        break
                    cursor = page.cursor
                assert [p.posting_number for p in seen] == expected
                blocks = [(p.analytics_data, p.financial_data, p.legal_info) for p in seen]
                if with_ is None:
                    assert all(b == (None, None, None) for b in blocks) and all(
                        p.barcodes is None for p in seen
                    )
                else:
                    assert all(None not in b for b in blocks)
                    assert [p.posting_number for p in seen if p.barcodes] == [
                        n for n in expected if sim.by_number[n].status == "awaiting_deliver"
                    ]
                    fbs = seen[0]
                    assert fbs.tpl_integration_type == "ozon" and fbs.customer is None
                    assert not fbs.analytics_data.region and not fbs.analytics_data.city  # rFBS only
                    fin = fbs.financial_data.products[0]
                    assert fin.product_id == fbs.products[0].sku and fin.commission.currency == "RUB"
                    assert Decimal(fin.customer_price.amount) <= Decimal(fbs.products[0].price.amount)
            strict("/v4/posting/fbs/list", PostingFBSListRequest(
                filter=PostingFBSListFilter(since=SINCE, to=TO, statuses=["awaiting_deliver", "cancelled"]),
                limit=50, with_=WITH_ALL,
            ), PostingFBSListResponse)  # fmt: skip

            # v4 unfulfilled list: what is still to pack or hand over, with its count
            unfulfilled = [
                n for n in expected if sim.by_number[n].status in ("awaiting_packaging", "awaiting_deliver")
            ]
            seen, cursor = [], ""
            while True:
                req = PostingFBSUnfulfilledListRequest(
                    filter=PostingFBSUnfulfilledListFilter(), limit=25, cursor=cursor, with_=WITH_ALL
                )
                page = await api.posting_fbs_unfulfilled_list(req)
                assert isinstance(page, PostingFBSUnfulfilledListResponse) and page.count == len(unfulfilled)
                seen += [p.posting_number for p in page.postings]
                if not page.has_next:
                    break
                cursor = page.cursor
            assert seen == unfulfilled
            strict("/v4/posting/fbs/unfulfilled/list", PostingFBSUnfulfilledListRequest(
                filter=PostingFBSUnfulfilledListFilter(statuses=["awaiting_deliver"]), limit=10, with_=WITH_ALL,
            ), PostingFBSUnfulfilledListResponse)  # fmt: skip

            # v2 stocks: accepted, then the same pair within 30 s is TOO_MANY_REQUESTS inside a 200
            item = ProductsStocksItem(
                offer_id=product.offer_id, product_id=product.ozon_product_id, stock=5, warehouse_id=warehouse
            )
            first = await api.products_stocks(ProductsStocksRequest(stocks=[item]))
            assert isinstance(first, ProductsStocksResponse) and first.result[0].updated is True
            again = await api.products_stocks(
                ProductsStocksRequest(stocks=[item.model_copy(update={"stock": 4})])
            )
            assert again.result[0].updated is False
            assert [e.code for e in again.result[0].errors] == ["TOO_MANY_REQUESTS"]
            other = stack.catalog[3]
            strict("/v2/products/stocks", ProductsStocksRequest(stocks=[
                ProductsStocksItem(offer_id=other.offer_id, stock=1, warehouse_id=warehouse),
            ]), ProductsStocksResponse)  # fmt: skip

            # v2 warehouse list (the package allows it once a minute: one call)
            warehouses = await api.warehouse_list(WarehouseListRequest())
            assert isinstance(warehouses, WarehouseListResponse) and warehouses.has_next is False
            assert [(w.warehouse_id, w.name) for w in warehouses.warehouses] == [
                (w.ozon_warehouse_id, w.name) for w in WAREHOUSES if w.ozon_warehouse_id
            ]
            strict("/v2/warehouse/list", WarehouseListRequest(limit=2), WarehouseListResponse)

            # v3 product list by last_id, then product info by each kind of id
            listed, last_id = [], ""
            while True:
                page = await api.product_list(
                    ProductListRequest(filter=ProductListFilter(), limit=12, last_id=last_id)
                )
                assert isinstance(page, ProductListResponse) and page.result.total == len(stack.catalog)
                listed += [(i.offer_id, i.product_id) for i in page.result.items]
                if len(page.result.items) < 12:
                    break
                last_id = page.result.last_id
            assert sorted(listed) == sorted((p.offer_id, p.ozon_product_id) for p in stack.catalog)
            strict(
                "/v3/product/list",
                ProductListRequest(filter=ProductListFilter(), limit=5),
                ProductListResponse,
            )
            for req in (
                ProductInfoListRequest(offer_id=[product.offer_id]),
                ProductInfoListRequest(product_id=[product.ozon_product_id]),
                ProductInfoListRequest(sku=[product.ozon_sku]),
            ):
                info = await api.product_info_list(req)
                assert isinstance(info, ProductInfoListResponse)
                (card,) = info.items
                assert (card.id, card.offer_id, card.sources[0].sku, card.barcodes) == (
                    product.ozon_product_id, product.offer_id, product.ozon_sku, [product.barcode],
                )  # fmt: skip
                assert card.stocks.has_stock  # the push above
                strict("/v3/product/info/list", req, ProductInfoListResponse)

            # errors in the official shape {code, message, details}, as the package maps them
            with pytest.raises(APIClientError) as bad:
                await api.posting_fbs_list(PostingFBSListRequest(limit=5))  # no filter
            assert bad.value.code == 3 and bad.value.details == []
            with pytest.raises(APINotFoundError) as missing:
                await api._request(method="post", api_version="v9", endpoint="posting/fbs/list", payload={})
            assert missing.value.code == 5
            sim.faults.set([
                {"kind": "server_error", "count": 1, "status": 409, "path": "/v3/product/list"},
                {"kind": "server_error", "count": 1, "status": 500, "path": "/v3/product/info/list"},
            ])  # fmt: skip
            with pytest.raises(APIConflictError) as conflict:
                await api.product_list(ProductListRequest(filter=ProductListFilter(), limit=5))
            assert conflict.value.code == 10
            with pytest.raises(APIServerError) as broken:
                await api.product_info_list(ProductInfoListRequest(sku=[product.ozon_sku]))
            assert broken.value.code == 13
        async with SellerAPI("999", "wrong-key", config=_config(url)) as stranger:
            with pytest.raises(APIForbiddenError) as denied:
                await stranger.warehouse_list(WarehouseListRequest())
            assert denied.value.code == 7

    async def run() -> None:
        try:
            await drive()
        finally:
            await APIManager.shutdown()  # its sessions and the limiters' cleanup task, in their own loop

    _reset_package_state()
    try:
        # A thread of its own: Playwright's sync API (browser tests in the same session) keeps an event loop
        # running in the main thread, and asyncio.run refuses to start inside one.
        with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
            pool.submit(asyncio.run, run()).result()
    finally:
        raw.close()
        _reset_package_state()


# -- our connector's requests ------------------------------------------------------------------------------------
class RecordingTransport(httpx.BaseTransport):
    """A real transport that also keeps every request's path and JSON body."""

    def __init__(self) -> None:
        self._inner = httpx.HTTPTransport()
        self.sent: list[tuple[str, Any]] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.sent.append((request.url.path, json.loads(request.content) if request.content else None))
        return self._inner.handle_request(request)

    def close(self) -> None:
        self._inner.close()


REQUEST_MODELS: dict[str, type[BaseModel]] = {
    "/v4/posting/fbs/list": PostingFBSListRequest,
    "/v4/posting/fbs/unfulfilled/list": PostingFBSUnfulfilledListRequest,
    "/v2/products/stocks": ProductsStocksRequest,
    "/v2/warehouse/list": WarehouseListRequest,
    "/v3/product/list": ProductListRequest,
    "/v3/product/info/list": ProductInfoListRequest,
}


def test_connector_requests_follow_the_ozonapi_request_models(ozon_stack):
    stack = ozon_stack
    creds = stack.credentials["ozon"]
    recorder = RecordingTransport()
    policy = RetryPolicy(attempts=2, sleep=lambda s: None)
    client = ozon.OzonClient(
        stack.urls["ozon"], creds["client_id"], creds["api_key"], policy=policy, rate=None, transport=recorder
    )
    with client:
        since, to = datetime(2025, 3, 1, tzinfo=UTC), datetime(2025, 3, 10, tzinfo=UTC)
        cursor, numbers = "", []
        while True:  # as ingest_ozon pages, and as its refresh of cancellations filters
            page = client.list_postings(since=since, to=to, cursor=cursor, limit=40)
            numbers += [p["posting_number"] for p in page["postings"]]
            if not page["has_next"]:
                break
            cursor = page["cursor"]
        assert numbers == [p["posting_number"] for p in stack["ozon"].rendered_postings()]
        assert client.list_postings(since=since, to=to, limit=40, statuses=["cancelled"])["postings"]
        unfulfilled = client.list_unfulfilled(limit=10, cutoff_from=since, cutoff_to=to)
        assert unfulfilled["count"] >= len(unfulfilled["postings"]) > 0
        p = stack.catalog[0]
        items = [AtsItem("ozon", w.code, p.sku, 3, str(w.ozon_warehouse_id), p.offer_id, p.ozon_product_id)
                 for w in WAREHOUSES]  # fmt: skip
        outcomes = ozon.push_stock(client, items, PushResult("ozon"))
        assert [o[1] for o in outcomes] == ["pushed"] * len(items)
        found = ozon.discover(client)

    # discovery: the network's warehouses and the whole catalog with Ozon's ids
    assert [(x.external_id, x.name, x.active) for x in found.locations] == [
        (str(w.ozon_warehouse_id), w.name, True) for w in WAREHOUSES if w.ozon_warehouse_id
    ]
    assert sorted(
        (x.article, x.offer_id, x.product_id, x.channel_sku, x.barcode) for x in found.listings
    ) == sorted((c.sku, c.offer_id, c.ozon_product_id, c.ozon_sku, c.barcode) for c in stack.catalog)
    # every request the connector sent is one the package's request models describe
    assert {path for path, _ in recorder.sent} == set(REQUEST_MODELS)
    for path, body in recorder.sent:
        model = REQUEST_MODELS[path]
        assert unknown_keys(body, model) == [], (path, body)
        model.model_validate(body)
    lists = [b for path, b in recorder.sent if path == "/v4/posting/fbs/list"]
    assert all(b["with"] == {"analytics_data": True, "financial_data": True} for b in lists)


# -- mapping FBS and rFBS postings ------------------------------------------------------------------------------
def _both(payload: dict, ctx: MappingContext) -> tuple[NormalizedOrder, NormalizedOrder]:
    """The pydantic and the fast mapper's order for one payload; they must agree exactly."""
    slow = NormalizedOrder.model_validate({**ozon.map_posting(payload, ctx).order, "raw_id": 1})
    _, _, fast = ozon.fast_posting(payload, ctx, 1)
    assert (tuple(fast.staging_values()), fast.staging_lines()) == (
        tuple(slow.staging_values()),
        slow.staging_lines(),
    )
    return slow, fast


def test_fbs_and_rfbs_postings_map_with_official_semantics(ozon_stack):
    stack = ozon_stack
    sim = stack["ozon"]
    ctx = MappingContext(locations={"ozon": {str(w.ozon_warehouse_id): w.code for w in WAREHOUSES}})
    discounted = next(
        p for p in sim.postings if sim.ozon_discount_percent(p) and p.status == "awaiting_packaging"
    )
    payload = sim.render(discounted, analytics=True, financial=True)
    PostingFBSListResponse.model_validate({"postings": [payload], "cursor": "", "has_next": False})

    # FBS: Ozon hides the buyer, so no region or city; the buyer's price, not the seller's
    order, _ = _both(payload, ctx)
    assert order.region is None and order.city is None
    paid = {
        f["product_id"]: Decimal(f["customer_price"]["amount"]) for f in payload["financial_data"]["products"]
    }
    assert [ln.unit_price for ln in order.lines] == [paid[pr["sku"]] for pr in payload["products"]]
    assert order.lines[0].unit_price < Decimal(payload["products"][0]["price"]["amount"])
    assert order.fulfilment_location_code == discounted.warehouse.code

    # rFBS (the seller delivers): Ozon fills analytics_data.region/city, and the order takes them
    rfbs = copy.deepcopy(payload)
    rfbs["tpl_integration_type"] = "non_integrated"
    rfbs["analytics_data"].update(region=discounted.order.address.region, city=discounted.order.address.city)
    PostingFBSListResponse.model_validate({"postings": [rfbs]})
    order, _ = _both(rfbs, ctx)
    assert (order.region, order.city) == (discounted.order.address.region, discounted.order.address.city)

    # an FBS posting that does carry the buyer's address (customer.address) takes it from there
    with_address = copy.deepcopy(payload)
    with_address["customer"] = {"address": {"region": "Москва", "city": "Москва", "country": "Россия"}}
    assert unknown_keys({"postings": [with_address]}, PostingFBSListResponse) == []
    order, _ = _both(with_address, ctx)
    assert (order.region, order.city) == ("Москва", "Москва")

    # without financial data (an older raw row) the seller's price stands in
    bare = sim.render(discounted, analytics=True)
    order, _ = _both(bare, ctx)
    assert [ln.unit_price for ln in order.lines] == [
        Decimal(pr["price"]["amount"]) for pr in bare["products"]
    ]
