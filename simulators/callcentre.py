"""Call-centre orders as operators type them in: a generator, and the order-entry system's feed over HTTP.

Operators take orders by phone and type them into the call centre's order-entry application; the OMS reads
them from there. What the OMS needs from us is realistic input: the same demand model as the other channels,
plus the mess of manual entry — phones in every format, SKUs typed in lower case with stray spaces,
quantities typed as text, names in capitals. ``messy_share`` controls how much of that.

Two ways in:

* :func:`generate_callcentre_orders` / ``python -m simulators.callcentre --count N`` — a batch, for
  ``oms callcentre submit --generate N`` and tests;
* :class:`CallCentreSimulator` — the order-entry application of a live stack: simulated operators enter
  orders at the stack's rate and profile, and the OMS pages through them with a cursor (our own API, shaped
  like the WMS feeds; header ``X-Api-Key``):

  ``GET /callcentre/v1/orders?after=<cursor>&limit=N`` → ``{"orders": [<order>, …], "next_cursor": "…",
  "has_more": bool}``, oldest first (by ``entered_at``, then entry order). ``after`` is the previous page's
  ``next_cursor`` (opaque; none: from the first order); ``limit`` 1..500 (100). A client that stores
  ``next_cursor`` after each page reads every order once; orders entered later extend the feed at the end,
  never before the cursor. ``GET /callcentre/v1/orders/{external_id}`` → ``{"order": <order>}`` (404 if
  unknown). Errors ``{"error": {"code", "message"}}``: 401 ``unauthenticated``, 400 ``invalid_argument``.
  Faults: ``malformed`` garbles a line's ``qty`` (``"два"``) or drops ``external_id``, ``duplicate`` repeats
  records and steps ``next_cursor`` back one record, ``out_of_order`` shuffles the page.

Shape of one order (``dict``, JSON-ready)::

    {
      "external_id": "CC-20250303-000017",       # unique, stable for (seed, seq)
      "channel": "callcentre",
      "entered_at": "2025-03-03T08:15:00Z",       # UTC
      "operator": {"id": "op-07", "name": "Иванова Анна"},
      "customer": {"full_name": "Петрова Мария Сергеевна", "phone": "8 (916) 123-45-67", "email": null | "…"},
      "delivery": {
        "method": "courier" | "pickup_point" | "store_pickup",
        "region": "Москва", "city": "Москва", "postcode": "101123",
        "address": "ул. Садовая, д. 5, кв. 12",   # street part, as dictated
        "pickup_point_code": null | "MSK123",      # CDEK pickup point when method == pickup_point
        "store_code": null | "MSK-S01",            # when method == store_pickup
        "desired_date": "2025-03-05", "time_slot": "10:00-14:00" | null
      },
      "lines": [{"sku": "ELC-10042", "qty": 1, "unit_price": "1299.00"}],   # qty may be "2" (text) when messy
      "payment": {"method": "cash_on_delivery" | "card_on_delivery" | "payment_link"},
      "comment": "",
      "total": "1299.00"                           # as computed by the operator's screen
    }

The OMS must normalise (phone → E.164, SKU → canonical article, qty → int) or quarantine.
"""

from __future__ import annotations

import bisect
import random
from collections.abc import Sequence
from datetime import datetime, timedelta

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from simulators.base import (
    UNCLEAN_ID_GAP,
    ApiError,
    SimContext,
    Simulator,
    cursor_page_params,
    resume_stream,
    secs_header,
)
from simulators.catalog import Product
from simulators.clock import DEFAULT_EPOCH, iso_z
from simulators.faults import FaultRule, FaultSet
from simulators.generator import MOSCOW_UTC_OFFSET, DemandProfile, GeneratedOrder, OrderGenerator

OPERATORS = (
    ("op-01", "Иванова Анна"), ("op-02", "Смирнов Дмитрий"), ("op-03", "Кузнецова Елена"),
    ("op-04", "Попов Артём"), ("op-05", "Васильева Ольга"), ("op-06", "Соколов Максим"),
    ("op-07", "Михайлова Татьяна"), ("op-08", "Новиков Игорь"),
)  # fmt: skip
TIME_SLOTS = ("10:00-14:00", "14:00-18:00", "18:00-22:00")


