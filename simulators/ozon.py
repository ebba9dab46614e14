"""Ozon Seller API (FBS) simulator: postings, stocks, warehouses and the product catalog.

Follows the Ozon Seller API as the published ``ozonapi-async`` package models it (its pydantic models mirror
the official spec; 0.89, Q2 2026) and ``reference/channel-apis.md`` §1: ``Client-Id`` + ``Api-Key`` headers,
gRPC-style error bodies ``{code, message, details}`` for every 4xx/5xx, JSON without a ``result`` wrapper
where the v4 methods have none. ``tests/contract/test_ozon_contract.py`` drives that package against it.

Endpoints:

* ``POST /v4/posting/fbs/list`` — cursor paging ``{postings, cursor, has_next}`` over ``in_process_at`` in
  ``filter.since``..``filter.to`` (required, ≤ 1 year; ``limit`` 1..1000 required). ``with`` adds
  ``analytics_data``, ``financial_data``, ``barcodes`` and ``legal_info`` only when asked;
* ``POST /v4/posting/fbs/unfulfilled/list`` — the postings not yet handed over (awaiting_registration …
  awaiting_deliver), same cursor paging plus ``count`` (all matches); ``filter`` is required and takes either
  ``cutoff_from``/``cutoff_to`` (the ship-by time, ``shipment_date``) or ``delivering_date_from``/``_to``
  (the planned hand-over, which for an unshipped posting is its ``shipment_date`` too), never both;
* ``POST /v2/products/stocks`` — free stock per (offer, warehouse), ≤ 100 items, each pair once per 30 s of
  *protocol* (real) time, else a per-item ``TOO_MANY_REQUESTS`` inside the 200;
* ``POST /v2/warehouse/list`` — the seller's FBS warehouses (``simulators.network``), cursor paging; Ozon
  allows it once a minute per account (enforced here together with the request-rate limit, ``rps_limit``);
* ``POST /v3/product/list`` (``last_id`` paging, ``total``) and ``POST /v3/product/info/list`` (by
  ``offer_id``, ``product_id`` or ``sku``, one kind per request, ≤ 1000 ids) — the catalog as Ozon lists it:
  offer_id = our SKU, id = ``ozon_product_id``, ``sources[].sku`` = ``ozon_sku``, ``barcodes``.

Simulated behaviour worth knowing when you write a connector against it:

* postings are created by the order generator in ``awaiting_packaging``; a share is cancelled by the buyer
  later in simulated time (``cancelled``, ``cancellation.cancellation_initiator = "Покупатель"``), which also
  updates ``last_changed_status_date`` — a connector must re-read changed postings, not only new ones;
* every posting is FBS delivered by Ozon (``tpl_integration_type = "ozon"``): as on the real service the
  buyer stays hidden — ``customer``/``addressee`` are null and ``analytics_data.region``/``city`` are empty
  (Ozon fills them for rFBS only); the buyer's price is ``financial_data.products[].customer_price``, lower
  than the seller's ``price`` when Ozon funds a discount of its own (a share of postings);
* the cursor is opaque and bound to the endpoint and filter it was issued for (sending it with another
  filter → 400); paging is keyset-based, so postings created while you page never shift the pages;
* stock pushes are recorded (``GET /_sim/stocks``) so tests can check what the OMS pushed;
* the per-item error codes other than ``TOO_MANY_REQUESTS`` (``NOT_FOUND``, ``WAREHOUSE_NOT_FOUND``,
  ``INVALID_STOCK``) are the simulator's choice; treat any non-empty ``errors`` as "not updated".

Not simulated: rFBS postings (no rFBS warehouse in the network), ``translit``, tariffication, containers,
quants and multi-box postings, product content (images, attributes), FBO.

Control: ``POST /_sim/postings/{posting_number}/status`` ``{"status": …, "substatus": …}`` moves a posting (e.g.
to ``awaiting_deliver``/``delivering``/``delivered`` or ``cancelled``); ``GET /_sim/stocks``.

State across restarts (``persist``): every posting (its stream number and time — the content is derived from
them again — warehouse, status history, cancellation), pending buyer cancellations and the published stocks
are kept, and the order stream numbers on from the last posting, so a restart neither replays old postings
as new ones nor reuses their numbers. Cursors of an earlier run stay valid (postings keep their positions).
"""

from __future__ import annotations

import base64
import hashlib
import heapq
import json
import random
from bisect import bisect_left, bisect_right
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from decimal import Decimal

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from simulators.base import (
    UNCLEAN_ID_GAP,
    ApiError,
    SimContext,
    Simulator,
    dt_in,
    dt_out,
    read_json,
    resume_stream,
    secs_header,
)
from simulators.clock import iso_z, parse_rfc3339
from simulators.faults import FaultRule, FaultSet
from simulators.generator import GeneratedOrder, OrderGenerator
from simulators.limits import TokenBucket
from simulators.network import BY_OZON_WAREHOUSE, LOCATION_BY_CODE, WAREHOUSES, Location, warehouses_near

