"""The pure planner: rule matching, scoring, split policies, safety stock, capacity, cut-offs, pickup, tariffs."""

from __future__ import annotations

import copy
from datetime import UTC, date, datetime, timedelta

import pytest

from oms_ops.business_config import parse_business_config
from oms_ops.routing import LineDemand, OrderDemand, compile_config, haversine_km, plan_batch

# 09:00 in Moscow
NOW = datetime(2025, 11, 26, 6, 0, tzinfo=UTC)
TODAY = date(2025, 11, 26)

BASE = {
    "regions": [
        {"code": "RU-MOW", "name": "Москва", "lat": 55.75, "lon": 37.62},
        {"code": "RU-SPE", "name": "Санкт-Петербург", "lat": 59.94, "lon": 30.31},
        {"code": "RU-TA", "name": "Татарстан", "aliases": ["Казань"], "lat": 55.79, "lon": 49.11},
    ],
    "sku_classes": [{"name": "promo", "patterns": ["PROMO-*"]}],
    "location_groups": {"warehouses": {"kinds": ["warehouse"]}},
    "channels": [
        {
            "code": "web",
            "name": "Web",
            "kind": "webstore",
            "safety_stock": {"by_location_kind": {"store": 1}},
        },
        {
            "code": "mp",
            "name": "Marketplace",
            "kind": "marketplace",
            "ats_pool": ["warehouses"],
            "safety_stock": {"default": 2, "by_sku_class": {"promo": 5}},
        },
    ],
    "locations": [
        {
            "code": "WH-A",
            "name": "A",
            "kind": "warehouse",
            "region": "RU-MOW",
            "city": "Москва",
            "lat": 55.75,
            "lon": 37.62,
            "cutoff_local": "16:00",
            "priority": 10,
        },
        {
            "code": "WH-B",
            "name": "B",
            "kind": "warehouse",
            "region": "RU-SPE",
            "city": "СПб",
            "lat": 59.94,
            "lon": 30.31,
            "cutoff_local": "20:00",
            "priority": 20,
        },
        {
            "code": "WH-C",
            "name": "C",
            "kind": "warehouse",
            "region": "RU-TA",
            "city": "Казань",
            "lat": 55.79,
            "lon": 49.11,
            "cutoff_local": "16:00",
            "priority": 30,
        },
        {
            "code": "ST-1",
            "name": "Store",
            "kind": "store",
            "region": "RU-MOW",
            "city": "Москва",
            "lat": 55.76,
            "lon": 37.60,
            "ships": False,
            "hands_over": True,
            "priority": 50,
            "handling_cost": 80,
        },
        {
            "code": "PP-1",
            "name": "Point",
            "kind": "pickup_point",
            "region": "RU-MOW",
            "city": "Москва",
            "lat": 55.70,
            "lon": 37.70,
            "ships": False,
            "hands_over": True,
            "priority": 90,
        },
    ],
    "carriers": [
        {
            "code": "post",
            "name": "Post",
            "zone_rule": {
                "zones": [
                    {"code": "z1", "max_km": 100, "transit_days": 1},
                    {"code": "z2", "max_km": 1000, "transit_days": 3},
                    {"code": "z3", "max_km": None, "transit_days": 5},
                ]
            },
            "tariffs": [
                {
                    "code": "P1",
                    "name": "Parcel",
                    "delivery_methods": ["courier", "pickup_point", "store_pickup"],
                    "weight_bands_g": [1000, 5000],
                    "rates": {"z1": [100, 200], "z2": [300, 500], "z3": [600, 900]},
                    "over_max_per_kg": {"z3": 50},
                }
            ],
        }
    ],
    "routing_rules": [
        {"name": "default", "candidates": ["all"], "sort_by": ["cost", "priority"]},
    ],
    "sla": [{"ship_by_hours": 48, "promise_days": 10}],
}


def config(rules=None, edit=None):
    data = copy.deepcopy(BASE)
    if rules is not None:
        data["routing_rules"] = rules
    if edit is not None:
        edit(data)
    return parse_business_config(data)


