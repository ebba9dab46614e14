"""Realistic, reproducible order streams that every channel simulator renders in its own API shape.

Why a shared, channel-neutral generator: the OMS has to cope with the *business* shape of demand (a handful of
very hot SKUs, mostly small baskets, Moscow-heavy geography, evening peaks, customers who cancel) no matter
which API the order came through. Generating that once and rendering it per channel keeps the channels
statistically consistent and lets tests compare what went in with what the OMS ingested.

Reproducibility: the same ``seed`` gives the same orders — arrival times come from one RNG stream per
channel, and each order's content from its own RNG seeded with ``(seed, channel, seq)``. So order #17 is the
same whether you generated 20 or 20 000 orders, and whatever page size a client used.

Pace: the ``daily`` profile follows the Moscow clock (night trough, evening peak) as real demand does; the
``steady`` profile spreads the same daily volume evenly over the hours, so a demo started at any hour shows
every channel busy within minutes (:class:`DemandProfile`).
"""

from __future__ import annotations

import bisect
import itertools
import random
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Literal

from faker import Faker

from simulators.catalog import Product, generate_catalog
from simulators.clock import DEFAULT_EPOCH, iso_z
from simulators.geo import CITIES, City
from simulators.network import nearest_warehouse, stores_in

DeliveryMethod = Literal["courier", "pickup_point", "store_pickup"]
CHANNELS = ("ozon", "wildberries", "shopify", "callcentre", "pos")

#: Relative order intensity per hour of the day, Moscow time (UTC+3): night trough, a lunch bump and the
#: evening peak at 20–21 h that e-commerce sees in Russia. Normalised so the daily mean is 1.0, hence
#: ``rate`` is the *average* orders per simulated minute over a day.
_RAW_HOURLY = (0.35, 0.20, 0.12, 0.08, 0.07, 0.10, 0.25, 0.50, 0.80, 1.00, 1.15, 1.25,
               1.35, 1.30, 1.25, 1.20, 1.20, 1.25, 1.40, 1.60, 1.75, 1.70, 1.30, 0.75)  # fmt: skip
HOURLY_PROFILE: tuple[float, ...] = tuple(v * 24 / sum(_RAW_HOURLY) for v in _RAW_HOURLY)
#: The same demand at every hour: what a demo needs, so that a newcomer at 05:15 sees as much as one at 20:00.
STEADY_PROFILE: tuple[float, ...] = (1.0,) * 24
MOSCOW_UTC_OFFSET = 3


@dataclass(frozen=True, slots=True)
class DemandProfile:
    """How demand is spread over the clock, by name (``--profile`` of the runner, ``OMS_DEMO_PROFILE``).

    * ``daily`` — real life: the hour-of-day curve (:data:`HOURLY_PROFILE`), shops trading 10–22 h, buyers
      cancelling between 5 minutes and 8 hours after ordering;
    * ``steady`` — a demo pace independent of the wall clock: the same rate at every hour, shops that never
      close, buyers who change their mind within 1–15 minutes (while the order may still be stopped before
      it ships, which is when a demo shows a cancellation at all).

    ``rate`` keeps its meaning in both: the mean orders per minute over a day.
    """

    name: str
    hourly: tuple[float, ...]  # 24 values, Moscow hours, mean 1.0
    cancel_window_s: tuple[float, float]  # a cancelling buyer cancels uniformly within this window

    def __post_init__(self) -> None:
        if len(self.hourly) != 24:
            raise ValueError(f"profile {self.name!r}: hourly needs 24 values")
        lo, hi = self.cancel_window_s
        if not 0 <= lo <= hi:
            raise ValueError(f"profile {self.name!r}: cancel window must be 0 <= low <= high")


PROFILES: dict[str, DemandProfile] = {
    "daily": DemandProfile("daily", HOURLY_PROFILE, (300.0, 8 * 3600.0)),
    "steady": DemandProfile("steady", STEADY_PROFILE, (60.0, 15 * 60.0)),
}


def demand_profile(profile: str | DemandProfile) -> DemandProfile:
    """The profile of that name (``daily`` | ``steady``); ValueError naming the choices otherwise."""
    if isinstance(profile, DemandProfile):
        return profile
    try:
        return PROFILES[profile]
    except KeyError:
        raise ValueError(f"unknown demand profile {profile!r}; choose one of {', '.join(PROFILES)}") from None


