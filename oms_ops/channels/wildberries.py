"""Wildberries seller API (FBS): assembly tasks in (``/api/v3/orders/new`` and ``/api/v3/orders``), statuses,
cancellations and supplies out, stock per warehouse (``PUT /api/v3/stocks/{warehouseId}``), and discovery of
the account's warehouses (``GET /api/v3/warehouses``) and cards (content API ``/content/v2/get/cards/list``).

Follows WB's official OpenAPI specs as captured by ``wildberries-sdk`` (spec of 2026-10);
``tests/contract/test_wildberries_contract.py`` validates the bodies this client sends with the sdk's
request models.

Feed: ``/api/v3/orders/new`` returns every order still new (no paging) — the fast path, idempotent; then the
history walk ``/api/v3/orders?limit=&next=`` continues from the persisted ``next`` (the last order id),
written with each page, until an empty page — it catches orders that left "new" between two polls. The
``next`` WB returns is stored as is (after a duplicate-fault page it steps back one record; the repeated
record dedupes). Cancellations are not in the order payload: :func:`sync_statuses` asks
``POST /api/v3/orders/status`` about our open WB orders and cancels those WB cancelled.

One WB order is one unit (an assembly task with its own sticker), so one WB order = one OMS order of one
line; ``rid`` is kept as the channel's order number. The two endpoints serve two shapes: ``OrderNew`` has
``finalPrice`` (what the buyer pays, after every discount), the history ``Order`` only ``price`` (after every
discount but the WB Wallet one); the unit price is the first of them the record has, kopecks (×100) in the
sale currency (``currencyCode``, ISO numeric). ``offices`` are WB offices, not the buyer's: the city comes
from the delivery address, when there is one.
Limits: 300 req/min, burst 20, each 4xx counts as 10: the client paces at 5 req/s with a burst of 20 and
charges itself 9 extra tokens for a 4xx. The content API (another host on the real service: setting
``content_url``, ``OMS_WB_CONTENT_URL``; default the marketplace URL) allows 100 req/min, burst 5.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
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
    Float,
    IngestResult,
    Int,
    Mapped,
    MappingContext,
    PageHook,
)
from oms_ops.channels.normalize import CANCELLABLE_STATES, cancel_channel_orders, normalize_pending
from oms_ops.channels.rawstore import (
    fetch_ahead,
    normalize_stored,
    split_by_id,
    store_page,
    store_polled_page,
)
from oms_ops.connectors.http import ApiClient, ConnectorError, RetryPolicy
from oms_ops.connectors.state import get_cursor, record_success, set_cursor

CODE = "wildberries"
CURSOR = "wildberries:orders"
CURRENCIES = {643: "RUB", 933: "BYN", 398: "KZT", 51: "AMD", 417: "KGS", 860: "UZS"}
#: wbStatus / supplierStatus values that mean the order will not be shipped
CANCELLED_WB = frozenset({"canceled", "canceled_by_client", "declined_by_client", "defect"})
STATUS_BATCH = 1000
STOCK_BATCH = 1000
#: most assembly tasks one supply call takes
SUPPLY_BATCH = 100
#: the largest amount a stock push takes
STOCK_MAX = 100_000
#: the content API's limit: 100 req/min, burst 5; at most 100 cards a page
CONTENT_RATE = 100 / 60
CONTENT_BURST = 5.0
CARDS_PAGE = 100


class WildberriesContentClient(ApiClient):
    """The content API (cards): another host and another, slower rate limit than the marketplace API."""

    api = "Wildberries Content API"

    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        policy: RetryPolicy | None = None,
        rate: float | None = CONTENT_RATE,
        burst: float = CONTENT_BURST,
        **kw: Any,
    ) -> None:
        super().__init__(
            base_url,
            headers={"Authorization": f"Bearer {token}"},
            policy=policy,
            rate=rate,
            burst=burst,
            **kw,
        )

    def cards(self, *, after: dict | None = None, limit: int = CARDS_PAGE) -> tuple[list[dict], dict]:
        """One page of cards, oldest change first (``sort.ascending``: the order that lets a later run go on
        from a saved cursor), every card (``withPhoto: -1``), after the ``{updatedAt, nmID}`` cursor."""
        body = {
            "settings": {
                "sort": {"ascending": True},
                "cursor": {"limit": limit, **(after or {})},
                "filter": {"withPhoto": -1},
            }
        }
        data = self.request("POST", "/content/v2/get/cards/list", json=body, idempotent=True).json()
        if not isinstance(data, dict):
            raise ConnectorError(
                self.api, "POST /content/v2/get/cards/list", f"unexpected body {data!r:.200}"
            )
        return list(data.get("cards") or []), dict(data.get("cursor") or {})


class WildberriesClient(ApiClient):
    api = "Wildberries API"

    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        content_url: str | None = None,
        policy: RetryPolicy | None = None,
        rate: float | None = 5.0,
        burst: float = 20.0,
        **kw: Any,
    ) -> None:
        super().__init__(
            base_url,
            headers={"Authorization": f"Bearer {token}"},
            policy=policy,
            rate=rate,
            burst=burst,
            error_penalty=9.0,
            **kw,
        )
        self._content_args = (content_url or base_url, token, policy, rate, kw)
        self._content: WildberriesContentClient | None = None

    @classmethod
    def from_endpoint(cls, ep, **kw) -> WildberriesClient:
        return cls(ep.base_url, ep.get("token"), content_url=ep.get("content_url") or None, **kw)

    @property
    def content(self) -> WildberriesContentClient:
        """The content API client, made on first use (only discovery needs it); paced only when this client
        is (``rate=None`` turns pacing off for both)."""
        if self._content is None:
            url, token, policy, rate, kw = self._content_args
            self._content = WildberriesContentClient(
                url, token, policy=policy, rate=None if rate is None else CONTENT_RATE, **kw
            )
        return self._content

    def close(self) -> None:
        if self._content is not None:
            self._content.close()
        super().close()

    def orders_new(self) -> list[dict]:
        return self.request("GET", "/api/v3/orders/new").json().get("orders") or []

    def orders(self, *, next_id: int, limit: int = 1000) -> tuple[int, list[dict]]:
        body = self.request("GET", "/api/v3/orders", params={"limit": limit, "next": next_id}).json()
        return int(body.get("next") or next_id), body.get("orders") or []

    def statuses(self, ids: list[int]) -> list[dict]:
        return self.request("POST", "/api/v3/orders/status", json={"orders": ids}, idempotent=True).json()[
            "orders"
        ]

    def cancel(self, order_id: int) -> bool:
        """Cancel an assembly task; False when WB says it cannot be cancelled in its current status (409)."""
        r = self.request(
            "PATCH", f"/api/v3/orders/{order_id}/cancel", expect=(204,), allow=(409,), idempotent=True
        )
        return r.status_code == 204

    def create_supply(self, name: str) -> str:
        return self.request("POST", "/api/v3/supplies", json={"name": name}, expect=(201, 200)).json()["id"]

    def add_to_supply(self, supply_id: str, order_ids: list[int]) -> str | None:
        """Add up to 100 assembly tasks to a supply (they go to ``confirm``, on assembly):
        ``PATCH /api/marketplace/v3/supplies/{supplyId}/orders``. None when added; WB's reason when it
        refused (409 ``FailedToAddSupplyOrder`` names no order: the batch counts as not added; sending it
        again is safe, a task already in the supply stays as it is)."""
        if not 1 <= len(order_ids) <= SUPPLY_BATCH:
            raise ValueError(f"1..{SUPPLY_BATCH} orders per call, got {len(order_ids)}")
        r = self.request(
            "PATCH",
            f"/api/marketplace/v3/supplies/{supply_id}/orders",
            json={"orders": [int(i) for i in order_ids]},
            expect=(204,),
            allow=(409,),
            idempotent=True,
        )
        if r.status_code == 204:
            return None
        return _error_text(_json_or_text(r))

    def put_stocks(self, warehouse_id: int, stocks: list[dict]) -> list[dict]:
        """Set absolute amounts; returns what WB refused (409), empty when all were taken: one
        ``{"chrtId": id or None, "reason": text}`` per refused item, ``chrtId`` None for a refusal that names
        no item. Any 409 body is read (the official one is ``[{code, message, data: [{sku, chrtId,
        amount}]}]``), never trusted to have that shape. A 204 is no proof: WB ignores misnamed fields
        silently — read back with :meth:`get_stocks`."""
        r = self.request(
            "PUT",
            f"/api/v3/stocks/{warehouse_id}",
            json={"stocks": stocks},
            expect=(204,),
            allow=(409,),
            idempotent=True,
        )
        if r.status_code == 204:
            return []
        return _stock_refusals(_json_or_text(r))

    def get_stocks(self, warehouse_id: int, chrt_ids: list[int]) -> dict[int, int]:
        body = self.request(
            "POST", f"/api/v3/stocks/{warehouse_id}", json={"chrtIds": chrt_ids}, idempotent=True
        ).json()
        return {int(s["chrtId"]): int(s["amount"]) for s in body.get("stocks") or []}

    def warehouses(self) -> list[dict]:
        """The seller's warehouses (``GET /api/v3/warehouses``)."""
        body = self.request("GET", "/api/v3/warehouses").json()
        if not isinstance(body, list):
            raise ConnectorError(self.api, "GET /api/v3/warehouses", f"unexpected body {body!r:.200}")
        return body