def rule(name="r", candidates=("all",), sort_by=("cost", "priority"), split=None, match=None):
    out = {"name": name, "candidates": list(candidates), "sort_by": list(sort_by)}
    if split is not None:
        out["split"] = split
    if match is not None:
        out["match"] = match
    return out


_line_ids = iter(range(1, 10**6))


def order(
    order_id=1,
    lines=(("X", 1),),
    *,
    channel="web",
    method="courier",
    region="Москва",
    value=1000,
    pickup=None,
    placed_at=NOW,
    weight=500,
    prices=None,
    **kw,
) -> OrderDemand:
    prices = prices or {}
    return OrderDemand(
        order_id=order_id,
        channel=channel,
        delivery_method=method,
        placed_at=placed_at,
        lines=tuple(
            LineDemand(next(_line_ids), sku, qty, weight, prices.get(sku, 100.0)) for sku, qty in lines
        ),
        order_value=value,
        pickup_location=pickup,
        region=region,
        **kw,
    )


def plan_one(cfg, o, free, **kw):
    return plan_batch([o], free, cfg, now=kw.pop("now", NOW), **kw)[0]


def locations(plan):
    return [s.location for s in plan.shipments]


# -- rules and scoring -------------------------------------------------------------------------------------


def test_first_matching_rule_decides():
    cfg = config(
        [
            rule("marketplace", candidates=[{"codes": ["WH-C"]}], match={"channels": ["mp"]}),
            rule("spb", candidates=[{"codes": ["WH-B"]}], match={"regions": ["RU-SPE"]}),
            rule(
                "pickup",
                candidates=["pickup_location", "warehouses"],
                match={"delivery_methods": ["store_pickup"]},
            ),
            rule("default"),
        ]
    )
    free = {(loc, "X"): 10 for loc in ("WH-A", "WH-B", "WH-C", "ST-1")}
    mp, spb, msk, pick = plan_batch(
        [
            order(1, channel="mp", region="Санкт-Петербург"),
            order(2, region="Санкт-Петербург"),
            order(3),
            order(4, method="store_pickup", pickup="ST-1"),
        ],
        free,
        cfg,
        now=NOW,
    )
    assert (mp.rule, locations(mp)) == ("marketplace", ["WH-C"])
    assert (spb.rule, locations(spb)) == ("spb", ["WH-B"])
    assert (msk.rule, locations(msk)) == ("default", ["WH-A"])
    assert pick.rule == "pickup"


def test_cost_from_zone_and_weight_tariff_decides():
    cfg = config()
    free = {("WH-A", "X"): 5, ("WH-C", "X"): 5}
    kazan = plan_one(cfg, order(lines=[("X", 3)], region="Казань", weight=1000), free)
    # 3 kg from Kazan to Kazan: zone z1, band <= 5 kg
    assert locations(kazan) == ["WH-C"]
    assert (kazan.shipments[0].zone, kazan.shipments[0].cost) == ("z1", 200)
    assert kazan.shipments[0].eta == TODAY + timedelta(days=1)
    moscow = plan_one(cfg, order(lines=[("X", 1)], weight=800), free)
    assert locations(moscow) == ["WH-A"] and moscow.shipments[0].cost == 100


def test_priority_key_and_buckets():
    free = {("WH-A", "X"): 5, ("WH-B", "X"): 50}
    to_kazan = order(region="Казань")  # WH-A ~720 km (z2, 300), WH-B ~1200 km (z3, 600)
    assert locations(plan_one(config([rule(sort_by=["cost"])]), to_kazan, free)) == ["WH-A"]
    assert locations(plan_one(config([rule(sort_by=["priority"])]), to_kazan, free)) == ["WH-A"]
    # within one 1000-RUB bucket the costs tie, so stock depth decides: WH-B keeps more after the order
    assert locations(plan_one(config([rule(sort_by=["cost/1000", "stock"])]), to_kazan, free)) == ["WH-B"]
    assert locations(plan_one(config([rule(sort_by=["distance"])]), to_kazan, free)) == ["WH-A"]