DEFAULT_DELIVERY_MIX: dict[str, dict[str, float]] = {
    "shopify": {"courier": 0.35, "pickup_point": 0.50, "store_pickup": 0.15},
    "callcentre": {"courier": 0.60, "pickup_point": 0.30, "store_pickup": 0.10},
    "ozon": {"pickup_point": 0.80, "courier": 0.20},
    "wildberries": {"pickup_point": 0.90, "courier": 0.10},
    "pos": {"store_pickup": 1.0},
}
DEFAULT_PAYMENT_MIX: dict[str, dict[str, float]] = {
    "shopify": {"card_online": 0.60, "sbp": 0.15, "cash_on_delivery": 0.15, "card_on_delivery": 0.10},
    "callcentre": {"cash_on_delivery": 0.55, "card_on_delivery": 0.25, "payment_link": 0.20},
    "ozon": {"prepaid": 1.0},
    "wildberries": {"prepaid": 1.0},
    "pos": {"card": 0.70, "cash": 0.20, "sbp": 0.10},
}
#: Basket size distribution: most orders have 1–3 distinct SKUs.
BASKET_SIZES = (1, 2, 3, 4, 5, 6, 8)
BASKET_WEIGHTS = (0.55, 0.25, 0.12, 0.04, 0.02, 0.01, 0.01)
QTY_VALUES = (1, 2, 3, 5)
QTY_WEIGHTS = (0.86, 0.10, 0.03, 0.01)

_COMMENTS = ("Позвонить за час до доставки", "Домофон не работает, звонить на телефон", "Оставить у двери",
             "Упакуйте, пожалуйста, как подарок", "Доставка после 18:00", "Код подъезда 1234")  # fmt: skip
_EMAIL_DOMAINS = ("mail.ru", "yandex.ru", "gmail.com", "bk.ru", "inbox.ru", "list.ru", "rambler.ru")
_TRANSLIT = dict(zip("абвгдеёжзийклмнопрстуфхцчшщъыьэюя",
                     ["a", "b", "v", "g", "d", "e", "e", "zh", "z", "i", "y", "k", "l", "m", "n", "o", "p", "r",
                      "s", "t", "u", "f", "kh", "ts", "ch", "sh", "shch", "", "y", "", "e", "yu", "ya"], strict=True))  # fmt: skip


def translit(text: str) -> str:
    return "".join(_TRANSLIT.get(ch, ch) for ch in text.lower())


@dataclass(frozen=True, slots=True)
class Customer:
    first_name: str
    last_name: str
    middle_name: str
    phone: str  # E.164, +79XXXXXXXXX
    email: str

    @property
    def full_name(self) -> str:
        return f"{self.last_name} {self.first_name} {self.middle_name}"


@dataclass(frozen=True, slots=True)
class Address:
    city: str
    region: str
    region_code: str
    street: str  # "ул. Садовая, д. 5 к. 1, кв. 12"
    postcode: str
    lat: float
    lon: float
    cdek_city_code: int
    utc_offset: int

    @property
    def full(self) -> str:
        place = f"г. {self.city}" if self.region == self.city else f"{self.region}, г. {self.city}"
        return f"{self.postcode}, {place}, {self.street}"


@dataclass(frozen=True, slots=True)
class OrderLine:
    sku: str
    qty: int
    unit_price: Decimal  # RUB, list price at order time

    @property
    def amount(self) -> Decimal:
        return self.unit_price * self.qty


@dataclass(frozen=True, slots=True)
class GeneratedOrder:
    """A channel-neutral order; each simulator renders it in its API's shape."""

    channel: str
    seq: int  # 1-based position in the channel's stream
    created_at: datetime  # UTC, whole seconds
    customer: Customer
    address: Address
    delivery_method: DeliveryMethod
    pickup_point_code: str | None  # CDEK-style PVZ code when delivery_method == "pickup_point"
    store_code: str | None  # when delivery_method == "store_pickup"
    warehouse_code: str  # nearest warehouse (marketplace FBS postings ship from it)
    payment_method: str
    lines: tuple[OrderLine, ...]
    comment: str
    cancel_after_s: float | None  # the customer cancels this many simulated seconds after creation
    entropy: int = field(repr=False)  # per-order seed for renderers that need more deterministic randomness

    @property
    def key(self) -> str:
        return f"{self.channel}-{self.seq:07d}"

    @property
    def total(self) -> Decimal:
        return sum((line.amount for line in self.lines), Decimal("0.00"))

    @property
    def units(self) -> int:
        return sum(line.qty for line in self.lines)

    def to_dict(self) -> dict:
        return {
            "key": self.key,
            "channel": self.channel,
            "seq": self.seq,
            "created_at": iso_z(self.created_at),
            "customer": {
                "first_name": self.customer.first_name,
                "last_name": self.customer.last_name,
                "middle_name": self.customer.middle_name,
                "phone": self.customer.phone,
                "email": self.customer.email,
            },
            "address": {
                "city": self.address.city,
                "region": self.address.region,
                "region_code": self.address.region_code,
                "street": self.address.street,
                "postcode": self.address.postcode,
                "full": self.address.full,
                "lat": self.address.lat,
                "lon": self.address.lon,
            },
            "delivery_method": self.delivery_method,
            "pickup_point_code": self.pickup_point_code,
            "store_code": self.store_code,
            "warehouse_code": self.warehouse_code,
            "payment_method": self.payment_method,
            "lines": [
                {"sku": ln.sku, "qty": ln.qty, "unit_price": f"{ln.unit_price:.2f}"} for ln in self.lines
            ],
            "total": f"{self.total:.2f}",
            "comment": self.comment,
            "cancel_after_s": self.cancel_after_s,
        }


