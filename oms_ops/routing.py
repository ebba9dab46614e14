"""Pure allocation planning: which location reserves which units of which order, and why.

No I/O. :func:`plan_batch` receives the orders of a batch (in the order they must be served: placed_at,
order_id), a snapshot of the free stock taken *under lock* by :mod:`oms_ops.allocation`, the day's
capacity usage and the compiled business configuration, and returns one :class:`OrderPlan` per order.
Keeping this pure is what makes the allocation testable with hypothesis (the plan never exceeds the
snapshot, respects the split policy, and is all-or-nothing when splits are not allowed) and keeps the
database transaction down to "lock, plan in memory, write in bulk" (Saleor's allocation shape).

How one order is planned (see docs/allocation.md for the full story):

1. The rules whose filter (channel, destination region, delivery method) matches form a cascade: the first
   plans the order; when it cannot fill it, ``on_fail: next`` hands it to the next matching rule and
   ``stop`` (the default) ends there. Past the last rule the plan is marked ``unfillable``.
2. A rule's candidate groups give an ordered list of locations, restricted to the channel's ATS pool, active
   locations, the rule's ``kinds`` and ``max_distance_km``, minus ``exclude_locations`` (reroute). Free quantity per (location, sku) for this order =
   on_hand − reserved − the channel's safety stock; a candidate must hold some of what the order needs,
   be able to hand the order over (the store / pickup point the customer chose) or reach the destination
   with some carrier tariff, and not be capacity-full for the next two weeks.
3. Per candidate, once: ship date (cut-off, capacity), departure vs the SLA ship-by, distance, tariff.
4. Plans, by the rule's ``strategy``: every location that holds the whole order is a single-shipment
   plan; when the split policy allows it, ``fewest_shipments`` (default) adds greedy split plans anchored
   at the chosen pickup location and at the best-covering locations, while ``rank`` and ``most_stock``
   add the one plan that drains the candidates in their order (group then priority; most free units
   first) — Saleor's "sorting order" and "high stock" strategies. With ``min_shipment_value`` a plan
   qualifies only when every shipment it creates (and, for a partial, the part left waiting) is worth at
   least the threshold.
5. Plans are ordered by "units not at the chosen pickup location" (click & collect first), then (rank /
   most_stock) the strategy's location order, then the rule's sort keys (sla, group, cost incl. split
   penalty, distance, stock, priority, promise; group and priority compare every location, worst
   first), then fewer locations, then location by location in rank order, more units from the better
   one first — a total order, so the same stock always gives the same plan.
6. No complete plan: with ``partial`` the plan reserving the most units is reserved and the rest waits,
   otherwise nothing is reserved and every short line is reported (all of them, not the first), with
   where its SKU was free.
"""

from __future__ import annotations

import dataclasses
import math
from bisect import bisect_left
from collections.abc import Iterator, Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from typing import NamedTuple
from zoneinfo import ZoneInfo

from oms_ops.business_config import (
    ALL_LOCATIONS,
    PICKUP_LOCATION,
    BusinessConfig,
    LocationSelector,
    RoutingRule,
)

EARTH_RADIUS_KM = 6371.0088
#: a location that cannot ship within this many days (capacity) is not a candidate
CAPACITY_HORIZON_DAYS = 14
#: departure time assumed for a location without a cut-off
DEFAULT_DEPARTURE = time(18, 0)
#: distance used for scoring when the destination has no coordinates (sorts after every known one)
UNKNOWN_DISTANCE_KM = 20000.0
#: plans kept in the decision audit
AUDIT_TOP_PLANS = 3
#: split anchors tried besides the pickup location
SPLIT_ANCHORS = 4

NOTHING_FREE = "nothing free for this order"

StockKey = tuple[str, str]  # (location_code, sku)


def haversine_km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle distance; good enough for zones and for "nearer is better"."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_KM * math.asin(min(1.0, math.sqrt(a)))


# -- inputs and outputs ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LineDemand:
    line_id: int
    sku: str
    #: units still to reserve (ordered − cancelled − already reserved)
    qty: int
    weight_g: int = 0
    #: price of one unit (RUB): the value of a shipment for the split policy's per-shipment minimum
    unit_price: float = 0.0


@dataclass(frozen=True, slots=True)
class OrderDemand:
    order_id: int
    channel: str
    delivery_method: str
    placed_at: datetime
    lines: tuple[LineDemand, ...]
    order_value: float = 0.0
    pickup_location: str | None = None
    region: str | None = None
    city: str | None = None
    lat: float | None = None
    lon: float | None = None
    #: locations already holding reservations of this order (a partially allocated order)
    existing_locations: frozenset[str] = frozenset()
    #: never plan from these (reroute away from a location)
    exclude_locations: frozenset[str] = frozenset()
    #: the channel assigned the order to this location (marketplace FBS warehouse): the only candidate
    pinned_location: str | None = None


@dataclass(frozen=True, slots=True)
class ShortLine:
    line_id: int
    sku: str
    requested: int
    #: what the policy could have reserved: Σ over candidates when splitting is allowed, else the best
    #: single location (for a partial plan: what the plan reserves)
    available: int
    #: where the SKU was free for this order when it was planned: (location, units after safety stock),
    #: largest first; empty when no candidate location had any
    locations: tuple[tuple[str, int], ...] = ()

    def describe(self, *, reserved: bool = False) -> str:
        """``MUG needs 3, 1 available (WH-MSK-POD 1)``: the line as ops read it in a decision's reason
        (``reserved``: a partial plan's line, ``MUG needs 3, 1 reserved now (free: WH-MSK-POD 1)``)."""
        where = ", ".join(f"{loc} {q}" for loc, q in self.locations) or "none free at the candidate locations"
        if reserved:
            return f"{self.sku} needs {self.requested}, {self.available} reserved now (free: {where})"
        return f"{self.sku} needs {self.requested}, {self.available} available ({where})"


@dataclass(frozen=True, slots=True)
class Shipment:
    location: str
    #: (line_id, sku, qty)
    lines: tuple[tuple[int, str, int], ...]
    #: the customer collects here (no parcel); otherwise a carrier parcel to the customer / pickup point
    handover: bool
    carrier: str | None
    tariff: str | None
    zone: str | None
    #: shipping + handling (RUB), without the split penalty
    cost: float
    distance_km: float | None
    ship_date: date
    eta: date


