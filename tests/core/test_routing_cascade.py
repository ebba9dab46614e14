"""The routing cascade (on_fail next / stop, kinds, max_distance_km) on the pure planner, and unfillable orders
end to end on Postgres: parked after waiting (or at once when no rule can ever serve them), cleared by ops,
cancelled by the sweep through the cancel service, resolved when stock comes after all; the CLI and the
dashboards' role."""

from __future__ import annotations

import copy
from datetime import timedelta

import psycopg
import pytest
import yaml
from typer.testing import CliRunner

from oms_ops import unfillable
from oms_ops.allocation import allocate_batch, latest_decision
from oms_ops.business_config import DEFAULT_PATH, parse_business_config
from oms_ops.cli import app
from oms_ops.errors import ValidationFailed
from oms_ops.routing import plan_batch
from tests.core.test_alloc_support import NOW, place, receive, sample_config, seed_reference
from tests.core.test_routing import config, locations, order, plan_one, rule


def step(name, codes=None, on_fail="next", candidates=None, **extra):
    out = rule(name, candidates=candidates or [{"codes": codes}])
    out.update(extra)
    if on_fail is not None:
        out["on_fail"] = on_fail
    return out


# -- the cascade (pure planner) -------------------------------------------------------------------------------


def test_a_rule_that_cannot_fill_hands_the_order_to_the_next_matching_rule():
    cfg = config(
        [
            step("near", ["WH-A"]),
            step("spb_only", ["WH-B"], match={"regions": ["RU-SPE"]}),  # does not match a Moscow order
            step("far", ["WH-C"]),
            step("last", ["WH-B"], on_fail="stop"),
        ]
    )
    plan = plan_one(cfg, order(lines=[("X", 2)]), {("WH-C", "X"): 5, ("WH-B", "X"): 5})
    assert (plan.outcome, plan.rule, locations(plan)) == ("allocated", "far", ["WH-C"])
    assert [(c["rule"], c["outcome"]) for c in plan.cascade] == [("near", "nothing"), ("far", "allocated")]
    assert (
        plan.reason.startswith("rule near: ")
        and "; next → rule far: single shipment from WH-C" in plan.reason
    )
    assert plan.unfillable is None


def test_on_fail_stop_and_a_rule_without_on_fail_end_the_cascade_as_before():
    free = {("WH-B", "X"): 5}
    for first in (step("near", ["WH-A"], on_fail="stop"), step("near", ["WH-A"], on_fail=None)):
        plan = plan_one(config([first, step("far", ["WH-B"])]), order(lines=[("X", 2)]), free)
        assert (plan.outcome, plan.rule, plan.shipments) == ("backordered", "near", ())
        assert len(plan.cascade) == 1 and plan.unfillable is None
        assert "next →" not in plan.reason


def test_past_the_last_rule_the_first_partial_is_kept_and_the_order_is_unfillable():
    split = step("split", ["WH-A", "WH-B"], split={"policy": "allowed", "partial": True})
    cfg = config([split, step("kazan", ["WH-C"])])
    plan = plan_one(cfg, order(lines=[("X", 5)]), {("WH-A", "X"): 1, ("WH-B", "X"): 1})
    assert plan.outcome == "partially_allocated" and plan.rule == "split"
    assert sorted(locations(plan)) == ["WH-A", "WH-B"]
    assert [(c["rule"], c["outcome"]) for c in plan.cascade] == [("split", "partial"), ("kazan", "nothing")]
    assert plan.unfillable == "exhausted"
    assert "kept the partial of rule split" in plan.reason and "no rule could fill the order" in plan.reason