def test_candidate_groups_restrict_and_order():
    cfg = config([rule(candidates=[{"codes": ["WH-B"]}, {"codes": ["WH-C"]}], sort_by=["group", "cost"])])
    free = {("WH-A", "X"): 5, ("WH-B", "X"): 5, ("WH-C", "X"): 5}
    plan = plan_one(cfg, order(region="Казань"), free)
    assert locations(plan) == ["WH-B"]  # first group wins over the cheaper WH-C; WH-A is no candidate
    assert plan.candidates_considered == 2


def test_customer_region_group_prefers_the_local_warehouse():
    cfg = config(
        [
            rule(
                candidates=[{"kinds": ["warehouse"], "customer_region": True}, "warehouses"],
                sort_by=["group", "priority"],
            )
        ]
    )
    free = {("WH-A", "X"): 5, ("WH-B", "X"): 5}
    assert locations(plan_one(cfg, order(region="Санкт-Петербург"), free)) == ["WH-B"]
    assert locations(plan_one(cfg, order(region="Казань"), free)) == ["WH-A"]  # none local: next group


def test_decision_audit_lists_scored_candidates():
    cfg = config()
    free = {("WH-A", "X"): 5, ("WH-B", "X"): 5, ("WH-C", "X"): 5}
    plan = plan_one(cfg, order(), free)
    assert [s["locations"] for s in plan.scores] == [["WH-A"], ["WH-B"], ["WH-C"]]
    assert plan.scores[0]["cost"] < plan.scores[1]["cost"] == plan.scores[2]["cost"]  # z2 both: priority
    assert plan.scores[1]["priority"] < plan.scores[2]["priority"]
    assert "rule default" in plan.reason and "WH-A" in plan.reason


# -- failure paths -----------------------------------------------------------------------------------------


def test_short_on_three_lines_reports_all_three_and_reserves_nothing():
    cfg = config()
    free = {("WH-A", "X"): 5, ("WH-A", "Y"): 1, ("WH-B", "Z"): 1}
    first = order(1, [("X", 1), ("Y", 2), ("Z", 3), ("W", 1)])
    second = order(2, [("X", 5)])
    p1, p2 = plan_batch([first, second], free, cfg, now=NOW)
    assert p1.outcome == "backordered" and p1.shipments == ()
    assert [(s.sku, s.requested, s.available) for s in p1.short] == [("Y", 2, 1), ("Z", 3, 1), ("W", 1, 0)]
    assert "3 short lines" in p1.reason and "Y needs 2, 1 available" in p1.reason
    # nothing was held back for the failed order: the next order gets all five X
    assert p2.outcome == "allocated" and p2.shipments[0].lines[0][2] == 5


def test_no_candidate_location_backorders_every_line():
    cfg = config(
        [rule(candidates=[{"codes": ["WH-C"]}])], edit=lambda d: d["locations"][2].update(active=False)
    )
    plan = plan_one(cfg, order(lines=[("X", 1), ("Y", 1)]), {("WH-A", "X"): 5})
    assert plan.outcome == "backordered" and len(plan.short) == 2
    assert "no candidate location" in plan.reason


def test_lines_of_the_same_sku_share_the_stock():
    plan = plan_one(config(), order(lines=[("X", 2), ("X", 2)]), {("WH-A", "X"): 3})
    assert plan.outcome == "backordered"
    assert [(s.requested, s.available) for s in plan.short] == [(2, 1)]


def test_a_partially_allocated_order_stays_partially_allocated_when_nothing_more_is_free():
    plan = plan_one(config(), order(lines=[("X", 1)], existing_locations=frozenset({"WH-B"})), {})
    assert plan.outcome == "partially_allocated" and plan.shipments == ()


# -- split policies ----------------------------------------------------------------------------------------


FREE_SPLIT = {("WH-A", "X"): 5, ("WH-B", "Y"): 5}


def test_split_never_is_all_or_nothing():
    plan = plan_one(config([rule(split={"policy": "never"})]), order(lines=[("X", 1), ("Y", 1)]), FREE_SPLIT)
    assert plan.outcome == "backordered" and plan.shipments == () and plan.short == ()
    assert "may not be split" in plan.reason