@dataclass(frozen=True, slots=True)
class OrderPlan:
    order_id: int
    outcome: str  # 'allocated' | 'partially_allocated' | 'backordered'
    rule: str | None
    shipments: tuple[Shipment, ...]
    short: tuple[ShortLine, ...]
    reason: str
    #: the best plans considered, with their score components (decision audit)
    scores: tuple[dict, ...] = ()
    split_allowed: bool = False
    ship_by: datetime | None = None
    promise_date: date | None = None
    candidates_considered: int = 0
    #: the rules the cascade tried, in order: ``{"rule", "outcome", "reason"}`` (outcome: allocated,
    #: partial, nothing); one entry when the first matching rule decided
    cascade: tuple[dict, ...] = ()
    #: set when the cascade ran past its last rule without filling the order: ``no_route`` (no rule's
    #: candidate locations could ever serve it: parked at once) or ``exhausted`` (it waits, and is parked
    #: once it has waited ``unfillable.wait_days``); see oms_ops/unfillable.py
    unfillable: str | None = None

    def reservations(self) -> Iterator[tuple[int, str, str, int]]:
        """(line_id, location_code, sku, qty) to reserve."""
        for s in self.shipments:
            for line_id, sku, qty in s.lines:
                yield line_id, s.location, sku, qty

    @property
    def eta(self) -> date | None:
        return max((s.eta for s in self.shipments), default=None)


@dataclass
class PlanningState:
    """The mutable working copy a batch plans against: reservations planned for earlier orders of the
    batch reduce what later orders see, exactly as the writes will."""

    #: on_hand − reserved per (location, sku), from the locked snapshot
    free: MutableMapping[StockKey, int]
    #: shipments already booked per (location, local ship date)
    capacity_used: MutableMapping[tuple[str, date], int] = field(default_factory=dict)


# -- compiled configuration --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Loc:
    code: str
    kind: str
    region: str
    lat: float
    lon: float
    tz: ZoneInfo
    cutoff: time | None
    capacity: int | None
    ships: bool
    hands_over: bool
    priority: int
    handling: float


@dataclass(frozen=True, slots=True)
class _Option:
    carrier: str
    tariff: str
    zone: str
    cost: float
    transit_days: int


class _Dest(NamedTuple):
    """Where a parcel goes (a tuple: it is part of a hot cache key)."""

    lat: float | None
    lon: float | None
    region: str | None


class _Tariff:
    __slots__ = ("code", "methods", "bands", "rates", "over")

    def __init__(self, t) -> None:
        self.code = t.code
        self.methods = frozenset(t.delivery_methods)
        self.bands = list(t.weight_bands_g)
        self.rates = {z: list(r) for z, r in t.rates.items()}
        self.over = dict(t.over_max_per_kg)

    def price(self, zone: str, weight_g: int) -> float | None:
        row = self.rates.get(zone)
        if row is None:
            return None
        i = bisect_left(self.bands, max(1, weight_g))
        if i < len(row):
            return row[i]
        per_kg = self.over.get(zone)
        if per_kg is None:
            return None
        return row[-1] + math.ceil((weight_g - self.bands[-1]) / 1000) * per_kg


class _Carrier:
    __slots__ = ("code", "origins", "dest_regions", "max_km", "zones", "overrides", "tariffs")

    def __init__(self, c, origins: frozenset[str] | None) -> None:
        self.code = c.code
        self.origins = origins
        self.dest_regions = frozenset(c.destination_regions) if c.destination_regions else None
        self.max_km = c.max_distance_km
        self.zones = [(z.code, z.max_km, z.transit_days) for z in c.zone_rule.zones]
        self.overrides = {k: dict(v) for k, v in c.zone_rule.region_overrides.items()}
        self.tariffs = [_Tariff(t) for t in c.tariffs]

    def zone(self, origin: _Loc, dest: _Dest, distance: float | None) -> tuple[str, int]:
        if dest.region is not None:
            for key in (origin.code, origin.region):
                mapped = self.overrides.get(key, {}).get(dest.region)
                if mapped is not None:
                    return mapped, next(t for z, _, t in self.zones if z == mapped)
        if distance is not None:
            for code, max_km, transit in self.zones:
                if max_km is None or distance <= max_km:
                    return code, transit
        code, _, transit = self.zones[-1]  # unknown or beyond the last bound: the dearest zone
        return code, transit