STATUSES = (
    "awaiting_registration", "acceptance_in_progress", "awaiting_approve", "awaiting_packaging",
    "awaiting_deliver", "arbitration", "client_arbitration", "delivering", "driver_pickup", "delivered",
    "cancelled", "not_accepted", "sent_by_seller",
)  # fmt: skip
SUBSTATUS = {
    "awaiting_registration": "posting_awaiting_registration",
    "acceptance_in_progress": "posting_acceptance_in_progress",
    "awaiting_approve": "posting_created",
    "awaiting_packaging": "posting_created",
    "awaiting_deliver": "posting_awaiting_courier",
    "arbitration": "posting_in_arbitration",
    "client_arbitration": "posting_in_client_arbitration",
    "delivering": "posting_in_carriage",
    "driver_pickup": "posting_driver_pick_up",
    "delivered": "posting_delivered",
    "cancelled": "posting_canceled",
    "not_accepted": "posting_not_in_sort_center",
    "sent_by_seller": "posting_sent_by_seller",
}
ACTIONS = {
    "awaiting_packaging": ["cancel", "product_cancel", "ship", "set_timeslot"],
    "awaiting_deliver": ["cancel", "label_download", "label_download_big", "label_download_small"],
    "delivering": ["arbitration"],
}
_FINAL = {"delivered", "cancelled", "not_accepted"}
#: not yet handed over to Ozon's logistics: what ``/v4/posting/fbs/unfulfilled/list`` lists
UNFULFILLED = (
    "awaiting_registration", "acceptance_in_progress", "awaiting_approve", "awaiting_packaging", "awaiting_deliver",
)  # fmt: skip
MAX_PERIOD = timedelta(days=365)
LIST_LIMIT_MAX = 1000
STOCK_ITEMS_MAX = 100
PRODUCT_IDS_MAX = 1000  # /v3/product/info/list: ids per request
TPL_PROVIDER = (24, "Ozon Логистика")
COMMISSION_PERCENT = Decimal("15")
VAT_RATE = "0.20"
#: share of postings with a discount Ozon funds itself (the buyer pays less, the seller's payout is unchanged)
OZON_DISCOUNT_SHARE = 30  # percent
WORKING_DAYS = ("MONDAY", "TUESDAY", "WEDNESDAY", "THURSDAY", "FRIDAY", "SATURDAY", "SUNDAY")
#: /v3/product/list ``filter.visibility``: every product is moderated, on sale and has a barcode; those with
#: published FBS stock are "in sale", the others have an empty stock; none is archived, banned or failed
_VISIBLE_ALL = frozenset({
    "ALL", "VISIBLE", "MODERATED", "VALIDATION_STATE_SUCCESS", "BARCODE_EXISTS", "READY_TO_SUPPLY",
})  # fmt: skip
_VISIBLE_WITH_STOCK = frozenset({"IN_SALE", "TO_SUPPLY"})
_VISIBLE_NONE = frozenset({
    "INVISIBLE", "NOT_MODERATED", "DISABLED", "STATE_FAILED", "VALIDATION_STATE_PENDING", "VALIDATION_STATE_FAIL",
    "REMOVED_FROM_SALE", "BANNED", "OVERPRICED", "CRITICALLY_OVERPRICED", "EMPTY_BARCODE", "QUARANTINE",
    "ARCHIVED", "OVERPRICED_WITH_STOCK", "PARTIAL_APPROVED",
})  # fmt: skip
#: HTTP status → the gRPC code Ozon's gateway answers with it
_GRPC_CODE = {400: 3, 401: 16, 403: 7, 404: 5, 409: 10, 429: 8, 500: 13, 501: 12, 503: 14, 504: 4}
_GRPC_MESSAGE = {
    400: "invalid request payload", 401: "unauthenticated", 403: "permission denied", 404: "Not Found",
    409: "request conflicts with the current state", 429: "You have reached request rate limit per second",
    500: "internal error", 501: "not implemented", 503: "service unavailable", 504: "deadline exceeded",
}  # fmt: skip


@dataclass
class Posting:
    idx: int
    order: GeneratedOrder
    order_id: int
    order_number: str
    posting_number: str
    warehouse: Location
    status: str = "awaiting_packaging"
    substatus: str = "posting_created"
    status_changed_at: datetime | None = None
    cancellation: dict | None = None
    tracking_number: str = ""
    delivering_date: datetime | None = None
    history: list[tuple[str, str]] = field(default_factory=list)

    @property
    def in_process_at(self) -> datetime:
        return self.order.created_at


def _ozon_error(status: int, code: int, message: str) -> ApiError:
    return ApiError(status, {"code": code, "message": message, "details": []})


def _bad_request(message: str) -> ApiError:
    return _ozon_error(400, 3, message)


# -- request parsing: Ozon's gateway decodes proto3 JSON, so an absent field and a null are the same ------------
async def _read_body(request: Request) -> dict:
    try:
        body = await read_json(request)
    except ValueError as exc:
        raise _bad_request(f"invalid request payload: {exc}") from exc
    if not isinstance(body, dict):
        raise _bad_request("invalid request payload: expected an object")
    return body


def _obj(body: dict, key: str, what: str) -> dict:
    value = body.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _bad_request(f"invalid request payload: {what} must be an object")
    return value


def _list(body: dict, key: str, what: str) -> list:
    value = body.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        raise _bad_request(f"invalid request payload: {what} must be a list")
    return value


def _ints(values: list, what: str) -> list[int]:
    """int64 values: JSON numbers or, as proto3 JSON encodes int64, decimal strings."""
    out = []
    for v in values:
        if isinstance(v, int) and not isinstance(v, bool):
            out.append(v)
        elif isinstance(v, str) and v.strip().isdigit():
            out.append(int(v))
        else:
            raise _bad_request(f"invalid request payload: {what} must hold integers")
    return out


def _strs(values: list, what: str) -> list[str]:
    if any(not isinstance(v, str) for v in values):
        raise _bad_request(f"invalid request payload: {what} must hold strings")
    return values


def _time(value, what: str) -> datetime | None:
    if value is None or value == "":
        return None
    try:
        return parse_rfc3339(value)
    except (ValueError, TypeError) as exc:
        raise _bad_request(f"invalid request payload: {what} must be an RFC 3339 date") from exc


def _limit(body: dict, hi: int) -> int:
    limit = body.get("limit")
    if limit is None:
        raise _bad_request("invalid request payload: limit is required")
    if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= hi:
        raise _bad_request(f"invalid request payload: limit must be in [1, {hi}]")
    return limit


