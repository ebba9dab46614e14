"""Call-centre orders as operators enter them (the Call centre page, ``oms callcentre submit``) → raw
payloads → orders.

Operators type orders; they come in messy (phones in any format, SKUs in lower case with spaces, quantities as
text, names in capitals). :func:`submit_orders` stores each one as received (``raw.channel_orders``, channel
``callcentre``, idempotent: submitting the same file twice changes nothing) and normalises at once, so the
operator learns immediately which orders were accepted and which were quarantined, with the reason.
Where the call centre's own system lists the orders its operators entered (the demo's call-centre
simulator: ``GET /callcentre/v1/orders?after=<cursor>``), the channel also polls that feed by cursor, page and
cursor in one transaction, like every polled channel.
"""

from __future__ import annotations

import json
from datetime import datetime, time, timedelta, timezone
from decimal import Decimal

import psycopg
from pydantic import BaseModel, ConfigDict, Field, field_validator

from oms_ops.channels.base import (
    Channel,
    ChannelChecks,
    IngestResult,
    Int,
    Mapped,
    MappingContext,
    NormalizeResult,
    delivery_fields,
    normalize_phone,
)
from oms_ops.channels.normalize import normalize_pending
from oms_ops.channels.rawstore import fetch_ahead, split_by_id, store_page, store_polled_page
from oms_ops.connectors.http import ApiClient, RetryPolicy
from oms_ops.connectors.state import get_cursor, record_success

CODE = "callcentre"
CURSOR = "callcentre:orders"
PAGE_LIMIT = 500
MSK = timezone(timedelta(hours=3))
COD_METHODS = frozenset({"cash_on_delivery", "card_on_delivery"})


def submit_orders(
    conn: psycopg.Connection, orders: list[dict], *, actor: str = "callcentre"
) -> NormalizeResult:
    """Store operator orders raw and normalise them now. Orders without ``external_id`` are quarantined."""
    items, rejects = [], []
    for o in orders:
        ext = o.get("external_id") if isinstance(o, dict) else None
        if ext in (None, ""):
            rejects.append((None, o, "call-centre order without external_id"))
        else:
            items.append((str(ext), o))
    store_page(conn, CHANNEL, items, rejects=rejects)
    record_success(conn, CODE, len(orders))
    res = normalize_pending(conn, CHANNEL, actor=actor)
    res.quarantined += len(rejects)
    return res


def read_orders(text: str) -> list[dict]:
    """A JSON list, one JSON object, or JSON lines."""
    text = text.strip()
    if not text:
        return []
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        return [json.loads(line) for line in text.splitlines() if line.strip()]
    return data if isinstance(data, list) else [data]


# -- mapping --------------------------------------------------------------------------------------------------
class _M(BaseModel):
    model_config = ConfigDict(extra="ignore", str_strip_whitespace=True)


class _Customer(_M):
    full_name: str | None = None
    phone: str | None = None
    email: str | None = None


class _Delivery(_M):
    method: str = "courier"
    region: str | None = None
    city: str | None = None
    postcode: str | None = None
    address: str | None = None
    pickup_point_code: str | None = None
    store_code: str | None = None
    desired_date: str | None = None
    time_slot: str | None = None


class _Line(_M):
    sku: str = Field(min_length=1)
    qty: Int = Field(gt=0)  # "2" typed as text is accepted, "два" and true are not
    unit_price: Decimal = Field(ge=0)

    @field_validator("sku")
    @classmethod
    def _canonical(cls, v: str) -> str:
        return "".join(v.split()).upper()


class _Payment(_M):
    method: str = "cash_on_delivery"


class _Order(_M):
    external_id: str = Field(min_length=1)
    entered_at: datetime
    customer: _Customer = _Customer()
    delivery: _Delivery = _Delivery()
    lines: list[_Line] = Field(min_length=1)
    payment: _Payment = _Payment()
    comment: str | None = None


def _name(raw: str | None) -> str | None:
    if not raw:
        return None
    return raw.title() if raw.isupper() else raw


def _requested(d: _Delivery) -> datetime | None:
    if not d.desired_date:
        return None
    try:
        day = datetime.fromisoformat(d.desired_date).date()
    except ValueError:
        return None
    start = time(10, 0)
    if d.time_slot and "-" in d.time_slot:
        try:
            start = time.fromisoformat(d.time_slot.split("-")[0].strip())
        except ValueError:
            pass
    return datetime.combine(day, start, tzinfo=MSK)