class RoutingContext:
    """The business configuration compiled for fast planning (sets, dicts, caches)."""

    def __init__(self, config: BusinessConfig) -> None:
        self.config = config
        self.fingerprint = config.fingerprint
        self.business_tz = ZoneInfo(config.business_timezone)
        self.locations: dict[str, _Loc] = {
            loc.code: _Loc(
                loc.code,
                loc.kind,
                loc.region,
                loc.lat,
                loc.lon,
                ZoneInfo(loc.timezone),
                loc.cutoff_local,
                loc.capacity_per_day,
                loc.ships,
                loc.hands_over,
                loc.priority,
                loc.handling_cost,
            )
            for loc in config.locations
            if loc.active
        }
        self.pools = {c.code: frozenset(config.channel_pool(c.code)) for c in config.channels}
        self.region_of: dict[str, str] = {}
        self.region_centroid: dict[str, tuple[float, float]] = {}
        for r in config.regions:
            self.region_centroid[r.code] = (r.lat, r.lon)
            for name in (r.code, r.name, *r.aliases):
                self.region_of[_norm(name)] = r.code
        self.carriers = [
            _Carrier(c, frozenset(config.select_locations(c.origins)) if c.origins is not None else None)
            for c in config.carriers
        ]
        self.rules = list(config.routing_rules)
        self._rule_sets = [
            (
                frozenset(r.match.channels) if r.match.channels else None,
                frozenset(r.match.regions) if r.match.regions else None,
                frozenset(r.match.delivery_methods) if r.match.delivery_methods else None,
            )
            for r in self.rules
        ]
        self._rule_groups = [[self._compile_group(c) for c in r.candidates] for r in self.rules]
        self._rule_kinds = [frozenset(r.kinds) if r.kinds else None for r in self.rules]
        # safety stock = max(base per (channel, location), class value per (channel, sku class))
        self._ss_base = {
            (c.code, loc.code): max(c.safety_stock.default, c.safety_stock.by_location_kind.get(loc.kind, 0))
            for c in config.channels
            for loc in self.locations.values()
        }
        self._ss_class = {c.code: dict(c.safety_stock.by_sku_class) for c in config.channels}
        self._sku_class: dict[str, str | None] = {}
        self._options: dict[tuple, _Option | None] = {}
        self._distances: dict[tuple, float] = {}
        self._routes: dict[tuple, list] = {}
        self._sla = {}

    # -- configuration lookups ------------------------------------------------------------------------
    def _compile_group(self, cand: str | LocationSelector):
        if cand == PICKUP_LOCATION:
            return ("pickup", ())
        if isinstance(cand, str):
            selector = LocationSelector() if cand == ALL_LOCATIONS else self.config.location_groups[cand]
        else:
            selector = cand
        codes = tuple(c for c in self.config.select_locations(selector) if c in self.locations)
        return ("region" if selector.customer_region else "static", codes)

    def region_code(self, text: str | None) -> str | None:
        if not text:
            return None
        return self.region_of.get(_norm(text))

    def destination(self, order: OrderDemand) -> _Dest:
        """Where the parcel goes: the chosen pickup location, else the customer (coords or region centroid)."""
        if order.delivery_method != "courier" and order.pickup_location in self.locations:
            loc = self.locations[order.pickup_location]
            return _Dest(loc.lat, loc.lon, loc.region)
        region = self.region_code(order.region) or self.region_code(order.city)
        if order.lat is not None and order.lon is not None:
            return _Dest(order.lat, order.lon, region)
        if region is not None:
            lat, lon = self.region_centroid[region]
            return _Dest(lat, lon, region)
        return _Dest(None, None, None)

    def match_rules(self, order: OrderDemand, dest_region: str | None) -> list[int]:
        """Indices of every rule whose filter matches, in configuration order: the cascade."""
        out = []
        for i, (channels, regions, methods) in enumerate(self._rule_sets):
            if channels is not None and order.channel not in channels:
                continue
            if regions is not None and dest_region not in regions:
                continue
            if methods is not None and order.delivery_method not in methods:
                continue
            out.append(i)
        if not out:
            raise AssertionError("the last routing rule is a catch-all (validated)")
        return out

    def match_rule(self, order: OrderDemand, dest_region: str | None) -> tuple[int, RoutingRule]:
        """The first matching rule (the one that decides when it says ``on_fail: stop``)."""
        i = self.match_rules(order, dest_region)[0]
        return i, self.rules[i]

    def class_safety_stock(self, channel: str, sku: str) -> int:
        """The SKU-class part of a channel's safety stock (the location part is ``_ss_base``)."""
        by_class = self._ss_class.get(channel)
        if not by_class:
            return 0
        cls = self._sku_class.get(sku, "?")
        if cls == "?":
            cls = self._sku_class[sku] = self.config.sku_class_of(sku)
        return by_class.get(cls, 0) if cls is not None else 0

    def sla(self, channel: str, method: str):
        key = (channel, method)
        if key not in self._sla:
            self._sla[key] = self.config.sla_for(channel, method)
        return self._sla[key]

    def ship_option(self, origin: _Loc, dest: _Dest, method: str, weight_g: int) -> _Option | None:
        """Cheapest carrier tariff from ``origin`` to ``dest`` for a parcel of ``weight_g`` (cached)."""
        key = (origin.code, dest, method, weight_g)
        try:
            return self._options[key]
        except KeyError:
            pass
        if len(self._options) > 500_000:
            self._options.clear()
        best: _Option | None = None
        best_key = None
        for carrier, tariff, zone, transit in self.routes(origin, dest, method):
            price = tariff.price(zone, weight_g)
            if price is not None and (best_key is None or (price, transit) < best_key):
                best, best_key = _Option(carrier, tariff.code, zone, float(price), transit), (price, transit)
        self._options[key] = best
        return best

    def routes(self, origin: _Loc, dest: _Dest, method: str) -> list[tuple[str, _Tariff, str, int]]:
        """(carrier, tariff, zone, transit days) that can take a parcel from origin to dest (cached)."""
        key = (origin.code, dest, method)
        found = self._routes.get(key)
        if found is not None:
            return found
        if len(self._routes) > 200_000:
            self._routes.clear()
        found = []
        if origin.ships:
            distance = self.distance(origin, dest)
            for carrier in self.carriers:
                if carrier.origins is not None and origin.code not in carrier.origins:
                    continue
                if carrier.dest_regions is not None and dest.region not in carrier.dest_regions:
                    continue
                if carrier.max_km is not None and (distance is None or distance > carrier.max_km):
                    continue
                zone, transit = carrier.zone(origin, dest, distance)
                for tariff in carrier.tariffs:
                    if method in tariff.methods and zone in tariff.rates:
                        found.append((carrier.code, tariff, zone, transit))
        self._routes[key] = found
        return found

    def distance(self, loc: _Loc, dest: _Dest) -> float | None:
        if dest.lat is None:
            return None
        key = (loc.code, dest)
        d = self._distances.get(key)
        if d is None:
            if len(self._distances) > 500_000:
                self._distances.clear()
            d = self._distances[key] = haversine_km(loc.lat, loc.lon, dest.lat, dest.lon)
        return d


_CONTEXTS: dict[str, RoutingContext] = {}


def compile_config(config: BusinessConfig) -> RoutingContext:
    """The compiled context for a configuration (cached by content fingerprint)."""
    ctx = _CONTEXTS.get(config.fingerprint)
    if ctx is None:
        if len(_CONTEXTS) >= 8:
            _CONTEXTS.clear()
        ctx = _CONTEXTS[config.fingerprint] = RoutingContext(config)
    return ctx


def _norm(text: str) -> str:
    return " ".join(text.lower().replace("ё", "е").replace(".", " ").split())


# -- planning ----------------------------------------------------------------------------------------------


