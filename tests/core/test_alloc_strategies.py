"""Routing strategies, plan tie-breaks and the per-shipment split minimum, on the pure planner.

``fewest_shipments`` (default) keeps today's behaviour; ``rank`` drains the candidates in (group, priority)
order and ``most_stock`` the deepest stock first; ties between plans are broken location by location;
``min_shipment_value`` applies to every shipment of a split and to the part a partial leaves waiting.
Properties (hypothesis): ``rank`` is exactly the per-SKU greedy over the ranked candidates, and no plan
depends on the order the configuration lists its locations in.
"""

from __future__ import annotations

import copy
from collections import defaultdict

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from oms_ops.business_config import DEFAULT_PATH, parse_business_config
from oms_ops.routing import LineDemand, OrderDemand, compile_config, plan_batch
from tests.core.test_routing import NOW, config, locations, order, plan_one, rule


def strategy_rule(strategy, **kw):
    return {**rule(**kw), "strategy": strategy}


def taken(plan):
    """{location: {sku: qty}} of a plan."""
    out: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for s in plan.shipments:
        for _, sku, qty in s.lines:
            out[s.location][sku] += qty
    return {loc: dict(v) for loc, v in out.items()}


# WH-A priority 10 (Moscow), WH-B 20 (St Petersburg), WH-C 30 (Kazan); the customer is in Moscow
FREE = {("WH-A", "X"): 2, ("WH-B", "X"): 10, ("WH-C", "X"): 12}
WAREHOUSES = dict(candidates=["warehouses"], sort_by=["cost", "priority"], split={"policy": "allowed"})


def test_fewest_shipments_is_the_default_and_one_location_that_holds_everything_wins():
    plan = plan_one(config([rule(**WAREHOUSES)]), order(lines=[("X", 5)]), FREE)
    assert taken(plan) == {"WH-B": {"X": 5}}  # z2 like WH-C, better priority; WH-A cannot ship it all


def test_rank_drains_the_first_ranked_location_then_the_next():
    plan = plan_one(config([strategy_rule("rank", **WAREHOUSES)]), order(lines=[("X", 5)]), FREE)
    assert taken(plan) == {"WH-A": {"X": 2}, "WH-B": {"X": 3}}
    assert plan.reason.startswith("rule r (rank): split into 2 shipments")
    # the audit still shows the single-shipment alternatives, after the chosen plan
    assert [s["locations"] for s in plan.scores] == [["WH-A", "WH-B"], ["WH-B"], ["WH-C"]]
    assert plan.scores[0]["units_by_location"] == {"WH-A": 2, "WH-B": 3}


def test_rank_groups_come_before_priority_and_never_split_takes_the_first_full_location():
    groups = dict(candidates=[{"codes": ["WH-C"]}, "warehouses"], sort_by=["cost"])
    plan = plan_one(
        config([strategy_rule("rank", **groups, split={"policy": "allowed"})]),
        order(lines=[("X", 13)], weight=100),
        FREE,
    )
    assert taken(plan) == {"WH-C": {"X": 12}, "WH-A": {"X": 1}}
    never = plan_one(config([strategy_rule("rank", **groups)]), order(lines=[("X", 5)]), FREE)
    assert taken(never) == {"WH-C": {"X": 5}}  # dearer than WH-A/WH-B, but ranked first


def test_most_stock_drains_the_deepest_stock_first():
    cfg = config([strategy_rule("most_stock", **WAREHOUSES)])
    assert taken(plan_one(cfg, order(lines=[("X", 5)]), FREE)) == {"WH-C": {"X": 5}}
    assert taken(plan_one(cfg, order(lines=[("X", 14)], weight=100), FREE)) == {
        "WH-C": {"X": 12},
        "WH-B": {"X": 2},
    }
    # equal stock: the rank decides (WH-B before WH-C by priority)
    even = {("WH-B", "X"): 12, ("WH-C", "X"): 12}
    assert taken(plan_one(cfg, order(lines=[("X", 3)]), even)) == {"WH-B": {"X": 3}}


def test_every_strategy_sees_only_what_other_orders_left():
    for strategy in ("fewest_shipments", "rank", "most_stock"):
        cfg = config([strategy_rule(strategy, **WAREHOUSES)])
        first, second = plan_batch(
            [order(1, lines=[("X", 20)], weight=100), order(2, lines=[("X", 5)], weight=100)],
            FREE,
            cfg,
            now=NOW,
        )
        assert sum(q for loc in taken(first).values() for q in loc.values()) == 20
        assert (
            sum(q for loc in taken(second).values() for q in loc.values()) == 4
            or second.outcome == "backordered"
        )
        used = defaultdict(int)
        for p in (first, second):
            for loc, skus in taken(p).items():
                used[loc] += skus.get("X", 0)
        assert all(used[loc] <= FREE[(loc, "X")] for loc in used), strategy


