"""Business configuration: channels, locations, carriers and tariffs, routing rules, safety stock, SLAs.

Policies are data. Everything that decides *where* an order is fulfilled and *how much* of the stock a
channel may sell lives in one YAML file (``config/business.yaml``) validated here by pydantic, so that a
merchandiser can change a split threshold or a cut-off time without a code change, and so that a broken
file is refused at start-up with a message naming the field (``locations[3].cutoff_local: invalid time``)
instead of silently mis-routing orders at 3 a.m.

Validation happens in two passes and collects *every* problem before failing: pydantic checks the shape
and types of each field, then :func:`_cross_check` checks references between sections (a routing rule
naming an unknown location group, a tariff rate row for a zone the carrier does not define, …).

``sync_reference_data`` writes the parts other modules read from Postgres (channels, locations) and a
snapshot of the whole configuration, so an allocation decision can point at the exact version that made it.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from datetime import time
from decimal import Decimal
from fnmatch import fnmatchcase
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import psycopg
import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    model_validator,
)

from oms_ops.errors import ValidationFailed
from oms_ops.platform.settings import load_settings

DEFAULT_PATH = Path(__file__).resolve().parent.parent / "config" / "business.yaml"

ChannelKind = Literal["marketplace", "webstore", "store", "callcentre"]
LocationKind = Literal["warehouse", "store", "pickup_point"]
DeliveryMethod = Literal["courier", "pickup_point", "store_pickup"]
SortKeyName = Literal["sla", "group", "cost", "distance", "stock", "priority", "promise"]
#: How a routing rule builds its plans (docs/allocation.md, "Strategies").
RoutingStrategy = Literal["fewest_shipments", "rank", "most_stock"]

#: Candidate selector naming the location the customer chose (store / pickup point) for this order.
PICKUP_LOCATION = "pickup_location"
#: Built-in group: every active location of the channel's ATS pool.
ALL_LOCATIONS = "all"


class BusinessConfigError(ValueError):
    """The configuration is invalid. ``problems`` lists every ``path: message`` found (not just the first)."""

    def __init__(self, problems: list[str], source: str | None = None) -> None:
        self.problems = problems
        head = f"{source}: " if source else ""
        super().__init__(head + "invalid business configuration:\n  " + "\n  ".join(problems))


def _parse_time(value: Any) -> Any:
    """Accept ``"HH:MM"`` strings; refuse YAML 1.1 sexagesimal ints (an unquoted 16:00 reads as 960)."""
    if value is None or isinstance(value, time):
        return value
    if isinstance(value, int):
        raise ValueError(f"invalid time {value!r}: quote it in YAML, e.g. '16:00'")
    if isinstance(value, str):
        m = re.fullmatch(r"([01]?\d|2[0-3]):([0-5]\d)", value.strip())
        if m:
            return time(int(m.group(1)), int(m.group(2)))
    raise ValueError(f"invalid time {value!r} (expected HH:MM)")


LocalTime = Annotated[time | None, BeforeValidator(_parse_time)]


def _check_tz(value: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {value!r}") from None
    return value


TimeZoneName = Annotated[str, AfterValidator(_check_tz)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# -- reference data ----------------------------------------------------------------------------------------


class Region(_Model):
    """A destination region (ISO 3166-2:RU code) with the names channels use for it and its centroid.

    Orders carry free-text regions ("Москва", "г. Москва", "Moscow"); aliases map them to one code. The
    centroid stands in for the customer's coordinates when an order has none (distance and tariff zone).
    """

    code: str = Field(pattern=r"^RU-[A-Z]{2,3}$")
    name: str
    aliases: list[str] = []
    lat: float = Field(ge=-90, le=90)
    lon: float = Field(ge=-180, le=180)


class SkuClass(_Model):
    """A named set of SKUs (explicit list or glob patterns) for per-class safety stock."""

    name: str
    skus: list[str] = []
    patterns: list[str] = []

    def matches(self, sku: str) -> bool:
        return sku in self.skus or any(fnmatchcase(sku, p) for p in self.patterns)


class LocationSelector(_Model):
    """Selects locations by kind, region and/or explicit codes (all given criteria must hold).

    ``customer_region`` keeps only locations in the order's destination region ("same region first").
    """

    kinds: list[LocationKind] | None = None
    regions: list[str] | None = None
    codes: list[str] | None = None
    customer_region: bool = False


class SafetyStock(_Model):
    """Units per (location, sku) a channel may not sell: the largest matching value applies.

    Held back per channel because a store's last units are for walk-in customers, and a marketplace
    punishes cancellations harder than a missed sale.
    """

    default: int = Field(0, ge=0)
    by_location_kind: dict[LocationKind, Annotated[int, Field(ge=0)]] = {}
    by_sku_class: dict[str, Annotated[int, Field(ge=0)]] = {}


class Channel(_Model):
    code: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    name: str
    kind: ChannelKind
    #: location groups whose stock this channel sells (its available-to-sell pool); routing never leaves it
    ats_pool: list[str] = [ALL_LOCATIONS]
    safety_stock: SafetyStock = SafetyStock()
    active: bool = True


class Location(_Model):
    code: str = Field(pattern=r"^[A-Z0-9][A-Z0-9-]*$")
    name: str
    kind: LocationKind
    region: str
    city: str
    lat: float = Field(ge=-90, le=90)
    lon: float = Field(ge=-180, le=180)
    timezone: TimeZoneName = "Europe/Moscow"
    #: shipments (orders) the location can hand to carriers / customers per local day; None = unlimited
    capacity_per_day: int | None = Field(None, gt=0)
    #: orders allocated after this local time ship the next day
    cutoff_local: LocalTime = None
    ships: bool = True
    hands_over: bool = False
    #: lower wins (like a sort order)
    priority: int = 100
    #: pick/pack cost per shipment (RUB); stores pick slower and dearer than warehouses
    handling_cost: float = Field(0, ge=0)
    #: names the channels' accounts list this location under, when they differ from ``name`` (channel
    #: discovery maps a channel warehouse by its name; see oms_ops/services/discovery.py)
    external_names: list[str] = []
    active: bool = True


# -- carriers and tariffs ----------------------------------------------------------------------------------


class Zone(_Model):
    code: str
    #: upper bound of the great-circle distance origin→destination; None = open-ended (last zone)
    max_km: float | None = Field(None, gt=0)
    transit_days: int = Field(ge=0)


class ZoneRule(_Model):
    """Distance-based zones with region overrides per origin, as CDEK/Boxberry tariff zones work.

    Carriers price by zone (origin city × destination region); distance bands approximate that well, and
    ``region_overrides`` pins the exceptions (Moscow → Moscow oblast is local however far the village is).
    Keys of ``region_overrides`` are an origin location code or an origin region code.
    """

    zones: list[Zone] = Field(min_length=1)
    region_overrides: dict[str, dict[str, str]] = {}

    @model_validator(mode="after")
    def _ordered(self) -> ZoneRule:
        bounds = [z.max_km for z in self.zones]
        if any(b is None for b in bounds[:-1]):
            raise ValueError("only the last zone may be open-ended (max_km: null)")
        finite = [b for b in bounds if b is not None]
        if finite != sorted(finite) or len(set(finite)) != len(finite):
            raise ValueError("zones must have strictly increasing max_km")
        codes = [z.code for z in self.zones]
        if len(set(codes)) != len(codes):
            raise ValueError("zone codes must be unique")
        return self


class Tariff(_Model):
    """A carrier tariff (e.g. CDEK 136 "Посылка склад-склад", 137 "склад-дверь"): zone × weight-band rates."""

    code: str
    name: str
    delivery_methods: list[DeliveryMethod] = Field(min_length=1)
    #: upper bounds of the weight bands in grams, strictly increasing
    weight_bands_g: list[Annotated[int, Field(gt=0)]] = Field(min_length=1)
    #: RUB per parcel for each zone, one rate per weight band
    rates: dict[str, list[Annotated[float, Field(ge=0)]]]
    #: RUB per started kg above the last band; a zone without it cannot carry heavier parcels
    over_max_per_kg: dict[str, Annotated[float, Field(ge=0)]] = {}

    @model_validator(mode="after")
    def _shape(self) -> Tariff:
        if self.weight_bands_g != sorted(set(self.weight_bands_g)):
            raise ValueError("weight_bands_g must be strictly increasing")
        for zone, row in self.rates.items():
            if len(row) != len(self.weight_bands_g):
                raise ValueError(
                    f"rates[{zone}] has {len(row)} values for {len(self.weight_bands_g)} weight bands"
                )
        return self


class Carrier(_Model):
    code: str
    name: str
    #: which locations it collects from; None = every shipping location
    origins: LocationSelector | None = None
    #: destination regions served; None = everywhere
    destination_regions: list[str] | None = None
    max_distance_km: float | None = Field(None, gt=0)
    zone_rule: ZoneRule
    tariffs: list[Tariff] = Field(min_length=1)


# -- routing -----------------------------------------------------------------------------------------------


class RuleMatch(_Model):
    """Filter of a routing rule; an omitted criterion matches everything."""

    channels: list[str] | None = None
    regions: list[str] | None = None
    delivery_methods: list[DeliveryMethod] | None = None


class SortKey(_Model):
    """One key of a rule's lexicographic plan ordering; values are compared in ``bucket``-sized steps.

    Buckets keep a 3-rouble difference from overriding everything after it ("cost within 50 RUB counts
    as equal, then prefer the nearer location"). Written as ``cost`` or ``cost/50`` in YAML.
    """

    key: SortKeyName
    bucket: float = Field(0, ge=0)


def _sort_key(value: Any) -> Any:
    if isinstance(value, str):
        name, _, bucket = value.partition("/")
        return {"key": name.strip(), "bucket": float(bucket) if bucket else 0}
    return value


#: the policy name the order-total threshold had before it became a per-shipment minimum
_RETIRED_SPLIT_POLICY = "above_order_value"


def _retired_split_policy(value: Any) -> Any:
    """Refuse the old policy by name: its threshold meant "order total", the new one means "every
    shipment", so silently reading the old number under the new meaning would block most splits."""
    if isinstance(value, dict) and value.get("policy") == _RETIRED_SPLIT_POLICY:
        raise ValueError(
            f"policy {_RETIRED_SPLIT_POLICY!r} was replaced by 'min_shipment_value': the threshold is now "
            "the least value of every shipment of a split (and of the part a partial allocation leaves "
            "waiting), not the order total; rename the policy and review the threshold"
        )
    return value


class SplitPolicy(_Model):
    """May an order be fulfilled from several locations, and may part of it wait for stock?

    ``never``: one location ships everything (all-or-nothing). ``allowed``: any number of locations.
    ``min_shipment_value``: a split is allowed only when every shipment it creates is worth at least
    ``threshold`` (Σ qty × unit price of its lines) — and, for a partial allocation, the part left waiting
    too — so a split never sends out a parcel worth less than its delivery (HotWax's per-shipment split
    threshold). ``penalty`` (RUB per extra location) is added to a plan's cost, so two parcels must beat
    one by more than the penalty. ``partial``: when no complete plan is allowed, reserve what exists and
    backorder the rest (a split in time); otherwise the order waits whole.
    """

    policy: Literal["never", "min_shipment_value", "allowed"] = "never"
    threshold: float | None = Field(None, ge=0)
    penalty: float = Field(0, ge=0)
    partial: bool = False

    @model_validator(mode="after")
    def _threshold(self) -> SplitPolicy:
        if self.policy == "min_shipment_value" and self.threshold is None:
            raise ValueError("policy min_shipment_value needs a threshold (the least value of a shipment)")
        if self.policy == "never" and self.partial:
            raise ValueError("partial allocation is a split in time: it needs a policy other than never")
        return self

    @property
    def min_shipment_value(self) -> float:
        """The least value of a shipment a split may create (0 = no limit)."""
        return (self.threshold or 0.0) if self.policy == "min_shipment_value" else 0.0

    def allows_split(self, open_value: float, *, holding: bool = False) -> bool:
        """Can an order whose open lines are worth ``open_value`` be split at all? With a per-shipment
        minimum a split needs two parts of at least the threshold (two shipments, or one shipment and
        the waiting rest) — unless the order already holds reservations (``holding``): a part joining a
        location that holds some of it is no new shipment. Which plans qualify is decided per plan
        (``oms_ops.routing``)."""
        if self.policy == "allowed":
            return True
        if self.policy == "min_shipment_value":
            return holding or open_value >= 2 * (self.threshold or 0)
        return False


class RoutingRule(_Model):
    name: str
    description: str = ""
    match: RuleMatch = RuleMatch()
    #: ordered candidate groups: group names, ``pickup_location`` or inline selectors; the position is
    #: the ``group`` sort key (0 = first)
    candidates: list[str | LocationSelector] = Field(min_length=1)
    sort_by: list[Annotated[SortKey, BeforeValidator(_sort_key)]] = Field(min_length=1)
    #: how plans are built: ``fewest_shipments`` (one location when one can ship everything, else greedy
    #: covers; ``sort_by`` chooses), ``rank`` (drain the candidates in group, then priority order) or
    #: ``most_stock`` (drain the deepest stock first); see docs/allocation.md
    strategy: RoutingStrategy = "fewest_shipments"
    split: Annotated[SplitPolicy, BeforeValidator(_retired_split_policy)] = SplitPolicy()
    #: candidate filter on top of the groups: only locations of these kinds (None = every kind the groups
    #: name), and only locations at most this far (great circle, km) from the destination — a rule for
    #: "a warehouse near the customer" without a location group per region
    kinds: list[LocationKind] | None = None
    max_distance_km: float | None = Field(None, gt=0)
    #: when the rule cannot allocate the whole order (nothing, or only part): ``stop`` — the order waits
    #: under this rule (today's behaviour: the first matching rule decides) — or ``next``: try the next
    #: matching rule; past the last rule the order is an unfillable candidate (docs/allocation.md, "Cascade")
    on_fail: Literal["next", "stop"] = "stop"


class SlaTarget(_Model):
    """Ship-by and promise targets; the most specific entry (channel + method > channel > method) wins."""

    channel: str | None = None
    delivery_method: DeliveryMethod | None = None
    ship_by_hours: float = Field(gt=0)
    promise_days: int = Field(ge=0)


class ReservationPolicy(_Model):
    """How long unpaid prepaid orders may hold stock; None (for a channel) = no expiry."""

    unpaid_prepaid_expiry_minutes: int | None = Field(60, gt=0)
    by_channel: dict[str, Annotated[int, Field(gt=0)] | None] = {}

    def expiry_minutes(self, channel: str) -> int | None:
        if channel in self.by_channel:
            return self.by_channel[channel]
        return self.unpaid_prepaid_expiry_minutes


class UnfillableTerms(_Model):
    """How long an order the cascade cannot fill waits before it is parked, and how long it stays parked
    before it is cancelled. ``None`` for ``cancel_after_days``: parked for ops, never cancelled by itself."""

    #: days since the order was placed before a cascade-exhausted backorder is parked (an order no rule's
    #: candidates could ever serve is parked at once)
    wait_days: float = Field(3, ge=0)
    #: days from parking to the automatic cancellation
    cancel_after_days: float | None = Field(7, ge=0)


class UnfillablePolicy(UnfillableTerms):
    """``unfillable:`` — the last resort of the routing cascade (docs/allocation.md, "Unfillable orders"),
    with optional terms per channel (a marketplace cancels unshipped postings sooner than the web store)."""

    by_channel: dict[str, UnfillableTerms] = {}

    def terms(self, channel: str) -> UnfillableTerms:
        return self.by_channel.get(channel, self)


class TextLimits(_Model):
    """Longest text an order may carry, in characters, per kind of field. Longer is refused with the field
    and the limit named (never cut: a cut id or address is a wrong one). Kinds: ``id`` external ids and the
    channel's order numbers; ``code`` SKUs, location and store codes, currencies; ``name`` customer and
    product names; ``contact`` phone and e-mail; ``address`` region, city and street address."""

    id: int = Field(128, ge=1, le=2000)  # a btree index entry holds ~2700 bytes: ids are indexed
    code: int = Field(64, ge=1, le=2000)
    name: int = Field(300, ge=1, le=100_000)
    contact: int = Field(254, ge=1, le=2000)  # the phone is indexed too
    address: int = Field(1000, ge=1, le=100_000)


#: the database's own bounds: ``integer`` quantities, ``numeric(12,2)`` prices, ``numeric(14,2)`` totals
_INT4_MAX = 2**31 - 1
_PRICE_BOUND = Decimal(10) ** 10
_TOTAL_BOUND = Decimal(10) ** 12


class ChannelLimits(_Model):
    """What one order of a channel may ask for (``limits.by_channel.<channel>``): a business rule, not a
    sanity bound — a marketplace caps a posting at 50 units of a SKU, a web store order at 200 units. Both
    limits are optional; they apply on top of the global ``max_line_quantity`` (the smaller one wins)."""

    #: units of one line
    max_line_quantity: int | None = Field(None, ge=1, le=_INT4_MAX)
    #: units of the whole order (Σ over its lines)
    max_order_quantity: int | None = Field(None, ge=1, le=_INT4_MAX)


class IntakeLimits(_Model):
    """Sanity limits on what a channel may send (``limits:``): a payload outside them is quarantined with
    the field and the limit named, before anything reaches the database. They sit well inside the
    database's own bounds (``integer`` quantities, ``numeric(12,2)`` prices, ``numeric(14,2)`` totals), so
    no value can overflow or wrap there."""

    max_line_quantity: int = Field(10_000, ge=1, le=_INT4_MAX)
    max_order_lines: int = Field(500, ge=1, le=100_000)
    #: RUB per unit
    max_unit_price: Decimal = Field(Decimal(100_000_000), gt=0, lt=_PRICE_BOUND)
    #: RUB per order (lines and shipping); also the bound of the shipping amount
    max_order_total: Decimal = Field(Decimal(1_000_000_000), gt=0, lt=_TOTAL_BOUND)
    max_text_length: TextLimits = TextLimits()
    #: one channel payload (a webhook body, one order of a polled page), in bytes of its JSON
    max_payload_bytes: int = Field(5 * 1024 * 1024, ge=1024, le=256 * 1024 * 1024)
    #: business limits per channel, checked at acceptance and on order changes (``check_order_limits``)
    by_channel: dict[str, ChannelLimits] = {}


# -- customer notifications (oms_ops/notifications.py, docs/notifications.md) ---------------------------------

#: the order events customers hear about, in the order they happen
NotificationTrigger = Literal[
    "order_accepted", "shipped", "ready_for_pickup", "delivered", "cancelled", "refund_succeeded"
]
#: what a template may say: ``{order_number}`` etc.; anything else is refused at load
NOTIFICATION_PLACEHOLDERS = frozenset(
    {"order_number", "shop_name", "customer_name", "carrier", "tracking_number", "pickup_point", "amount"}
)


def _check_template(value: str | None) -> str | None:
    import string

    if value is None:
        return None
    try:
        names = {name for _, name, _, _ in string.Formatter().parse(value) if name is not None}
    except ValueError as exc:
        raise ValueError(f"malformed template: {exc}") from None
    unknown = sorted(n for n in names if n not in NOTIFICATION_PLACEHOLDERS)
    if unknown:
        known = ", ".join("{" + n + "}" for n in sorted(NOTIFICATION_PLACEHOLDERS))
        raise ValueError(
            f"unknown placeholder(s) {', '.join('{' + n + '}' for n in unknown)} (known: {known})"
        )
    return value


NotificationText = Annotated[str | None, AfterValidator(_check_template)]


class NotificationTemplate(_Model):
    """The texts of one trigger; a channel whose text is None is not used for it."""

    enabled: bool = True
    sms: NotificationText = None
    email_subject: NotificationText = None
    email_body: NotificationText = None


class QuietHours(_Model):
    """No SMS between ``start`` and ``end`` in the customer's local time: queued until ``end``."""

    start: LocalTime = time(21, 0)
    end: LocalTime = time(9, 0)


class NotificationPolicy(_Model):
    """``notifications:`` — which order events tell the customer what, by which channel, and when."""

    enabled: bool = True
    shop_name: str = Field("Магазин", min_length=1, max_length=60)
    #: both: SMS to the phone and e-mail to the address, each when the order has it; sms_first/email_first:
    #: one channel, the other only when the first has no contact; sms_only/email_only
    channels: Literal["both", "sms_first", "email_first", "sms_only", "email_only"] = "both"
    quiet_hours: QuietHours | None = QuietHours()
    #: the customer's time zone when the order's region has none below
    default_timezone: TimeZoneName = "Europe/Moscow"
    #: region code (``regions[].code``) → time zone, for the quiet hours
    region_timezones: dict[str, TimeZoneName] = {}
    #: orders of these channel kinds are not notified by us: the marketplace tells its own buyers
    skip_channel_kinds: list[ChannelKind] = ["marketplace"]
    skip_channels: list[str] = []
    templates: dict[NotificationTrigger, NotificationTemplate] = {}


class BusinessConfig(_Model):
    version: int = 1
    currency: str = "RUB"
    #: the seller's calendar: promise dates ("delivered within N days") are counted in this zone
    business_timezone: TimeZoneName = "Europe/Moscow"
    regions: list[Region] = []
    sku_classes: list[SkuClass] = []
    location_groups: dict[str, LocationSelector] = {}
    channels: list[Channel] = Field(min_length=1)
    locations: list[Location] = Field(min_length=1)
    carriers: list[Carrier] = []
    routing_rules: list[RoutingRule] = Field(min_length=1)
    sla: list[SlaTarget] = Field(min_length=1)
    reservations: ReservationPolicy = ReservationPolicy()
    limits: IntakeLimits = IntakeLimits()
    unfillable: UnfillablePolicy = UnfillablePolicy()
    notifications: NotificationPolicy = NotificationPolicy()

    # -- lookups (cached; the model is frozen) --------------------------------------------------------
    @cached_property
    def channel_by_code(self) -> dict[str, Channel]:
        return {c.code: c for c in self.channels}

    @cached_property
    def location_by_code(self) -> dict[str, Location]:
        return {loc.code: loc for loc in self.locations}

    @cached_property
    def fingerprint(self) -> str:
        """Stable hash of the validated content: the config version an allocation decision cites."""
        body = json.dumps(self.model_dump(mode="json"), sort_keys=True, ensure_ascii=False)
        return hashlib.sha256(body.encode()).hexdigest()[:16]

    def sku_class_of(self, sku: str) -> str | None:
        for cls in self.sku_classes:
            if cls.matches(sku):
                return cls.name
        return None

    def safety_stock_for(self, channel: str, location: str, sku: str) -> int:
        """Units of (location, sku) the channel must leave unsold: the max of the matching values."""
        ch = self.channel_by_code.get(channel)
        if ch is None:
            return 0
        ss = ch.safety_stock
        value = ss.default
        loc = self.location_by_code.get(location)
        if loc is not None:
            value = max(value, ss.by_location_kind.get(loc.kind, 0))
        if ss.by_sku_class:
            cls = self.sku_class_of(sku)
            if cls is not None:
                value = max(value, ss.by_sku_class.get(cls, 0))
        return value

    def select_locations(self, selector: LocationSelector | str) -> list[str]:
        """Codes of active locations a group name or selector names (order-independent selectors only)."""
        if isinstance(selector, str):
            if selector == ALL_LOCATIONS:
                return [loc.code for loc in self.locations if loc.active]
            selector = self.location_groups[selector]
        return [
            loc.code
            for loc in self.locations
            if loc.active
            and (selector.kinds is None or loc.kind in selector.kinds)
            and (selector.regions is None or loc.region in selector.regions)
            and (selector.codes is None or loc.code in selector.codes)
        ]

    def channel_pool(self, channel: str) -> list[str]:
        """Locations whose stock the channel sells (its ATS pool), in config order."""
        ch = self.channel_by_code[channel]
        codes: set[str] = set()
        for group in ch.ats_pool:
            codes.update(self.select_locations(group))
        return [loc.code for loc in self.locations if loc.code in codes]

    def sla_for(self, channel: str, delivery_method: str) -> SlaTarget:
        best, best_rank = None, -1
        for target in self.sla:
            if target.channel not in (None, channel) or target.delivery_method not in (None, delivery_method):
                continue
            rank = (2 if target.channel else 0) + (1 if target.delivery_method else 0)
            if rank > best_rank:
                best, best_rank = target, rank
        assert best is not None  # _cross_check guarantees a default entry
        return best


# -- order limits per channel ------------------------------------------------------------------------------


def _line_fields(line: Any, position: int) -> tuple[Any, str, int]:
    """(line number, sku, qty) of a line given as a staging tuple ``(line_no, sku, qty, …)``, a mapping or an
    object with ``line_no`` / ``sku`` / ``qty`` (order changes pass their own shapes)."""
    if isinstance(line, tuple | list):
        no, sku, qty = line[0], line[1], line[2]
    elif isinstance(line, dict):
        no, sku, qty = line.get("line_no"), line.get("sku"), line.get("qty")
    else:
        no, sku, qty = getattr(line, "line_no", None), getattr(line, "sku", None), getattr(line, "qty", None)
    return (position + 1 if no is None else no), str(sku), int(qty or 0)


def order_limit_problems(channel: str, lines: Sequence[Any], limits: IntakeLimits) -> list[str]:
    """Every limit the order breaks, each naming the line (number and SKU) and the limit: the channel's
    ``max_line_quantity`` / ``max_order_quantity`` and the global ``max_line_quantity`` (the smaller line
    limit applies). Empty when the order keeps them all."""
    own = limits.by_channel.get(channel)
    line_limit, line_name = limits.max_line_quantity, "limits.max_line_quantity"
    if own is not None and own.max_line_quantity is not None and own.max_line_quantity < line_limit:
        line_limit, line_name = own.max_line_quantity, f"limits.by_channel.{channel}.max_line_quantity"
    problems = []
    total = 0
    for i, line in enumerate(lines):
        no, sku, qty = _line_fields(line, i)
        total += qty
        if qty > line_limit:
            problems.append(f"line {no} ({sku}): {qty} units, more than {line_name} ({line_limit})")
    if own is not None and own.max_order_quantity is not None and total > own.max_order_quantity:
        problems.append(
            f"order: {total} units in {len(lines)} lines, more than "
            f"limits.by_channel.{channel}.max_order_quantity ({own.max_order_quantity})"
        )
    return problems


_ORDER_LIMITS: IntakeLimits | None = None


def order_limits() -> IntakeLimits:
    """The configuration's ``limits``, read once per process (the defaults when the file cannot be read:
    acceptance must not stop on it — start-up validation reports the file)."""
    global _ORDER_LIMITS
    if _ORDER_LIMITS is None:
        try:
            _ORDER_LIMITS = load_business_config().limits
        except BusinessConfigError:
            _ORDER_LIMITS = IntakeLimits()
    return _ORDER_LIMITS


def use_order_limits(limits: IntakeLimits | None) -> None:
    """Use ``limits`` from now on (None: read the business configuration again on next use)."""
    global _ORDER_LIMITS
    _ORDER_LIMITS = limits


def check_order_limits(channel: str, lines: Sequence[Any], *, limits: IntakeLimits | None = None) -> None:
    """Refuse an order (at acceptance, or an order change before it is applied) that asks for more than its
    channel may: ``ValidationFailed`` listing every line over the limit and the order total, each with the
    limit's name and value. ``limits``: the business configuration's (:func:`order_limits`) when omitted."""
    problems = order_limit_problems(channel, lines, limits or order_limits())
    if problems:
        raise ValidationFailed(problems)


# -- loading and validation --------------------------------------------------------------------------------


def _path(loc: tuple) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "(root)"


def _pydantic_problems(exc: ValidationError) -> list[str]:
    located = []
    for err in exc.errors():
        # drop the branch tags pydantic puts into paths of union/validator-wrapped fields
        loc = tuple(
            p
            for p in err["loc"]
            if not (
                isinstance(p, str) and (p[:1].isupper() or p in ("str", "int") or p.startswith("function-"))
            )
        )
        located.append((loc, err["msg"].removeprefix("Value error, ")))
    # a union reports every branch; keep the branch that got deepest (the selector, not "not a string")
    paths = {loc for loc, _ in located}
    problems = [
        f"{_path(loc)}: {msg}"
        for loc, msg in located
        if not any(len(other) > len(loc) and other[: len(loc)] == loc for other in paths)
    ]
    return list(dict.fromkeys(problems))


def _cross_check(cfg: BusinessConfig) -> list[str]:
    """References between sections; every problem is reported with its field path."""
    problems: list[str] = []
    region_codes = {r.code for r in cfg.regions}
    loc_codes = [loc.code for loc in cfg.locations]
    loc_set = set(loc_codes)
    groups = set(cfg.location_groups) | {ALL_LOCATIONS}
    channels = {c.code for c in cfg.channels}
    classes = {c.name for c in cfg.sku_classes}

    def dupes(values: list[str], path: str) -> None:
        seen: set[str] = set()
        for i, v in enumerate(values):
            if v in seen:
                problems.append(f"{path}[{i}]: duplicate {v!r}")
            seen.add(v)

    dupes([r.code for r in cfg.regions], "regions")
    dupes([c.code for c in cfg.channels], "channels")
    dupes(loc_codes, "locations")
    dupes([c.code for c in cfg.carriers], "carriers")
    dupes([r.name for r in cfg.routing_rules], "routing_rules")
    dupes([c.name for c in cfg.sku_classes], "sku_classes")

    def check_selector(sel: LocationSelector, path: str) -> None:
        for j, r in enumerate(sel.regions or []):
            if r not in region_codes:
                problems.append(f"{path}.regions[{j}]: unknown region {r!r}")
        for j, c in enumerate(sel.codes or []):
            if c not in loc_set:
                problems.append(f"{path}.codes[{j}]: unknown location {c!r}")

    for name, sel in cfg.location_groups.items():
        if name in (PICKUP_LOCATION, ALL_LOCATIONS):
            problems.append(f"location_groups.{name}: {name!r} is a reserved name")
        check_selector(sel, f"location_groups.{name}")
    for i, loc in enumerate(cfg.locations):
        if loc.region not in region_codes:
            problems.append(f"locations[{i}].region: unknown region {loc.region!r}")
        if not loc.ships and not loc.hands_over:
            problems.append(
                f"locations[{i}]: a location must ship or hand over (ships/hands_over both false)"
            )
    for i, ch in enumerate(cfg.channels):
        for j, g in enumerate(ch.ats_pool):
            if g not in groups:
                problems.append(f"channels[{i}].ats_pool[{j}]: unknown location group {g!r}")
        for cls in ch.safety_stock.by_sku_class:
            if cls not in classes:
                problems.append(f"channels[{i}].safety_stock.by_sku_class.{cls}: unknown sku class")
    for i, carrier in enumerate(cfg.carriers):
        path = f"carriers[{i}]"
        if carrier.origins is not None:
            check_selector(carrier.origins, f"{path}.origins")
        for j, r in enumerate(carrier.destination_regions or []):
            if r not in region_codes:
                problems.append(f"{path}.destination_regions[{j}]: unknown region {r!r}")
        zones = {z.code for z in carrier.zone_rule.zones}
        for origin, mapping in carrier.zone_rule.region_overrides.items():
            if origin not in loc_set and origin not in region_codes:
                problems.append(f"{path}.zone_rule.region_overrides.{origin}: not a location or region code")
            for dest, zone in mapping.items():
                if dest not in region_codes:
                    problems.append(f"{path}.zone_rule.region_overrides.{origin}.{dest}: unknown region")
                if zone not in zones:
                    problems.append(
                        f"{path}.zone_rule.region_overrides.{origin}.{dest}: unknown zone {zone!r}"
                    )
        for k, tariff in enumerate(carrier.tariffs):
            for zone in tariff.rates:
                if zone not in zones:
                    problems.append(f"{path}.tariffs[{k}].rates.{zone}: unknown zone {zone!r}")
            for zone in tariff.over_max_per_kg:
                if zone not in zones:
                    problems.append(f"{path}.tariffs[{k}].over_max_per_kg.{zone}: unknown zone {zone!r}")
    for i, rule in enumerate(cfg.routing_rules):
        path = f"routing_rules[{i}]"
        for j, c in enumerate(rule.match.channels or []):
            if c not in channels:
                problems.append(f"{path}.match.channels[{j}]: unknown channel {c!r}")
        for j, r in enumerate(rule.match.regions or []):
            if r not in region_codes:
                problems.append(f"{path}.match.regions[{j}]: unknown region {r!r}")
        for j, cand in enumerate(rule.candidates):
            if isinstance(cand, str):
                if cand != PICKUP_LOCATION and cand not in groups:
                    problems.append(f"{path}.candidates[{j}]: unknown location group {cand!r}")
            else:
                check_selector(cand, f"{path}.candidates[{j}]")
        keys = [k.key for k in rule.sort_by]
        for j, key in enumerate(keys):
            if key in keys[:j]:
                problems.append(f"{path}.sort_by[{j}]: duplicate key {key!r}")
    last = cfg.routing_rules[-1].match
    if last.channels or last.regions or last.delivery_methods:
        problems.append(
            f"routing_rules[{len(cfg.routing_rules) - 1}].match: the last rule must match every order "
            "(a catch-all), so no order is left without a rule"
        )
    if not any(t.channel is None and t.delivery_method is None for t in cfg.sla):
        problems.append("sla: needs a default entry (no channel, no delivery_method)")
    for i, t in enumerate(cfg.sla):
        if t.channel is not None and t.channel not in channels:
            problems.append(f"sla[{i}].channel: unknown channel {t.channel!r}")
    for ch in cfg.reservations.by_channel:
        if ch not in channels:
            problems.append(f"reservations.by_channel.{ch}: unknown channel")
    for ch in cfg.unfillable.by_channel:
        if ch not in channels:
            problems.append(f"unfillable.by_channel.{ch}: unknown channel")
    for ch in cfg.limits.by_channel:
        if ch not in channels:
            problems.append(f"limits.by_channel.{ch}: unknown channel")
    for i, ch in enumerate(cfg.notifications.skip_channels):
        if ch not in channels:
            problems.append(f"notifications.skip_channels[{i}]: unknown channel {ch!r}")
    for code in cfg.notifications.region_timezones:
        if code not in region_codes:
            problems.append(f"notifications.region_timezones.{code}: unknown region")
    return problems


def parse_business_config(data: Any, *, source: str | None = None) -> BusinessConfig:
    """Validate already-parsed YAML/JSON data; raise BusinessConfigError listing every problem."""
    if not isinstance(data, dict):
        raise BusinessConfigError(["(root): expected a mapping"], source)
    try:
        cfg = BusinessConfig.model_validate(data)
    except ValidationError as exc:
        raise BusinessConfigError(_pydantic_problems(exc), source) from None
    problems = _cross_check(cfg)
    if problems:
        raise BusinessConfigError(problems, source)
    return cfg


def load_business_config(path: str | Path | None = None) -> BusinessConfig:
    """Read and validate the YAML file (``path``, else ``$OMS_BUSINESS_CONFIG``, else the shipped sample);
    errors name the file and each field path."""
    path = Path(path or load_settings().business_config or DEFAULT_PATH)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise BusinessConfigError([f"(file): {exc.strerror or exc}"], str(path)) from None
    except yaml.YAMLError as exc:
        raise BusinessConfigError([f"(yaml): {exc}"], str(path)) from None
    return parse_business_config(data, source=str(path))


# -- reference data in Postgres ----------------------------------------------------------------------------


def sync_reference_data(conn: psycopg.Connection, config: BusinessConfig) -> dict[str, int]:
    """Upsert channels and locations from the configuration and record a snapshot of it.

    The configuration is the source of truth: channels/locations missing from it are deactivated (rows
    cannot be deleted — orders and stock reference them). Idempotent; one transaction.
    """
    channels = [(c.code, c.name, c.kind, c.active) for c in config.channels]
    locations = [
        (
            loc.code,
            loc.name,
            loc.kind,
            loc.region,
            loc.city,
            loc.lat,
            loc.lon,
            loc.timezone,
            loc.capacity_per_day,
            loc.cutoff_local,
            loc.ships,
            loc.hands_over,
            loc.priority,
            loc.active,
        )
        for loc in config.locations
    ]
    with conn.transaction(), conn.cursor() as cur:
        cur.executemany(
            """INSERT INTO oms.channels (channel_code, name, kind, active) VALUES (%s, %s, %s, %s)
               ON CONFLICT (channel_code) DO UPDATE
               SET name = excluded.name, kind = excluded.kind, active = excluded.active""",
            channels,
        )
        cur.execute(
            "UPDATE oms.channels SET active = false WHERE active AND NOT (channel_code = ANY(%s))",
            ([c[0] for c in channels],),
        )
        cur.executemany(
            """INSERT INTO oms.locations (location_code, name, kind, region, city, lat, lon, timezone,
                   capacity_per_day, cutoff_local, ships, hands_over, priority, active)
               VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
               ON CONFLICT (location_code) DO UPDATE
               SET name = excluded.name, kind = excluded.kind, region = excluded.region,
                   city = excluded.city, lat = excluded.lat, lon = excluded.lon,
                   timezone = excluded.timezone, capacity_per_day = excluded.capacity_per_day,
                   cutoff_local = excluded.cutoff_local, ships = excluded.ships,
                   hands_over = excluded.hands_over, priority = excluded.priority,
                   active = excluded.active""",
            locations,
        )
        cur.execute(
            "UPDATE oms.locations SET active = false WHERE active AND NOT (location_code = ANY(%s))",
            ([loc[0] for loc in locations],),
        )
        cur.execute(
            """INSERT INTO oms.business_config_versions (fingerprint, body)
               VALUES (%s, %s::jsonb) ON CONFLICT (fingerprint) DO NOTHING""",
            (config.fingerprint, json.dumps(config.model_dump(mode="json"), ensure_ascii=False)),
        )
    return {"channels": len(channels), "locations": len(locations)}