def _json_or_text(r) -> Any:
    try:
        return r.json()
    except ValueError:
        return r.text[:500]


def _error_text(err: Any) -> str:
    """``code: message`` of a WB error object (or whatever the body was, shortened)."""
    if isinstance(err, dict) and (err.get("code") or err.get("message")):
        return ": ".join(str(err[k]) for k in ("code", "message") if err.get(k))
    return f"{err!r:.300}"


def _stock_refusals(body: Any) -> list[dict]:
    """The items a stock 409 names, each with its error's ``code: message``; a refusal naming no item as
    ``chrtId`` None."""
    out: list[dict] = []
    for err in body if isinstance(body, list) else [body]:
        reason = _error_text(err)
        named = False
        data = err.get("data") if isinstance(err, dict) else None
        for item in data if isinstance(data, list) else [data] if isinstance(data, dict) else []:
            chrt = item.get("chrtId") if isinstance(item, dict) else None
            if type(chrt) is int or (isinstance(chrt, str) and chrt.isdigit()):
                out.append({"chrtId": int(chrt), "reason": reason})
                named = True
        if not named:
            out.append({"chrtId": None, "reason": reason})
    return out


def ingest_wildberries(
    conn: psycopg.Connection,
    client: WildberriesClient,
    *,
    page_limit: int = 1000,
    max_pages: int | None = None,
    use_new: bool = True,
    sync_status: bool = True,
    normalize: bool = True,
    on_fetched: PageHook | None = None,
    before_commit=None,
) -> IngestResult:
    res = IngestResult(CODE)
    if use_new:
        new = client.orders_new()
        items, rejects = split_by_id(new, "id")
        res.fetched += len(new)
        page = store_page(conn, CHANNEL, items, rejects=rejects, normalize=normalize)
        res.new_raw += page.new
        res.rejected += len(rejects)
        if normalize:
            normalize_stored(conn, CHANNEL, page, res)
    state = get_cursor(conn, CURSOR) or {}
    next_id = int(state.get("next") or 0)
    with fetch_ahead() as ahead:
        fut = None
        if max_pages is None or max_pages > 0:
            fut = ahead.submit(client.orders, next_id=next_id, limit=page_limit)
        while fut is not None:
            nxt, orders = fut.result()
            fut = None
            res.pages += 1
            if not orders:
                break
            if nxt > next_id and (max_pages is None or res.pages < max_pages):
                fut = ahead.submit(client.orders, next_id=nxt, limit=page_limit)
            res.fetched += len(orders)
            items, rejects = split_by_id(orders, "id")
            if on_fetched:
                on_fetched(res.pages, orders)
            store_polled_page(
                conn,
                CHANNEL,
                items,
                rejects,
                res,
                cursor_name=CURSOR,
                cursor_value={"next": nxt},
                normalize=normalize,
                before_commit=before_commit,
            )
            if nxt <= next_id:
                res.notes.append(f"next did not advance past {next_id}; stopping this run")
                break
            next_id = nxt
    res.cursor = {"next": next_id}
    record_success(conn, CODE, res.fetched)
    if normalize:
        res.normalized.add(normalize_pending(conn, CHANNEL))
    if sync_status:
        res.normalized.cancelled += sync_statuses(conn, client)
    return res