def test_two_splits_over_the_same_locations_prefer_more_units_from_the_better_ranked():
    # X 5: WH-A holds 3, WH-B 4. Both greedy covers use {WH-A, WH-B}; the worst priority ties (20), so
    # before, the first one generated won (4 from WH-B); now WH-A (priority 10) gives what it has
    cfg = config([rule(candidates=["warehouses"], sort_by=["priority"], split={"policy": "allowed"})])
    plan = plan_one(cfg, order(lines=[("X", 5)]), {("WH-A", "X"): 3, ("WH-B", "X"): 4})
    assert taken(plan) == {"WH-A": {"X": 3}, "WH-B": {"X": 2}}


def test_priority_compares_every_location_worst_first():
    def edit(d):
        d["locations"][0]["priority"] = 25  # WH-A
        d["locations"][1]["priority"] = 15  # WH-B

    cfg = config(
        [rule(candidates=["warehouses"], sort_by=["priority"], split={"policy": "allowed"})], edit=edit
    )
    free = {("WH-A", "X"): 1, ("WH-B", "X"): 1, ("WH-C", "Y"): 1}
    plan = plan_one(cfg, order(lines=[("X", 1), ("Y", 1)]), free)
    # both plans have WH-C (30) as their worst location; the next one decides: WH-B (15) beats WH-A (25)
    assert sorted(locations(plan)) == ["WH-B", "WH-C"]


# -- the per-shipment split minimum ---------------------------------------------------------------------------

THRESHOLD = {"policy": "min_shipment_value", "threshold": 1000, "partial": True}


def test_partial_needs_the_reserved_part_and_the_waiting_rest_to_reach_the_threshold():
    cfg = config([rule(split=THRESHOLD)])
    free = {("WH-A", "X"): 2}
    ok = plan_one(cfg, order(lines=[("X", 2), ("Y", 2)], prices={"X": 800, "Y": 600}), free)
    assert ok.outcome == "partially_allocated" and taken(ok) == {"WH-A": {"X": 2}}
    small_rest = plan_one(cfg, order(lines=[("X", 2), ("Y", 2)], prices={"X": 800, "Y": 400}), free)
    assert small_rest.outcome == "backordered" and small_rest.shipments == ()
    assert "below 1000 RUB" in small_rest.reason
    # worth less than two thresholds: not even considered for a split
    tiny = plan_one(cfg, order(lines=[("X", 2), ("Y", 1)], prices={"X": 800, "Y": 300}), free)
    assert (tiny.outcome, tiny.split_allowed) == ("backordered", False)


def test_a_part_joining_an_existing_shipment_or_completing_a_refill_is_no_new_split():
    cfg = config([rule(split=THRESHOLD)])
    # the order already holds reservations at WH-B; the last cheap line comes from WH-A alone
    refill = order(lines=[("Y", 1)], prices={"Y": 100}, existing_locations=frozenset({"WH-B"}))
    assert taken(plan_one(cfg, refill, {("WH-A", "Y"): 5})) == {"WH-A": {"Y": 1}}
    # two new parcels, one of them worth 100: refused; the same part at the location already holding some
    # of the order joins its shipment
    two = order(
        lines=[("X", 2), ("Y", 1)], prices={"X": 800, "Y": 100}, existing_locations=frozenset({"WH-B"})
    )
    assert plan_one(cfg, two, {("WH-A", "X"): 2, ("WH-C", "Y"): 1}).outcome == "partially_allocated"
    joined = plan_one(cfg, two, {("WH-A", "X"): 2, ("WH-B", "Y"): 1})
    assert joined.outcome == "allocated" and taken(joined) == {"WH-A": {"X": 2}, "WH-B": {"Y": 1}}


def test_rank_passes_over_a_location_whose_part_would_be_too_small():
    cfg = config([strategy_rule("rank", candidates=["warehouses"], sort_by=["cost"], split=THRESHOLD)])
    # WH-A could give one X (worth 500): too small for a parcel of a split, so WH-B gives both
    plan = plan_one(
        cfg,
        order(lines=[("X", 2), ("Y", 2)], prices={"X": 500, "Y": 600}),
        {("WH-A", "X"): 1, ("WH-B", "X"): 2, ("WH-C", "Y"): 2},
    )
    assert taken(plan) == {"WH-B": {"X": 2}, "WH-C": {"Y": 2}}


# -- errors that name everything ------------------------------------------------------------------------------