def test_split_allowed_ships_from_two_locations_with_penalty():
    cfg = config([rule(split={"policy": "allowed", "penalty": 250})])
    plan = plan_one(cfg, order(lines=[("X", 1), ("Y", 1)]), FREE_SPLIT)
    assert plan.outcome == "allocated" and sorted(locations(plan)) == ["WH-A", "WH-B"]
    best = plan.scores[0]
    assert best["split_penalty"] == 250 and best["cost"] == sum(s.cost for s in plan.shipments) + 250


def test_split_allowed_still_prefers_one_location_that_has_everything():
    cfg = config([rule(split={"policy": "allowed", "penalty": 250})])
    free = {**FREE_SPLIT, ("WH-C", "X"): 1, ("WH-C", "Y"): 1}
    assert locations(plan_one(cfg, order(lines=[("X", 1), ("Y", 1)]), free)) == ["WH-C"]


def test_split_min_shipment_value_applies_to_every_shipment():
    cfg = config([rule(split={"policy": "min_shipment_value", "threshold": 5000})])
    # 2 × 3000 + 1 × 4999: the Y parcel would be worth 4999 < 5000, although the order is worth 10 999
    below = plan_one(cfg, order(lines=[("X", 2), ("Y", 1)], prices={"X": 3000, "Y": 4999}), FREE_SPLIT)
    at = plan_one(cfg, order(lines=[("X", 2), ("Y", 1)], prices={"X": 3000, "Y": 5000}), FREE_SPLIT)
    assert (below.outcome, below.split_allowed) == ("backordered", True) and below.short == ()
    assert "worth less than 5000 RUB" in below.reason
    assert at.outcome == "allocated" and len(at.shipments) == 2
    # under 2 × threshold no split can qualify: splitting is not even considered
    small = plan_one(cfg, order(lines=[("X", 1), ("Y", 1)], prices={"X": 3000, "Y": 3000}), FREE_SPLIT)
    assert (small.outcome, small.split_allowed) == ("backordered", False)
    assert "may not be split" in small.reason


def test_a_line_may_be_split_across_locations_when_allowed():
    cfg = config([rule(split={"policy": "allowed"})])
    plan = plan_one(cfg, order(lines=[("X", 7)]), {("WH-A", "X"): 4, ("WH-B", "X"): 4})
    assert sorted(s.lines[0][2] for s in plan.shipments) == [3, 4] or sorted(
        s.lines[0][2] for s in plan.shipments
    ) == [4, 3]
    assert sum(s.lines[0][2] for s in plan.shipments) == 7


def test_partial_reserves_what_exists_and_backorders_the_rest():
    cfg = config([rule(split={"policy": "allowed", "partial": True})])
    o = order(lines=[("X", 2), ("Y", 4), ("Z", 1)])
    plan = plan_one(cfg, o, {("WH-A", "X"): 5, ("WH-B", "Y"): 3})
    assert plan.outcome == "partially_allocated"
    reserved = {(sku, qty) for s in plan.shipments for _, sku, qty in s.lines}
    assert reserved == {("X", 2), ("Y", 3)}
    assert [(s.sku, s.requested, s.available) for s in plan.short] == [("Y", 4, 3), ("Z", 1, 0)]


def test_partial_is_refused_without_a_split_policy():
    with pytest.raises(ValueError, match="partial allocation is a split in time"):
        config([rule(split={"policy": "never", "partial": True})])


# -- safety stock, capacity and cut-offs -------------------------------------------------------------------


def test_safety_stock_per_channel_location_kind_and_sku_class():
    cfg = config()
    free = {("WH-A", "X"): 2, ("WH-A", "PROMO-1"): 6, ("ST-1", "X"): 1}
    mp, web = plan_batch([order(1, channel="mp"), order(2)], free, cfg, now=NOW)
    assert mp.outcome == "backordered" and mp.short[0].available == 0  # 2 on the shelf, 2 held back
    assert web.outcome == "allocated" and locations(web) == ["WH-A"]
    promo = plan_one(cfg, order(channel="mp", lines=[("PROMO-1", 2)]), free)
    assert promo.outcome == "backordered" and promo.short[0].available == 1  # class value 5 beats default 2
    store = plan_one(cfg, order(method="store_pickup", pickup="ST-1"), {("ST-1", "X"): 1})
    assert store.outcome == "backordered"  # the store's last unit is kept for walk-in customers