def _messy_phone(e164: str, rng: random.Random) -> str:
    d = e164[2:]  # ten digits after +7
    return rng.choice((
        f"8 ({d[:3]}) {d[3:6]}-{d[6:8]}-{d[8:]}",
        f"+7({d[:3]}){d[3:]}",
        f"8{d}",
        d,
        f"+7 {d[:3]} {d[3:6]} {d[6:8]} {d[8:]}",
    ))  # fmt: skip


def render_callcentre_order(order: GeneratedOrder, *, messy_share: float = 0.15) -> dict:
    """Render a generated order as an operator would have entered it."""
    rng = random.Random(f"callcentre:{order.entropy}")
    messy = rng.random() < messy_share
    c, a = order.customer, order.address
    full_name = c.full_name.upper() if messy and rng.random() < 0.3 else c.full_name
    local_day = (order.created_at + timedelta(hours=MOSCOW_UTC_OFFSET)).date()
    lines = []
    for line in order.lines:
        sku, qty = line.sku, line.qty
        if messy and rng.random() < 0.5:
            sku = f" {sku.lower()} "
        if messy and rng.random() < 0.3:
            qty = str(qty)
        lines.append({"sku": sku, "qty": qty, "unit_price": f"{line.unit_price:.2f}"})
    operator = OPERATORS[order.entropy % len(OPERATORS)]
    return {
        "external_id": f"CC-{local_day:%Y%m%d}-{order.seq:06d}",
        "channel": "callcentre",
        "entered_at": iso_z(order.created_at),
        "operator": {"id": operator[0], "name": operator[1]},
        "customer": {
            "full_name": full_name,
            "phone": _messy_phone(c.phone, rng) if messy else c.phone,
            "email": c.email if rng.random() < 0.4 else None,
        },
        "delivery": {
            "method": order.delivery_method,
            "region": a.region,
            "city": a.city,
            "postcode": a.postcode,
            "address": a.street,
            "pickup_point_code": order.pickup_point_code,
            "store_code": order.store_code,
            "desired_date": (local_day + timedelta(days=rng.randint(1, 4))).isoformat(),
            "time_slot": rng.choice(TIME_SLOTS) if order.delivery_method == "courier" else None,
        },
        "lines": lines,
        "payment": {"method": order.payment_method},
        "comment": order.comment,
        "total": f"{order.total:.2f}",
    }


class CallCentre:
    """A stream of operator-entered orders (``rate`` per simulated minute) for a demo loop or a CLI."""

    def __init__(
        self,
        seed: int = 42,
        *,
        rate: float = 2.0,
        start: datetime = DEFAULT_EPOCH,
        catalog: Sequence[Product] | None = None,
        messy_share: float = 0.15,
        profile: str | DemandProfile = "daily",
    ) -> None:
        self.messy_share = messy_share
        self.gen = OrderGenerator(seed, "callcentre", rate, catalog=catalog, start=start, profile=profile)

    def until(self, now: datetime) -> list[dict]:
        """Orders entered since the previous call, up to ``now`` (simulated time)."""
        return [render_callcentre_order(o, messy_share=self.messy_share) for o in self.gen.until(now)]

    def take(self, n: int) -> list[dict]:
        return [render_callcentre_order(o, messy_share=self.messy_share) for o in self.gen.take(n)]