def sync_statuses(
    conn: psycopg.Connection, client: WildberriesClient, *, actor: str = "connector:wildberries"
) -> int:
    """Cancel our open WB orders that WB reports cancelled (by the buyer, WB or the deadline)."""
    ids = [
        int(r[0])
        for r in conn.execute(
            """SELECT external_id FROM oms.orders WHERE channel_code = %s AND state = ANY(%s)
               AND external_id ~ '^[0-9]+$' ORDER BY external_id""",
            (CODE, list(CANCELLABLE_STATES)),
        ).fetchall()
    ]
    cancelled: list[str] = []
    for i in range(0, len(ids), STATUS_BATCH):
        for s in client.statuses(ids[i : i + STATUS_BATCH]):
            if s.get("wbStatus") in CANCELLED_WB or s.get("supplierStatus") == "cancel":
                cancelled.append(str(s["id"]))
    if not cancelled:
        return 0
    return cancel_channel_orders(conn, CODE, cancelled, actor=actor, reason="cancelled in wildberries")


# -- mapping --------------------------------------------------------------------------------------------------
#: the city in a Russian address: the part after "г." ("…, г. Подольск, ул. …")
_CITY = re.compile(r"(?:^|,)\s*г\.?\s+([^,]+)")


def city_of(full_address: str | None) -> str | None:
    """The buyer's city from WB's ``address.fullAddress`` (None when it names none). One function for both
    mappers, so they agree exactly."""
    m = _CITY.search(full_address) if full_address else None
    return (m.group(1).strip() or None) if m else None