class _Batch:
    """Per-call helpers: ship dates depend on ``now`` and on capacity booked so far in the batch."""

    def __init__(self, ctx: RoutingContext, state: PlanningState, now: datetime) -> None:
        self.ctx = ctx
        self.state = state
        self.now = now
        self._base_date: dict[str, date] = {}
        #: current ship date per location; dropped when the batch books capacity there
        self._day: dict[str, date | None] = {}
        self._departure: dict[tuple[str, date], datetime] = {}

    def ship_date(self, loc: _Loc) -> date | None:
        """First local day the location can still ship: after its cut-off → tomorrow; full days skipped."""
        try:
            return self._day[loc.code]
        except KeyError:
            pass
        base = self._base_date.get(loc.code)
        if base is None:
            local = self.now.astimezone(loc.tz)
            base = local.date()
            if loc.cutoff is not None and local.time() >= loc.cutoff:
                base += timedelta(days=1)
            self._base_date[loc.code] = base
        day: date | None = base
        if loc.capacity is not None:
            used = self.state.capacity_used
            day = None
            for offset in range(CAPACITY_HORIZON_DAYS):
                candidate = base + timedelta(days=offset)
                if used.get((loc.code, candidate), 0) < loc.capacity:
                    day = candidate
                    break
        self._day[loc.code] = day
        return day

    def departure(self, loc: _Loc, day: date) -> datetime:
        key = (loc.code, day)
        dep = self._departure.get(key)
        if dep is None:
            dep = self._departure[key] = datetime.combine(day, loc.cutoff or DEFAULT_DEPARTURE, loc.tz)
        return dep

    def book(self, location: str, day: date) -> None:
        used = self.state.capacity_used
        used[(location, day)] = used.get((location, day), 0) + 1
        self._day.pop(location, None)


def plan_batch(
    orders: Sequence[OrderDemand],
    free: Mapping[StockKey, int],
    config: BusinessConfig | RoutingContext,
    *,
    now: datetime,
    capacity_used: Mapping[tuple[str, date], int] | None = None,
) -> list[OrderPlan]:
    """Plan ``orders`` in the given order against ``free`` (on_hand − reserved, locked snapshot).

    Each order sees the stock and capacity left by the orders before it. The inputs are not mutated.
    """
    ctx = config if isinstance(config, RoutingContext) else compile_config(config)
    state = PlanningState(free=dict(free), capacity_used=dict(capacity_used or {}))
    batch = _Batch(ctx, state, now)
    return [_plan_order(batch, order) for order in orders]


@dataclass(frozen=True, slots=True)
class _Item:
    """The order's demand for one SKU (lines of the same SKU share the location's free stock)."""

    sku: str
    qty: int
    weight_g: int
    lines: tuple[LineDemand, ...]
    #: average unit price over the lines (a shipment's value for the per-shipment split minimum)
    unit_value: float = 0.0


def _items(lines: Sequence[LineDemand]) -> list[_Item]:
    by_sku: dict[str, list[LineDemand]] = {}
    for line in lines:
        if line.qty > 0:
            by_sku.setdefault(line.sku, []).append(line)
    out = []
    for sku, group in by_sku.items():
        qty = sum(x.qty for x in group)
        value = sum(x.qty * x.unit_price for x in group)
        out.append(_Item(sku, qty, group[0].weight_g, tuple(group), value / qty))
    return out


def _to_lines(item: _Item, qty: int, cursor: list[int]) -> list[tuple[int, str, int]]:
    """Spread ``qty`` units of an item over its lines in line order; ``cursor`` holds what each still needs."""
    out = []
    for k, line in enumerate(item.lines):
        if qty <= 0:
            break
        q = min(qty, cursor[k])
        if q > 0:
            out.append((line.line_id, item.sku, q))
            cursor[k] -= q
            qty -= q
    return out


def _short_lines(
    items: Sequence[_Item], got: Sequence[int], avail: Mapping[str, list[int]] | None = None
) -> tuple[ShortLine, ...]:
    """Lines not covered when item i gets ``got[i]`` units (given to its lines in line order); each names
    where its SKU was free for the order (``avail``: the candidates' free units per item)."""
    short = []
    for i, (item, g) in enumerate(zip(items, got, strict=True)):
        where: tuple[tuple[str, int], ...] = ()
        if avail:
            where = tuple(
                sorted(((c, row[i]) for c, row in avail.items() if row[i] > 0), key=lambda x: (-x[1], x[0]))
            )
        for line in item.lines:
            q = min(g, line.qty)
            g -= q
            if q < line.qty:
                short.append(ShortLine(line.line_id, line.sku, line.qty, q, where))
    return tuple(sorted(short, key=lambda x: x.line_id))


def _describe(short: Sequence[ShortLine], *, reserved: bool = False) -> str:
    return "; ".join(x.describe(reserved=reserved) for x in short)


class _ValueLimit:
    """The split policy's per-shipment minimum (``min_shipment_value``) for one order.

    A location already holding reservations of the order is not a new shipment (what it gets now joins its
    parcel), so it is exempt; one new location that completes the order alone is not a split made now
    (a refill of a partially allocated order, or a single-shipment plan), so it is allowed too.
    """

    __slots__ = ("values", "total", "existing", "threshold")

    #: rouble fractions from averaged unit prices never decide
    EPS = 1e-6

    def __init__(self, items: Sequence[_Item], existing: frozenset[str], threshold: float) -> None:
        self.values = [item.unit_value for item in items]
        self.total = sum(item.qty * item.unit_value for item in items)
        self.existing = existing
        self.threshold = threshold

    def value(self, taken: Sequence[tuple[int, int]]) -> float:
        values = self.values
        return sum(values[i] * q for i, q in taken)

    def may_take(self, code: str, taken, remaining: Sequence[int], new_shipments: int) -> bool:
        """May a greedy plan take ``taken`` at ``code`` as its next part?"""
        if code in self.existing or self.value(taken) >= self.threshold - self.EPS:
            return True
        return new_shipments == 0 and sum(q for _, q in taken) == sum(remaining)

    def admissible(self, parts: Mapping[str, Sequence[tuple[int, int]]], complete: bool) -> bool:
        new = [taken for code, taken in parts.items() if code not in self.existing]
        if complete and len(new) <= 1:
            return True
        floor = self.threshold - self.EPS
        if any(self.value(taken) < floor for taken in new):
            return False
        if not complete:
            rest = self.total - sum(self.value(taken) for taken in parts.values())
            return rest >= floor
        return True