def test_short_lines_name_where_their_sku_was_free():
    plan = plan_one(
        config(),
        order(lines=[("X", 3), ("Y", 1), ("Z", 2)]),
        {("WH-A", "X"): 1, ("WH-B", "X"): 2, ("WH-C", "Z"): 2},
    )
    assert plan.outcome == "backordered"
    x, y = plan.short  # Z is there in full at WH-C (but the order may not be split)
    assert (x.sku, x.requested, x.available, x.locations) == ("X", 3, 2, (("WH-B", 2), ("WH-A", 1)))
    assert (y.sku, y.available, y.locations) == ("Y", 0, ())
    assert "X needs 3, 2 available (WH-B 2, WH-A 1)" in plan.reason
    assert "Y needs 1, 0 available (none free at the candidate locations)" in plan.reason


# -- properties -------------------------------------------------------------------------------------------------

SKUS = ["X", "Y", "Z"]
WH = ["WH-A", "WH-B", "WH-C"]
RANK = {"WH-A": 0, "WH-B": 1, "WH-C": 2}  # one group, priorities 10 < 20 < 30


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    free=st.dictionaries(
        st.tuples(st.sampled_from(WH), st.sampled_from(SKUS)), st.integers(0, 6), max_size=9
    ),
    lines=st.lists(st.tuples(st.sampled_from(SKUS), st.integers(1, 6)), min_size=1, max_size=3),
)
def test_rank_is_the_greedy_over_the_ranked_locations(free, lines):
    cfg = config(
        [
            strategy_rule(
                "rank",
                candidates=["warehouses"],
                sort_by=["cost"],
                split={"policy": "allowed", "partial": True},
            )
        ]
    )
    o = order(lines=lines, weight=100)
    plan = plan_one(cfg, o, free)
    want: dict[str, int] = defaultdict(int)
    for sku, qty in lines:
        want[sku] += qty
    got = taken(plan)
    for sku, qty in want.items():
        left = qty
        for loc in sorted(WH, key=RANK.get):
            expect = min(free.get((loc, sku), 0), left)
            left -= expect
            assert got.get(loc, {}).get(sku, 0) == expect, (sku, loc, got)
    complete = all(sum(got.get(loc, {}).get(s, 0) for loc in got) == q for s, q in want.items())
    assert plan.outcome == (
        "allocated" if complete else "partially_allocated" if plan.shipments else "backordered"
    )


SAMPLE = yaml.safe_load(DEFAULT_PATH.read_text(encoding="utf-8"))
SAMPLE_SKUS = ["S0", "S1", "PROMO-3"]
STOCKED = [loc["code"] for loc in SAMPLE["locations"] if loc["kind"] != "pickup_point"]


@st.composite
def sample_pair(draw):
    """The sample configuration with random strategies and split policies, and the same with its locations
    listed in reverse."""
    data = copy.deepcopy(SAMPLE)
    for r in data["routing_rules"]:
        r["strategy"] = draw(st.sampled_from(["fewest_shipments", "rank", "most_stock"]))
        r["split"] = draw(
            st.sampled_from(
                [
                    {"policy": "never"},
                    {"policy": "allowed", "penalty": 300, "partial": True},
                    {"policy": "min_shipment_value", "threshold": 700, "partial": True},
                ]
            )
        )
    reversed_ = copy.deepcopy(data)
    reversed_["locations"].reverse()
    return parse_business_config(data), parse_business_config(reversed_)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    cfgs=sample_pair(),
    free=st.dictionaries(
        st.tuples(st.sampled_from(STOCKED), st.sampled_from(SAMPLE_SKUS)), st.integers(0, 6), max_size=20
    ),
    demand=st.lists(
        st.tuples(
            st.sampled_from(["webstore", "callcentre", "ozon"]),
            st.sampled_from(["Москва", "Санкт-Петербург", "Казань", "Новосибирская область", None]),
            st.lists(st.tuples(st.sampled_from(SAMPLE_SKUS), st.integers(1, 5)), min_size=1, max_size=3),
        ),
        min_size=1,
        max_size=5,
    ),
)
def test_no_plan_depends_on_the_order_locations_are_listed_in(cfgs, free, demand):
    orders = [
        OrderDemand(
            order_id=n,
            channel=channel,
            delivery_method="courier",
            placed_at=NOW,
            lines=tuple(LineDemand(10 * n + k, sku, qty, 400, 500.0) for k, (sku, qty) in enumerate(lines)),
            region=region,
        )
        for n, (channel, region, lines) in enumerate(demand, start=1)
    ]
    first = plan_batch(orders, free, compile_config(cfgs[0]), now=NOW)
    second = plan_batch(orders, free, compile_config(cfgs[1]), now=NOW)
    assert [(p.outcome, p.shipments, p.short) for p in first] == [
        (p.outcome, p.shipments, p.short) for p in second
    ]
