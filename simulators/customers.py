"""Customers after delivery: who sends what back, why, when — and the web store's return requests.

Why: returns, refunds, exchanges and the return-rate KPI need customers who return things, and a customer
can only return what reached them. So the simulated customers watch the carrier: when CDEK hands a parcel
over (status ``DELIVERED``) its recipient decides, with probability ``return_share``, to send part of it
back — which lines and units, the reason (Shopify's return reasons), a note, whether they want a
replacement (an exchange) instead of their money — and asks the shop for it some hours later. Everything a
customer decides comes from an RNG seeded by (seed, parcel): the same parcel always gives the same request.

Only the web store's customers ask through an API the OMS reads (:class:`ShopReturns`, served by the
Shopify simulator); marketplace buyers return through Ozon's and Wildberries' own return flows, which are not
simulated. A parcel is matched to its web-store order the way the shop would recognise its customer: by the
recipient's phone (the OMS books CDEK with the order's phone) and the SKUs in the parcel.

The return request, in the shape of Shopify's ``Return`` (the ``returns/request`` webhook body; the REST
Admin API has no returns resource, Shopify serves them through GraphQL — the simulator also lists them over
REST, see ``docs/simulators.md``)::

    {
      "id": 9100000000001, "admin_graphql_api_id": "gid://shopify/Return/9100000000001",
      "name": "#1017-R1", "status": "requested",
      "order": {"id": 5600000017123, "admin_graphql_api_id": "gid://shopify/Order/5600000017123", "name": "#1017"},
      "requested_at": "2025-03-04T15:20:00+03:00", "created_at": "…", "updated_at": "…",
      "total_return_line_items": 1,
      "return_line_items": [{
        "id": 9200000000000101, "admin_graphql_api_id": "gid://shopify/ReturnLineItem/…",
        "quantity": 1, "return_reason": "size_too_small", "return_reason_note": "", "customer_note": "Маломерит",
        "fulfillment_line_item": {"id": …, "line_item": {"id": 14000000001700, "sku": "CLO-10007",
                                  "variant_id": …, "product_id": …, "title": "…", "quantity": 2, "price": "1290.00"}}
      }],
      "exchange_line_items": [{"id": …, "line_item": {"variant_id": …, "sku": "CLO-10007", "title": "…",
                                                        "quantity": 1, "price": "1290.00"}}],   # empty: refund
      "decline": null
    }
"""

from __future__ import annotations

import heapq
import random
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from simulators.base import UNCLEAN_ID_GAP

MSK = timezone(timedelta(hours=3))

#: Shopify's ReturnReason values (lower case, as in its webhook bodies) with how often customers give them
RETURN_REASONS: dict[str, float] = {
    "unwanted": 0.30,
    "not_as_described": 0.15,
    "defective": 0.15,
    "size_too_small": 0.08,
    "size_too_large": 0.07,
    "color": 0.08,
    "wrong_item": 0.07,
    "style": 0.05,
    "other": 0.05,
}
#: reasons after which a customer may want the same article again rather than the money back
EXCHANGEABLE = frozenset({"defective", "size_too_small", "size_too_large", "color", "wrong_item"})
CUSTOMER_NOTES: dict[str, tuple[str, ...]] = {
    "unwanted": ("Передумал(а)", "Не подошло", "Нашёл(а) дешевле", ""),
    "not_as_described": ("На фото выглядит иначе", "Характеристики не совпадают с описанием", ""),
    "defective": ("Не включается", "Брак: трещина на корпусе", "Перестало работать через день", ""),
    "size_too_small": ("Маломерит", "Нужен размер больше", ""),
    "size_too_large": ("Большемерит", "Нужен размер меньше", ""),
    "color": ("Цвет не тот, что на фото", "Хочу другой цвет", ""),
    "wrong_item": ("Прислали не тот товар", "Не та модель", ""),
    "style": ("Не подошёл фасон", ""),
    "other": ("", "Подарок не понравился"),
}
RETURN_ID_BASE = 9_100_000_000_000
RETURN_LINE_ID_BASE = 9_200_000_000_000_000
EXCHANGE_LINE_ID_BASE = 9_300_000_000_000_000
FULFILLMENT_LINE_ID_BASE = 9_400_000_000_000_000