def _plan_order(b: _Batch, order: OrderDemand) -> OrderPlan:
    """The cascade: the matching rules in order, each planned against the same working state; the first
    that fills the order wins. A rule that cannot (nothing, or only part) ends the cascade with its outcome
    when it says ``on_fail: stop`` (the default: the first matching rule decides, as before cascades), or
    hands over to the next matching rule with ``next``. Past the last rule, the first partial plan a
    ``next`` rule found is reserved (the rest waits), else nothing; the plan is marked ``unfillable``.
    An order the channel assigned to a location (FBS) has one candidate whatever the rule: only its first
    matching rule is tried. Only the plan taken is booked in the working state."""
    ctx = b.ctx
    dest = ctx.destination(order)
    matching = ctx.match_rules(order, dest.region)
    if order.pinned_location is not None:
        matching = matching[:1]
    items = _items(order.lines)
    trail: list[dict] = []
    fallback: OrderPlan | None = None
    reachable = False
    plan: OrderPlan | None = None
    for idx in matching:
        plan, could_serve = _plan_rule(b, order, dest, items, idx)
        reachable |= could_serve
        complete = plan.outcome == "allocated"
        got = "allocated" if complete else ("partial" if plan.shipments else "nothing")
        trail.append({"rule": plan.rule, "outcome": got, "reason": plan.reason})
        if complete or ctx.rules[idx].on_fail == "stop":
            _apply(b, plan.shipments)
            if len(trail) == 1:
                return dataclasses.replace(plan, cascade=tuple(trail))
            return dataclasses.replace(plan, cascade=tuple(trail), reason=_cascade_reason(trail))
        if plan.shipments and fallback is None:
            fallback = plan
    assert plan is not None
    chosen = fallback or plan
    _apply(b, chosen.shipments)
    why = "exhausted" if reachable else "no_route"
    reason = _cascade_reason(trail) + (
        "; no rule could fill the order (unfillable: it waits for stock, and is parked after "
        "unfillable.wait_days)"
        if reachable
        else "; no rule's candidate locations can ever serve it (unfillable: parked at once)"
    )
    if fallback is not None:
        reason += f"; kept the partial of rule {fallback.rule}"
    return dataclasses.replace(chosen, cascade=tuple(trail), reason=reason, unfillable=why)


def _cascade_reason(trail: Sequence[dict]) -> str:
    """``rule a: …; next → rule b: …``: every rule tried, as ops read it in the decision."""
    return "; next → ".join(step["reason"] for step in trail)