class _Address(BaseModel):
    model_config = ConfigDict(extra="ignore")
    fullAddress: str | None = None  # noqa: N815 - the channel's field names
    latitude: Float | None = None
    longitude: Float | None = None


class _WbOrder(BaseModel):
    """An assembly task as either endpoint serves it: ``OrderNew`` (``/orders/new``, with ``finalPrice``) or
    the history ``Order`` (``/orders``, ``price`` only)."""

    model_config = ConfigDict(extra="ignore")
    id: Int
    rid: str | None = None
    article: str = Field(min_length=1)
    chrtId: Int  # noqa: N815
    #: what the buyer pays, after every discount (``OrderNew`` only)
    finalPrice: Int | None = Field(None, ge=0)  # noqa: N815
    #: after every discount except the WB Wallet one (both shapes)
    price: Int | None = Field(None, ge=0)
    currencyCode: Int = 643  # noqa: N815
    createdAt: AwareDatetime  # noqa: N815
    address: _Address | None = None
    warehouseId: Int | None = None  # noqa: N815


def map_order(payload: dict, ctx: MappingContext) -> Mapped:
    o = _WbOrder.model_validate(payload)
    currency = CURRENCIES.get(o.currencyCode)
    if currency is None:
        return Mapped(str(o.id), error=f"unknown currencyCode {o.currencyCode}")
    unit = o.finalPrice if o.finalPrice is not None else o.price
    if unit is None:
        return Mapped(str(o.id), error="no unit price: neither finalPrice nor price")
    a = o.address or _Address()
    # the seller warehouse WB assigned the order to: it ships from there
    fulfilment = None
    if o.warehouseId is not None:
        fulfilment = ctx.location(CODE, o.warehouseId)
        if fulfilment is None:
            return Mapped(
                str(o.id),
                error=f"warehouseId: Wildberries warehouse {o.warehouseId} is not mapped to a location "
                "(connectors.channel_locations, system 'wildberries')",
            )
    order = {
        "channel_code": CODE,
        "external_id": str(o.id),
        "channel_order_number": o.rid,
        "placed_at": o.createdAt,
        "delivery_method": "courier",
        "fulfilment_location_code": fulfilment,
        "city": city_of(a.fullAddress),
        "address": a.fullAddress,
        "lat": a.latitude,
        "lon": a.longitude,
        "payment_method": "prepaid",
        "payment_status": "paid",
        "currency": currency,
        "lines": [{"sku": o.article.strip(), "qty": 1, "unit_price": Decimal(unit) / 100}],
    }
    return Mapped(str(o.id), order)