def phone_key(raw: str | None) -> str | None:
    """The 10 national digits of a Russian phone however it was written (+7…, 8…, spaces) — or None."""
    digits = re.sub(r"\D", "", raw or "")
    if len(digits) == 11 and digits[0] in "78":
        digits = digits[1:]
    return digits if len(digits) == 10 else None


def _ts(dt: datetime) -> str:
    """The shop's timestamp form (Moscow offset), as on its orders."""
    return dt.astimezone(MSK).isoformat(timespec="seconds")


# -- what reached the customer ----------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class DeliveredParcel:
    """A parcel the carrier handed over: what the customer holds in their hands."""

    key: str  # the carrier's id of the parcel (CDEK order uuid)
    number: str  # the seller's shipment number on it
    phone: str | None  # recipient phone, 10 national digits (see :func:`phone_key`)
    items: tuple[tuple[str, int], ...]  # (sku, units), SKUs in the order first seen
    delivered_at: datetime


def parcel_from_cdek(
    uuid: str, number: str, payload: Mapping[str, Any], delivered_at: datetime
) -> DeliveredParcel:
    """A delivered parcel from a CDEK order body (``recipient.phones``, ``packages[].items[]``)."""
    phones = ((payload.get("recipient") or {}).get("phones")) or []
    phone = phone_key(str(phones[0].get("number"))) if phones and isinstance(phones[0], Mapping) else None
    units: dict[str, int] = {}
    for package in payload.get("packages") or []:
        for item in (package or {}).get("items") or []:
            sku, amount = item.get("ware_key"), item.get("amount")
            if isinstance(sku, str) and isinstance(amount, int) and amount > 0:
                units[sku] = units.get(sku, 0) + amount
    return DeliveredParcel(uuid, number, phone, tuple(units.items()), delivered_at)


class ParcelWatch:
    """Reports each parcel a CDEK simulator delivers, once: what the customers "see" of the carrier.

    Reads the simulator's own state under its lock (after letting it catch up with the clock), keeping the
    parcels still on their way; a parcel that ends otherwise (not delivered, invalid, removed) is dropped.
    ``find_cdek`` returns the carrier simulator, or None in a stack without one (nothing is delivered then).
    """

    def __init__(self, find_cdek: Any) -> None:
        self.find_cdek = find_cdek
        self.known = 0  # CDEK orders looked at so far (its dict keeps creation order, across restarts too)
        self.open: list[str] = []  # … of which still on their way

    def delivered(self) -> list[DeliveredParcel]:
        out: list[DeliveredParcel] = []
        cdek = self.find_cdek()
        if cdek is None:
            return out
        with cdek.lock:
            cdek.sync()
            orders = cdek.orders
            if len(orders) > self.known:
                self.open.extend(list(orders)[self.known :])
                self.known = len(orders)
            still: list[str] = []
            for uuid in self.open:
                order = orders.get(uuid)
                if order is None or order.removed or order.state == "INVALID":
                    continue
                code = order.last_code
                if code == "DELIVERED":
                    at = datetime.strptime(order.statuses[-1]["date_time"], "%Y-%m-%dT%H:%M:%S%z")
                    out.append(parcel_from_cdek(uuid, order.number, order.payload, at))
                elif code != "NOT_DELIVERED":
                    still.append(uuid)
            self.open = still
        return out


# -- what the customer decides ----------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class ReturnLineIntent:
    sku: str
    qty: int
    reason: str  # a key of RETURN_REASONS
    note: str