def _plan_rule(
    b: _Batch, order: OrderDemand, dest: _Dest, items: list[_Item], rule_idx: int
) -> tuple[OrderPlan, bool]:
    """Plan ``order`` under one rule (nothing booked in the working state: the cascade books the plan it
    takes). Returns the plan and whether any candidate location of the rule could ever serve the order
    (active, in the pool, reaching the destination within the rule's distance) — stock aside."""
    ctx, state = b.ctx, b.state
    rule = ctx.rules[rule_idx]
    open_value = sum(item.qty * item.unit_value for item in items)
    split_allowed = rule.split.allows_split(open_value, holding=bool(order.existing_locations))
    strategy = rule.strategy
    sla = ctx.sla(order.channel, order.delivery_method)
    ship_by = order.placed_at + timedelta(hours=sla.ship_by_hours)
    promise_date = (order.placed_at.astimezone(ctx.business_tz) + timedelta(days=sla.promise_days)).date()
    common = dict(
        order_id=order.order_id,
        rule=rule.name,
        split_allowed=split_allowed,
        ship_by=ship_by,
        promise_date=promise_date,
    )
    if not items:
        plan = OrderPlan(
            outcome="allocated", shipments=(), short=(), reason="nothing left to reserve", **common
        )
        return plan, True
    nothing_yet = "partially_allocated" if order.existing_locations else "backordered"
    total_units = sum(item.qty for item in items)
    title = f"rule {rule.name}" if strategy == "fewest_shipments" else f"rule {rule.name} ({strategy})"

    # -- candidates: where the order may come from, what each can give, what each leg would look like ----
    # Stock is looked at first (cheap): a location with nothing free for this order is no candidate, and
    # tariffs, ship dates and distances are only worked out for the others.
    pool = ctx.pools.get(order.channel, frozenset(ctx.locations))
    is_pickup_order = order.delivery_method != "courier" and order.pickup_location is not None
    total_weight = sum(item.weight_g * item.qty for item in items)
    free = state.free
    ss_base = ctx._ss_base
    class_ss = [ctx.class_safety_stock(order.channel, item.sku) for item in items]
    cands: dict[str, _Cand] = {}
    avail: dict[str, list[int]] = {}
    dropped: dict[str, str] = {}
    stockless = 0
    groups = ctx._rule_groups[rule_idx]
    kinds = ctx._rule_kinds[rule_idx]
    max_km = rule.max_distance_km
    #: locations with nothing free now, kept to tell "waits for stock" from "can never be served"
    stockless_locs: list[_Loc] = []
    if order.pinned_location is not None:
        # the marketplace's courier collects at the warehouse it assigned: ship from there or wait for stock
        groups = [("pinned", (order.pinned_location,))]
    for gi, (kind, codes) in enumerate(groups):
        if kind == "pickup":
            codes = (order.pickup_location,) if is_pickup_order else ()
        elif kind == "region":
            codes = tuple(c for c in codes if ctx.locations[c].region == dest.region)
        for code in codes:
            if code in cands or code in dropped:
                continue
            loc = ctx.locations.get(code)
            if loc is None:
                dropped[code] = "inactive or unknown location"
                continue
            if code not in pool and kind != "pinned":
                dropped[code] = f"not in the {order.channel} ATS pool"
                continue
            if code in order.exclude_locations:
                dropped[code] = "excluded"
                continue
            if kinds is not None and loc.kind not in kinds and kind != "pinned":
                dropped[code] = f"not a {'/'.join(sorted(kinds))} location"
                continue
            base = ss_base.get((order.channel, code), 0)
            row = []
            for i, item in enumerate(items):
                f = free.get((code, item.sku), 0)
                if f > 0:
                    f -= base if base > class_ss[i] else class_ss[i]
                row.append(f if f > 0 else 0)
            if not any(row):
                stockless += 1
                dropped[code] = NOTHING_FREE
                stockless_locs.append(loc)
                continue
            handover = is_pickup_order and code == order.pickup_location and loc.hands_over
            option = None if handover else ctx.ship_option(loc, dest, order.delivery_method, total_weight)
            if not handover and option is None:
                dropped[code] = "no carrier tariff to the destination"
                continue
            if max_km is not None and not handover and kind != "pinned":
                far = ctx.distance(loc, dest)
                if far is None or far > max_km:
                    shown = "unknown" if far is None else f"{far:.0f} km"
                    dropped[code] = f"{shown} from the destination, more than max_distance_km {max_km:.0f}"
                    continue
            day = b.ship_date(loc)
            if day is None:
                dropped[code] = f"capacity full for {CAPACITY_HORIZON_DAYS} days"
                continue
            dist = 0.0 if handover else ctx.distance(loc, dest)
            cands[code] = _Cand(loc, gi, handover, day, b.departure(loc, day) > ship_by, dist, option)
            avail[code] = row
    noted = [(c, r) for c, r in dropped.items() if r != NOTHING_FREE]
    if not cands:
        short = _short_lines(items, [0] * len(items))
        if noted:
            reason = f"{title}: no candidate location ({'; '.join(f'{c}: {r}' for c, r in noted)})"
        elif stockless:
            reason = f"{title}: {len(short)} short lines, no candidate location has any of them free"
        else:
            reason = f"{title}: no candidate location matches"
        reason += f" ({_describe(short)})"
        could = any(r.startswith("capacity full") for r in dropped.values()) or any(
            _could_serve(ctx, loc, order, dest, total_weight, max_km, is_pickup_order)
            for loc in stockless_locs
        )
        plan = OrderPlan(outcome=nothing_yet, shipments=(), short=short, reason=reason, **common)
        return plan, could

    threshold = rule.split.min_shipment_value if split_allowed else 0.0
    limit = _ValueLimit(items, order.existing_locations, threshold) if threshold > 0 else None
    scorer = _Scorer(ctx, order, rule, cands, dest, items, avail, promise_date, is_pickup_order)
    walk = scorer.use_strategy(strategy) if strategy != "fewest_shipments" else None
    full = [code for code, row in avail.items() if all(a >= it.qty for a, it in zip(row, items, strict=True))]
    plans: list[_Scored] = []
    for code in full:
        scored = scorer.score({code: [(i, item.qty) for i, item in enumerate(items)]}, "single")
        if scored is not None:
            plans.append(scored)
    plans.sort(key=_key)
    pickup_partial = (
        is_pickup_order
        and order.pickup_location in avail
        and order.pickup_location not in full
        and any(avail[order.pickup_location])
    )
    partials: list[_Scored] = []
    refused_for_value = False
    if split_allowed:
        if walk is not None:
            # drain the locations in the strategy's order: one plan, complete or not
            generated = [_walk(walk, items, avail, limit)]
        elif not plans or pickup_partial or plans[0].values["sla"] > 0:
            generated = list(_split_plans(order, cands, items, avail, limit))
        else:
            generated = []
        for parts, complete in generated:
            if not parts:
                continue  # every location passed over (per-shipment minimum)
            if complete and len(parts) == 1 and next(iter(parts)) in full:
                continue  # the single-location plan of a location that holds everything: already scored
            if limit is not None and not limit.admissible(parts, complete):
                refused_for_value = True
                continue
            kind = ("single" if len(parts) == 1 else "split") if complete else "partial"
            scored = scorer.score(parts, kind)
            if scored is not None:
                (plans if complete else partials).append(scored)
        plans.sort(key=_key)

    if plans:
        best = plans[0]
        shipments = scorer.shipments(best)
        detail = scorer.detail(best)
        where = ", ".join(s.location for s in shipments)
        how = "single shipment" if len(shipments) == 1 else f"split into {len(shipments)} shipments"
        reason = (
            f"{title}: {how} from {where} "
            f"(cost {detail['cost']:.0f} RUB, eta {detail['eta']}, sla misses {detail['sla_misses']}); "
            f"{len(cands)} candidate locations, {len(full)} could ship everything"
        )
        plan = OrderPlan(
            outcome="allocated",
            shipments=tuple(shipments),
            short=(),
            reason=reason,
            scores=tuple(scorer.detail(p) for p in plans[:AUDIT_TOP_PLANS]),
            candidates_considered=len(cands),
            **common,
        )
        return plan, True

    # -- no complete plan: report every short line; reserve part only if the policy says so -------------
    if split_allowed and rule.split.partial and partials:
        # the plan that reserves the most units, then the rule's keys
        partials.sort(key=lambda p: (-p.units, p.key))
        best = partials[0]
        shipments = scorer.shipments(best)
        got = [0] * len(items)
        for _, taken in best.parts.items():
            for i, q in taken:
                got[i] += q
        short = _short_lines(items, got, avail)
        plan = OrderPlan(
            outcome="partially_allocated",
            shipments=tuple(shipments),
            short=short,
            reason=(
                f"{title}: partial: reserved {best.units} of {total_units} units at "
                f"{', '.join(s.location for s in shipments)}; {len(short)} lines wait for stock "
                f"({_describe(short, reserved=True)})"
            ),
            scores=tuple(scorer.detail(p) for p in partials[:AUDIT_TOP_PLANS]),
            candidates_considered=len(cands),
            **common,
        )
        return plan, True
    if split_allowed:
        available = [sum(row[i] for row in avail.values()) for i in range(len(items))]
    else:
        available = [max(row[i] for row in avail.values()) for i in range(len(items))]
    short = _short_lines(items, available, avail)
    policy = rule.split.policy
    if short:
        reason = f"{title}: {len(short)} short lines ({_describe(short)})"
    elif not split_allowed:
        why = f"policy {policy}"
        if policy == "min_shipment_value":
            why += (
                f": the open lines are worth {open_value:.0f} RUB, a split needs two parts of at least "
                f"{rule.split.threshold:.0f}"
            )
        reason = f"{title}: no single location holds every line and this order may not be split ({why})"
    elif refused_for_value:
        reason = (
            f"{title}: every split found would create a shipment worth less than {threshold:.0f} RUB "
            f"(policy {policy})"
        )
    else:
        reason = f"{title}: no plan within the capacity and tariff limits"
    if short and refused_for_value:
        reason += f"; a partial allocation would leave a shipment or the rest below {threshold:.0f} RUB"
    if noted:
        reason += "; not considered: " + ", ".join(f"{c} ({r})" for c, r in noted[:5])
    plan = OrderPlan(
        outcome=nothing_yet,
        shipments=(),
        short=short,
        reason=reason,
        candidates_considered=len(cands),
        **common,
    )
    return plan, True