def test_capacity_moves_the_ship_date_and_a_full_location_drops_out():
    cfg = config(edit=lambda d: d["locations"][0].update(capacity_per_day=2))
    free = {("WH-A", "X"): 10, ("WH-B", "X"): 10}
    plans = plan_batch([order(i) for i in range(1, 4)], free, cfg, now=NOW)
    assert [p.shipments[0].ship_date for p in plans] == [TODAY, TODAY, TODAY + timedelta(days=1)]
    full = {("WH-A", TODAY + timedelta(days=d)): 2 for d in range(14)}
    plan = plan_one(cfg, order(), free, capacity_used=full)
    assert locations(plan) == ["WH-B"]


def test_cutoff_moves_shipping_to_tomorrow_and_sla_prefers_a_location_still_open():
    cfg = config(
        [rule(sort_by=["sla", "cost"])],
        edit=lambda d: d["sla"].__setitem__(0, {"ship_by_hours": 6, "promise_days": 10}),
    )
    evening = datetime(
        2025, 11, 26, 14, 0, tzinfo=UTC
    )  # 17:00 Moscow: WH-A (16:00) closed, WH-B (20:00) open
    free = {("WH-A", "X"): 5, ("WH-B", "X"): 5}
    plan = plan_one(cfg, order(placed_at=evening), free, now=evening)
    assert locations(plan) == ["WH-B"] and plan.shipments[0].ship_date == TODAY
    cheap = plan_one(config([rule(sort_by=["cost"])]), order(placed_at=evening), free, now=evening)
    assert locations(cheap) == ["WH-A"] and cheap.shipments[0].ship_date == TODAY + timedelta(days=1)
    assert cheap.scores[0]["sla_misses"] == 0  # 48 h default SLA: tomorrow is still on time


def test_cutoff_uses_the_location_time_zone():
    cfg = config(edit=lambda d: d["locations"][2].update(timezone="Asia/Novosibirsk"))
    ctx = compile_config(cfg)
    # 06:00 UTC = 13:00 in Novosibirsk, before 16:00; 10:00 UTC = 17:00 there, after
    assert plan_one(ctx, order(region="Казань"), {("WH-C", "X"): 1}).shipments[0].ship_date == TODAY
    late = datetime(2025, 11, 26, 10, 0, tzinfo=UTC)
    plan = plan_one(ctx, order(region="Казань"), {("WH-C", "X"): 1}, now=late)
    assert plan.shipments[0].ship_date == TODAY + timedelta(days=1)


# -- click & collect and pickup points ---------------------------------------------------------------------

PICKUP_RULE = rule(
    "pickup",
    candidates=["pickup_location", "warehouses"],
    sort_by=["priority", "cost"],
    split={"policy": "allowed", "penalty": 100},
)


def test_click_and_collect_takes_the_chosen_store_first():
    cfg = config([PICKUP_RULE])
    free = {("ST-1", "X"): 5, ("WH-A", "X"): 5}
    plan = plan_one(cfg, order(method="store_pickup", pickup="ST-1"), free)
    (s,) = plan.shipments
    assert (s.location, s.handover, s.carrier, s.cost) == ("ST-1", True, None, 80)
    assert s.eta == TODAY  # ready today


def test_pickup_point_without_stock_is_fed_by_a_warehouse_shipment():
    cfg = config([PICKUP_RULE])
    plan = plan_one(cfg, order(method="pickup_point", pickup="PP-1"), {("WH-A", "X"): 5, ("WH-C", "X"): 5})
    (s,) = plan.shipments
    assert (s.location, s.handover, s.carrier) == ("WH-A", False, "post")
    expected = haversine_km(55.75, 37.62, 55.70, 37.70)  # to the pickup point, not the customer
    assert s.distance_km == pytest.approx(expected, abs=0.1)


