"""Ozon Seller API (FBS): postings in (``POST /v4/posting/fbs/list``), free stock out (``POST /v2/products/stocks``).

Feed: postings are listed by ``in_process_at`` within ``filter.since``..``filter.to`` in ascending order, with
Ozon's opaque cursor inside one run. The persisted watermark (``connectors.cursors['ozon:postings']``) is the
largest ``in_process_at`` stored so far, written with each page; a run (or a run after a crash) starts at the
watermark itself, so the boundary postings are fetched again and dedupe as identical raw rows — nothing is
skipped. Cancellations change old postings, so each run also re-reads the ``cancelled`` postings of the last
``refresh_window`` (default 2 days) — idempotent, only changed payloads make new raw rows.

Mapping: an FBS posting ships from our warehouse to Ozon's logistics, which delivers to the buyer's pickup
point or door; for the OMS it is therefore a ``courier`` shipment (the routing rule ``marketplace_fbs``),
with the buyer's region and city from ``analytics_data`` (Ozon hides the address and the customer).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import psycopg
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from oms_ops.channels import fastcheck as fc
from oms_ops.channels.ats import AtsItem, Outcome, PushResult
from oms_ops.channels.base import AtsPush, Channel, IngestResult, Mapped, MappingContext, PageHook
from oms_ops.channels.normalize import normalize_pending
from oms_ops.channels.rawstore import fetch_ahead, iso, parse_time, split_by_id, store_page, store_polled_page
from oms_ops.connectors.http import ApiClient, ConnectorError, RetryPolicy
from oms_ops.connectors.state import get_cursor, record_success

CODE = "ozon"
CURSOR = "ozon:postings"
MAX_PERIOD = timedelta(days=364)  # Ozon: period <= 1 year
STOCK_BATCH = 100  # Ozon: <= 100 (offer, warehouse) pairs per request
STOCK_THROTTLE_S = 30.0  # Ozon: each pair once per 30 s


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
        filt: dict[str, Any] = {"since": iso(since), "to": iso(to)}
        if statuses:
            filt["statuses"] = statuses
        body = {
            "cursor": cursor,
            "limit": limit,
            "sort_dir": "ASC",
            "filter": filt,
            "with": {"analytics_data": True, "financial_data": False},
        }
        return self.request("POST", "/v4/posting/fbs/list", json=body, idempotent=True).json()

    def update_stocks(self, stocks: list[dict]) -> list[dict]:
        """Absolute free stock per (offer, warehouse): safe to replay. ≤ 100 items per call."""
        if len(stocks) > STOCK_BATCH:
            raise ValueError(f"Ozon accepts at most {STOCK_BATCH} stock items per request")
        return self.request("POST", "/v2/products/stocks", json={"stocks": stocks}, idempotent=True).json()[
            "result"
        ]


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


class _Price(_Model):
    amount: Decimal
    currency: str = "RUB"


class _Product(_Model):
    offer_id: str = Field(min_length=1)
    name: str | None = None
    quantity: int = Field(gt=0)
    price: _Price


class _DeliveryMethod(_Model):
    warehouse_id: int | None = None
    warehouse: str | None = None


class _Analytics(_Model):
    region: str | None = None
    city: str | None = None
    delivery_date_end: AwareDatetime | None = None


class _Posting(_Model):
    posting_number: str = Field(min_length=1)
    order_number: str | None = None
    status: str
    in_process_at: AwareDatetime
    products: list[_Product] = Field(min_length=1)
    analytics_data: _Analytics | None = None
    delivery_method: _DeliveryMethod | None = None


def map_posting(payload: dict, ctx: MappingContext) -> Mapped:
    p = _Posting.model_validate(payload)
    currencies = {pr.price.currency for pr in p.products}
    if len(currencies) != 1:
        return Mapped(p.posting_number, error=f"products in several currencies: {sorted(currencies)}")
    a = p.analytics_data or _Analytics()
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
        "region": a.region,
        "city": a.city,
        "promised_at": a.delivery_date_end,
        "payment_method": "prepaid",
        "payment_status": "paid",
        "currency": currencies.pop(),
        "lines": [
            {"sku": pr.offer_id, "qty": pr.quantity, "unit_price": pr.price.amount, "name": pr.name}
            for pr in p.products
        ],
    }
    return Mapped(p.posting_number, order, cancelled=p.status == "cancelled")


def fast_posting(payload: Any, ctx: MappingContext, raw_id: int | None) -> tuple[str, bool, Any]:
    """``map_posting`` + ``NormalizedOrder`` for the plain payloads (see ``fastcheck``): ``(posting number,
    cancelled, ValidatedOrder)``; raises ``fastcheck.Unsure`` for anything the pydantic path must decide."""
    p = fc.required_mapping(payload)
    number = fc.required_text(p.get("posting_number"))
    status = fc.any_text(p.get("status"))
    placed = fc.timestamp(p.get("in_process_at"))
    order_number = fc.text(p.get("order_number"))
    a = fc.mapping(p.get("analytics_data"))
    region, city = fc.text(a.get("region")), fc.text(a.get("city"))
    promised = fc.optional_timestamp(a.get("delivery_date_end"))
    dm = fc.mapping(p.get("delivery_method"))
    wh = fc.optional_integer(dm.get("warehouse_id"))
    if dm.get("warehouse") is not None:
        fc.any_text(dm["warehouse"])
    lines = []
    currency = None
    for pr in fc.items(p.get("products"), required=True):
        pr = fc.required_mapping(pr)
        price = fc.required_mapping(pr.get("price"))
        cur = fc.any_text(price["currency"]) if "currency" in price else "RUB"
        if currency is not None and cur != currency:
            raise fc.Unsure  # several currencies: the pydantic path names them
        currency = cur
        lines.append(
            (
                fc.required_text(pr.get("offer_id")),
                fc.quantity(pr.get("quantity")),
                fc.money(price.get("amount")),
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
        region=region,
        city=city,
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
    ats=AtsPush(push_stock),
    listing=_listing,
    network_key="ozon_warehouse_id",
    start_cursor=lambda since: (CURSOR, {"since": since.isoformat()}),
)