def map_order(payload: dict, ctx: MappingContext) -> Mapped:
    o = _Order.model_validate(payload)
    placed = o.entered_at if o.entered_at.tzinfo else o.entered_at.replace(tzinfo=MSK)
    d = o.delivery
    address = ", ".join(x for x in (d.postcode, d.address) if x) or None
    order = {
        "channel_code": CODE,
        "external_id": o.external_id,
        "channel_order_number": o.external_id,
        "placed_at": placed,
        "customer_name": _name(o.customer.full_name),
        "customer_phone": normalize_phone(o.customer.phone),
        "customer_email": o.customer.email,
        "region": d.region,
        "city": d.city,
        "address": address,
        "requested_delivery_at": _requested(d),
        "payment_method": "cod" if o.payment.method in COD_METHODS else "prepaid",
        "payment_status": "pending",
        "lines": [{"sku": ln.sku, "qty": ln.qty, "unit_price": ln.unit_price} for ln in o.lines],
        **delivery_fields(
            ctx, d.method, pickup_point_code=d.pickup_point_code, store_code=d.store_code, address=address
        ),
    }
    return Mapped(o.external_id, order)


# -- the operators' feed ---------------------------------------------------------------------------------------
class CallCentreClient(ApiClient):
    """The call centre's order feed: operator orders oldest first, by an opaque cursor."""

    api = "Call-centre API"

    def __init__(self, base_url: str, api_key: str, *, policy: RetryPolicy | None = None, **kw) -> None:
        super().__init__(base_url, headers={"X-Api-Key": api_key}, policy=policy, **kw)

    @classmethod
    def from_endpoint(cls, ep, **kw) -> CallCentreClient:
        kw.pop("rate", None)  # no documented limit: the feed is read page by page
        return cls(ep.base_url, ep.get("api_key"), **kw)

    def orders_page(self, after: str | None, limit: int = PAGE_LIMIT) -> tuple[list[dict], str | None, bool]:
        params: dict[str, object] = {"limit": limit}
        if after:
            params["after"] = after
        body = self.request("GET", "/callcentre/v1/orders", params=params).json()
        return body.get("orders") or [], body.get("next_cursor"), bool(body.get("has_more"))


def poll(conn: psycopg.Connection, client: CallCentreClient, *, normalize: bool = True, before_commit=None):
    """New operator orders from the feed: each page stored raw with the cursor past it (one transaction),
    normalised; orders without ``external_id`` quarantined with the reason."""
    res = IngestResult(CODE)
    after = (get_cursor(conn, CURSOR) or {}).get("after")
    with fetch_ahead() as ahead:
        fut = ahead.submit(client.orders_page, after)
        while fut is not None:
            orders, nxt, more = fut.result()
            fut = None
            res.pages += 1
            res.fetched += len(orders)
            if more and nxt:
                fut = ahead.submit(client.orders_page, nxt)
            items, rejects = split_by_id(orders, "external_id", what="call-centre order")
            store_polled_page(
                conn,
                CHANNEL,
                items,
                rejects,
                res,
                cursor_name=CURSOR,
                cursor_value={"after": nxt or after},
                normalize=normalize,
                before_commit=before_commit,
            )
            after = nxt or after
    res.cursor = {"after": after}
    record_success(conn, CODE, res.fetched)
    if normalize:
        res.normalized.add(normalize_pending(conn, CHANNEL))
    return res


CHANNEL = Channel(
    code=CODE,
    title="Call centre",
    system="callcentre",
    env={"base_url": "OMS_CALLCENTRE_URL", "api_key": "OMS_CALLCENTRE_API_KEY"},
    secrets=frozenset({"api_key"}),
    client=CallCentreClient.from_endpoint,
    poll=poll,
    feed="Call-centre orders: the call centre's order feed by cursor (when configured), plus what the Call "
    "centre page and `oms callcentre submit` stored → orders.",
    mapper=map_order,
    # orders arrive when operators submit them: never stale
    checks=ChannelChecks(max_age_seconds=None),
)