def _could_serve(
    ctx: RoutingContext,
    loc: _Loc,
    order: OrderDemand,
    dest: _Dest,
    weight_g: int,
    max_km: float | None,
    is_pickup_order: bool,
) -> bool:
    """Would ``loc`` be a candidate if it had stock? (hands the order over, or a tariff reaches the
    destination within the rule's distance): the difference between waiting for stock and never."""
    if is_pickup_order and loc.code == order.pickup_location and loc.hands_over:
        return True
    if ctx.ship_option(loc, dest, order.delivery_method, weight_g) is None:
        return False
    if max_km is not None and order.pinned_location is None:
        far = ctx.distance(loc, dest)
        return far is not None and far <= max_km
    return True


class _Cand(NamedTuple):
    """A candidate location for one order: what shipping from it would mean (computed once per order)."""

    loc: _Loc
    group: int
    handover: bool
    ship_date: date
    late_departure: bool
    distance: float | None
    #: the cheapest tariff for the whole order's weight (None for a handover)
    option: _Option | None


class _Scored(NamedTuple):
    key: tuple
    kind: str
    parts: dict[str, list[tuple[int, int]]]
    values: dict[str, float]
    units: int
    min_left: int
    options: dict[str, _Option | None]


def _key(p: _Scored) -> tuple:
    return p.key


def _take(row: Sequence[int], remaining: Sequence[int]) -> list[tuple[int, int]]:
    """(item index, qty) a location with free units ``row`` can give towards ``remaining``."""
    taken = []
    for i, a in enumerate(row):
        q = a if a < remaining[i] else remaining[i]
        if q > 0:
            taken.append((i, q))
    return taken


def _walk(order_locs: Sequence[str], items, avail, limit: _ValueLimit | None) -> tuple[dict, bool]:
    """``rank`` / ``most_stock``: take everything the first location in ``order_locs`` has, then the next…

    With a per-shipment minimum a location whose part would be worth less is passed over (its units stay
    for the next location), unless that part alone completes the order. Returns (parts, complete).
    """
    remaining = [item.qty for item in items]
    parts: dict[str, list[tuple[int, int]]] = {}
    new_shipments = 0
    for code in order_locs:
        taken = _take(avail[code], remaining)
        if not taken:
            continue
        if limit is not None:
            if not limit.may_take(code, taken, remaining, new_shipments):
                continue
            if code not in limit.existing:
                new_shipments += 1
        parts[code] = taken
        for i, q in taken:
            remaining[i] -= q
        if not any(remaining):
            break
    return parts, not any(remaining)


def _split_plans(order, cands, items, avail, limit: _ValueLimit | None = None) -> Iterator[tuple[dict, bool]]:
    """Greedy covers: start at an anchor, then repeatedly take the location covering most remaining units.

    Anchors: the customer's pickup location (click & collect first) and the best-covering locations.
    A SKU may come from several locations. With a per-shipment minimum (``limit``) only parts worth at
    least the threshold are taken. Yields (parts, complete), parts = {loc: [(item index, qty)]}.
    """
    qtys = [item.qty for item in items]
    coverage = {c: sum(min(a, q) for a, q in zip(avail[c], qtys, strict=True)) for c in cands}
    # ties by code, not by position in the configuration: the same stock gives the same plans
    rank = {c: (cand.group, cand.loc.priority, c) for c, cand in cands.items()}
    by_cover = sorted((c for c in cands if coverage[c] > 0), key=lambda c: (-coverage[c], rank[c]))
    anchors = by_cover[:SPLIT_ANCHORS]
    if order.pickup_location in coverage and coverage[order.pickup_location] > 0:
        anchors = [order.pickup_location] + [a for a in anchors if a != order.pickup_location]
    seen: set = set()
    for anchor in anchors:
        remaining = list(qtys)
        parts: dict[str, list[tuple[int, int]]] = {}
        new_shipments = 0
        loc = anchor
        while loc is not None:
            taken = _take(avail[loc], remaining)
            if limit is not None:
                if not limit.may_take(loc, taken, remaining, new_shipments):
                    break  # only the anchor can fail here: the choice below checks the others
                if loc not in limit.existing:
                    new_shipments += 1
            for i, q in taken:
                remaining[i] -= q
            if taken:
                parts[loc] = taken
            if not any(remaining):
                break
            best, best_cover = None, 0
            for c in by_cover:
                if c in parts:
                    continue
                cover = sum(min(a, r) for a, r in zip(avail[c], remaining, strict=True))
                if cover > best_cover:  # by_cover is already in rank order for ties
                    if limit is not None and not limit.may_take(
                        c, _take(avail[c], remaining), remaining, new_shipments
                    ):
                        continue
                    best, best_cover = c, cover
            loc = best
        signature = tuple(sorted((k, tuple(v)) for k, v in parts.items()))
        if parts and signature not in seen:
            seen.add(signature)
            yield parts, not any(remaining)


