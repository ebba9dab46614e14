"""Ozon Seller API (FBS): postings in (``POST /v4/posting/fbs/list``), free stock out (``POST /v2/products/stocks``),
the account's warehouses and product cards for discovery (``/v2/warehouse/list``, ``/v3/product/list``,
``/v3/product/info/list``).

Follows the Seller API as the published ``ozonapi-async`` package (0.89) models it; the contract test
``tests/contract/test_ozon_contract.py`` checks every request this module sends against that package's request
models.

Feed: postings are listed by ``in_process_at`` within ``filter.since``..``filter.to`` in ascending order, with
Ozon's opaque cursor inside one run. The persisted watermark (``connectors.cursors['ozon:postings']``) is the
largest ``in_process_at`` stored so far, written with each page; a run (or a run after a crash) starts at the
watermark itself, so the boundary postings are fetched again and dedupe as identical raw rows — nothing is
skipped. Cancellations change old postings, so each run also re-reads the ``cancelled`` postings of the last
``refresh_window`` (default 2 days) — idempotent, only changed payloads make new raw rows.

Mapping: an FBS posting ships from our warehouse to Ozon's logistics, which delivers to the buyer's pickup
point or door; for the OMS it is therefore a ``courier`` shipment (the routing rule ``marketplace_fbs``).
Where the buyer is: Ozon fills ``analytics_data.region``/``city`` for rFBS postings only (the seller delivers
those, ``tpl_integration_type`` other than ``ozon``); for FBS it hides the buyer, so an FBS order takes its
region and city from ``customer.address`` when Ozon gives one and otherwise arrives without them (routing
then prices the leg at the dearest zone; the courier collects at the assigned warehouse anyway). The unit
price is what the buyer pays: ``financial_data.products[].customer_price`` (after the seller's and Ozon's
discounts), matched to the product by SKU; a payload without financial data falls back to the seller's
``products[].price``.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import psycopg
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from oms_ops.channels import fastcheck as fc
from oms_ops.channels.ats import AtsItem, Outcome, PushResult
from oms_ops.channels.base import (
    AtsPush,
    Channel,
    Discovery,
    ExternalListing,
    ExternalLocation,
    IngestResult,
    Int,
    Mapped,
    MappingContext,
    PageHook,
)
from oms_ops.channels.normalize import normalize_pending
from oms_ops.channels.rawstore import fetch_ahead, iso, parse_time, split_by_id, store_page, store_polled_page
from oms_ops.connectors.http import ApiClient, ConnectorError, RetryPolicy
from oms_ops.connectors.state import get_cursor, record_success

CODE = "ozon"
CURSOR = "ozon:postings"
MAX_PERIOD = timedelta(days=364)  # Ozon: period <= 1 year
STOCK_BATCH = 100  # Ozon: <= 100 (offer, warehouse) pairs per request
STOCK_THROTTLE_S = 30.0  # Ozon: each pair once per 30 s
PRODUCT_PAGE = 1000  # /v3/product/list: limit <= 1000
INFO_BATCH = 1000  # /v3/product/info/list: <= 1000 ids per request
#: ``tpl_integration_type`` of a posting Ozon delivers (FBS); the others are rFBS (the seller delivers)
OZON_DELIVERY = "ozon"
#: /v2/warehouse/list statuses of a warehouse that takes no postings
INACTIVE_WAREHOUSE = frozenset({"disabled", "blocked", "disabled_due_to_limit", "error", "archived"})


class OzonClient(ApiClient):
    api = "Ozon Seller API"

    def __init__(
        self,
        base_url: str,
        client_id: str,
        api_key: str,
        *,
        policy: RetryPolicy | None = None,
        rate: float | None = 40.0,
        **kw: Any,
    ) -> None:
        super().__init__(
            base_url,
            headers={"Client-Id": str(client_id), "Api-Key": api_key},
            policy=policy,
            rate=rate,
            burst=rate,
            **kw,
        )

    @classmethod
    def from_endpoint(cls, ep, **kw) -> OzonClient:
        return cls(ep.base_url, ep.get("client_id"), ep.get("api_key"), **kw)

    def list_postings(
        self,
        *,
        since: datetime,
        to: datetime,
        cursor: str = "",
        limit: int = 1000,
        statuses: list[str] | None = None,
    ) -> dict:
        """One page of ``/v4/posting/fbs/list``, with the analytics (rFBS buyer's region and city, delivery
        dates) and financial data (the buyer's price)."""
        filt: dict[str, Any] = {"since": iso(since), "to": iso(to)}
        if statuses:
            filt["statuses"] = statuses
        body = {
            "cursor": cursor,
            "limit": limit,
            "sort_dir": "ASC",
            "filter": filt,
            "with": {"analytics_data": True, "financial_data": True},
        }
        return self.request("POST", "/v4/posting/fbs/list", json=body, idempotent=True).json()

    def list_unfulfilled(
        self,
        *,
        cursor: str = "",
        limit: int = 1000,
        statuses: list[str] | None = None,
        cutoff_from: datetime | None = None,
        cutoff_to: datetime | None = None,
    ) -> dict:
        """One page of ``/v4/posting/fbs/unfulfilled/list``: the postings still to pack or hand over (``count``
        is all of them), optionally those due (``shipment_date``) within ``cutoff_from``..``cutoff_to``."""
        filt: dict[str, Any] = {}
        if statuses:
            filt["statuses"] = statuses
        if cutoff_from is not None:
            filt["cutoff_from"] = iso(cutoff_from)
        if cutoff_to is not None:
            filt["cutoff_to"] = iso(cutoff_to)
        body = {
            "cursor": cursor,
            "limit": limit,
            "sort_dir": "ASC",
            "filter": filt,
            "with": {"analytics_data": True, "financial_data": True},
        }
        return self.request("POST", "/v4/posting/fbs/unfulfilled/list", json=body, idempotent=True).json()

    def update_stocks(self, stocks: list[dict]) -> list[dict]:
        """Absolute free stock per (offer, warehouse): safe to replay. ≤ 100 items per call."""
        if len(stocks) > STOCK_BATCH:
            raise ValueError(f"Ozon accepts at most {STOCK_BATCH} stock items per request")
        return self.request("POST", "/v2/products/stocks", json={"stocks": stocks}, idempotent=True).json()[
            "result"
        ]

    def list_warehouses(self, *, cursor: str = "", limit: int = 100) -> dict:
        """One page of ``/v2/warehouse/list`` (the account's FBS and rFBS warehouses; Ozon allows one call a
        minute)."""
        body: dict[str, Any] = {"limit": limit}
        if cursor:
            body["cursor"] = cursor
        return self.request("POST", "/v2/warehouse/list", json=body, idempotent=True).json()

    def list_products(self, *, last_id: str = "", limit: int = PRODUCT_PAGE) -> dict:
        """One page of ``/v3/product/list`` (every card, archived ones included): ``{items, total, last_id}``."""
        body = {"filter": {"visibility": "ALL"}, "last_id": last_id, "limit": limit}
        return self.request("POST", "/v3/product/list", json=body, idempotent=True).json()["result"]

    def product_info(self, product_ids: list[int]) -> list[dict]:
        """``/v3/product/info/list`` by product id (≤ 1000): the cards with their SKU (``sources``) and
        barcodes."""
        if len(product_ids) > INFO_BATCH:
            raise ValueError(f"Ozon accepts at most {INFO_BATCH} product ids per request")
        body = {"product_id": list(product_ids)}
        return self.request("POST", "/v3/product/info/list", json=body, idempotent=True).json()["items"]


def ingest_ozon(
    conn: psycopg.Connection,
    client: OzonClient,
    *,
    page_limit: int = 1000,
    max_pages: int | None = None,
    initial_since: datetime | None = None,
    refresh_window: timedelta = timedelta(days=2),
    normalize: bool = True,
    on_fetched: PageHook | None = None,
    before_commit=None,
) -> IngestResult:
    """Fetch new postings (and recently cancelled ones), store them raw with the watermark, normalise."""
    res = IngestResult(CODE)
    state = get_cursor(conn, CURSOR) or {}
    since = parse_time(state.get("since")) or initial_since or datetime.now(UTC) - timedelta(days=30)
    watermark = since
    to = since + MAX_PERIOD
    with fetch_ahead() as ahead:
        nxt = None
        if max_pages is None or max_pages > 0:
            nxt = ahead.submit(client.list_postings, since=since, to=to, cursor="", limit=page_limit)
        while nxt is not None:
            body = nxt.result()
            nxt = None
            postings = body.get("postings") or []
            res.pages += 1
            res.fetched += len(postings)
            cursor = body.get("cursor") or ""
            if body.get("has_next") and cursor and (max_pages is None or res.pages < max_pages):
                nxt = ahead.submit(client.list_postings, since=since, to=to, cursor=cursor, limit=page_limit)
            items, rejects = split_by_id(postings, "posting_number", what="posting")
            for _, p in items:
                t = parse_time(p.get("in_process_at"))
                if t is not None and t > watermark:
                    watermark = t
            if on_fetched:
                on_fetched(res.pages, postings)
            store_polled_page(
                conn,
                CHANNEL,
                items,
                rejects,
                res,
                cursor_name=CURSOR,
                cursor_value={"since": iso(watermark)},
                normalize=normalize,
                before_commit=before_commit,
            )
    res.cursor = {"since": iso(watermark)}
    if refresh_window and refresh_window > timedelta(0):
        _refresh_cancelled(conn, client, watermark - refresh_window, page_limit, res)
    record_success(conn, CODE, res.fetched)
    if normalize:
        res.normalized.add(normalize_pending(conn, CHANNEL))
    return res


def _refresh_cancelled(conn, client: OzonClient, since: datetime, page_limit: int, res: IngestResult) -> None:
    cursor = ""
    to = since + MAX_PERIOD
    while True:
        body = client.list_postings(
            since=since, to=to, cursor=cursor, limit=page_limit, statuses=["cancelled"]
        )
        items, rejects = split_by_id(body.get("postings") or [], "posting_number", what="posting")
        page = store_page(conn, CHANNEL, items, rejects=rejects)
        res.new_raw += page.new
        res.rejected += len(rejects)
        cursor = body.get("cursor") or ""
        if not body.get("has_next") or not cursor:
            return


# -- mapping --------------------------------------------------------------------------------------------------
class _Model(BaseModel):
    model_config = ConfigDict(extra="ignore")


class _Money(_Model):
    amount: Decimal
    currency: str = "RUB"


class _Product(_Model):
    offer_id: str = Field(min_length=1)
    sku: Int | None = None
    name: str | None = None
    quantity: Int = Field(gt=0)
    price: _Money


class _FinancialProduct(_Model):
    product_id: Int | None = None  # the SKU
    customer_price: _Money | None = None


class _Financial(_Model):
    products: list[_FinancialProduct] = []


class _DeliveryMethod(_Model):
    warehouse_id: Int | None = None
    warehouse: str | None = None


class _Analytics(_Model):
    region: str | None = None
    city: str | None = None
    delivery_date_end: AwareDatetime | None = None


class _Address(_Model):
    region: str | None = None
    city: str | None = None


class _Customer(_Model):
    address: _Address | None = None


class _Posting(_Model):
    posting_number: str = Field(min_length=1)
    order_number: str | None = None
    status: str
    in_process_at: AwareDatetime
    tpl_integration_type: str | None = None
    products: list[_Product] = Field(min_length=1)
    analytics_data: _Analytics | None = None
    financial_data: _Financial | None = None
    customer: _Customer | None = None
    delivery_method: _DeliveryMethod | None = None


def map_posting(payload: dict, ctx: MappingContext) -> Mapped:
    p = _Posting.model_validate(payload)
    # what the buyer pays per unit, by SKU (the first entry of a SKU counts)
    paid: dict[int, _Money] = {}
    for fp in p.financial_data.products if p.financial_data else []:
        if fp.product_id is not None and fp.customer_price is not None and fp.product_id not in paid:
            paid[fp.product_id] = fp.customer_price
    prices = [paid.get(pr.sku, pr.price) if pr.sku is not None else pr.price for pr in p.products]
    currencies = {m.currency for m in prices}
    if len(currencies) != 1:
        return Mapped(p.posting_number, error=f"products in several currencies: {sorted(currencies)}")
    a = p.analytics_data or _Analytics()
    address = (p.customer.address if p.customer else None) or _Address()
    if p.tpl_integration_type and p.tpl_integration_type != OZON_DELIVERY:  # rFBS: the seller delivers
        region, city = a.region or address.region, a.city or address.city
    else:  # FBS: Ozon delivers and shows the buyer's address only where it gives one
        region, city = address.region, address.city
    # the FBS warehouse Ozon assigned the posting to: its courier collects there, so the order ships from it
    wh = p.delivery_method.warehouse_id if p.delivery_method else None
    fulfilment = None
    if wh is not None:
        fulfilment = ctx.location(CODE, wh)
        if fulfilment is None:
            name = p.delivery_method.warehouse or "?"
            return Mapped(
                p.posting_number,
                error=f"delivery_method.warehouse_id: Ozon warehouse {wh} ({name}) is not mapped to a location "
                "(connectors.channel_locations, system 'ozon')",
            )
    order = {
        "channel_code": CODE,
        "external_id": p.posting_number,
        "channel_order_number": p.order_number,
        "placed_at": p.in_process_at,
        "delivery_method": "courier",
        "fulfilment_location_code": fulfilment,
        "region": region or None,
        "city": city or None,
        "promised_at": a.delivery_date_end,
        "payment_method": "prepaid",
        "payment_status": "paid",
        "currency": currencies.pop(),
        "lines": [
            {"sku": pr.offer_id, "qty": pr.quantity, "unit_price": price.amount, "name": pr.name}
            for pr, price in zip(p.products, prices, strict=True)
        ],
    }
    return Mapped(p.posting_number, order, cancelled=p.status == "cancelled")


def _fast_money(m: Any) -> tuple[Decimal, str]:
    m = fc.required_mapping(m)
    currency = fc.any_text(m["currency"]) if "currency" in m else "RUB"
    return fc.money(m.get("amount")), currency


def fast_posting(payload: Any, ctx: MappingContext, raw_id: int | None) -> tuple[str, bool, Any]:
    """``map_posting`` + ``NormalizedOrder`` for the plain payloads (see ``fastcheck``): ``(posting number,
    cancelled, ValidatedOrder)``; raises ``fastcheck.Unsure`` for anything the pydantic path must decide."""
    p = fc.required_mapping(payload)
    number = fc.required_text(p.get("posting_number"))
    status = fc.any_text(p.get("status"))
    placed = fc.timestamp(p.get("in_process_at"))
    order_number = fc.text(p.get("order_number"))
    integration = fc.optional_str(p.get("tpl_integration_type"))
    a = fc.mapping(p.get("analytics_data"))
    a_region, a_city = fc.text(a.get("region")), fc.text(a.get("city"))
    promised = fc.optional_timestamp(a.get("delivery_date_end"))
    address = fc.mapping(fc.mapping(p.get("customer")).get("address"))
    c_region, c_city = fc.text(address.get("region")), fc.text(address.get("city"))
    if integration and integration != OZON_DELIVERY:
        region, city = a_region or c_region, a_city or c_city
    else:
        region, city = c_region, c_city
    dm = fc.mapping(p.get("delivery_method"))
    wh = fc.optional_integer(dm.get("warehouse_id"))
    if dm.get("warehouse") is not None:
        fc.any_text(dm["warehouse"])
    paid: dict[int, tuple[Decimal, str]] = {}
    for fp in fc.items(fc.mapping(p.get("financial_data")).get("products", [])):
        fp = fc.required_mapping(fp)
        sku = fc.optional_integer(fp.get("product_id"))
        price = fp.get("customer_price")
        price = None if price is None else _fast_money(price)
        if sku is not None and price is not None and sku not in paid:
            paid[sku] = price
    lines = []
    currency = None
    for pr in fc.items(p.get("products"), required=True):
        pr = fc.required_mapping(pr)
        sku = fc.optional_integer(pr.get("sku"))
        amount, cur = _fast_money(pr.get("price"))
        if sku is not None and sku in paid:
            amount, cur = paid[sku]
        if currency is not None and cur != currency:
            raise fc.Unsure  # several currencies: the pydantic path names them
        currency = cur
        lines.append(
            (
                fc.required_text(pr.get("offer_id")),
                fc.quantity(pr.get("quantity")),
                amount,
                fc.text(pr.get("name")),
            )
        )
    fulfilment = None
    if wh is not None:
        fulfilment = ctx.location(CODE, wh)
        if fulfilment is None:
            raise fc.Unsure
    cancelled = status == "cancelled"
    order = fc.validated_order(
        lines,
        channel_code=CODE,
        external_id=number,
        channel_order_number=order_number,
        placed_at=placed,
        delivery_method="courier",
        fulfilment_location_code=fulfilment,
        region=region or None,
        city=city or None,
        promised_at=promised,
        payment_method="prepaid",
        payment_status="paid",
        currency=currency,
        raw_id=raw_id,
    )
    return number, cancelled, order


# -- stock out ------------------------------------------------------------------------------------------------
def push_stock(client: OzonClient, items: list[AtsItem], res: PushResult) -> list[Outcome]:
    """ATS as absolute free stock per (offer, warehouse), ≤ 100 pairs per request; ``updated: true`` is the
    proof; an item answered ``TOO_MANY_REQUESTS`` (each pair is accepted once per 30 s) is ``throttled``."""
    out = []
    for i in range(0, len(items), STOCK_BATCH):
        batch = items[i : i + STOCK_BATCH]
        payload = [
            {
                "offer_id": it.offer_id,
                "product_id": it.product_id,
                "stock": it.qty,
                "warehouse_id": int(it.external_location),
            }
            for it in batch
        ]
        res.requests += 1
        res.batch_sizes.append(len(batch))
        try:
            answer = client.update_stocks(payload)
        except ConnectorError as exc:
            res.errors.append(str(exc))
            out += [(it, "failed", False, str(exc)[:500]) for it in batch]
            continue
        by_key = {(str(r.get("offer_id")), str(r.get("warehouse_id"))): r for r in answer}
        for it in batch:
            r = by_key.get((str(it.offer_id), str(it.external_location)))
            if r is None:
                out.append((it, "unverified", False, "item missing from the answer"))
            elif r.get("updated"):
                out.append((it, "pushed", True, None))
            else:
                codes = [e.get("code") for e in r.get("errors") or []]
                text = "; ".join(f"{e.get('code')}: {e.get('message')}" for e in r.get("errors") or [])
                out.append(
                    (it, "throttled" if "TOO_MANY_REQUESTS" in codes else "failed", False, text or None)
                )
    return out


# -- discovery ------------------------------------------------------------------------------------------------
def discover(client: OzonClient) -> Discovery:
    """The account as Ozon lists it: its FBS/rFBS warehouses (``/v2/warehouse/list``) and its product cards
    (``/v3/product/list`` for the ids, ``/v3/product/info/list`` for the SKU and barcodes). Archived cards sell
    nothing and are left out; a card the info call does not return keeps what the list gave (no SKU)."""
    found = Discovery()
    cursor = ""
    while True:
        body = client.list_warehouses(cursor=cursor)
        for w in body.get("warehouses") or []:
            if w.get("warehouse_id") is None:
                continue
            found.locations.append(
                ExternalLocation(
                    external_id=str(w["warehouse_id"]),
                    name=w.get("name") or str(w["warehouse_id"]),
                    address=(w.get("address_info") or {}).get("address") or None,
                    kind="warehouse",
                    active=str(w.get("status") or "").lower() not in INACTIVE_WAREHOUSE,
                )
            )
        nxt = body.get("cursor") or ""
        if not body.get("has_next") or not nxt or nxt == cursor:
            break
        cursor = nxt

    cards: dict[int, dict] = {}
    last_id = ""
    while True:
        page = client.list_products(last_id=last_id)
        items = page.get("items") or []
        for it in items:
            if it.get("product_id") is not None and not it.get("archived"):
                cards[int(it["product_id"])] = it
        nxt = page.get("last_id") or ""
        if len(items) < PRODUCT_PAGE or not nxt or nxt == last_id:
            break
        last_id = nxt
    ids = list(cards)
    info: dict[int, dict] = {}
    for i in range(0, len(ids), INFO_BATCH):
        for item in client.product_info(ids[i : i + INFO_BATCH]):
            if item.get("id") is not None:
                info[int(item["id"])] = item
    for product_id, card in cards.items():
        item = info.get(product_id, {})
        if item.get("is_archived"):
            continue
        offer_id = item.get("offer_id") or card.get("offer_id") or None
        sources = [s for s in item.get("sources") or [] if s.get("sku")]
        sku = next((s["sku"] for s in sources if s.get("source") == "sds"), None) or (
            sources[0]["sku"] if sources else None
        )
        barcodes = [b for b in item.get("barcodes") or [] if b]
        found.listings.append(
            ExternalListing(
                article=offer_id,
                barcode=barcodes[0] if barcodes else None,
                offer_id=offer_id,
                product_id=product_id,
                channel_sku=int(sku) if sku is not None else None,
                name=item.get("name") or None,
            )
        )
    return found


def _listing(p) -> tuple | None:
    return (p["offer_id"], p["ozon_product_id"], p["ozon_sku"], None, None, None, p["barcode"])


CHANNEL = Channel(
    code=CODE,
    title="Ozon (FBS)",
    system="ozon",
    env={"base_url": "OMS_OZON_URL", "client_id": "OMS_OZON_CLIENT_ID", "api_key": "OMS_OZON_API_KEY"},
    secrets=frozenset({"api_key"}),
    client=OzonClient.from_endpoint,
    poll=ingest_ozon,
    feed="Ozon FBS postings: v4 list by in_process_at watermark → raw.channel_orders → orders.",
    mapper=map_posting,
    fast_mapper=fast_posting,
    ats=AtsPush(push_stock, key_interval_s=STOCK_THROTTLE_S),
    listing=_listing,
    network_key="ozon_warehouse_id",
    discover=discover,
    start_cursor=lambda since: (CURSOR, {"since": since.isoformat()}),
)
