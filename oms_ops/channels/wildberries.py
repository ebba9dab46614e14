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

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import psycopg
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from oms_ops.channels import fastcheck as fc
from oms_ops.channels.ats import AtsItem, Outcome, PushResult
from oms_ops.channels.base import AtsPush, Channel, IngestResult, Mapped, MappingContext, PageHook
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
        fulfilment = ctx.location(CODE, wh)
        if fulfilment is None:
            raise fc.Unsure
    order = fc.validated_order(
        [(article, 1, Decimal(final) / 100, None)],
        channel_code=CODE,
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


# -- status and stock out ---------------------------------------------------------------------------------------
def push_status(conn: psycopg.Connection, client: WildberriesClient, p: dict) -> tuple[str, str | None, Any]:
    """An OMS order status change told to WB: ``cancelled`` → cancel the assembly task; ``shipped`` → add it
    to today's supply. Other statuses have no WB call."""
    status = p.get("status")
    if status == "cancelled" and p.get("reason") == f"cancelled in {CODE}":
        return "skipped", "cancelled by the channel itself: nothing to tell it", None
    order_id = int(p["external_id"])
    if status == "cancelled":
        ok = client.cancel(order_id)
        return "sent", None if ok else "WB: not cancellable in its current status", {"cancelled": ok}
    if status == "shipped":
        supply = todays_supply(conn, client)
        ok = client.add_to_supply(supply, order_id)
        return "sent", None if ok else "WB: could not add to supply in its current status", {"supply": supply}
    return "skipped", f"WB has no call for status {status!r}", None


def todays_supply(conn: psycopg.Connection, client: WildberriesClient) -> str:
    """Today's WB supply, created once (under an advisory lock, remembered as a cursor)."""
    name = f"wildberries:supply:{datetime.now(UTC):%Y-%m-%d}"
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (name,))
        found = get_cursor(conn, name)
        if found:
            return found["id"]
        supply = client.create_supply(f"OMS {datetime.now(UTC):%Y-%m-%d}")
        set_cursor(conn, name, {"id": supply})
    return supply


def push_stock(client: WildberriesClient, items: list[AtsItem], res: PushResult) -> list[Outcome]:
    """ATS per warehouse, ≤ 1000 items per ``PUT``. A 204 proves nothing (misnamed fields are ignored
    silently), so the amounts are read back and compared: equal → verified, different → failed, read-back
    impossible → unverified. Items listed in a 409 are failed."""
    out = []
    by_wh: dict[str, list[AtsItem]] = {}
    for it in items:
        by_wh.setdefault(it.external_location, []).append(it)
    for wh, wh_items in sorted(by_wh.items()):
        for i in range(0, len(wh_items), STOCK_BATCH):
            batch = wh_items[i : i + STOCK_BATCH]
            res.requests += 1
            res.batch_sizes.append(len(batch))
            try:
                refused = client.put_stocks(
                    int(wh), [{"chrtId": it.chrt_id, "amount": it.qty} for it in batch]
                )
            except ConnectorError as exc:
                res.errors.append(str(exc))
                out += [(it, "failed", False, str(exc)[:500]) for it in batch]
                continue
            refused_chrt = {int(r["chrtId"]) for r in refused if str(r.get("chrtId", "")).isdigit()}
            sent = [it for it in batch if it.chrt_id not in refused_chrt]
            out += [
                (it, "failed", False, "refused by WB (409)") for it in batch if it.chrt_id in refused_chrt
            ]
            try:
                res.requests += 1
                actual = client.get_stocks(int(wh), [it.chrt_id for it in sent])
            except ConnectorError as exc:
                res.errors.append(f"read-back: {exc}")
                out += [(it, "unverified", False, "accepted (204); read-back failed") for it in sent]
                continue
            for it in sent:
                got = actual.get(int(it.chrt_id))
                if got == it.qty:
                    out.append((it, "pushed", True, None))
                else:
                    out.append((it, "failed", False, f"read back {got!r} after setting {it.qty}"))
    return out


def _listing(p) -> tuple | None:
    return (None, None, p["wb_nm_id"], p["wb_chrt_id"], None, None, p["barcode"])


CHANNEL = Channel(
    code=CODE,
    title="Wildberries (FBS)",
    system="wildberries",
    env={"base_url": "OMS_WB_URL", "token": "OMS_WB_TOKEN"},
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
)