_PRICE_LIMIT = 10**12  # kopecks: unit_price numeric(12,2)


def fast_order(payload: Any, ctx: MappingContext, raw_id: int | None) -> tuple[str, bool, Any]:
    """``map_order`` + ``NormalizedOrder`` for the plain payloads (see ``fastcheck``); raises
    ``fastcheck.Unsure`` for anything the pydantic path must decide."""
    o = fc.required_mapping(payload)
    oid = str(fc.integer(o.get("id")))
    fc.integer(o.get("chrtId"))
    final = fc.optional_integer(o.get("finalPrice"))
    price = fc.optional_integer(o.get("price"))
    unit = final if final is not None else price
    if (
        unit is None
        or not 0 <= unit < _PRICE_LIMIT
        or (final is not None and final < 0)
        or (price is not None and price < 0)
    ):
        raise fc.Unsure
    currency = CURRENCIES.get(fc.integer(o.get("currencyCode", 643)))
    article = fc.required_text(o.get("article"))
    created = fc.timestamp(o.get("createdAt"))
    rid = fc.text(o.get("rid"))
    a = fc.mapping(o.get("address"))
    full_address = fc.text(a.get("fullAddress"))
    wh = fc.optional_integer(o.get("warehouseId"))
    if currency is None:
        raise fc.Unsure
    fulfilment = None
    if wh is not None:
        fulfilment = ctx.location(CODE, wh)
        if fulfilment is None:
            raise fc.Unsure
    order = fc.validated_order(
        [(article, 1, Decimal(unit) / 100, None)],
        channel_code=CODE,
        external_id=oid,
        channel_order_number=rid,
        placed_at=created,
        delivery_method="courier",
        fulfilment_location_code=fulfilment,
        city=fc.text(city_of(full_address)),
        address=full_address,
        lat=fc.optional_number(a.get("latitude")),
        lon=fc.optional_number(a.get("longitude")),
        payment_method="prepaid",
        payment_status="paid",
        currency=currency,
        raw_id=raw_id,
    )
    return oid, False, order


# -- status and stock out ---------------------------------------------------------------------------------------
def push_status(conn: psycopg.Connection, client: WildberriesClient, p: dict) -> tuple[str, str | None, Any]:
    """An OMS order status change told to WB: ``cancelled`` → cancel the assembly task; ``shipped`` → add it
    to today's supply of the seller warehouse WB assigned it to. Other statuses have no WB call."""
    status = p.get("status")
    if status == "cancelled" and p.get("reason") == f"cancelled in {CODE}":
        return "skipped", "cancelled by the channel itself: nothing to tell it", None
    order_id = int(p["external_id"])
    if status == "cancelled":
        ok = client.cancel(order_id)
        return "sent", None if ok else "WB: not cancellable in its current status", {"cancelled": ok}
    if status == "shipped":
        warehouse = order_warehouse(conn, str(order_id))
        supply = todays_supply(conn, client, warehouse)
        refused = client.add_to_supply(supply, [order_id])
        note = None if refused is None else f"WB: not added to supply {supply}: {refused}"
        return "sent", note, {"supply": supply, "warehouse_id": warehouse}
    return "skipped", f"WB has no call for status {status!r}", None