def _encode_token(data: dict) -> str:
    raw = json.dumps(data, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_token(token: str, what: str) -> dict:
    try:
        padded = token + "=" * (-len(token) % 4)
        data = json.loads(base64.urlsafe_b64decode(padded.encode()))
    except (ValueError, TypeError) as exc:
        raise _bad_request(f"invalid {what}") from exc
    if not isinstance(data, dict):
        raise _bad_request(f"invalid {what}")
    return data


def _shipment_date(created_at: datetime) -> datetime:
    """The ship-by time (cutoff): 15:00 UTC on the day after the order."""
    return (created_at + timedelta(days=1)).replace(hour=15, minute=0, second=0)


def _delivery_method_id(wh: Location) -> int:
    return 1_020_000_000_000 + WAREHOUSES.index(wh)


@dataclass(frozen=True)
class _PostingFilter:
    """The ``filter`` of both posting lists, parsed and checked once per request."""

    statuses: frozenset[str] = frozenset()
    warehouse_ids: frozenset[int] = frozenset()
    delivery_method_ids: frozenset[int] = frozenset()
    provider_ids: frozenset[int] = frozenset()
    changed_from: datetime | None = None
    changed_to: datetime | None = None
    order_id: int | None = None
    order_numbers: frozenset[str] = frozenset()
    traceable_only: bool = False
    #: (from, to) on ``shipment_date`` (the unfulfilled list's cutoff and delivering-date windows)
    ship_from: datetime | None = None
    ship_to: datetime | None = None

    @classmethod
    def parse(cls, filt: dict, *, allowed_statuses: tuple[str, ...]) -> _PostingFilter:
        statuses = _strs(_list(filt, "statuses", "filter.statuses"), "filter.statuses")
        if any(s not in allowed_statuses for s in statuses):
            raise _bad_request("invalid request payload: unknown status in filter.statuses")
        changed = _obj(filt, "last_changed_status_date", "filter.last_changed_status_date")
        order_id = filt.get("order_id")
        if order_id is not None:
            order_id = _ints([order_id], "filter.order_id")[0] or None
        traceable = filt.get("is_blr_traceable")
        if traceable is not None and not isinstance(traceable, bool):
            raise _bad_request("invalid request payload: filter.is_blr_traceable must be a boolean")
        return cls(
            statuses=frozenset(statuses),
            warehouse_ids=frozenset(
                _ints(_list(filt, "warehouse_ids", "filter.warehouse_ids"), "filter.warehouse_ids")
            ),
            delivery_method_ids=frozenset(
                _ints(
                    _list(filt, "delivery_method_ids", "filter.delivery_method_ids"),
                    "filter.delivery_method_ids",
                )
            ),
            provider_ids=frozenset(
                _ints(_list(filt, "provider_ids", "filter.provider_ids"), "filter.provider_ids")
            ),
            changed_from=_time(changed.get("from"), "filter.last_changed_status_date.from"),
            changed_to=_time(changed.get("to"), "filter.last_changed_status_date.to"),
            order_id=order_id,
            order_numbers=frozenset(
                _strs(_list(filt, "order_numbers", "filter.order_numbers"), "filter.order_numbers")
            ),
            traceable_only=bool(traceable),
        )

    def match(self, p: Posting) -> bool:
        if self.statuses and p.status not in self.statuses:
            return False
        if self.warehouse_ids and p.warehouse.ozon_warehouse_id not in self.warehouse_ids:
            return False
        if self.delivery_method_ids and _delivery_method_id(p.warehouse) not in self.delivery_method_ids:
            return False
        if self.provider_ids and TPL_PROVIDER[0] not in self.provider_ids:
            return False
        if self.changed_from and p.status_changed_at < self.changed_from:
            return False
        if self.changed_to and p.status_changed_at > self.changed_to:
            return False
        if self.order_id is not None and p.order_id != self.order_id:
            return False
        if self.order_numbers and p.order_number not in self.order_numbers:
            return False
        if self.traceable_only:  # no simulated product is subject to traceability
            return False
        if self.ship_from or self.ship_to:
            ship = _shipment_date(p.order.created_at)
            if (self.ship_from and ship < self.ship_from) or (self.ship_to and ship > self.ship_to):
                return False
        return True


class OzonSimulator(Simulator):
    name = "ozon"

    def __init__(
        self,
        ctx: SimContext,
        *,
        client_id: str = "100500",
        api_key: str = "sim-ozon-api-key-0b1f4c2e",
        rate: float | None = None,
        cancel_share: float = 0.05,
        stock_throttle_s: float = 30.0,
        rps_limit: float | None = 50.0,
        faults=(),
    ) -> None:
        super().__init__(ctx, faults=faults)
        self.client_id = client_id
        self.api_key = api_key
        self.gen = OrderGenerator(
            ctx.seed, "ozon", ctx.rate if rate is None else rate, catalog=ctx.catalog,
            start=ctx.clock.start, cancel_share=cancel_share, profile=ctx.profile,
        )  # fmt: skip
        self.postings: list[Posting] = []
        self.by_number: dict[str, Posting] = {}
        self._times: list[datetime] = []
        self._events: list[tuple[datetime, int, str, str]] = []
        self._event_seq = 0
        self.stocks: dict[tuple[str, int], dict] = {}
        self.stock_pushes: list[dict] = []
        self._last_push: dict[tuple[str, int], float] = {}
        self.stock_throttle_s = stock_throttle_s
        self.limiter = TokenBucket(rps_limit, rps_limit, ctx.protocol_time) if rps_limit else None
        #: ``/v2/warehouse/list`` is allowed once a minute per account (with the request limits on)
        self.warehouse_list_limiter = TokenBucket(1, 1 / 60, ctx.protocol_time) if rps_limit else None
        self._by_product_id = {p.ozon_product_id: p for p in ctx.catalog}
        self._by_ozon_sku = {p.ozon_sku: p for p in ctx.catalog}
        #: the account's product cards in Ozon's order (product ids grow as cards are created)
        self._cards = sorted(ctx.catalog, key=lambda p: p.ozon_product_id)
        self._card_index = {p.sku: i for i, p in enumerate(self._cards)}

    # -- world --------------------------------------------------------------------------------------
    def credentials(self) -> dict:
        return {"client_id": self.client_id, "api_key": self.api_key}

    def sync(self) -> None:
        now = self.now
        for order in self.gen.until(now):
            self._add(order)
            self.dirty = True
        while self._events and self._events[0][0] <= now:
            at, _, number, status = heapq.heappop(self._events)
            posting = self.by_number[number]
            if status == "cancelled" and posting.status in ("awaiting_packaging", "awaiting_deliver"):
                self._set_status(posting, "cancelled", at, initiator="Покупатель")

    def _posting(self, order: GeneratedOrder, warehouse: Location) -> Posting:
        """A new posting for a generated order; its numbers derive from the order's stream number."""
        seq = order.seq
        order_number = (
            f"{(self.ctx.seed * 1_000_003 + 10_000_000 + seq) % 10**8:08d}-{order.entropy % 10000:04d}"
        )
        return Posting(
            idx=len(self.postings),
            order=order,
            order_id=30_000_000_000 + seq * 10 + order.entropy % 10,
            order_number=order_number,
            posting_number=f"{order_number}-1",
            warehouse=warehouse,
            status_changed_at=order.created_at,
            history=[(iso_z(order.created_at), "awaiting_packaging")],
        )

    def _append(self, posting: Posting) -> None:
        self.postings.append(posting)
        self._times.append(posting.order.created_at)
        self.by_number[posting.posting_number] = posting

    def _add(self, order: GeneratedOrder) -> None:
        posting = self._posting(order, self._assign_warehouse(order))
        self._append(posting)
        if order.cancel_after_s is not None:
            self._schedule(order.created_at + timedelta(seconds=order.cancel_after_s), posting, "cancelled")

    # -- state across restarts ------------------------------------------------------------------------------
    def dump_state(self) -> dict:
        return {
            "produced": self.gen.produced,
            "postings": [
                {
                    "seq": p.order.seq, "created_at": dt_out(p.order.created_at), "warehouse": p.warehouse.code,
                    "status": p.status, "substatus": p.substatus, "status_changed_at": dt_out(p.status_changed_at),
                    "cancellation": p.cancellation, "tracking_number": p.tracking_number,
                    "delivering_date": dt_out(p.delivering_date), "history": p.history,
                }
                for p in self.postings
            ],
            "events": [[dt_out(at), seq, number, status] for at, seq, number, status in self._events],
            "event_seq": self._event_seq,
            "stocks": list(self.stocks.values()),
        }  # fmt: skip

    def load_state(self, data: dict, *, clean: bool) -> None:
        for saved in data["postings"]:
            posting = self._posting(
                self.gen.order(saved["seq"], dt_in(saved["created_at"])), LOCATION_BY_CODE[saved["warehouse"]]
            )
            posting.status, posting.substatus = saved["status"], saved["substatus"]
            posting.status_changed_at = dt_in(saved["status_changed_at"])
            posting.cancellation, posting.tracking_number = saved["cancellation"], saved["tracking_number"]
            posting.delivering_date = dt_in(saved["delivering_date"])
            posting.history = [tuple(h) for h in saved["history"]]
            self._append(posting)
        self._events = [(dt_in(at), seq, number, status) for at, seq, number, status in data["events"]]
        heapq.heapify(self._events)
        self._event_seq = int(data["event_seq"])
        self.stocks = {(r["offer_id"], r["warehouse_id"]): r for r in data["stocks"]}
        # new postings number on past every posting handed out (and past any made after the last save)
        resume_stream(self.gen, int(data["produced"]) + (0 if clean else UNCLEAN_ID_GAP))

    def _assign_warehouse(self, order: GeneratedOrder) -> Location:
        """Ozon assigns an FBS posting to the seller warehouse nearest the buyer that has published stock for
        every item; before any stock was published, or when none has enough, to the nearest one."""
        if self.stocks:
            for wh in warehouses_near(order.warehouse_code):
                if wh.ozon_warehouse_id and all(
                    self.stocks.get((self.ctx.products[line.sku].offer_id, wh.ozon_warehouse_id), {}).get(
                        "stock", 0
                    )
                    >= line.qty
                    for line in order.lines
                ):
                    return wh
        return LOCATION_BY_CODE[order.warehouse_code]

    def _schedule(self, at: datetime, posting: Posting, status: str) -> None:
        self._event_seq += 1
        heapq.heappush(self._events, (at, self._event_seq, posting.posting_number, status))

    def _set_status(
        self,
        posting: Posting,
        status: str,
        at: datetime,
        *,
        substatus: str | None = None,
        initiator: str = "",
    ) -> None:
        posting.status = status
        posting.substatus = substatus or SUBSTATUS.get(status, "")
        posting.status_changed_at = at
        posting.history.append((iso_z(at), status))
        if status == "cancelled":
            by_client = initiator == "Покупатель"
            posting.cancellation = {
                "cancel_reason_id": 507 if by_client else 402,
                "cancel_reason": "Покупатель отменил заказ" if by_client else "Отменено продавцом",
                "cancellation_type": "client" if by_client else "seller",
                "cancelled_after_ship": False,
                "affect_cancellation_rating": not by_client,
                "cancellation_initiator": initiator or "Продавец",
            }
        if status == "delivering" and posting.delivering_date is None:
            posting.delivering_date = at
        if status in ("awaiting_deliver", "delivering") and not posting.tracking_number:
            posting.tracking_number = f"{posting.order_id % 10**10:010d}OZ"

    # -- rendering ------------------------------------------------------------------------------------
    @staticmethod
    def ozon_discount_percent(p: Posting) -> int:
        """The discount Ozon funds itself on this posting (0 for most): deterministic per order."""
        r = (p.order.entropy >> 20) % 100
        return 5 + r % 6 if r < OZON_DISCOUNT_SHARE else 0

    def render(
        self,
        p: Posting,
        *,
        analytics: bool = False,
        financial: bool = False,
        barcodes: bool = False,
        legal_info: bool = False,
    ) -> dict:
        """One posting in the v4 shape; the ``with`` blocks only when asked (null otherwise)."""
        o = p.order
        wh = p.warehouse
        discount = self.ozon_discount_percent(p)
        products = []
        fin_products = []
        for line in o.lines:
            prod = self.ctx.products[line.sku]
            products.append({
                "sku": prod.ozon_sku,
                "offer_id": prod.offer_id,
                "name": prod.name,
                "quantity": line.qty,
                "price": {"amount": f"{line.unit_price:.2f}", "currency": "RUB"},
                "imei": [],
                "is_blr_traceable": False,
                "is_marketplace_buyout": False,
            })  # fmt: skip
            # the seller's price (and payout) stays; Ozon pays its own discount, the buyer pays less
            customer_price = (line.unit_price * (100 - discount) / 100).quantize(Decimal("1"))
            commission = (line.unit_price * line.qty * COMMISSION_PERCENT / 100).quantize(Decimal("0.01"))
            fin_products.append({
                "product_id": prod.ozon_sku,
                "quantity": line.qty,
                "price": float(line.unit_price),
                "old_price": float(line.unit_price),
                "customer_price": {"amount": f"{customer_price:.2f}", "currency": "RUB"},
                "total_discount_value": 0.0,
                "total_discount_percent": 0.0,
                "payout": float(line.unit_price * line.qty - commission),
                "commission": {"amount": float(commission), "currency": "RUB", "percent": int(COMMISSION_PERCENT)},
                "actions": ["Скидка за счёт Ozon"] if discount else [],
            })  # fmt: skip
        packed = p.status not in ("awaiting_packaging", "awaiting_registration", "cancelled")
        no_cancel = {
            "cancel_reason_id": 0, "cancel_reason": "", "cancellation_type": "", "cancelled_after_ship": False,
            "affect_cancellation_rating": False, "cancellation_initiator": "",
        }  # fmt: skip
        shipment_date = iso_z(_shipment_date(o.created_at))
        return {
            "posting_number": p.posting_number,
            "order_id": p.order_id,
            "order_number": p.order_number,
            "status": p.status,
            "substatus": p.substatus,
            "delivery_method": {
                "id": _delivery_method_id(wh),
                "name": f"Ozon Логистика самостоятельно, {wh.city}",
                "warehouse_id": wh.ozon_warehouse_id,
                "warehouse": wh.name,
                "tpl_provider_id": TPL_PROVIDER[0],
                "tpl_provider": TPL_PROVIDER[1],
            },
            "tracking_number": p.tracking_number,
            "tpl_integration_type": "ozon",
            "in_process_at": iso_z(o.created_at),
            "shipment_date": shipment_date,
            "shipment_date_without_delay": shipment_date,
            "delivering_date": iso_z(p.delivering_date) if p.delivering_date else None,
            "cancellation": p.cancellation or no_cancel,
            # FBS: Ozon delivers and keeps the buyer to itself
            "customer": None,
            "addressee": None,
            "products": products,
            "barcodes": (
                {
                    "upper_barcode": f"%101%{p.order_id % 10**9}",
                    "lower_barcode": f"2{p.order_id % 10**11:011d}",
                }
                if barcodes and packed
                else None
            ),
            "analytics_data": (
                {
                    "region": "",  # rFBS only
                    "city": "",  # rFBS (and sellers from the CIS) only
                    "delivery_type": "PVZ" if o.delivery_method == "pickup_point" else "Courier",
                    "is_premium": False,
                    "payment_type_group_name": "Карты оплаты",
                    "warehouse_id": wh.ozon_warehouse_id,
                    "warehouse": wh.name,
                    "tpl_provider_id": TPL_PROVIDER[0],
                    "tpl_provider": TPL_PROVIDER[1],
                    "delivery_date_begin": iso_z(o.created_at + timedelta(days=2)),
                    "delivery_date_end": iso_z(o.created_at + timedelta(days=4)),
                    "is_legal": False,
                }
                if analytics
                else None
            ),
            "financial_data": (
                {"products": fin_products, "cluster_from": wh.city, "cluster_to": o.address.region}
                if financial
                else None
            ),
            "legal_info": {"company_name": "", "inn": "", "kpp": ""} if legal_info else None,
            "is_express": False,
            "is_multibox": False,
            "multi_box_qty": 1,
            "is_presortable": False,
            "parent_posting_number": "",
            "available_actions": list(ACTIONS.get(p.status, [])),
            "require_blr_traceable_attrs": False,
            "requirements": {
                "products_requiring_change_country": [],
                "products_requiring_country": [],
                "products_requiring_gtd": [],
                "products_requiring_imei": [],
                "products_requiring_jw_uin": [],
                "products_requiring_mandatory_mark": [],
                "products_requiring_rnpt": [],
                "products_requiring_weight": [],
            },  # fmt: skip
            "optional": {"products_with_possible_mandatory_mark": []},
        }

    @staticmethod
    def malform(record: dict, rng: random.Random) -> None:
        """Corrupt one posting the ways real feeds break: a missing required field or a non-numeric quantity."""
        choice = rng.randrange(4)
        if choice == 0:
            record.pop("posting_number", None)
        elif choice == 1 and record.get("products"):
            record["products"][0]["quantity"] = "2 шт."
        elif choice == 2:
            record.pop("in_process_at", None)
        elif record.get("products"):
            record["products"][0]["price"]["amount"] = "n/a"

    # -- protocol -------------------------------------------------------------------------------------
    def before_request(self, request: Request) -> Response | None:
        if self.limiter:
            ok, wait = self.limiter.try_take()
            if not ok:
                return JSONResponse(
                    {"code": 8, "message": "You have reached request rate limit per second", "details": []},
                    status_code=429,
                    headers={"Retry-After": secs_header(max(1, round(wait + 0.5)))},
                )
        client_id = request.headers.get("client-id")
        api_key = request.headers.get("api-key")
        if not client_id or not api_key:
            return JSONResponse(
                {"code": 7, "message": "Client-Id and Api-Key headers are required", "details": []},
                status_code=403,
            )
        if client_id != self.client_id or api_key != self.api_key:
            return JSONResponse(
                {"code": 7, "message": "Invalid Api-Key, please contact support", "details": []},
                status_code=403,
            )
        return None

    def fault_rate_limited(self, rule: FaultRule) -> Response:
        return JSONResponse(
            {"code": 8, "message": "You have reached request rate limit per second", "details": []},
            status_code=429,
            headers={"Retry-After": secs_header(rule.retry_after)},
        )

    def fault_server_error(self, rule: FaultRule) -> Response:
        status = rule.status or 500
        headers = {"Retry-After": secs_header(rule.retry_after)} if status == 503 else {}
        body = {
            "code": _GRPC_CODE.get(status, 2 if status >= 500 else 3),  # 2: UNKNOWN
            "message": _GRPC_MESSAGE.get(status, "internal error" if status >= 500 else "invalid request"),
            "details": [],
        }
        return JSONResponse(body, status_code=status, headers=headers)

    def not_found(self, request: Request) -> Response:
        return JSONResponse({"code": 5, "message": "Not Found", "details": []}, status_code=404)

    def internal_error(self) -> Response:
        return JSONResponse({"code": 13, "message": "internal error", "details": []}, status_code=500)

    def api_routes(self):
        return [
            ("/v4/posting/fbs/list", self.list_postings, ["POST"]),
            ("/v4/posting/fbs/unfulfilled/list", self.list_unfulfilled, ["POST"]),
            ("/v2/products/stocks", self.update_stocks, ["POST"]),
            ("/v2/warehouse/list", self.list_warehouses, ["POST"]),
            ("/v3/product/list", self.list_products, ["POST"]),
            ("/v3/product/info/list", self.product_info_list, ["POST"]),
        ]

    # -- the posting lists ------------------------------------------------------------------------------
    @staticmethod
    def _fingerprint(endpoint: str, filt: dict, sort_dir: str) -> str:
        """What a cursor is bound to: the endpoint, the filter (nulls and empty values are "not set") and
        the sort direction."""
        canon = {k: v for k, v in filt.items() if v not in (None, "", [], {})}
        raw = json.dumps([endpoint, canon, sort_dir], sort_keys=True, ensure_ascii=False, default=str)
        return hashlib.sha256(raw.encode()).hexdigest()[:16]

    @staticmethod
    def _encode_cursor(idx: int, fp: str) -> str:
        return _encode_token({"i": idx, "f": fp})

    @staticmethod
    def _decode_cursor(cursor: str, fp: str) -> int:
        data = _decode_token(cursor, "cursor")
        try:
            idx = int(data["i"])
        except (ValueError, KeyError, TypeError) as exc:
            raise _bad_request("invalid cursor") from exc
        if data.get("f") != fp:
            raise _bad_request("cursor does not match the request filter")
        return idx

    @staticmethod
    def _with(body: dict) -> dict[str, bool]:
        with_ = _obj(body, "with", "with")
        flags = {}
        for key in ("analytics_data", "financial_data", "barcodes", "legal_info"):
            value = with_.get(key)
            if value is not None and not isinstance(value, bool):
                raise _bad_request(f"invalid request payload: with.{key} must be a boolean")
            flags[key] = bool(value)
        return {
            "analytics": flags["analytics_data"],
            "financial": flags["financial_data"],
            "barcodes": flags["barcodes"],
            "legal_info": flags["legal_info"],
        }

    @staticmethod
    def _sort_dir(body: dict) -> str:
        sort_dir = body.get("sort_dir") or "ASC"
        if not isinstance(sort_dir, str) or sort_dir.upper() not in ("ASC", "DESC"):
            raise _bad_request("invalid request payload: sort_dir must be ASC or DESC")
        return sort_dir.upper()

    def _page(
        self, lo: int, hi: int, sort_dir: str, after: int | None, flt: _PostingFilter, limit: int
    ) -> tuple[list[Posting], bool]:
        """Keyset page over postings ``lo..hi-1`` (creation order) after position ``after``."""
        if sort_dir == "ASC":
            start = lo if after is None else max(lo, after + 1)
            indices = range(start, hi)
        else:
            start = hi - 1 if after is None else min(hi - 1, after - 1)
            indices = range(start, lo - 1, -1)
        page: list[Posting] = []
        for i in indices:
            p = self.postings[i]
            if not flt.match(p):
                continue
            if len(page) == limit:
                return page, True
            page.append(p)
        return page, False

    def _next_cursor(self, page: list[Posting], has_next: bool, fp: str, faults: FaultSet) -> str:
        if not (has_next and page):
            return ""
        last = page[-1].idx
        if faults.get("duplicate") and len(page) > 1:
            last = page[-2].idx  # the last posting shows up again on the next page
        return self._encode_cursor(last, fp)

    async def list_postings(self, request: Request, faults: FaultSet) -> Response:
        """``POST /v4/posting/fbs/list``."""
        body = await _read_body(request)
        filt = body.get("filter")
        if not isinstance(filt, dict):
            raise _bad_request("invalid request payload: filter is required")
        for key in ("since", "to"):
            if not filt.get(key):
                raise _bad_request(f"invalid request payload: filter.{key} is required")
        since, to = _time(filt["since"], "filter.since"), _time(filt["to"], "filter.to")
        if to < since:
            raise _bad_request("invalid request payload: filter.to must not be before filter.since")
        if to - since > MAX_PERIOD:
            raise _bad_request("PERIOD_IS_TOO_LONG")
        limit = _limit(body, LIST_LIMIT_MAX)
        sort_dir = self._sort_dir(body)
        flt = _PostingFilter.parse(filt, allowed_statuses=STATUSES)
        render = self._with(body)
        fp = self._fingerprint("list", filt, sort_dir)
        cursor = body.get("cursor") or ""
        after = self._decode_cursor(cursor, fp) if cursor else None

        with self.lock:
            lo, hi = bisect_left(self._times, since), bisect_right(self._times, to)
            page, has_next = self._page(lo, hi, sort_dir, after, flt, limit)
            records = [self.render(p, **render) for p in page]
        next_cursor = self._next_cursor(page, has_next, fp, faults)
        if faults:
            records = faults.apply_records(records, self.malform)
        return JSONResponse({"postings": records, "cursor": next_cursor, "has_next": has_next})

    async def list_unfulfilled(self, request: Request, faults: FaultSet) -> Response:
        """``POST /v4/posting/fbs/unfulfilled/list``: the postings still to be packed or handed over."""
        body = await _read_body(request)
        filt = body.get("filter")
        if not isinstance(filt, dict):
            raise _bad_request("invalid request payload: filter is required")
        cutoff = (
            _time(filt.get("cutoff_from"), "filter.cutoff_from"),
            _time(filt.get("cutoff_to"), "filter.cutoff_to"),
        )
        delivering = (
            _time(filt.get("delivering_date_from"), "filter.delivering_date_from"),
            _time(filt.get("delivering_date_to"), "filter.delivering_date_to"),
        )
        if any(cutoff) and any(delivering):
            raise _bad_request(
                "invalid request payload: use either the cutoff or the delivering_date filter, not both"
            )
        ship_from, ship_to = cutoff if any(cutoff) else delivering
        if ship_from and ship_to and ship_to < ship_from:
            raise _bad_request("invalid request payload: the period ends before it starts")
        limit = _limit(body, LIST_LIMIT_MAX)
        sort_dir = self._sort_dir(body)
        flt = _PostingFilter.parse(filt, allowed_statuses=UNFULFILLED)
        flt = replace(
            flt, statuses=flt.statuses or frozenset(UNFULFILLED), ship_from=ship_from, ship_to=ship_to
        )
        render = self._with(body)
        fp = self._fingerprint("unfulfilled", filt, sort_dir)
        cursor = body.get("cursor") or ""
        after = self._decode_cursor(cursor, fp) if cursor else None

        with self.lock:
            count = sum(1 for p in self.postings if flt.match(p))
            page, has_next = self._page(0, len(self.postings), sort_dir, after, flt, limit)
            records = [self.render(p, **render) for p in page]
        next_cursor = self._next_cursor(page, has_next, fp, faults)
        if faults:
            records = faults.apply_records(records, self.malform)
        return JSONResponse(
            {"postings": records, "count": count, "cursor": next_cursor, "has_next": has_next}
        )

    # -- /v2/warehouse/list -----------------------------------------------------------------------------
    def warehouse_record(self, wh: Location) -> dict:
        """One FBS warehouse of the account as ``/v2/warehouse/list`` shows it."""
        registered = iso_z(self.ctx.clock.start - timedelta(days=365 - WAREHOUSES.index(wh)))
        return {
            "warehouse_id": wh.ozon_warehouse_id,
            "name": wh.name,
            "status": "created",
            "address_info": {
                "address": wh.address,
                "latitude": wh.lat,
                "longitude": wh.lon,
                "utc": f"+{wh.city_info.utc_offset:02d}:00",
            },
            "first_mile": {"type": "PICK_UP", "first_mile_is_changing": False},
            "working_days": list(WORKING_DAYS),
            "carriage_label_type": "BIG",
            "courier_comment": "",
            "courier_phones": [],
            "phone": "",
            "created_at": registered,
            "updated_at": registered,
            "has_entrusted_acceptance": False,
            "has_postings_limit": False,
            "min_postings_limit": 0,
            "postings_limit": -1,
            "is_auto_assembly": False,
            "is_comfort": False,
            "is_express": False,
            "is_kgt": False,
            "is_rfbs": False,
            "is_waybill_enabled": False,
            "with_item_list": False,
        }

    async def list_warehouses(self, request: Request, faults: FaultSet) -> Response:
        """``POST /v2/warehouse/list``: the seller's FBS warehouses, cursor-paged (default 100 a page)."""
        if self.warehouse_list_limiter:
            ok, wait = self.warehouse_list_limiter.try_take()
            if not ok:
                return JSONResponse(
                    {"code": 8, "message": "method /v2/warehouse/list is limited to 1 request per minute",
                     "details": []},
                    status_code=429,
                    headers={"Retry-After": secs_header(max(1, round(wait + 0.5)))},
                )  # fmt: skip
        body = await _read_body(request)
        limit = body.get("limit")
        if limit is None:
            limit = 100
        if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
            raise _bad_request("invalid request payload: limit must be a positive integer")
        wanted = set(_ints(_list(body, "warehouse_ids", "warehouse_ids"), "warehouse_ids"))
        fp = self._fingerprint("warehouses", {"warehouse_ids": sorted(wanted)}, "ASC")
        cursor = body.get("cursor") or ""
        start = self._decode_cursor(cursor, fp) + 1 if cursor else 0
        listed = [
            (i, wh)
            for i, wh in enumerate(WAREHOUSES)
            if wh.ozon_warehouse_id and (not wanted or wh.ozon_warehouse_id in wanted) and i >= start
        ]
        page, rest = listed[:limit], listed[limit:]
        next_cursor = self._encode_cursor(page[-1][0], fp) if rest else ""
        return JSONResponse({
            "warehouses": [self.warehouse_record(wh) for _, wh in page],
            "cursor": next_cursor,
            "has_next": bool(rest),
        })  # fmt: skip

    # -- the product catalog ------------------------------------------------------------------------------
    def _fbs_stock(self) -> dict[str, tuple[int, str]]:
        """Published FBS stock per offer (all warehouses) and when it was last pushed."""
        out: dict[str, tuple[int, str]] = {}
        for (offer, _), r in self.stocks.items():
            qty, at = out.get(offer, (0, ""))
            out[offer] = (qty + r["stock"], max(at, r["updated_at"]))
        return out

    def _reserved(self) -> dict[str, int]:
        """Units per offer held by postings not yet handed over."""
        out: dict[str, int] = {}
        for p in self.postings:
            if p.status in UNFULFILLED:
                for line in p.order.lines:
                    offer = self.ctx.products[line.sku].offer_id
                    out[offer] = out.get(offer, 0) + line.qty
        return out

    def _card_created(self, p) -> datetime:
        """Cards were created before the simulated world starts, in product-id order."""
        return self.ctx.clock.start - timedelta(days=60, hours=len(self._cards) - self._card_index[p.sku])

    async def list_products(self, request: Request, faults: FaultSet) -> Response:
        """``POST /v3/product/list``: the account's product cards by product id, ``last_id`` paging."""
        body = await _read_body(request)
        filt = _obj(body, "filter", "filter")
        offer_ids = set(_strs(_list(filt, "offer_id", "filter.offer_id"), "filter.offer_id"))
        product_ids = set(_ints(_list(filt, "product_id", "filter.product_id"), "filter.product_id"))
        visibility = filt.get("visibility") or "ALL"
        if visibility not in _VISIBLE_ALL | _VISIBLE_WITH_STOCK | _VISIBLE_NONE | {"EMPTY_STOCK"}:
            raise _bad_request(f"invalid request payload: unknown filter.visibility {visibility!r}")
        limit = _limit(body, LIST_LIMIT_MAX)
        last_id = body.get("last_id") or ""
        after = 0
        if last_id:
            try:
                after = int(_decode_token(last_id, "last_id")["p"])
            except (KeyError, TypeError, ValueError) as exc:
                raise _bad_request("invalid last_id") from exc
        with self.lock:
            stock = self._fbs_stock()
            matches = []
            for p in self._cards:
                if offer_ids and p.offer_id not in offer_ids:
                    continue
                if product_ids and p.ozon_product_id not in product_ids:
                    continue
                has_stock = stock.get(p.offer_id, (0, ""))[0] > 0
                if visibility in _VISIBLE_NONE or (
                    (visibility in _VISIBLE_WITH_STOCK and not has_stock)
                    or (visibility == "EMPTY_STOCK" and has_stock)
                ):
                    continue
                matches.append((p, has_stock))
        page = [(p, s) for p, s in matches if p.ozon_product_id > after][:limit]
        items = [
            {
                "product_id": p.ozon_product_id,
                "offer_id": p.offer_id,
                "archived": False,
                "has_fbo_stocks": False,
                "has_fbs_stocks": has_stock,
                "is_discounted": False,
                "quants": [],
            }
            for p, has_stock in page
        ]
        next_last_id = _encode_token({"p": page[-1][0].ozon_product_id}) if page else ""
        return JSONResponse({"result": {"items": items, "total": len(matches), "last_id": next_last_id}})

    def product_info(self, p, reserved: int, stock: tuple[int, str]) -> dict:
        """One card as ``/v3/product/info/list`` shows it: prices, FBS stock (``stock``: published free
        stock and when it was last pushed), statuses, the SKU in ``sources`` and the barcodes."""
        created = self._card_created(p)
        free, pushed_at = stock
        updated = max(iso_z(created), pushed_at)
        commission = float((p.price * COMMISSION_PERCENT / 100).quantize(Decimal("0.01")))
        stocks = [{"present": free + reserved, "reserved": reserved, "sku": p.ozon_sku, "source": "fbs"}]
        return {
            "id": p.ozon_product_id,
            "name": p.name,
            "offer_id": p.offer_id,
            "barcodes": [p.barcode],
            "color_image": [],
            "images": [],
            "images360": [],
            "primary_image": [],
            "commissions": [
                {
                    "sale_schema": "FBS",
                    "percent": float(COMMISSION_PERCENT),
                    "value": commission,
                    "delivery_amount": 0.0,
                    "return_amount": 0.0,
                    "currency_code": "RUB",
                }
            ],  # fmt: skip
            "created_at": iso_z(created),
            "updated_at": updated,
            "currency_code": "RUB",
            "discounted_fbo_stocks": 0,
            "errors": [],
            "has_discounted_fbo_item": False,
            "is_archived": False,
            "is_autoarchived": False,
            "is_discounted": False,
            "is_kgt": p.weight_g > 25_000,
            "is_prepayment_allowed": True,
            "is_super": False,
            "price": f"{p.price:.2f}",
            "old_price": f"{p.price:.2f}",
            "min_price": "",
            "model_info": {"model_id": p.ozon_product_id, "count": 1},
            "price_indexes": {
                "color_index": "COLOR_INDEX_WITHOUT_INDEX",
                "external_index_data": None,
                "ozon_index_data": None,
                "self_marketplaces_index_data": None,
            },
            "sources": [
                {
                    "sku": p.ozon_sku,
                    "source": "sds",
                    "created_at": iso_z(created),
                    "quant_code": "",
                    "shipment_type": "SHIPMENT_TYPE_GENERAL",
                }
            ],  # fmt: skip
            "statuses": {
                "status": "price_sent",
                "status_failed": "",
                "moderate_status": "approved",
                "validation_status": "success",
                "status_name": "Продается",
                "status_description": "",
                "is_created": True,
                "status_tooltip": "",
                "status_updated_at": iso_z(created),
            },
            "stocks": {"has_stock": free > 0, "stocks": stocks if free + reserved else []},
            "vat": VAT_RATE,
            "visibility_details": {"has_price": True, "has_stock": free > 0},
            "volume_weight": round(p.length_cm * p.width_cm * p.height_cm / 5000, 2),
        }

    async def product_info_list(self, request: Request, faults: FaultSet) -> Response:
        """``POST /v3/product/info/list``: cards by one kind of id (unknown ids are left out)."""
        body = await _read_body(request)
        offer_ids = _strs(_list(body, "offer_id", "offer_id"), "offer_id")
        product_ids = _ints(_list(body, "product_id", "product_id"), "product_id")
        skus = _ints(_list(body, "sku", "sku"), "sku")
        given = [ids for ids in (offer_ids, product_ids, skus) if ids]
        if len(given) > 1:
            raise _bad_request("invalid request payload: use only one of offer_id, product_id and sku")
        if sum(map(len, given)) > PRODUCT_IDS_MAX:
            raise _bad_request(f"invalid request payload: at most {PRODUCT_IDS_MAX} identifiers per request")
        if offer_ids:
            found = [self.ctx.by_offer_id.get(i) for i in offer_ids]
        elif product_ids:
            found = [self._by_product_id.get(i) for i in product_ids]
        else:
            found = [self._by_ozon_sku.get(i) for i in skus]
        seen: set[str] = set()
        cards = []
        for p in found:
            if p is not None and p.sku not in seen:
                seen.add(p.sku)
                cards.append(p)
        with self.lock:
            reserved = self._reserved() if cards else {}
            stock = self._fbs_stock()
            items = [
                self.product_info(p, reserved.get(p.offer_id, 0), stock.get(p.offer_id, (0, "")))
                for p in cards
            ]
        return JSONResponse({"items": items})

    # -- /v2/products/stocks --------------------------------------------------------------------------
    async def update_stocks(self, request: Request, faults: FaultSet) -> Response:
        """``POST /v2/products/stocks``."""
        body = await _read_body(request)
        stocks = body.get("stocks")
        if not isinstance(stocks, list) or not stocks:
            raise _bad_request("invalid request payload: stocks must be a non-empty list")
        if len(stocks) > STOCK_ITEMS_MAX:
            raise _bad_request(
                f"invalid request payload: stocks must contain at most {STOCK_ITEMS_MAX} items"
            )
        now_protocol = self.ctx.protocol_time()
        result = []
        with self.lock:
            for item in stocks:
                if not isinstance(item, dict):
                    raise _bad_request("invalid request payload: each stock item must be an object")
                result.append(self._apply_stock(item, now_protocol))
        return JSONResponse({"result": result})

    def _apply_stock(self, item: dict, now_protocol: float) -> dict:
        offer_id = item.get("offer_id") or ""
        product_id = item.get("product_id") or 0
        warehouse_id = item.get("warehouse_id") or 0
        if isinstance(warehouse_id, str) and warehouse_id.isdigit():  # int64 sent as a string is accepted
            warehouse_id = int(warehouse_id)
        stock = item.get("stock")
        product = self.ctx.by_offer_id.get(str(offer_id)) if offer_id else None
        if product is None and product_id:
            product = self._by_product_id.get(int(product_id)) if str(product_id).isdigit() else None
        out = {
            "warehouse_id": warehouse_id,
            "product_id": product.ozon_product_id if product else product_id,
            "offer_id": product.offer_id if product else offer_id,
            "updated": False,
            "errors": [],
        }
        if product is None:
            out["errors"].append({"code": "NOT_FOUND", "message": "Product not found"})
            return out
        if not isinstance(warehouse_id, int) or warehouse_id not in BY_OZON_WAREHOUSE:
            out["errors"].append({"code": "WAREHOUSE_NOT_FOUND", "message": "Warehouse not found"})
            return out
        if not isinstance(stock, int) or isinstance(stock, bool) or stock < 0:
            out["errors"].append({"code": "INVALID_STOCK", "message": "stock must be a non-negative integer"})
            return out
        key = (product.offer_id, warehouse_id)
        last = self._last_push.get(key)
        if last is not None and now_protocol - last < self.stock_throttle_s:
            out["errors"].append(
                {"code": "TOO_MANY_REQUESTS", "message": "Too many requests for this item, try again later"}
            )
            return out
        self._last_push[key] = now_protocol
        record = {
            "offer_id": product.offer_id,
            "product_id": product.ozon_product_id,
            "warehouse_id": warehouse_id,
            "stock": stock,
            "updated_at": iso_z(self.now),
        }
        self.stocks[key] = record
        self.stock_pushes.append(record)
        out["updated"] = True
        return out

    # -- control --------------------------------------------------------------------------------------
    def set_posting_status(self, posting_number: str, status: str, substatus: str | None = None) -> dict:
        if status not in STATUSES:
            raise ValueError(f"unknown status {status!r}")
        with self.lock:
            self.sync()
            posting = self.by_number.get(posting_number)
            if posting is None:
                raise KeyError(posting_number)
            self._set_status(posting, status, self.now, substatus=substatus, initiator="Продавец")
            return self.render(posting)

    def rendered_postings(self) -> list[dict]:
        with self.lock:
            self.sync()
            return [self.render(p) for p in self.postings]

    def control_routes(self) -> list[Route]:
        async def set_status(request: Request) -> Response:
            try:
                body = await read_json(request)
                status = body["status"]
            except (ValueError, KeyError, TypeError) as exc:
                return JSONResponse({"error": f"expected {{'status': …}}: {exc}"}, status_code=400)
            try:
                posting = self.set_posting_status(
                    request.path_params["posting_number"], status, body.get("substatus")
                )
            except KeyError as exc:
                return JSONResponse({"error": f"unknown posting {exc}"}, status_code=404)
            except ValueError as exc:
                return JSONResponse({"error": str(exc)}, status_code=400)
            return JSONResponse(posting)

        async def stocks(request: Request) -> Response:
            with self.lock:
                return JSONResponse({"stocks": list(self.stocks.values()), "pushes": len(self.stock_pushes)})

        return [
            Route("/_sim/postings/{posting_number}/status", set_status, methods=["POST"]),
            Route("/_sim/stocks", stocks, methods=["GET"]),
        ]

    def state(self) -> dict:
        by_status: dict[str, int] = {}
        for p in self.postings:
            by_status[p.status] = by_status.get(p.status, 0) + 1
        return {
            "postings": len(self.postings),
            "by_status": by_status,
            "stocks": list(self.stocks.values()),
            "stock_pushes": len(self.stock_pushes),
        }