def test_a_later_rule_that_fills_the_order_wins_and_the_earlier_partial_is_not_booked():
    split = step("split", ["WH-A", "WH-B"], split={"policy": "allowed", "partial": True})
    cfg = config([split, step("kazan", ["WH-C"])])
    free = {("WH-A", "X"): 1, ("WH-B", "X"): 1, ("WH-C", "X"): 5}
    first, second = plan_batch([order(1, [("X", 5)]), order(2, [("X", 2)])], free, cfg, now=NOW)
    assert (first.outcome, first.rule, locations(first)) == ("allocated", "kazan", ["WH-C"])
    # the partial "split" found for the first order took nothing: the second order gets WH-A and WH-B
    assert (second.outcome, second.rule, sorted(locations(second))) == (
        "allocated",
        "split",
        ["WH-A", "WH-B"],
    )


def test_max_distance_and_kinds_narrow_a_rules_candidates():
    near = step("near", candidates=["warehouses"], max_distance_km=100)
    cfg = config([near, step("any", candidates=["warehouses"], on_fail="stop")])
    plan = plan_one(cfg, order(lines=[("X", 1)]), {("WH-B", "X"): 5})
    assert (plan.rule, locations(plan)) == ("any", ["WH-B"])  # St Petersburg is ~630 km from Moscow
    assert (
        "WH-B: 6" in plan.cascade[0]["reason"]
        and "more than max_distance_km 100" in plan.cascade[0]["reason"]
    )
    plan = plan_one(cfg, order(lines=[("X", 1)]), {("WH-B", "X"): 5, ("WH-A", "X"): 5})
    assert (plan.rule, locations(plan)) == ("near", ["WH-A"])
    # kinds: only stores, and the Moscow store does not ship (it only hands over): no candidate
    stores = config([step("stores", candidates=["all"], kinds=["store"], on_fail="stop")])
    plan = plan_one(stores, order(lines=[("X", 1)]), {("WH-A", "X"): 5, ("ST-1", "X"): 5})
    assert plan.outcome == "backordered" and "WH-A: not a store location" in plan.reason


def test_unfillable_tells_never_from_not_yet():
    # no rule's candidates can ever reach the customer (too far): no_route, even with stock
    cfg = config([step("near", ["WH-B"], max_distance_km=100), step("kazan", ["WH-C"], max_distance_km=100)])
    plan = plan_one(cfg, order(lines=[("X", 1)]), {("WH-B", "X"): 5, ("WH-C", "X"): 5})
    assert (plan.outcome, plan.unfillable) == ("backordered", "no_route")
    assert "can ever serve it" in plan.reason
    # reachable but out of stock: exhausted (it waits)
    cfg = config([step("near", ["WH-B"]), step("kazan", ["WH-C"])])
    plan = plan_one(cfg, order(lines=[("X", 1)]), {})
    assert (plan.outcome, plan.unfillable) == ("backordered", "exhausted")


def test_an_order_assigned_to_a_warehouse_by_its_channel_tries_only_its_first_rule():
    cfg = config([step("a", ["WH-B"]), step("b", ["WH-C"])])
    plan = plan_one(cfg, order(lines=[("X", 1)], pinned_location="WH-A"), {("WH-C", "X"): 5})
    assert (plan.outcome, plan.rule, len(plan.cascade)) == ("backordered", "a", 1)
    assert plan.unfillable == "exhausted"  # its only rule says next: past it, the order is unfillable


# -- unfillable orders (Postgres) --------------------------------------------------------------------------

SKUS = {"KETTLE": 1500, "MUG": 400}


@pytest.fixture
def cfg(conn):
    config = sample_config()
    seed_reference(conn, config, SKUS)
    return config


def kazan_order(conn, cfg, **fields):
    """A paid web-store courier order to Kazan that nothing can fill now (the sample's courier cascade)."""
    oid = place(conn, [("KETTLE", 2)], region="Татарстан", **fields)
    res = allocate_batch(conn, [oid], config=cfg, now=NOW)
    assert res.backordered == [oid] and res.by_order()[oid].unfillable == "exhausted"
    return oid


