"""Call-centre orders as operators enter them (the Call centre page, ``oms callcentre submit``) → raw
payloads → orders.

Operators type orders; they come in messy (phones in any format, SKUs in lower case with spaces, quantities as
text, names in capitals). :func:`submit_orders` stores each one as received (``raw.channel_orders``, channel
``callcentre``, idempotent: submitting the same file twice changes nothing) and normalises at once, so the
operator learns immediately which orders were accepted and which were quarantined, with the reason.
The channel has no feed to poll: its Dagster asset only sweeps what is still queued.
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
    Mapped,
    MappingContext,
    NormalizeResult,
    delivery_fields,
    normalize_phone,
)
from oms_ops.channels.normalize import normalize_pending
from oms_ops.channels.rawstore import store_page
from oms_ops.connectors.state import record_success

CODE = "callcentre"
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
    qty: int = Field(gt=0)  # "2" typed as text is accepted, "два" is not
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


CHANNEL = Channel(
    code=CODE,
    title="Call centre",
    system=None,
    feed="Call-centre orders submitted on the Call centre page or with `oms callcentre submit`: anything "
    "still queued → orders.",
    mapper=map_order,
    # orders arrive when operators submit them: never stale
    checks=ChannelChecks(max_age_seconds=None),
)
