"""Call-centre orders as operators type them in — a generator, not a server.

Why no API: the call centre is part of the seller's own business; its operators enter orders into the OMS
(through a CLI/UI built elsewhere). What the OMS needs from us is realistic input: the same demand model as
the other channels, plus the mess of manual entry — phones in every format, SKUs typed in lower case with
stray spaces, quantities typed as text, names in capitals. ``messy_share`` controls how much of that.

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

import random
from collections.abc import Sequence
from datetime import datetime, timedelta

from simulators.catalog import Product
from simulators.clock import DEFAULT_EPOCH, iso_z
from simulators.generator import MOSCOW_UTC_OFFSET, GeneratedOrder, OrderGenerator

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
    ) -> None:
        self.messy_share = messy_share
        self.gen = OrderGenerator(seed, "callcentre", rate, catalog=catalog, start=start)

    def until(self, now: datetime) -> list[dict]:
        """Orders entered since the previous call, up to ``now`` (simulated time)."""
        return [render_callcentre_order(o, messy_share=self.messy_share) for o in self.gen.until(now)]

    def take(self, n: int) -> list[dict]:
        return [render_callcentre_order(o, messy_share=self.messy_share) for o in self.gen.take(n)]


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