def zipf_weights(n: int, s: float) -> list[float]:
    return [1.0 / (rank + 1) ** s for rank in range(n)]


def popularity_ranking(seed: int, catalog: Sequence[Product]) -> list[Product]:
    """The catalog from the hottest SKU to the coldest — the same in every channel (and in the WMS stock)."""
    order = list(range(len(catalog)))
    random.Random(f"{seed}:popularity").shuffle(order)
    return [catalog[i] for i in order]


class OrderGenerator:
    """A Poisson stream of orders for one channel, modulated by the hour-of-day curve of its profile.

    ``rate`` is the mean number of orders per simulated minute (over a whole day). ``profile`` (``daily`` by
    default, or ``steady``: see :class:`DemandProfile`) gives the curve and when cancelling buyers cancel;
    an explicit ``hourly_profile`` (24 values) replaces the profile's curve (the shops' trading hours).
    Call :meth:`until` with the current simulated time to get the orders that arrived since the last call,
    or :meth:`take` to get the next ``n`` regardless of time.
    """

    def __init__(
        self,
        seed: int,
        channel: str,
        rate: float,
        *,
        catalog: Sequence[Product] | None = None,
        start: datetime = DEFAULT_EPOCH,
        delivery_mix: Mapping[str, float] | None = None,
        payment_mix: Mapping[str, float] | None = None,
        cancel_share: float = 0.05,
        zipf_s: float = 1.15,
        hourly_profile: Sequence[float] | None = None,
        profile: str | DemandProfile = "daily",
    ) -> None:
        if rate < 0:
            raise ValueError("rate must be >= 0")
        self.profile = demand_profile(profile)
        if hourly_profile is None:
            hourly_profile = self.profile.hourly
        if len(hourly_profile) != 24:
            raise ValueError("hourly_profile needs 24 values")
        self.seed = seed
        self.channel = channel
        self.rate = float(rate)
        self.catalog: list[Product] = list(catalog) if catalog is not None else generate_catalog(seed)
        self.start = start.astimezone(UTC)
        self.cancel_share = cancel_share
        self._delivery = dict(
            delivery_mix or DEFAULT_DELIVERY_MIX.get(channel, DEFAULT_DELIVERY_MIX["shopify"])
        )
        self._payment = dict(payment_mix or DEFAULT_PAYMENT_MIX.get(channel, DEFAULT_PAYMENT_MIX["shopify"]))
        self._profile = tuple(hourly_profile)
        self._profile_max = max(self._profile)

        # popularity: a seeded permutation of the catalog ranked by Zipf — the same SKUs are hot in every
        # channel (as in real life), a few of them very hot
        self.popularity: list[Product] = popularity_ranking(seed, self.catalog)
        self._pop_cum = list(itertools.accumulate(zipf_weights(len(self.popularity), zipf_s)))
        self._city_cum = list(itertools.accumulate(c.weight for c in CITIES))

        self._arrivals = random.Random(f"{seed}:{channel}:arrivals")
        self._t = 0.0  # seconds since start of the last candidate arrival
        self._seq = 0
        self._next_at: datetime | None = self._draw_next_arrival()
        self._faker = Faker("ru_RU")

    # -- arrivals ---------------------------------------------------------------------------------
    def _draw_next_arrival(self) -> datetime | None:
        """Thinning (Lewis–Shedler): candidates at the peak rate, kept with probability profile/peak."""
        if self.rate <= 0:
            return None
        peak_per_s = self.rate / 60.0 * self._profile_max
        while True:
            self._t += self._arrivals.expovariate(peak_per_s)
            at = self.start + timedelta(seconds=self._t)
            hour = (at.hour + MOSCOW_UTC_OFFSET) % 24
            if self._arrivals.random() * self._profile_max < self._profile[hour]:
                return at.replace(microsecond=0)

    @property
    def next_arrival(self) -> datetime | None:
        return self._next_at

    @property
    def produced(self) -> int:
        return self._seq

    def until(self, now: datetime) -> list[GeneratedOrder]:
        """Orders created after the previous call and at or before ``now``."""
        out: list[GeneratedOrder] = []
        while self._next_at is not None and self._next_at <= now:
            out.append(self._emit())
        return out

    def take(self, n: int) -> list[GeneratedOrder]:
        """The next ``n`` orders of the stream, whatever their time."""
        return [self._emit() for _ in range(n) if self._next_at is not None]

    def __iter__(self) -> Iterator[GeneratedOrder]:
        while self._next_at is not None:
            yield self._emit()

    def _emit(self) -> GeneratedOrder:
        assert self._next_at is not None
        self._seq += 1
        order = self.order(self._seq, self._next_at)
        self._next_at = self._draw_next_arrival()
        return order

    # -- content ----------------------------------------------------------------------------------
    def pick_skus(self, rng: random.Random, k: int) -> list[Product]:
        """``k`` distinct products drawn by popularity."""
        chosen: list[Product] = []
        seen: set[str] = set()
        total = self._pop_cum[-1]
        attempts = 0
        while len(chosen) < min(k, len(self.popularity)) and attempts < 50 * k:
            attempts += 1
            p = self.popularity[bisect.bisect_left(self._pop_cum, rng.random() * total)]
            if p.sku not in seen:
                seen.add(p.sku)
                chosen.append(p)
        return chosen

    def pick_city(self, rng: random.Random) -> City:
        return CITIES[bisect.bisect_left(self._city_cum, rng.random() * self._city_cum[-1])]

    def order(self, seq: int, created_at: datetime) -> GeneratedOrder:
        """The content of order ``seq`` — a pure function of (seed, channel, seq, created_at)."""
        rng = random.Random(f"{self.seed}:{self.channel}:order:{seq}")
        entropy = rng.getrandbits(63)
        fake = self._faker
        fake.seed_instance(entropy)

        city = self.pick_city(rng)
        if rng.random() < 0.56:
            first, last, middle = fake.first_name_female(), fake.last_name_female(), fake.middle_name_female()
        else:
            first, last, middle = fake.first_name_male(), fake.last_name_male(), fake.middle_name_male()
        phone = "+79" + "".join(str(rng.randint(0, 9)) for _ in range(9))
        email = (
            f"{translit(first)}.{translit(last)}{rng.randint(1, 999) if rng.random() < 0.6 else ''}"
            f"@{rng.choice(_EMAIL_DOMAINS)}"
        )
        street = fake.street_address()
        if rng.random() < 0.8:
            street += f", кв. {rng.randint(1, 350)}"
        address = Address(
            city=city.name,
            region=city.region,
            region_code=city.region_code,
            street=street,
            postcode=f"{city.postcode_prefix}{rng.randint(0, 999):03d}",
            lat=round(city.lat + rng.gauss(0, 0.05), 6),
            lon=round(city.lon + rng.gauss(0, 0.08), 6),
            cdek_city_code=city.cdek_code,
            utc_offset=city.utc_offset,
        )

        methods, weights = zip(*self._delivery.items(), strict=True)
        method: DeliveryMethod = rng.choices(methods, weights=weights)[0]
        local_stores = stores_in(city.name)
        store_code = None
        pickup_code = None
        if method == "store_pickup":
            if local_stores:
                store_code = rng.choice(local_stores).code
            else:  # no store in that city: the customer picks a pickup point instead
                method = "pickup_point"
        if method == "pickup_point":
            pickup_code = f"{city.hub}{rng.randint(1, 350)}"

        size = rng.choices(BASKET_SIZES, weights=BASKET_WEIGHTS)[0]
        products = self.pick_skus(rng, size)
        lines = tuple(
            OrderLine(p.sku, rng.choices(QTY_VALUES, weights=QTY_WEIGHTS)[0], p.price) for p in products
        )

        pay_methods, pay_weights = zip(*self._payment.items(), strict=True)
        payment = rng.choices(pay_methods, weights=pay_weights)[0]
        comment = rng.choice(_COMMENTS) if rng.random() < 0.15 else ""
        cancel_after = (
            rng.uniform(*self.profile.cancel_window_s) if rng.random() < self.cancel_share else None
        )

        return GeneratedOrder(
            channel=self.channel,
            seq=seq,
            created_at=created_at,
            customer=Customer(first, last, middle, phone, email),
            address=address,
            delivery_method=method,
            pickup_point_code=pickup_code,
            store_code=store_code,
            warehouse_code=nearest_warehouse(city).code,
            payment_method=payment,
            lines=lines,
            comment=comment,
            cancel_after_s=cancel_after,
            entropy=entropy,
        )


def generate_orders(
    seed: int,
    channel: str,
    n: int,
    *,
    rate: float = 30.0,
    start: datetime = DEFAULT_EPOCH,
    catalog: Sequence[Product] | None = None,
    **kwargs,
) -> list[GeneratedOrder]:
    """Convenience: the first ``n`` orders of a channel's stream."""
    return OrderGenerator(seed, channel, rate, catalog=catalog, start=start, **kwargs).take(n)