@dataclass(frozen=True, slots=True)
class ReturnIntent:
    """A customer's decision to send (part of) a parcel back, and when they ask for it."""

    parcel: DeliveredParcel
    requested_at: datetime
    lines: tuple[ReturnLineIntent, ...]
    exchange: bool  # a replacement of the same articles instead of a refund


class ReturnBehaviour:
    """How customers return things: ``return_share`` of the delivered parcels come back in part, the request
    ``delay_hours`` (uniform) × ``delay_scale`` after delivery — a demo compresses it like the carrier's
    transit. Mostly one unit of one line; ``exchange_share`` of the exchangeable reasons (size, colour,
    defect, wrong item) ask for a replacement."""

    def __init__(
        self,
        seed: int,
        *,
        return_share: float = 0.12,
        exchange_share: float = 0.5,
        delay_hours: tuple[float, float] = (2.0, 72.0),
        delay_scale: float = 1.0,
    ) -> None:
        if not 0 <= return_share <= 1 or not 0 <= exchange_share <= 1:
            raise ValueError("return_share and exchange_share must be within 0..1")
        if not 0 <= delay_hours[0] <= delay_hours[1] or delay_scale <= 0:
            raise ValueError("delay_hours must be 0 <= low <= high and delay_scale > 0")
        self.seed = seed
        self.return_share = return_share
        self.exchange_share = exchange_share
        self.delay_hours = delay_hours
        self.delay_scale = delay_scale
        self._reasons, self._weights = zip(*RETURN_REASONS.items(), strict=True)

    def decide(self, parcel: DeliveredParcel, returnable: Iterable[tuple[str, int]]) -> ReturnIntent | None:
        """What the recipient of ``parcel`` sends back out of ``returnable`` (sku, units) — or None."""
        lines = [(sku, qty) for sku, qty in returnable if qty > 0]
        rng = random.Random(f"{self.seed}:customer-return:{parcel.key}")
        if not lines or rng.random() >= self.return_share:
            return None
        k = 1 if len(lines) == 1 or rng.random() < 0.8 else rng.randint(2, len(lines))
        chosen = rng.sample(lines, k)
        reason = rng.choices(self._reasons, weights=self._weights)[0]
        exchange = reason in EXCHANGEABLE and rng.random() < self.exchange_share
        intents = tuple(
            ReturnLineIntent(
                sku,
                qty if rng.random() < 0.3 else 1,
                reason,
                rng.choice(CUSTOMER_NOTES[reason]),
            )
            for sku, qty in sorted(chosen)
        )
        delay = rng.uniform(*self.delay_hours) * self.delay_scale
        return ReturnIntent(parcel, parcel.delivered_at + timedelta(hours=delay), intents, exchange)