def effects(conn, oid):
    return sorted(
        r[0]
        for r in conn.execute(
            "SELECT effect FROM oms.outbox WHERE payload->>'order_id' = %s", (str(oid),)
        ).fetchall()
    )


def test_an_exhausted_order_is_parked_after_waiting_then_cancelled_with_refund_and_notice(conn, cfg):
    oid = kazan_order(conn, cfg)
    d = latest_decision(conn, oid)
    assert d["unfillable"] == "exhausted"
    assert [c["rule"] for c in d["cascade"]] == ["region_warehouse", "default"]
    # web-store orders wait 2 days after they were placed (05:00) before they are parked
    assert unfillable.sweep(conn, cfg, now=NOW + timedelta(days=1)).parked == []
    later = NOW + timedelta(days=2)
    res = unfillable.sweep(conn, cfg, now=later)
    assert (res.parked, res.cancelled) == ([oid], [])
    [row] = unfillable.parked(conn)
    assert (row["order_id"], row["status"], row["verdict"], row["state"]) == (
        oid,
        "parked",
        "exhausted",
        "backordered",
    )
    assert row["auto_cancel_at"] == later + timedelta(days=5)
    assert unfillable.sweep(conn, cfg, now=later + timedelta(days=4)).cancelled == []
    res = unfillable.sweep(conn, cfg, now=later + timedelta(days=5))
    assert res.cancelled == [oid]
    assert (
        conn.execute("SELECT state FROM oms.orders WHERE order_id = %s", (oid,)).fetchone()[0] == "cancelled"
    )
    assert conn.execute("SELECT count(*) FROM oms.refunds WHERE order_id = %s", (oid,)).fetchone()[0] == 1
    assert effects(conn, oid) == ["channel.order_status", "notify.customer", "payment.refund"]
    assert unfillable.parked(conn) == []
    assert unfillable.parked(conn, include_closed=True)[0]["status"] == "cancelled"
    # a second run does nothing more
    assert unfillable.sweep(conn, cfg, now=later + timedelta(days=6)).metadata() == {
        "unfillable_parked": 0,
        "unfillable_cancelled": 0,
        "unfillable_resolved": 0,
    }


def test_a_cleared_order_keeps_waiting_and_is_never_parked_or_cancelled_again(conn, cfg):
    oid = kazan_order(conn, cfg)
    later = NOW + timedelta(days=3)
    assert unfillable.sweep(conn, cfg, now=later).parked == [oid]
    unfillable.clear(conn, oid, actor="dashboard:ops", reason="supplier delivery on Friday")
    [row] = unfillable.parked(conn)
    assert (row["status"], row["cleared_by"], row["auto_cancel_at"]) == ("cleared", "dashboard:ops", None)
    res = unfillable.sweep(conn, cfg, now=later + timedelta(days=30))
    assert (res.parked, res.cancelled) == ([], [])
    assert (
        conn.execute("SELECT state FROM oms.orders WHERE order_id = %s", (oid,)).fetchone()[0]
        == "backordered"
    )
    with pytest.raises(ValidationFailed, match=f"order {oid} is not parked as unfillable"):
        unfillable.clear(conn, oid, actor="dashboard:ops", reason="again")
    with pytest.raises(ValidationFailed, match="a reason of 1 to 500 characters"):
        unfillable.clear(conn, oid, actor="dashboard:ops", reason=" ")


def test_an_order_no_rule_can_ever_serve_is_parked_at_once(conn, cfg):
    data = yaml.safe_load(DEFAULT_PATH.read_text(encoding="utf-8"))
    for r in data["routing_rules"]:
        if r["name"] in ("region_warehouse", "default"):
            r["max_distance_km"] = 1  # no warehouse is within 1 km of a Kazan customer
    strict = parse_business_config(copy.deepcopy(data))
    oid = place(conn, [("KETTLE", 1)], region="Татарстан")
    receive(conn, "WH-KZN", {"KETTLE": 5})
    res = allocate_batch(conn, [oid], config=strict, now=NOW)
    assert res.backordered == [oid] and res.by_order()[oid].unfillable == "no_route"
    assert unfillable.sweep(conn, strict, now=NOW).parked == [oid]
    assert unfillable.parked(conn)[0]["auto_cancel_at"] == NOW + timedelta(days=5)


