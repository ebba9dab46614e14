"""Allocation against Postgres: reservations, ledger, decisions, state changes, backorders, expiry, reroute."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
import yaml

from oms_ops.allocation import (
    allocate_backorders,
    allocate_batch,
    expire_reservations,
    latest_decision,
    reroute,
)
from oms_ops.business_config import DEFAULT_PATH, parse_business_config
from oms_ops.db import connect
from oms_ops.errors import NotFound, ValidationFailed
from oms_ops.orders import cancel_orders
from oms_ops.reservations import consume_reservations, release_reservations
from tests.core.test_alloc_support import (
    NOW,
    active_reservations,
    order_state,
    place,
    receive,
    sample_config,
    seed_reference,
    stock,
    violations,
)

SKUS = {"KETTLE": 1500, "MUG": 400, "TEA": 250, "LAMP": 2000, "PROMO-1": 300}


@pytest.fixture
def cfg(conn):
    config = sample_config()
    seed_reference(conn, config, SKUS)
    return config


def events(conn, order_id, entity="order"):
    return [
        (r[0], r[1])
        for r in conn.execute(
            "SELECT from_state, to_state FROM oms.order_events WHERE order_id = %s AND entity = %s "
            "AND from_state IS NOT NULL ORDER BY event_id",
            (order_id, entity),
        )
    ]


def test_allocates_reserves_writes_ledger_decision_and_events(conn, cfg):
    receive(conn, "WH-MSK-POD", {"KETTLE": 5, "MUG": 10})
    receive(conn, "WH-SPB-SHU", {"KETTLE": 5, "MUG": 10})
    oid = place(conn, [("KETTLE", 1), ("MUG", 2)], region="Москва")

    result = allocate_batch(conn, config=cfg, now=NOW)

    assert result.allocated == [oid] and result.reserved_units == 3 and result.transactions >= 1
    assert order_state(conn, oid) == ("allocated", ["allocated", "allocated"])
    assert stock(conn)[("WH-MSK-POD", "KETTLE")] == (5, 1)
    assert stock(conn)[("WH-MSK-POD", "MUG")] == (10, 2)
    assert [r[1:] for r in active_reservations(conn, oid)] == [
        ("WH-MSK-POD", "KETTLE", 1),
        ("WH-MSK-POD", "MUG", 2),
    ]
    d = latest_decision(conn, oid)
    assert (d["kind"], d["outcome"], d["rule_name"], d["locations"]) == (
        "allocate",
        "allocated",
        "moscow_courier",
        ["WH-MSK-POD"],
    )
    assert d["shipments"][0]["carrier"] == "own_courier" and d["candidates"][0]["locations"] == ["WH-MSK-POD"]
    assert len(d["candidates"]) >= 2 and d["config_fingerprint"] == cfg.fingerprint
    assert "moscow_courier" in d["reason"]
    ledger = conn.execute(
        "SELECT kind, reserved_delta, reference FROM oms.inventory_ledger WHERE order_id = %s ORDER BY entry_id",
        (oid,),
    ).fetchall()
    assert ledger == [
        ("reservation", 1, f"decision:{d['decision_id']}"),
        ("reservation", 2, f"decision:{d['decision_id']}"),
    ]
    assert events(conn, oid) == [("new", "allocated")]
    assert conn.execute(
        "SELECT allocated_at IS NOT NULL FROM oms.orders WHERE order_id = %s", (oid,)
    ).fetchone()[0]
    assert violations(conn) == []
    # nothing left to do: a second run changes nothing
    again = allocate_batch(conn, config=cfg, now=NOW)
    assert again.outcomes == [] and stock(conn)[("WH-MSK-POD", "MUG")] == (10, 2)


def test_short_on_three_lines_reports_them_all_and_reserves_nothing(conn, cfg):
    receive(conn, "WH-MSK-POD", {"KETTLE": 5, "MUG": 1, "TEA": 1})
    oid = place(conn, [("KETTLE", 1), ("MUG", 3), ("TEA", 2), ("LAMP", 1)], channel="ozon")
    before = stock(conn)

    result = allocate_batch(conn, config=cfg, now=NOW)

    (out,) = result.outcomes
    assert out.outcome == "backordered" and out.reserved_units == 0
    assert [(s.sku, s.requested) for s in out.short] == [("MUG", 3), ("TEA", 2), ("LAMP", 1)]
    assert stock(conn) == before and active_reservations(conn) == []
    assert order_state(conn, oid) == ("backordered", ["backordered"] * 4)
    d = latest_decision(conn, oid)
    assert [s["sku"] for s in d["short_lines"]] == ["MUG", "TEA", "LAMP"] and d["outcome"] == "backordered"
    assert violations(conn) == []


def test_never_split_order_waits_whole_and_split_allowed_order_ships_from_two(conn, cfg):
    receive(conn, "WH-MSK-POD", {"KETTLE": 5})
    receive(conn, "WH-SPB-SHU", {"MUG": 5})
    never = place(conn, [("KETTLE", 1), ("MUG", 1)], channel="ozon", region="Казань")  # marketplace: never
    split = place(conn, [("KETTLE", 1), ("MUG", 1)], channel="webstore", region="Москва")  # moscow: allowed

    result = allocate_batch(conn, config=cfg, now=NOW).by_order()

    assert result[never].outcome == "backordered" and "may not be split" in result[never].reason
    assert active_reservations(conn, never) == []
    assert result[split].outcome == "allocated" and sorted(result[split].locations) == [
        "WH-MSK-POD",
        "WH-SPB-SHU",
    ]
    assert latest_decision(conn, split)["candidates"][0]["split_penalty"] == 350


def test_partial_allocation_then_backorder_fill_on_receipt(conn, cfg):
    receive(conn, "WH-KZN", {"LAMP": 2})
    # the default rule splits orders from 15 000 RUB and reserves what exists
    oid = place(conn, [("LAMP", 2), ("TEA", 3)], region="Казань", price=5000)

    first = allocate_batch(conn, config=cfg, now=NOW).by_order()[oid]
    assert first.outcome == "partially_allocated" and first.reserved_units == 2
    assert order_state(conn, oid) == ("partially_allocated", ["allocated", "backordered"])
    # nothing new: retrying changes nothing and records no new decision
    decisions = conn.execute("SELECT count(*) FROM oms.allocation_decisions").fetchone()[0]
    assert allocate_batch(conn, config=cfg, now=NOW).outcomes == []
    assert conn.execute("SELECT count(*) FROM oms.allocation_decisions").fetchone()[0] == decisions

    receive(conn, "WH-KZN", {"TEA": 3})
    filled = allocate_backorders(conn, config=cfg, now=NOW).by_order()[oid]
    assert filled.outcome == "allocated" and filled.reserved_units == 3
    assert order_state(conn, oid) == ("allocated", ["allocated", "allocated"])
    assert events(conn, oid) == [("new", "partially_allocated"), ("partially_allocated", "allocated")]
    assert violations(conn) == []


def test_backorders_are_filled_first_in_first_out(conn, cfg):
    t0 = datetime(2025, 11, 25, 10, 0, tzinfo=UTC)
    younger = place(conn, [("MUG", 1)], placed_at=t0 + timedelta(hours=2))  # lower id, placed later
    older = place(conn, [("MUG", 1)], placed_at=t0)
    allocate_batch(conn, config=cfg, now=NOW)
    assert order_state(conn, older)[0] == order_state(conn, younger)[0] == "backordered"

    receive(conn, "WH-MSK-POD", {"MUG": 1})
    result = allocate_backorders(conn, config=cfg, now=NOW)

    assert result.allocated == [older]
    assert order_state(conn, younger)[0] == "backordered"
    assert [o.order_id for o in result.outcomes] == [older, younger]  # served in placed_at order


def test_safety_stock_holds_back_units_per_channel(conn, cfg):
    receive(conn, "WH-MSK-POD", {"MUG": 1})
    ozon = place(conn, [("MUG", 1)], channel="ozon", placed_at=datetime(2025, 11, 26, 4, 0, tzinfo=UTC))
    web = place(conn, [("MUG", 1)], channel="webstore")
    result = allocate_batch(conn, config=cfg, now=NOW).by_order()
    assert result[ozon].outcome == "backordered"  # Ozon keeps one unit back
    assert result[web].outcome == "allocated"


def test_click_and_collect_reserves_at_the_chosen_store(conn, cfg):
    receive(conn, "ST-MSK-1", {"KETTLE": 4})
    receive(conn, "WH-MSK-POD", {"KETTLE": 10})
    oid = place(conn, [("KETTLE", 1)], method="store_pickup", pickup="ST-MSK-1", region=None)
    allocate_batch(conn, config=cfg, now=NOW)
    assert [r[1] for r in active_reservations(conn, oid)] == ["ST-MSK-1"]
    assert latest_decision(conn, oid)["shipments"][0]["handover"] is True


def test_pickup_point_is_fed_by_a_warehouse(conn, cfg):
    receive(conn, "WH-MSK-POD", {"KETTLE": 10})
    oid = place(conn, [("KETTLE", 1)], method="pickup_point", pickup="PP-MSK-1", region=None)
    allocate_batch(conn, config=cfg, now=NOW)
    d = latest_decision(conn, oid)
    assert d["rule_name"] == "pickup_point" and d["locations"] == ["WH-MSK-POD"]
    assert d["shipments"][0]["handover"] is False and d["shipments"][0]["carrier"] == "cdek"


def test_capacity_bookings_are_recorded(conn, cfg):
    receive(conn, "WH-MSK-POD", {"MUG": 10})
    for _ in range(3):
        place(conn, [("MUG", 1)])
    allocate_batch(conn, config=cfg, now=NOW)
    assert conn.execute(
        "SELECT location_code, ship_date, shipments FROM oms.location_capacity_usage"
    ).fetchall() == [("WH-MSK-POD", NOW.date(), 3)]


def test_explicit_ids_limit_and_chunks(conn, cfg):
    receive(conn, "WH-MSK-POD", {"MUG": 100})
    ids = [place(conn, [("MUG", 1)], placed_at=datetime(2025, 11, 26, 1, i, tzinfo=UTC)) for i in range(7)]
    only = allocate_batch(conn, [ids[5], ids[6], 999999], config=cfg, now=NOW)
    assert only.allocated == [ids[5], ids[6]] and only.skipped == [999999]
    limited = allocate_batch(conn, config=cfg, now=NOW, limit=3, chunk_size=2)
    assert limited.allocated == ids[:3] and limited.transactions == 2
    rest = allocate_batch(conn, config=cfg, now=NOW, chunk_size=1)
    assert rest.allocated == ids[3:5]


def test_an_order_locked_by_another_operation_is_skipped_not_waited_for(conn, cfg, db_url):
    receive(conn, "WH-MSK-POD", {"MUG": 10})
    busy = place(conn, [("MUG", 1)])
    free = place(conn, [("MUG", 1)])
    with connect(db_url) as other, other.transaction():
        other.execute("SELECT 1 FROM oms.orders WHERE order_id = %s FOR UPDATE", (busy,))
        result = allocate_batch(conn, [busy, free], config=cfg, now=NOW)
    assert result.allocated == [free] and result.skipped == [busy]


def test_unpaid_prepaid_reservations_expire_and_the_order_goes_on_hold(conn, cfg):
    receive(conn, "WH-MSK-POD", {"MUG": 10})
    unpaid = place(conn, [("MUG", 2)], paid=False)
    paid_later = place(conn, [("MUG", 1)], paid=False)
    marketplace = place(conn, [("MUG", 1)], channel="ozon", paid=False)  # Ozon collects the money: no expiry
    allocate_batch(conn, config=cfg, now=NOW)
    expiry = {
        r[0]: r[1]
        for r in conn.execute("SELECT order_id, expires_at FROM oms.reservations WHERE state = 'active'")
    }
    assert expiry[unpaid] == NOW + timedelta(minutes=30) and expiry[marketplace] is None
    conn.execute("UPDATE oms.orders SET payment_status = 'paid' WHERE order_id = %s", (paid_later,))

    assert expire_reservations(conn, now=NOW + timedelta(minutes=29)) == 0
    assert expire_reservations(conn, now=NOW + timedelta(minutes=31)) == 1

    assert order_state(conn, unpaid) == ("on_hold", ["new"])
    assert conn.execute("SELECT hold_code FROM oms.orders WHERE order_id = %s", (unpaid,)).fetchone() == (
        "payment_timeout",
    )
    assert conn.execute("SELECT state FROM oms.reservations WHERE order_id = %s", (unpaid,)).fetchall() == [
        ("expired",)
    ]
    assert order_state(conn, paid_later)[0] == "allocated"
    assert conn.execute(
        "SELECT expires_at FROM oms.reservations WHERE order_id = %s", (paid_later,)
    ).fetchone() == (None,)
    assert stock(conn)[("WH-MSK-POD", "MUG")] == (10, 2)
    assert violations(conn) == []
    # an expired order on hold is not allocated again
    assert allocate_batch(conn, config=cfg, now=NOW + timedelta(minutes=32)).outcomes == []


def test_reroute_moves_the_reservation_and_records_why(conn, cfg):
    receive(conn, "WH-MSK-POD", {"KETTLE": 5})
    receive(conn, "WH-SPB-SHU", {"KETTLE": 5})
    oid = place(conn, [("KETTLE", 2)])
    allocate_batch(conn, config=cfg, now=NOW)
    assert [r[1] for r in active_reservations(conn, oid)] == ["WH-MSK-POD"]

    result = reroute(
        conn,
        oid,
        config=cfg,
        actor="ops:anna",
        reason="conveyor down",
        exclude_locations=["WH-MSK-POD"],
        now=NOW,
    )

    assert result.allocated == [oid]
    assert [r[1] for r in active_reservations(conn, oid)] == ["WH-SPB-SHU"]
    assert stock(conn)[("WH-MSK-POD", "KETTLE")] == (5, 0) and stock(conn)[("WH-SPB-SHU", "KETTLE")] == (5, 2)
    assert events(conn, oid) == [("new", "allocated"), ("allocated", "new"), ("new", "allocated")]
    d = latest_decision(conn, oid)
    assert (d["kind"], d["actor"], d["locations"]) == ("reroute", "ops:anna", ["WH-SPB-SHU"])
    assert violations(conn) == []


def test_reroute_with_nowhere_to_go_backorders_and_refuses_picked_orders(conn, cfg):
    receive(conn, "WH-MSK-POD", {"KETTLE": 5})
    oid = place(conn, [("KETTLE", 2)])
    allocate_batch(conn, config=cfg, now=NOW)
    result = reroute(
        conn, oid, config=cfg, actor="ops", reason="x", exclude_locations=["WH-MSK-POD"], now=NOW
    )
    assert result.backordered == [oid] and active_reservations(conn, oid) == []
    assert stock(conn)[("WH-MSK-POD", "KETTLE")] == (5, 0)
    with pytest.raises(NotFound):
        reroute(conn, 424242, config=cfg, actor="ops", reason="x")
    conn.execute("UPDATE oms.orders SET state = 'picking' WHERE order_id = %s", (oid,))
    with pytest.raises(ValidationFailed, match="picking"):
        reroute(conn, oid, config=cfg, actor="ops", reason="x")


def test_a_marketplace_order_ships_from_its_assigned_warehouse_and_is_not_rerouted_away(conn, cfg):
    receive(conn, "WH-MSK-POD", {"KETTLE": 5})
    receive(conn, "WH-SPB-SHU", {"KETTLE": 5})
    # a Moscow buyer, but the marketplace assigned the posting to the St Petersburg warehouse
    oid = place(conn, [("KETTLE", 1)], channel="ozon", region="Москва", fulfilment="WH-SPB-SHU")
    assert allocate_batch(conn, config=cfg, now=NOW).allocated == [oid]
    assert [r[1] for r in active_reservations(conn, oid)] == ["WH-SPB-SHU"]
    with pytest.raises(ValidationFailed, match="assigned to WH-SPB-SHU by its channel"):
        reroute(conn, oid, config=cfg, actor="ops", reason="x", exclude_locations=["WH-SPB-SHU"], now=NOW)
    assert [r[1] for r in active_reservations(conn, oid)] == ["WH-SPB-SHU"]
    # nothing at the assigned warehouse: the order waits for it rather than shipping from Moscow
    waiting = place(conn, [("KETTLE", 9)], channel="ozon", fulfilment="WH-SPB-SHU")
    assert allocate_batch(conn, [waiting], config=cfg, now=NOW).backordered == [waiting]
    assert violations(conn) == []


def test_cancel_releases_through_release_reservations(conn, cfg):
    receive(conn, "WH-MSK-POD", {"MUG": 5})
    oid = place(conn, [("MUG", 3)])
    allocate_batch(conn, config=cfg, now=NOW)
    cancel_orders(conn, [oid], reason="customer changed mind", actor="ops")
    assert stock(conn)[("WH-MSK-POD", "MUG")] == (5, 0)
    assert conn.execute("SELECT state FROM oms.reservations WHERE order_id = %s", (oid,)).fetchall() == [
        ("released",)
    ]
    with conn.transaction():
        assert release_reservations(conn, order_ids=[oid], actor="ops", reason="again") == 0
    assert violations(conn) == []


def test_consume_reservations_ships_part_then_the_rest(conn, cfg):
    receive(conn, "WH-MSK-POD", {"MUG": 5})
    oid = place(conn, [("MUG", 3)])
    allocate_batch(conn, config=cfg, now=NOW)
    (line_id,) = [r[0] for r in active_reservations(conn, oid)]

    with conn.transaction():
        consume_reservations(conn, line_qty=[(line_id, "WH-MSK-POD", 2)], actor="wms", reason="shipped")
    assert stock(conn)[("WH-MSK-POD", "MUG")] == (3, 1)
    states = conn.execute(
        "SELECT state, qty FROM oms.reservations WHERE order_id = %s ORDER BY reservation_id", (oid,)
    ).fetchall()
    assert states == [("active", 1), ("consumed", 2)]
    with pytest.raises(ValidationFailed) as exc, conn.transaction():
        consume_reservations(
            conn, line_qty=[(line_id, "WH-MSK-POD", 2), (line_id, "WH-SPB-SHU", 1)], actor="wms", reason="x"
        )
    assert "ship 2, only 1 reserved" in str(exc.value) and "WH-SPB-SHU: ship 1, only 0" in str(exc.value)
    with conn.transaction():
        consume_reservations(conn, line_qty=[(line_id, "WH-MSK-POD", 1)], actor="wms", reason="shipped")
    assert stock(conn)[("WH-MSK-POD", "MUG")] == (2, 0)
    assert active_reservations(conn, oid) == []
    # shipment rows are the ship step; here only the stock side of shipping is exercised
    assert violations(conn, ignore=("line_shipped_equals_consumed_reservations",)) == []


def test_guard_refuses_a_plan_that_does_not_fit(conn, cfg, monkeypatch):
    """Belt and braces: if the planner ever over-reserved, the guarded UPDATE and CHECK stop it."""
    import oms_ops.allocation as allocation
    from oms_ops.routing import plan_batch as real_plan

    receive(conn, "WH-MSK-POD", {"MUG": 1})
    oid = place(conn, [("MUG", 1)])

    def greedy(demands, free, ctx, **kw):
        return real_plan(demands, {k: v + 5 for k, v in free.items()}, ctx, **kw)

    conn.execute("UPDATE oms.order_lines SET qty = 3 WHERE order_id = %s", (oid,))
    monkeypatch.setattr(allocation, "plan_batch", greedy)
    with pytest.raises(allocation.AllocationError):
        allocate_batch(conn, config=cfg, now=NOW)
    assert stock(conn)[("WH-MSK-POD", "MUG")] == (1, 0) and active_reservations(conn) == []
    assert latest_decision(conn, oid) is None and order_state(conn, oid)[0] == "new"


def test_config_with_a_disabled_location_is_respected(conn, cfg):
    data = yaml.safe_load(DEFAULT_PATH.read_text(encoding="utf-8"))
    data = copy.deepcopy(data)
    for loc in data["locations"]:
        if loc["code"] == "WH-MSK-POD":
            loc["active"] = False
    closed = parse_business_config(data)
    receive(conn, "WH-MSK-POD", {"MUG": 5})
    receive(conn, "WH-SPB-SHU", {"MUG": 5})
    oid = place(conn, [("MUG", 1)])
    allocate_batch(conn, config=closed, now=NOW)
    assert [r[1] for r in active_reservations(conn, oid)] == ["WH-SPB-SHU"]


def test_stock_check_constraint_makes_oversell_impossible(conn, cfg):
    receive(conn, "WH-MSK-POD", {"MUG": 1})
    with pytest.raises(psycopg.errors.CheckViolation):
        conn.execute("UPDATE oms.stock SET reserved = 2 WHERE sku = 'MUG'")