# -- the web store's side ---------------------------------------------------------------------------------
class ShopReturns:
    """Return requests of the web store's customers, kept by the Shopify simulator (``shop``).

    ``sync(now)`` (called from the shop's own ``sync``, with its lock held) takes the parcels delivered since
    the last call, matches each to a web-store order, lets the customer decide, and turns the decisions
    that are due into return records (ids ascending in request order — so ``since_id`` paging never misses
    one) and, if the shop sends them, ``returns/request`` webhooks.
    """

    def __init__(self, shop: Any, behaviour: ReturnBehaviour) -> None:
        self.shop = shop
        self.behaviour = behaviour
        self.returns: list[dict] = []
        self.by_id: dict[int, dict] = {}
        self.issued = 0  # return numbers handed out (ids are RETURN_ID_BASE + number)
        self.watch = ParcelWatch(lambda: shop.ctx.simulators.get("cdek"))
        self._indexed = 0  # shop orders indexed by phone so far
        self._by_phone: dict[str, list[int]] = {}
        self._claimed: dict[tuple[int, str], int] = {}  # (order id, sku) → units asked back so far
        self._per_order: dict[int, int] = {}  # order id → returns so far (for the "#1017-R2" name)
        self._due: list[tuple[datetime, str, int, ReturnIntent]] = []  # (at, parcel key, order id, intent)

    def _order_for(self, parcel: DeliveredParcel) -> Any | None:
        """The latest web-store order of that phone, placed before delivery, holding a SKU of the parcel."""
        orders = self.shop.orders
        for so in orders[self._indexed :]:
            key = phone_key(so.order.customer.phone)
            if key:
                self._by_phone.setdefault(key, []).append(so.id)
        self._indexed = len(orders)
        skus = {sku for sku, _ in parcel.items}
        for order_id in reversed(self._by_phone.get(parcel.phone or "", [])):
            so = self.shop.by_id[order_id]
            if (
                so.cancelled_at is None
                and so.created_at <= parcel.delivered_at
                and skus & {ln.sku for ln in so.order.lines}
            ):
                return so
        return None

    def sync(self, now: datetime) -> None:
        for parcel in self.watch.delivered():
            so = self._order_for(parcel)
            if so is None:
                continue  # not a web-store parcel
            ordered = {ln.sku: ln.qty for ln in so.order.lines}
            returnable = [
                (sku, min(qty, ordered[sku] - self._claimed.get((so.id, sku), 0)))
                for sku, qty in parcel.items
                if sku in ordered
            ]
            intent = self.behaviour.decide(parcel, returnable)
            if intent is None:
                continue
            for line in intent.lines:
                self._claimed[(so.id, line.sku)] = self._claimed.get((so.id, line.sku), 0) + line.qty
            heapq.heappush(self._due, (intent.requested_at, parcel.key, so.id, intent))
            self.shop.dirty = True
        while self._due and self._due[0][0] <= now:
            _at, _key, order_id, intent = heapq.heappop(self._due)
            self._open(self.shop.by_id[order_id], intent)
            self.shop.dirty = True

    def _open(self, so: Any, intent: ReturnIntent) -> None:
        self.issued += 1
        n = self.issued
        rid = RETURN_ID_BASE + n
        self._per_order[so.id] = self._per_order.get(so.id, 0) + 1
        items = {li["sku"]: li for li in self.shop.render(so)["line_items"]}
        at = _ts(intent.requested_at)
        record = {
            "id": rid,
            "admin_graphql_api_id": f"gid://shopify/Return/{rid}",
            "name": f"#{so.number}-R{self._per_order[so.id]}",
            "status": "requested",
            "order": {
                "id": so.id,
                "admin_graphql_api_id": f"gid://shopify/Order/{so.id}",
                "name": f"#{so.number}",
            },
            "requested_at": at,
            "created_at": at,
            "updated_at": at,
            "total_return_line_items": len(intent.lines),
            "return_line_items": [
                {
                    "id": RETURN_LINE_ID_BASE + n * 100 + i,
                    "admin_graphql_api_id": f"gid://shopify/ReturnLineItem/{RETURN_LINE_ID_BASE + n * 100 + i}",
                    "quantity": line.qty,
                    "return_reason": line.reason,
                    "return_reason_note": "",
                    "customer_note": line.note,
                    "fulfillment_line_item": {
                        "id": FULFILLMENT_LINE_ID_BASE + items[line.sku]["id"] % 10**12,
                        "line_item": _line_view(items[line.sku], items[line.sku]["quantity"]),
                    },
                }
                for i, line in enumerate(intent.lines)
            ],
            "exchange_line_items": [
                {
                    "id": EXCHANGE_LINE_ID_BASE + n * 100 + i,
                    "line_item": _line_view(items[line.sku], line.qty, new=True),
                }
                for i, line in enumerate(intent.lines)
            ]
            if intent.exchange
            else [],
            "decline": None,
        }
        self.returns.append(record)
        self.by_id[rid] = record
        self.shop.queue_return_webhook(record, so, intent.requested_at)

    def listed(
        self, *, since_id: int | None = None, order_id: int | None = None, limit: int = 50
    ) -> list[dict]:
        """Return records in id order, after ``since_id``, of ``order_id`` if given, at most ``limit``."""
        out = []
        for record in self.returns:
            if since_id is not None and record["id"] <= since_id:
                continue
            if order_id is not None and record["order"]["id"] != order_id:
                continue
            out.append(record)
            if len(out) == limit:
                break
        return out

    # -- state across restarts (the shop's dump_state / load_state include these) -----------------------------
    def dump_state(self) -> dict:
        """JSON-able: the requests made, the decisions waiting to be asked, what was claimed, the carrier
        watch's position."""
        return {
            "issued": self.issued,
            "returns": self.returns,
            "due": [_intent_out(at, key, oid, intent) for at, key, oid, intent in self._due],
            "claimed": [[oid, sku, n] for (oid, sku), n in self._claimed.items()],
            "per_order": [[oid, n] for oid, n in self._per_order.items()],
            "watch": {"known": self.watch.known, "open": self.watch.open},
        }

    def load_state(self, data: Mapping[str, Any] | None, *, clean: bool = True) -> None:
        """Take back :meth:`dump_state` (after the shop's orders are back; None: nothing saved). After an
        unclean stop the numbering skips ahead, so no request id a poller may have seen comes out again."""
        if not data:
            return
        self.issued = int(data["issued"]) + (0 if clean else UNCLEAN_ID_GAP)
        self.returns = list(data["returns"])
        self.by_id = {r["id"]: r for r in self.returns}
        self._due = [_intent_in(item) for item in data["due"]]
        heapq.heapify(self._due)
        self._claimed = {(int(oid), sku): int(n) for oid, sku, n in data["claimed"]}
        self._per_order = {int(oid): int(n) for oid, n in data["per_order"]}
        self.watch.known, self.watch.open = int(data["watch"]["known"]), list(data["watch"]["open"])

    def state(self) -> dict:
        return {
            "requested": len(self.returns),
            "exchanges": sum(1 for r in self.returns if r["exchange_line_items"]),
            "waiting_to_ask": len(self._due),
        }


