"""Call-centre orders as operators enter them: ``oms callcentre submit`` → raw payloads → orders.

Operators type orders; they come in messy (phones in any format, SKUs in lower case with spaces, quantities as
text, names in capitals). :func:`submit_orders` stores each one as received (``raw.channel_orders``, channel
``callcentre``, idempotent: submitting the same file twice changes nothing) and normalises at once, so the
operator learns immediately which orders were accepted and which were quarantined, with the reason.

CLI (``callcentre_app``, a typer sub-app the lead mounts as ``oms callcentre``)::

    oms callcentre submit orders.json            # a JSON list (or one object, or JSON lines) of orders
    oms callcentre submit - < orders.json
    oms callcentre submit --generate 20 --seed 7 # simulated operator input (simulators.callcentre)
"""

from __future__ import annotations

import json
import sys
from datetime import datetime, time, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import psycopg
from pydantic import BaseModel, ConfigDict, Field, field_validator

from oms_ops.connectors.normalize import (
    Mapped,
    MappingContext,
    NormalizeResult,
    delivery_fields,
    normalize_pending,
    normalize_phone,
)
from oms_ops.connectors.state import record_success, store_page

CHANNEL = "callcentre"
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
    record_success(conn, CHANNEL, len(orders))
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
        "channel_code": CHANNEL,
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


# -- CLI ------------------------------------------------------------------------------------------------------
def submit_command(
    source: str | None, *, generate: int = 0, seed: int = 42, database_url: str | None = None, out=None
) -> NormalizeResult:
    """What ``oms callcentre submit`` does; returns the result (the CLI prints it)."""
    import os

    from oms_ops.db import connect

    if generate:
        from simulators.callcentre import generate_callcentre_orders

        orders = generate_callcentre_orders(seed, generate)
    elif source in (None, "-"):
        orders = read_orders(sys.stdin.read())
    else:
        orders = read_orders(Path(source).read_text(encoding="utf-8"))
    url = database_url or os.environ.get("OMS_DATABASE_URL")
    if not url:
        from oms_ops.platform import stack
        from oms_ops.platform.settings import load_settings

        settings = load_settings()
        state = stack.read_state(settings) if stack.running_services(settings).get("postgres") else None
        url = state.database_url if state else None
    if not url:
        raise RuntimeError(
            "OMS_DATABASE_URL is not set and no running stack was found (start it with `oms up`)"
        )
    with connect(url) as conn:
        res = submit_orders(conn, orders)
    print(json.dumps({"submitted": len(orders), **res.as_dict()}, ensure_ascii=False), file=out or sys.stdout)
    return res


def _typer_app():
    import typer

    app = typer.Typer(help="Call-centre orders entered by operators.", no_args_is_help=True)

    @app.callback()
    def _group() -> None:
        """Call-centre orders entered by operators."""

    @app.command("submit")
    def submit(
        source: str = typer.Argument(
            None, help="JSON file of orders (list, object or JSON lines); '-' = stdin"
        ),
        generate: int = typer.Option(
            0, help="Generate N simulated operator orders instead of reading a file"
        ),
        seed: int = typer.Option(42, help="Seed for --generate"),
    ) -> None:
        """Submit call-centre orders: stored as received, normalised, accepted or quarantined."""
        try:
            submit_command(source, generate=generate, seed=seed)
        except (OSError, ValueError, RuntimeError) as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from None

    return app


callcentre_app = _typer_app()