def order_warehouse(conn: psycopg.Connection, external_id: str) -> int | None:
    """The seller warehouse WB assigned an order to (``warehouseId`` of its latest stored payload)."""
    row = conn.execute(
        """SELECT payload->>'warehouseId' FROM raw.channel_orders
           WHERE channel_code = %s AND external_id = %s AND payload->>'warehouseId' ~ '^[0-9]+$'
           ORDER BY raw_id DESC LIMIT 1""",
        (CODE, external_id),
    ).fetchone()
    return int(row[0]) if row and str(row[0]).isdigit() else None


def todays_supply(
    conn: psycopg.Connection, client: WildberriesClient, warehouse_id: int | None = None
) -> str:
    """Today's WB supply of a seller warehouse (WB takes one warehouse's orders per supply), created once
    (under an advisory lock, remembered as a cursor)."""
    day = f"{datetime.now(UTC):%Y-%m-%d}"
    name = f"wildberries:supply:{day}" + (f":{warehouse_id}" if warehouse_id is not None else "")
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (name,))
        found = get_cursor(conn, name)
        if found:
            return found["id"]
        label = f"OMS {day}" + (f" склад {warehouse_id}" if warehouse_id is not None else "")
        supply = client.create_supply(label)
        set_cursor(conn, name, {"id": supply})
    return supply


def push_stock(client: WildberriesClient, items: list[AtsItem], res: PushResult) -> list[Outcome]:
    """ATS per warehouse, ≤ 1000 items per ``PUT`` (amounts capped at WB's 100 000). A 204 proves nothing
    (misnamed fields are ignored silently), so the amounts are read back and compared: equal → verified,
    different → failed, read-back impossible → unverified. Items a 409 names are failed with WB's reason;
    a refusal naming no item leaves the read-back to tell which items took. Whatever a call answers, the
    other batches still go."""
    out: list[Outcome] = []
    by_wh: dict[str, list[AtsItem]] = {}
    for it in items:
        if it.chrt_id is None:
            out.append((it, "failed", False, "no WB chrtId for this SKU (connectors.channel_listings)"))
        else:
            by_wh.setdefault(it.external_location, []).append(it)
    for wh, wh_items in sorted(by_wh.items()):
        for i in range(0, len(wh_items), STOCK_BATCH):
            out += _push_stock_batch(client, int(wh), wh_items[i : i + STOCK_BATCH], res)
    return out