def _intent_out(at: datetime, key: str, order_id: int, intent: ReturnIntent) -> dict:
    p = intent.parcel
    return {
        "order_id": order_id,
        "parcel": {"key": key, "number": p.number, "phone": p.phone, "items": [list(i) for i in p.items],
                   "delivered_at": at_out(p.delivered_at)},
        "requested_at": at_out(at),
        "lines": [[ln.sku, ln.qty, ln.reason, ln.note] for ln in intent.lines],
        "exchange": intent.exchange,
    }  # fmt: skip


def _intent_in(item: Mapping[str, Any]) -> tuple[datetime, str, int, ReturnIntent]:
    p = item["parcel"]
    parcel = DeliveredParcel(
        p["key"],
        p["number"],
        p["phone"],
        tuple((sku, int(n)) for sku, n in p["items"]),
        at_in(p["delivered_at"]),
    )
    lines = tuple(ReturnLineIntent(sku, int(qty), reason, note) for sku, qty, reason, note in item["lines"])
    at = at_in(item["requested_at"])
    return at, parcel.key, int(item["order_id"]), ReturnIntent(parcel, at, lines, bool(item["exchange"]))


def at_out(value: datetime) -> str:
    return value.astimezone(UTC).isoformat()


def at_in(value: str) -> datetime:
    return datetime.fromisoformat(value)


def _line_view(item: Mapping[str, Any], quantity: int, *, new: bool = False) -> dict:
    """The order's line item as a return shows it; ``new``: the replacement of an exchange (same variant,
    a line item that does not exist yet, so no ids of its own)."""
    ids = {} if new else {"id": item["id"], "admin_graphql_api_id": item.get("admin_graphql_api_id")}
    return {
        **ids,
        "sku": item["sku"],
        "variant_id": item["variant_id"],
        "product_id": item["product_id"],
        "title": item["title"],
        "quantity": quantity,
        "price": item["price"],
    }
