"""The KPI marts reconcile with figures computed independently from Postgres, survive re-runs unchanged,
follow incremental changes, and come out the same after a replication crash mid-batch."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

import pytest

from oms_ops.allocation import allocate_batch
from oms_ops.analytics.replication import (
    DEFAULT_SPECS,
    ReplicationInterrupted,
    replicate_all,
    replicate_table,
)
from oms_ops.business_config import load_business_config
from oms_ops.fulfillment import create_shipment, hand_over, mark_delivered, pack, record_pick
from oms_ops.orders import cancel_orders
from oms_ops.returns import receive_return, request_return
from tests.analytics.expected import assert_close, daily_kpis, orders_from_postgres
from tests.analytics.history import ACTOR, WAREHOUSE, add_orders, ts

MARTS = {
    "fct_orders": "order_id",
    "fct_order_lines": "line_id",
    "fct_shipments": "shipment_id",
    "fct_returns": "return_line_id",
    "int_orders_lifecycle": "order_id",
    "agg_kpi_daily": "(date_day, channel_code, location_code)",
}
RATE_COLUMNS = (
    "cancellation_rate_pct",
    "on_time_shipment_pct",
    "on_time_delivery_pct",
    "pick_accuracy_pct",
    "return_rate_units_pct",
    "return_rate_orders_pct",
    "return_rate_revenue_pct",
    "backorder_rate_pct",
    "split_shipment_rate_pct",
    "perfect_order_rate_pct",
)
COUNT_COLUMNS = (
    "orders_placed",
    "orders_cancelled",
    "orders_sold",
    "units_ordered",
    "units_sold",
    "revenue",
    "orders_shipped",
    "orders_delivered",
    "orders_shipped_with_ship_by",
    "orders_shipped_on_time",
    "orders_delivered_with_promise",
    "orders_delivered_on_time",
    "orders_picked",
    "orders_picked_accurately",
    "units_returned",
    "orders_returned",
    "returned_revenue",
    "top_return_reasons",
    "orders_backordered",
    "orders_split_shipment",
    "shipping_cost",
    "orders_perfect",
)


def run_pipeline(conn, ch_client, ch_env, dbt, *extra: str) -> None:
    replicate_all(conn, ch_client)
    dbt(ch_env, "build", *extra)


def snapshot(ch_client) -> dict[str, list[tuple]]:
    """Every row of the marts (sorted), after checking that no key appears twice."""
    out = {}
    for table, key in MARTS.items():
        # table and key names are the constants above
        assert ch_client.command(f"SELECT count() - uniqExact({key}) FROM {table}") == 0, table  # noqa: S608
        out[table] = ch_client.query(f"SELECT * FROM {table} ORDER BY ALL").result_rows  # noqa: S608
    return out


def reconcile(conn, ch_client) -> dict:
    """Assert fct_orders and agg_kpi_daily equal what Postgres says; return the expected daily KPIs."""
    orders = orders_from_postgres(conn)
    facts = {
        r["order_id"]: r
        for r in ch_client.query(
            """SELECT order_id, channel_code, location_code, placed_date, is_cancelled, units_ordered, units_sold,
                      revenue, shipped_at, delivered_at, fulfillment_seconds, delivery_seconds, is_shipped_on_time,
                      is_delivered_on_time, is_perfect_order, units_returned, shipment_count
               FROM fct_orders"""
        ).named_results()
    }
    assert set(facts) == set(orders)
    for oid, exp in orders.items():
        got = facts[oid]
        what = f"order {oid}"
        assert (got["channel_code"], got["location_code"], got["placed_date"]) == (
            exp.channel_code,
            exp.location_code,
            exp.placed_date,
        ), what
        assert (got["is_cancelled"], got["units_ordered"], got["units_sold"], got["revenue"]) == (
            exp.is_cancelled,
            exp.units_ordered,
            exp.units_sold,
            exp.revenue,
        ), what
        assert (got["units_returned"], got["shipment_count"]) == (exp.units_returned, exp.shipment_count), (
            what
        )
        assert_close(
            got["fulfillment_seconds"], exp.fulfillment_seconds, what=f"{what} fulfilment", seconds=True
        )
        assert_close(got["delivery_seconds"], exp.delivery_seconds, what=f"{what} cycle time", seconds=True)
        assert got["is_shipped_on_time"] == exp.shipped_on_time, what
        assert got["is_delivered_on_time"] == exp.delivered_on_time, what
        assert got["is_perfect_order"] == exp.perfect, what

    expected = daily_kpis(orders)
    rows = {
        (r["date_day"], r["channel_code"], r["location_code"]): r
        for r in ch_client.query("SELECT * FROM agg_kpi_daily").named_results()
    }
    assert set(rows) == set(expected)
    for key, exp in expected.items():
        got = rows[key]
        for col in COUNT_COLUMNS:
            assert_close(got[col], exp[col], what=f"{key} {col}")
        for col in RATE_COLUMNS:
            assert_close(got[col], exp[col], what=f"{key} {col}")
        for kpi in ("fulfillment", "delivery"):
            for p in ("p50", "p90"):
                hours = got[f"{kpi}_hours_{p}"]
                assert_close(
                    None if hours is None else hours * 3600,
                    exp[f"{kpi}_seconds_{p}"],
                    what=f"{key} {kpi} {p}",
                    seconds=True,
                )
        per_order = None if exp["orders_shipped"] == 0 else exp["shipping_cost"] / exp["orders_shipped"]
        assert_close(
            got["shipping_cost_per_order"],
            None if per_order is None else per_order.quantize(Decimal("0.01"), rounding="ROUND_DOWN"),
            what=f"{key} shipping cost per order",
        )
    return expected


def test_marts_reconcile_with_postgres_and_rerunning_changes_nothing(history, conn, ch_client, ch_env, dbt):
    run_pipeline(
        conn, ch_client, ch_env, dbt, "--resource-types", "all"
    )  # this build runs the unit tests too
    expected = reconcile(conn, ch_client)

    # the known history, spelled out (so a rule both sides got wrong cannot pass silently)
    jan31 = expected[(date(2025, 1, 31), "webstore", WAREHOUSE)]
    assert (jan31["orders_placed"], jan31["orders_cancelled"], jan31["orders_shipped"]) == (3, 1, 2)
    assert jan31["fulfillment_seconds_p50"] == (6 * 3600 + (2 * 86400 + 23 * 3600)) / 2  # O1 6h, O4 2d23h
    assert jan31["top_return_reasons"] == ["size_fit"] and jan31["units_returned"] == 1
    o2 = expected[(date(2025, 2, 1), "ozon", WAREHOUSE)]  # placed 31 Jan 22:30 UTC = 1 Feb in Moscow
    assert o2["delivery_seconds_p50"] == (4 * 86400 + 9.5 * 3600)  # the LAST of its two deliveries
    assert (o2["orders_split_shipment"], o2["orders_picked_accurately"], o2["orders_backordered"]) == (
        1,
        0,
        1,
    )
    assert (date(2025, 2, 1), "wildberries", "UNASSIGNED") in expected

    before = snapshot(ch_client)
    run_pipeline(conn, ch_client, ch_env, dbt)
    assert snapshot(ch_client) == before


def new_activity(conn, history) -> None:
    """O4 is delivered, O5 cancelled, O2 gets a damaged-goods return, new orders arrive and one ships."""
    config = load_business_config()
    mark_delivered(conn, history.shipments["O4"], actor=ACTOR, at=ts("2025-02-06 12:00:00"))
    cancel_orders(conn, [history.orders["O5"]], reason="out of stock", actor=ACTOR)
    line_c = conn.execute(
        "SELECT line_id FROM oms.order_lines WHERE order_id = %s AND split_from_line_id IS NULL",
        (history.orders["O2"],),
    ).fetchone()[0]
    ret = request_return(conn, history.orders["O2"], [(line_c, 1, "damaged_in_transit")], actor=ACTOR)
    receive_return(conn, ret.return_id, location_code=WAREHOUSE, actor=ACTOR)
    new = add_orders(conn, 3, start=100)
    allocate_batch(conn, config=config, actor=ACTOR, now=ts("2025-02-02 06:00:00"))
    record_pick(conn, new[0], WAREHOUSE, actor=ACTOR)
    pack(conn, new[0], WAREHOUSE, actor=ACTOR)
    shipment = create_shipment(conn, new[0], WAREHOUSE, carrier_code="cdek", actor=ACTOR)
    hand_over(conn, [shipment.shipment_id], actor=ACTOR, at=ts("2025-02-02 14:00:00"))


def test_incremental_run_after_a_crash_mid_batch_gives_the_marts_postgres_expects(
    history, conn, ch_client, ch_env, dbt
):
    run_pipeline(conn, ch_client, ch_env, dbt)
    new_activity(conn, history)

    # a replication run dies after the first page of order_lines; the tables after it are not copied at all
    for spec in DEFAULT_SPECS:
        if spec.name == "order_lines":
            with pytest.raises(ReplicationInterrupted):
                replicate_table(conn, ch_client, spec, batch_rows=1, fail_after_batches=1)
            break
        replicate_table(conn, ch_client, spec)
    dbt(ch_env, "build", expect_success=False)  # the marts see half a replication (tests may complain)

    # the re-run: incremental replication and incremental marts converge on what Postgres says
    run_pipeline(conn, ch_client, ch_env, dbt)
    expected = reconcile(conn, ch_client)
    o2 = expected[(date(2025, 2, 1), "ozon", WAREHOUSE)]
    assert o2["orders_perfect"] == 0 and o2["top_return_reasons"] == ["damaged_in_transit"]
    jan31 = expected[(date(2025, 2, 1), "wildberries", "UNASSIGNED")]
    assert (jan31["orders_cancelled"], jan31["orders_backordered"]) == (1, 1)
    assert expected[(date(2025, 2, 2), "webstore", WAREHOUSE)]["orders_placed"] == 3
    assert expected[(date(2025, 1, 31), "webstore", WAREHOUSE)]["orders_delivered"] == 2  # O1 and now O4
    snapshot(ch_client)  # exactly one row per key after all of it