class CallCentreSimulator(Simulator):
    """The call centre's order-entry application in a live stack: operators enter orders (``rate`` per
    simulated minute, the stack's rate by default, over the stack's demand profile) and the OMS reads them
    through a cursor feed (see the module docstring)."""

    name = "callcentre"

    def __init__(
        self,
        ctx: SimContext,
        *,
        api_key: str = "sim-callcentre-key-3c7d91e2",
        rate: float | None = None,
        messy_share: float = 0.15,
        faults=(),
    ) -> None:
        super().__init__(ctx, faults=faults)
        self.api_key = api_key
        self.centre = CallCentre(
            ctx.seed,
            rate=ctx.rate if rate is None else rate,
            start=ctx.clock.start,
            catalog=ctx.catalog,
            messy_share=messy_share,
            profile=ctx.profile,
        )
        self.orders: list[dict] = []
        self.seqs: list[int] = []  # each order's number in the stream, ascending: the feed's keyset
        self.by_id: dict[str, dict] = {}

    def credentials(self) -> dict:
        return {"api_key": self.api_key}

    def sync(self) -> None:
        for generated in self.centre.gen.until(self.now):
            self._append(
                generated.seq, render_callcentre_order(generated, messy_share=self.centre.messy_share)
            )

    def _append(self, seq: int, order: dict) -> None:
        self.orders.append(order)
        self.seqs.append(seq)
        self.by_id[order["external_id"]] = order
        self.dirty = True

    # -- state across restarts ------------------------------------------------------------------------------
    def dump_state(self) -> dict:
        return {
            "produced": self.centre.gen.produced,
            "orders": [[q, o] for q, o in zip(self.seqs, self.orders, strict=True)],
        }

    def load_state(self, data: dict, *, clean: bool) -> None:
        """The orders entered so far stay listed; new ones number on past every order handed out (and past
        any entered after the last save, if the process died), so the feed's cursor stays valid."""
        for seq, order in data["orders"]:
            self._append(int(seq), order)
        resume_stream(self.centre.gen, int(data["produced"]) + (0 if clean else UNCLEAN_ID_GAP))

    # -- protocol -----------------------------------------------------------------------------------------
    def before_request(self, request: Request) -> Response | None:
        if request.headers.get("x-api-key") != self.api_key:
            return _error(401, "unauthenticated", "missing or invalid X-Api-Key").response()
        return None

    def fault_rate_limited(self, rule: FaultRule) -> Response:
        return _error(
            429, "rate_limited", "too many requests", {"Retry-After": secs_header(rule.retry_after)}
        ).response()

    def fault_server_error(self, rule: FaultRule) -> Response:
        status = rule.status or 500
        headers = {"Retry-After": secs_header(rule.retry_after)} if status == 503 else None
        return _error(status, "internal", "internal error", headers).response()

    def not_found(self, request: Request) -> Response:
        return _error(404, "not_found", "no such endpoint").response()

    def internal_error(self) -> Response:
        return _error(500, "internal", "internal error").response()

    def api_routes(self):
        return [
            ("/callcentre/v1/orders", self.list_orders, ["GET"]),
            ("/callcentre/v1/orders/{external_id}", self.get_order, ["GET"]),
        ]

    async def list_orders(self, request: Request, faults: FaultSet) -> Response:
        after, limit = cursor_page_params(request.query_params)
        with self.lock:
            start = bisect.bisect_right(self.seqs, after)
            page = self.orders[start : start + limit]
            seqs = self.seqs[start : start + limit]
            more = start + len(page) < len(self.orders)
        if faults.get("duplicate") and len(page) > 1:
            seqs, more = seqs[:-1], True  # the last record of this page shows up again on the next one
        cursor = str(seqs[-1]) if seqs else str(after)
        records = faults.apply_records(page, _malform_order)
        return JSONResponse({"orders": records, "next_cursor": cursor, "has_more": more})

    async def get_order(self, request: Request, faults: FaultSet) -> Response:
        with self.lock:
            order = self.by_id.get(request.path_params["external_id"])
        if order is None:
            raise _error(404, "not_found", f"no order {request.path_params['external_id']}")
        return JSONResponse({"order": order})

    def state(self) -> dict:
        return {"orders": len(self.orders), "last": self.orders[-1]["external_id"] if self.orders else None}


def _error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> ApiError:
    return ApiError(status, {"error": {"code": code, "message": message}}, headers)


def _malform_order(record: dict, rng: random.Random) -> None:
    lines = record.get("lines") or []
    if lines and rng.random() < 0.5:
        lines[0]["qty"] = "два"
    else:
        record.pop("external_id", None)


def generate_callcentre_orders(
    seed: int = 42,
    n: int = 10,
    *,
    rate: float = 2.0,
    start: datetime = DEFAULT_EPOCH,
    catalog: Sequence[Product] | None = None,
    messy_share: float = 0.15,
) -> list[dict]:
    """The first ``n`` call-centre orders for ``seed`` (same seed → same orders)."""
    return CallCentre(seed, rate=rate, start=start, catalog=catalog, messy_share=messy_share).take(n)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m simulators.callcentre --count N --seed S``: N operator orders as JSON lines on stdout
    (what ``oms callcentre submit --generate N`` reads, as if an operator had typed them)."""
    import argparse
    import json
    import sys

    p = argparse.ArgumentParser(prog="python -m simulators.callcentre")
    p.add_argument("--count", type=int, required=True)
    p.add_argument("--seed", type=int, default=42)
    args = p.parse_args(argv)
    for order in generate_callcentre_orders(args.seed, args.count):
        sys.stdout.write(json.dumps(order, ensure_ascii=False, default=str) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
