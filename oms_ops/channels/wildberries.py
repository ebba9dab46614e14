"""Wildberries seller API (FBS): assembly tasks in (``/api/v3/orders/new`` and ``/api/v3/orders``), statuses,
cancellations and supplies out, stock per warehouse (``PUT /api/v3/stocks/{warehouseId}``).

Feed: ``/api/v3/orders/new`` returns every order still new (no paging) — the fast path, idempotent; then the
history walk ``/api/v3/orders?limit=&next=`` continues from the persisted ``next`` (the last order id),
written with each page, until an empty page — it catches orders that left "new" between two polls. The
``next`` WB returns is stored as is (after a duplicate-fault page it steps back one record; the repeated
record dedupes). Cancellations are not in the order payload: :func:`sync_statuses` asks
``POST /api/v3/orders/status`` about our open WB orders and cancels those WB cancelled.

One WB order is one unit (an assembly task with its own sticker), so one WB order = one OMS order of one
line; ``rid`` is kept as the channel's order number. Prices are kopecks (×100), currency ISO numeric (643).
Limits: 300 req/min, burst 20, each 4xx counts as 10: the client paces at 5 req/s with a burst of 20 and
charges itself 9 extra tokens for a 4xx.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import psycopg
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from oms_ops.connectors import fastcheck as fc
from oms_ops.connectors.http import ApiClient, RetryPolicy
from oms_ops.connectors.ingest import IngestResult, PageHook, fetch_ahead, normalize_stored, store_polled_page
from oms_ops.connectors.normalize import (
    CANCELLABLE_STATES,
    Mapped,
    MappingContext,
    cancel_channel_orders,
    normalize_pending,
)
from oms_ops.connectors.state import get_cursor, record_success, split_by_id, store_page

CHANNEL = "wildberries"
CURSOR = "wildberries:orders"
CURRENCIES = {643: "RUB", 933: "BYN", 398: "KZT", 51: "AMD", 417: "KGS", 860: "UZS"}
#: wbStatus / supplierStatus values that mean the order will not be shipped
CANCELLED_WB = frozenset({"canceled", "canceled_by_client", "declined_by_client", "defect"})
STATUS_BATCH = 1000
STOCK_BATCH = 1000


class WildberriesClient(ApiClient):
    api = "Wildberries API"

    def __init__(
        self,
        base_url: str,
        token: str,
        *,
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

    @classmethod
    def from_endpoint(cls, ep, **kw) -> WildberriesClient:
        return cls(ep.base_url, ep.get("token"), **kw)

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

    def add_to_supply(self, supply_id: str, order_id: int) -> bool:
        r = self.request(
            "PATCH",
            f"/api/v3/supplies/{supply_id}/orders/{order_id}",
            expect=(204,),
            allow=(409,),
            idempotent=True,
        )
        return r.status_code == 204

    def put_stocks(self, warehouse_id: int, stocks: list[dict]) -> list[dict]:
        """Set absolute amounts; returns the items WB refused (409 ``data``), empty when all were taken.
        A 204 is no proof: WB ignores misnamed fields silently — read back with :meth:`get_stocks`."""
        r = self.request(
            "PUT",
            f"/api/v3/stocks/{warehouse_id}",
            json={"stocks": stocks},
            expect=(204,),
            allow=(409,),
            idempotent=True,
        )
        if r.status_code == 409:
            return list((r.json() or {}).get("data") or [])
        return []

    def get_stocks(self, warehouse_id: int, chrt_ids: list[int]) -> dict[int, int]:
        body = self.request(
            "POST", f"/api/v3/stocks/{warehouse_id}", json={"chrtIds": chrt_ids}, idempotent=True
        ).json()
        return {int(s["chrtId"]): int(s["amount"]) for s in body.get("stocks") or []}


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
    res = IngestResult(CHANNEL)
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
    record_success(conn, CHANNEL, res.fetched)
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
            (CHANNEL, list(CANCELLABLE_STATES)),
        ).fetchall()
    ]
    cancelled: list[str] = []
    for i in range(0, len(ids), STATUS_BATCH):
        for s in client.statuses(ids[i : i + STATUS_BATCH]):
            if s.get("wbStatus") in CANCELLED_WB or s.get("supplierStatus") == "cancel":
                cancelled.append(str(s["id"]))
    if not cancelled:
        return 0
    return cancel_channel_orders(conn, CHANNEL, cancelled, actor=actor, reason="cancelled in wildberries")


# -- mapping --------------------------------------------------------------------------------------------------
class _Address(BaseModel):
    model_config = ConfigDict(extra="ignore")
    fullAddress: str | None = None  # noqa: N815 - the channel's field names
    latitude: float | None = None
    longitude: float | None = None


class _WbOrder(BaseModel):
    model_config = ConfigDict(extra="ignore")
    id: int
    rid: str | None = None
    article: str = Field(min_length=1)
    chrtId: int  # noqa: N815
    finalPrice: int = Field(ge=0)  # noqa: N815
    price: int = Field(ge=0)
    currencyCode: int = 643  # noqa: N815
    createdAt: AwareDatetime  # noqa: N815
    offices: list[str] = []
    address: _Address | None = None
    warehouseId: int | None = None  # noqa: N815


def map_order(payload: dict, ctx: MappingContext) -> Mapped:
    o = _WbOrder.model_validate(payload)
    currency = CURRENCIES.get(o.currencyCode)
    if currency is None:
        return Mapped(str(o.id), error=f"unknown currencyCode {o.currencyCode}")
    a = o.address or _Address()
    # the seller warehouse WB assigned the order to: it ships from there
    fulfilment = None
    if o.warehouseId is not None:
        fulfilment = ctx.location(CHANNEL, o.warehouseId)
        if fulfilment is None:
            return Mapped(
                str(o.id),
                error=f"warehouseId: Wildberries warehouse {o.warehouseId} is not mapped to a location "
                "(connectors.channel_locations, system 'wildberries')",
            )
    order = {
        "channel_code": CHANNEL,
        "external_id": str(o.id),
        "channel_order_number": o.rid,
        "placed_at": o.createdAt,
        "delivery_method": "courier",
        "fulfilment_location_code": fulfilment,
        "city": o.offices[0] if o.offices else None,
        "address": a.fullAddress,
        "lat": a.latitude,
        "lon": a.longitude,
        "payment_method": "prepaid",
        "payment_status": "paid",
        "currency": currency,
        "lines": [{"sku": o.article.strip(), "qty": 1, "unit_price": Decimal(o.finalPrice) / 100}],
    }
    return Mapped(str(o.id), order)


_PRICE_LIMIT = 10**12  # kopecks: unit_price numeric(12,2)


def fast_order(payload: Any, ctx: MappingContext, raw_id: int | None) -> tuple[str, bool, Any]:
    """``map_order`` + ``NormalizedOrder`` for the plain payloads (see ``fastcheck``); raises
    ``fastcheck.Unsure`` for anything the pydantic path must decide."""
    o = fc.required_mapping(payload)
    oid = str(fc.integer(o.get("id")))
    fc.integer(o.get("chrtId"))
    final = fc.integer(o.get("finalPrice"))
    if not 0 <= final < _PRICE_LIMIT or fc.integer(o.get("price")) < 0:
        raise fc.Unsure
    currency = CURRENCIES.get(fc.integer(o.get("currencyCode", 643)))
    article = fc.required_text(o.get("article"))
    created = fc.timestamp(o.get("createdAt"))
    rid = fc.text(o.get("rid"))
    offices = fc.items(o.get("offices", []))
    for office in offices:
        fc.any_text(office)
    a = fc.mapping(o.get("address"))
    wh = fc.optional_integer(o.get("warehouseId"))
    if currency is None:
        raise fc.Unsure
    fulfilment = None
    if wh is not None:
        fulfilment = ctx.location(CHANNEL, wh)
        if fulfilment is None:
            raise fc.Unsure
    order = fc.validated_order(
        [(article, 1, Decimal(final) / 100, None)],
        channel_code=CHANNEL,
        external_id=oid,
        channel_order_number=rid,
        placed_at=created,
        delivery_method="courier",
        fulfilment_location_code=fulfilment,
        city=fc.text(offices[0]) if offices else None,
        address=fc.text(a.get("fullAddress")),
        lat=fc.optional_number(a.get("latitude")),
        lon=fc.optional_number(a.get("longitude")),
        payment_method="prepaid",
        payment_status="paid",
        currency=currency,
        raw_id=raw_id,
    )
    return oid, False, order