def test_a_parked_order_served_after_all_is_resolved_not_cancelled(conn, cfg):
    oid = kazan_order(conn, cfg)
    later = NOW + timedelta(days=3)
    assert unfillable.sweep(conn, cfg, now=later).parked == [oid]
    receive(conn, "WH-KZN", {"KETTLE": 5})
    assert allocate_batch(conn, config=cfg, now=later).allocated == [oid]
    res = unfillable.sweep(conn, cfg, now=later + timedelta(days=10))
    assert (res.resolved, res.cancelled) == (1, [])
    assert unfillable.parked(conn) == []
    assert (
        conn.execute("SELECT state FROM oms.orders WHERE order_id = %s", (oid,)).fetchone()[0] == "allocated"
    )


def test_the_dashboards_role_only_reads_parked_orders(conn, cfg):
    oid = kazan_order(conn, cfg)
    unfillable.sweep(conn, cfg, now=NOW + timedelta(days=3))
    for privilege, allowed in (("SELECT", True), ("INSERT", False), ("UPDATE", False), ("DELETE", False)):
        assert (
            conn.execute(
                "SELECT has_table_privilege('oms_dashboard', 'oms.unfillable_orders', %s)", (privilege,)
            ).fetchone()[0]
            is allowed
        )
    # clearing is an action of the OMS API (unfillable.clear), not something the dashboards' login can do
    with pytest.raises(psycopg.errors.InsufficientPrivilege), conn.transaction():
        conn.execute("SET LOCAL ROLE oms_dashboard")
        unfillable.clear(conn, oid, actor="dashboard:ops", reason="keep it")
    assert unfillable.parked(conn)[0]["status"] != "cleared"


def test_the_cli_lists_clears_and_sweeps(conn, cfg, db_url, monkeypatch):
    oid = kazan_order(conn, cfg)
    monkeypatch.setenv("OMS_DATABASE_URL", db_url)
    runner = CliRunner()
    # the CLI sweeps at the real clock: the order, placed on the test's date, has waited long enough
    out = runner.invoke(app, ["unfillable", "sweep"])
    assert out.exit_code == 0 and f'"parked": [{oid}]' in out.output, out.output
    out = runner.invoke(app, ["unfillable", "list"])
    assert out.exit_code == 0 and str(oid) in out.output and "parked" in out.output
    out = runner.invoke(app, ["unfillable", "clear", str(oid), "--reason", "stock on the way"])
    assert out.exit_code == 0, out.output
    out = runner.invoke(app, ["unfillable", "clear", str(oid)])
    assert out.exit_code == 1 and "is not parked as unfillable" in out.output


def test_the_cascade_options_are_validated_with_their_field_paths():
    from oms_ops.business_config import BusinessConfigError

    with pytest.raises(BusinessConfigError) as exc:
        config(
            [step("a", ["WH-A"], on_fail="retry", max_distance_km=0, kinds=["depot"])],
            edit=lambda d: d.update(unfillable={"wait_days": -1, "by_channel": {"aliexpress": {}}}),
        )
    text = str(exc.value)
    for expected in (
        "routing_rules[0].on_fail:",
        "routing_rules[0].max_distance_km:",
        "routing_rules[0].kinds[0]:",
        "unfillable.wait_days:",
    ):
        assert expected in text, text
    with pytest.raises(BusinessConfigError, match="unfillable.by_channel.aliexpress: unknown channel"):
        config([step("a", ["WH-A"])], edit=lambda d: d.update(unfillable={"by_channel": {"aliexpress": {}}}))
