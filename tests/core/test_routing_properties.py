"""Property-based tests of the pure planner on the sample configuration with random split policies.

For random stock, orders and rules: the plan never exceeds the free stock (after each channel's safety
stock, order after order), respects the split policy, is all-or-nothing when splits are not allowed, and
never plans from outside the channel's ATS pool.
"""

from __future__ import annotations

import copy
from collections import defaultdict
from datetime import UTC, datetime

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from oms_ops.business_config import DEFAULT_PATH, parse_business_config
from oms_ops.routing import LineDemand, OrderDemand, compile_config, plan_batch

SAMPLE = yaml.safe_load(DEFAULT_PATH.read_text(encoding="utf-8"))
BASE = parse_business_config(SAMPLE)
NOW = datetime(2025, 11, 26, 9, 30, tzinfo=UTC)
SKUS = ["S0", "S1", "S2", "PROMO-3", "S4"]
STOCK_LOCATIONS = [loc.code for loc in BASE.locations if loc.kind != "pickup_point"]
STORES = [loc.code for loc in BASE.locations if loc.kind == "store"]
POINTS = [loc.code for loc in BASE.locations if loc.kind == "pickup_point"]
CHANNELS = [c.code for c in BASE.channels]
REGIONS = [
    "Москва",
    "Московская область",
    "Санкт-Петербург",
    "Казань",
    "Екатеринбург",
    "Новосибирская область",
    "Краснодарский край",
    None,
]

split_policies = st.one_of(
    st.just({"policy": "never"}),
    st.builds(
        lambda t, p, partial: {
            "policy": "min_shipment_value",
            "threshold": t,
            "penalty": p,
            "partial": partial,
        },
        st.sampled_from([0, 700, 2000, 20000]),
        st.sampled_from([0, 300, 5000]),
        st.booleans(),
    ),
    st.builds(
        lambda p, partial: {"policy": "allowed", "penalty": p, "partial": partial},
        st.sampled_from([0, 300, 5000]),
        st.booleans(),
    ),
)


@st.composite
def configs(draw):
    data = copy.deepcopy(SAMPLE)
    for rule in data["routing_rules"]:
        rule["split"] = draw(split_policies)
        rule["strategy"] = draw(st.sampled_from(["fewest_shipments", "rank", "most_stock"]))
    return parse_business_config(data)


@st.composite
def orders(draw):
    n = draw(st.integers(1, 8))
    out = []
    line_id = 1
    # one price per SKU (the per-shipment minimum values a SKU at its average line price)
    prices = {sku: draw(st.sampled_from([90.0, 400.0, 1500.0, 9000.0])) for sku in SKUS}
    for order_id in range(1, n + 1):
        method = draw(st.sampled_from(["courier", "courier", "store_pickup", "pickup_point"]))
        pickup = None
        if method == "store_pickup":
            pickup = draw(st.sampled_from(STORES))
        elif method == "pickup_point":
            pickup = draw(st.sampled_from(POINTS))
        lines = []
        for _ in range(draw(st.integers(1, 4))):
            sku = draw(st.sampled_from(SKUS))
            lines.append(LineDemand(line_id, sku, draw(st.integers(1, 5)), 700, prices[sku]))
            line_id += 1
        existing = draw(st.sampled_from([frozenset(), frozenset({"WH-KZN"})]))
        out.append(
            OrderDemand(
                order_id=order_id,
                channel=draw(st.sampled_from(CHANNELS)),
                delivery_method=method,
                placed_at=NOW,
                lines=tuple(lines),
                order_value=draw(st.sampled_from([500.0, 4999.0, 5000.0, 19999.0, 25000.0])),
                pickup_location=pickup,
                region=draw(st.sampled_from(REGIONS)),
                existing_locations=existing,
            )
        )
    return out


stock = st.dictionaries(
    st.tuples(st.sampled_from(STOCK_LOCATIONS), st.sampled_from(SKUS)), st.integers(0, 8), max_size=30
)


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cfg=configs(), batch=orders(), free=stock)
def test_plans_never_exceed_free_stock_and_respect_split_policies(cfg, batch, free):
    ctx = compile_config(cfg)
    plans = plan_batch(batch, free, ctx, now=NOW)
    assert [p.order_id for p in plans] == [o.order_id for o in batch]
    running = dict(free)
    rules = {r.name: r for r in cfg.routing_rules}
    for o, p in zip(batch, plans, strict=True):
        wanted = {line.line_id: line.qty for line in o.lines}
        per_line: dict[int, int] = defaultdict(int)
        per_key: dict[tuple[str, str], int] = defaultdict(int)
        for line_id, loc, sku, qty in p.reservations():
            assert qty > 0
            per_line[line_id] += qty
            per_key[(loc, sku)] += qty
        # 1. never more than the snapshot left by earlier orders minus the channel's safety stock
        for (loc, sku), qty in per_key.items():
            assert qty <= running.get((loc, sku), 0) - cfg.safety_stock_for(o.channel, loc, sku)
            running[(loc, sku)] -= qty
        # 2. never more than a line asks for; only from the channel's pool; never from an excluded location
        assert all(per_line[i] <= wanted[i] for i in per_line)
        assert {s.location for s in p.shipments} <= set(cfg.channel_pool(o.channel))
        complete = all(per_line.get(i, 0) == q for i, q in wanted.items())
        # 3. outcome consistent with what was planned
        if p.outcome == "allocated":
            assert complete and p.short == ()
        elif p.outcome == "backordered":
            assert p.shipments == () and not o.existing_locations
        else:
            assert p.outcome == "partially_allocated"
            assert not complete and (p.shipments or o.existing_locations)
        # 4. split policy: one location unless allowed; all-or-nothing unless partial is allowed; with a
        # per-shipment minimum every new shipment of a split and the waiting rest are worth at least it
        policy = rules[p.rule].split
        price = {line.line_id: line.unit_price for line in o.lines}
        value = sum(line.qty * line.unit_price for line in o.lines)
        assert p.split_allowed == policy.allows_split(value, holding=bool(o.existing_locations))
        new = [s for s in p.shipments if s.location not in o.existing_locations]
        if policy.min_shipment_value and (len(new) >= 2 or (new and not complete)):
            assert all(sum(q * price[i] for i, _, q in s.lines) >= policy.threshold - 1e-6 for s in new)
        if policy.min_shipment_value and p.shipments and not complete:
            rest = sum((wanted[i] - per_line.get(i, 0)) * price[i] for i in wanted)
            assert rest >= policy.threshold - 1e-6
        if not p.split_allowed:
            assert len(p.shipments) <= 1
        if not (p.split_allowed and policy.partial):
            assert p.shipments == () or complete
        # 5. short lines are exactly the incomplete ones when nothing was reserved
        if p.shipments == () and p.short:
            assert {s.line_id for s in p.short} <= set(wanted)
    assert all(v >= 0 for k, v in running.items() if k in free)