def _push_stock_batch(
    client: WildberriesClient, wh: int, batch: list[AtsItem], res: PushResult
) -> list[Outcome]:
    res.requests += 1
    res.batch_sizes.append(len(batch))
    sent = {int(it.chrt_id): min(it.qty, STOCK_MAX) for it in batch}
    try:
        refusals = client.put_stocks(wh, [{"chrtId": c, "amount": q} for c, q in sent.items()])
    except (ConnectorError, ValueError, TypeError, KeyError, AttributeError) as exc:  # any answer: this batch
        res.errors.append(str(exc))
        return [(it, "failed", False, str(exc)[:500]) for it in batch]
    refused = {r["chrtId"]: r["reason"] for r in refusals if r["chrtId"] is not None}
    unnamed = "; ".join(r["reason"] for r in refusals if r["chrtId"] is None)
    if refusals:
        res.errors.append(f"warehouse {wh}: WB refused {len(refused) or 'some'} item(s) (409)")
    out: list[Outcome] = [
        (it, "failed", False, f"refused by WB (409): {refused[int(it.chrt_id)]}"[:500])
        for it in batch
        if int(it.chrt_id) in refused
    ]
    taken = [it for it in batch if int(it.chrt_id) not in refused]
    if not taken:
        return out
    try:
        res.requests += 1
        actual = client.get_stocks(wh, [int(it.chrt_id) for it in taken])
    except (ConnectorError, ValueError, TypeError, KeyError, AttributeError) as exc:
        res.errors.append(f"read-back: {exc}")
        return out + [(it, "unverified", False, "accepted; read-back failed") for it in taken]
    for it in taken:
        got, want = actual.get(int(it.chrt_id)), sent[int(it.chrt_id)]
        if got == want:
            out.append((it, "pushed", True, None))
        else:
            why = f"; refused by WB (409): {unnamed}" if unnamed else ""
            out.append((it, "failed", False, f"read back {got!r} after setting {want}{why}"[:500]))
    return out


# -- discovery ---------------------------------------------------------------------------------------------
#: a guard against a cursor that never ends (100 cards a page: a million cards)
MAX_CARD_PAGES = 10_000


def discover(client: WildberriesClient) -> Discovery:
    """The account's seller warehouses (``GET /api/v3/warehouses``) and every size of every card (content
    API ``/content/v2/get/cards/list``, paged by its ``{updatedAt, nmID}`` cursor until a page is short):
    a listing per size — ``article`` = ``vendorCode`` (the seller's article), ``channel_sku`` = ``nmID``,
    ``chrt_id`` = ``chrtID`` (the stock key), ``barcode`` = the size's first barcode."""
    found = Discovery()
    for w in client.warehouses():
        if not isinstance(w, dict) or w.get("id") is None:
            continue
        found.locations.append(
            ExternalLocation(
                external_id=str(w["id"]),
                name=str(w.get("name") or w["id"]),
                kind="warehouse",
                active=not w.get("isDeleting", False),
            )
        )
    after: dict | None = None
    for _ in range(MAX_CARD_PAGES):
        cards, cursor = client.content.cards(after=after, limit=CARDS_PAGE)
        for card in cards:
            for size in card.get("sizes") or []:
                skus = size.get("skus") or []
                found.listings.append(
                    ExternalListing(
                        article=card.get("vendorCode"),
                        barcode=skus[0] if skus else None,
                        channel_sku=card.get("nmID"),
                        chrt_id=size.get("chrtID"),
                        name=card.get("title"),
                    )
                )
        nxt = {"updatedAt": cursor.get("updatedAt"), "nmID": cursor.get("nmID")}
        if len(cards) < CARDS_PAGE or int(cursor.get("total") or 0) < CARDS_PAGE or nxt == after:
            break
        after = nxt
    else:
        raise ConnectorError(client.content.api, "POST /content/v2/get/cards/list", "the cursor never ended")
    return found


def _listing(p) -> tuple | None:
    return (None, None, p["wb_nm_id"], p["wb_chrt_id"], None, None, p["barcode"])


CHANNEL = Channel(
    code=CODE,
    title="Wildberries (FBS)",
    system="wildberries",
    # content_url: the content API's host (content-api.wildberries.ru); unset, the marketplace URL serves both
    env={"base_url": "OMS_WB_URL", "token": "OMS_WB_TOKEN", "content_url": "OMS_WB_CONTENT_URL"},
    secrets=frozenset({"token"}),
    client=WildberriesClient.from_endpoint,
    poll=ingest_wildberries,
    feed="Wildberries assembly tasks: orders/new + orders by next cursor → orders; WB cancellations.",
    mapper=map_order,
    fast_mapper=fast_order,
    ats=AtsPush(push_stock),
    push_status=push_status,
    listing=_listing,
    network_key="wb_warehouse_id",
    discover=discover,
)