class _Scorer:
    """Scores candidate assignments: the rule's sort keys, bucketed, plus deterministic tie-breakers.

    A plan's key is: units not at the chosen pickup location (click & collect first), the strategy's
    location sequence (``rank`` / ``most_stock`` only), the rule's ``sort_by`` keys, the number of
    locations, and last the locations compared one by one in rank order (group, priority, code) with the
    units each gives — more units from a better-ranked location first — so no two different plans tie.
    ``group`` and ``priority`` compare the locations worst first, then the next: two plans whose worst
    location is the same are told apart by the others.

    Scoring is the hot loop, so it only computes the key; shipments and the audit dict are built for the
    winner and the few plans kept in the decision.
    """

    def __init__(self, ctx, order, rule, cands, dest, items, avail, promise_date, is_pickup) -> None:
        self.ctx, self.order, self.rule = ctx, order, rule
        self.cands, self.dest, self.items, self.avail = cands, dest, items, avail
        self.promise_date = promise_date
        self.is_pickup = is_pickup
        self.total_weight = sum(item.weight_g * item.qty for item in items)
        self.rank = {code: (cand.group, cand.loc.priority, code) for code, cand in cands.items()}
        #: position of each location in the strategy's order (None: ``fewest_shipments``)
        self.position: dict[str, int] | None = None

    def use_strategy(self, strategy: str) -> list[str]:
        """The order in which ``rank`` / ``most_stock`` drain the candidates (and rank plans by).

        The customer's pickup location comes first (click & collect), then ``rank``: candidate group, then
        location priority; ``most_stock``: the most free units of the order's SKUs, then group and
        priority. Locations the strategy ranks equal are ordered by the rule's ``sort_by`` keys applied to
        what each could ship alone, then by code.
        """
        own: dict[str, tuple] = {}
        qtys = [item.qty for item in self.items]
        for code in self.cands:
            scored = self.score({code: _take(self.avail[code], qtys)}, "own")
            own[code] = (0, scored.key[1:]) if scored is not None else (1, ())

        def order_key(code: str) -> tuple:
            cand = self.cands[code]
            first = 0 if self.is_pickup and code == self.order.pickup_location else 1
            if strategy == "most_stock":
                return (first, -sum(self.avail[code]), cand.group, cand.loc.priority, own[code], code)
            return (first, cand.group, cand.loc.priority, own[code], code)

        walk = sorted(self.cands, key=order_key)
        self.position = {code: i for i, code in enumerate(walk)}
        return walk

    def score(self, parts: dict[str, list[tuple[int, int]]], kind: str) -> _Scored | None:
        ctx, order, items, cands = self.ctx, self.order, self.items, self.cands
        cost = 0.0
        distance = 0.0
        late_ship = late_promise = 0
        eta_max = date.min
        min_left = 10**9
        groups = []
        priorities = []
        units_elsewhere = 0
        units = 0
        options: dict[str, _Option | None] = {}
        by_rank = []
        for code, taken in parts.items():
            cand = cands[code]
            loc = cand.loc
            if cand.handover:
                option = None
                eta = cand.ship_date
            else:
                weight = sum(items[i].weight_g * q for i, q in taken)
                if weight == self.total_weight:
                    option = cand.option
                else:
                    option = ctx.ship_option(loc, self.dest, order.delivery_method, weight)
                    if option is None:
                        return None
                eta = cand.ship_date + timedelta(days=option.transit_days)
                cost += option.cost
            options[code] = option
            cost += loc.handling
            dist = UNKNOWN_DISTANCE_KM if cand.distance is None else cand.distance
            if dist > distance:
                distance = dist
            if cand.late_departure:
                late_ship = 1
            if eta > self.promise_date:
                late_promise = 1
            priorities.append(loc.priority)
            groups.append(cand.group)
            if eta > eta_max:
                eta_max = eta
            row = self.avail[code]
            here = 0
            for i, q in taken:
                left = row[i] - q
                if left < min_left:
                    min_left = left
                here += q
            units += here
            if code != order.pickup_location:
                units_elsewhere += here
            by_rank.append((self.rank[code], -here))
        n_locations = len(parts.keys() | order.existing_locations)
        penalty = self.rule.split.penalty * (n_locations - 1) if n_locations > 1 else 0.0
        values = {
            "sla": late_ship + late_promise,
            "group": max(groups),
            "cost": cost + penalty,
            "distance": distance,
            "stock": -min_left,
            "priority": max(priorities),
            "promise": eta_max.toordinal(),
            "penalty": penalty,
        }
        key: list = [units_elsewhere if self.is_pickup else 0]
        if self.position is not None:
            position = self.position
            key.append(tuple(sorted(position[c] for c in parts)))
        for sk in self.rule.sort_by:
            name = sk.key
            if name == "group" or name == "priority":
                # every location, worst first: the worst decides, the next ones break its ties
                worst_first = sorted(groups if name == "group" else priorities, reverse=True)
                key.append(
                    tuple(math.floor(v / sk.bucket) for v in worst_first) if sk.bucket else tuple(worst_first)
                )
            else:
                v = values[name]
                key.append(math.floor(v / sk.bucket) if sk.bucket else v)
        key.append(len(parts))
        by_rank.sort()
        key.append(tuple(by_rank))
        return _Scored(tuple(key), kind, parts, values, units, min_left, options)

    def shipments(self, p: _Scored) -> list[Shipment]:
        items = self.items
        cursors = [[line.qty for line in item.lines] for item in items]
        out = []
        for code, taken in p.parts.items():
            cand = self.cands[code]
            option = p.options[code]
            lines: list[tuple[int, str, int]] = []
            for i, q in taken:
                lines.extend(_to_lines(items[i], q, cursors[i]))
            out.append(
                Shipment(
                    location=code,
                    lines=tuple(lines),
                    handover=cand.handover,
                    carrier=option.carrier if option else None,
                    tariff=option.tariff if option else None,
                    zone=option.zone if option else None,
                    cost=(option.cost if option else 0.0) + cand.loc.handling,
                    distance_km=None if cand.distance is None else round(cand.distance, 1),
                    ship_date=cand.ship_date,
                    eta=cand.ship_date + timedelta(days=option.transit_days) if option else cand.ship_date,
                )
            )
        return out

    def detail(self, p: _Scored) -> dict:
        """The audit form of a scored plan (what ops see in the decision)."""
        v = p.values
        return {
            "kind": p.kind,
            "locations": sorted(p.parts),
            "units_by_location": {code: sum(q for _, q in taken) for code, taken in sorted(p.parts.items())},
            "cost": round(v["cost"], 2),
            "split_penalty": v["penalty"],
            "distance_km": round(v["distance"], 1),
            "eta": date.fromordinal(int(v["promise"])).isoformat(),
            "sla_misses": v["sla"],
            "group": v["group"],
            "priority": v["priority"],
            "stock_left": p.min_left,
            "units": p.units,
            "units_not_at_pickup": p.key[0] if self.is_pickup else None,
        }


def _apply(b: _Batch, shipments: Sequence[Shipment]) -> None:
    """Book the plan in the working state so later orders of the batch see it."""
    free = b.state.free
    for s in shipments:
        for _, sku, qty in s.lines:
            free[(s.location, sku)] = free.get((s.location, sku), 0) - qty
        b.book(s.location, s.ship_date)