def test_store_holding_part_of_the_order_is_completed_from_a_warehouse_when_splits_are_allowed():
    cfg = config([PICKUP_RULE])
    free = {("ST-1", "X"): 5, ("WH-A", "X"): 5, ("WH-A", "Y"): 5}
    plan = plan_one(cfg, order(method="store_pickup", pickup="ST-1", lines=[("X", 1), ("Y", 1)]), free)
    by_loc = {s.location: s for s in plan.shipments}
    assert set(by_loc) == {"ST-1", "WH-A"}
    assert by_loc["ST-1"].handover and [x[1] for x in by_loc["ST-1"].lines] == ["X"]
    assert [x[1] for x in by_loc["WH-A"].lines] == ["Y"]


# -- tariffs -----------------------------------------------------------------------------------------------


def test_tariff_bands_overweight_and_missing_zones():
    ctx = compile_config(config())
    tariff = ctx.carriers[0].tariffs[0]
    assert (
        tariff.price("z1", 1) == 100 and tariff.price("z1", 1000) == 100 and tariff.price("z1", 1001) == 200
    )
    assert tariff.price("z1", 5001) is None  # no per-kg rate in z1: too heavy
    assert tariff.price("z3", 7500) == 900 + 3 * 50  # 2.5 kg over: three started kg
    assert tariff.price("zz", 100) is None


def test_region_override_and_unknown_destination():
    cfg = config(
        edit=lambda d: d["carriers"][0]["zone_rule"].__setitem__(
            "region_overrides", {"WH-B": {"RU-TA": "z1"}}
        )
    )
    ctx = compile_config(cfg)
    plan = plan_one(ctx, order(region="Казань"), {("WH-B", "X"): 1})
    assert plan.shipments[0].zone == "z1"  # pinned although ~1200 km away
    nowhere = plan_one(ctx, order(region="Атлантида"), {("WH-A", "X"): 1})
    assert nowhere.shipments[0].zone == "z3" and nowhere.shipments[0].distance_km is None


def test_a_location_without_a_tariff_to_the_destination_is_not_a_candidate():
    def edit(d):
        d["carriers"][0]["destination_regions"] = ["RU-MOW", "RU-SPE"]
        d["carriers"][0]["origins"] = {"codes": ["WH-A"]}

    plan = plan_one(config(edit=edit), order(region="Санкт-Петербург"), {("WH-B", "X"): 5})
    assert plan.outcome == "backordered" and "no carrier tariff" in plan.reason


def test_excluded_locations_are_never_planned():
    free = {("WH-A", "X"): 5, ("WH-B", "X"): 5}
    plan = plan_one(config(), order(exclude_locations=frozenset({"WH-A"})), free)
    assert locations(plan) == ["WH-B"]


def test_orders_of_a_batch_are_served_in_the_given_order():
    cfg = config()
    p1, p2 = plan_batch([order(7), order(3)], {("WH-A", "X"): 1}, cfg, now=NOW)
    assert (p1.order_id, p1.outcome, p2.outcome) == (7, "allocated", "backordered")


# -- channel-assigned location (marketplace FBS) -----------------------------------------------------------


def test_a_pinned_order_ships_from_its_assigned_location_even_when_another_is_cheaper():
    cfg = config()
    free = {("WH-A", "X"): 5, ("WH-C", "X"): 5}
    # Kazan would ship from WH-C (cheapest); the marketplace assigned the posting to WH-A
    plan = plan_one(cfg, order(region="Казань", pinned_location="WH-A"), free)
    assert plan.outcome == "allocated" and locations(plan) == ["WH-A"]
    assert [c["locations"] for c in plan.scores] == [["WH-A"]]


def test_a_pinned_order_waits_for_stock_at_its_location_instead_of_moving():
    cfg = config()
    plan = plan_one(
        cfg, order(lines=[("X", 2)], pinned_location="WH-B"), {("WH-A", "X"): 9, ("WH-B", "X"): 1}
    )
    assert plan.outcome == "backordered" and plan.shipments == ()
    assert [(s.requested, s.available) for s in plan.short] == [(2, 1)]
