"""KPI marts and shipments cancelled before hand-over: a cancelled parcel is never "shipped" (no shipped_at,
not in the order's shipment count) and does not hold its order back from shipped — the order's departure is
its new parcel's. The shipment states' accepted values include ``cancelled`` (the dbt tests run in the build)."""

from __future__ import annotations

from oms_ops.allocation import allocate_batch
from oms_ops.business_config import load_business_config
from oms_ops.fulfillment import create_shipment, hand_over, pack, record_pick
from oms_ops.shipment_cancel import cancel_shipment
from tests.analytics.history import ACTOR, WAREHOUSE, add_orders, ts
from tests.analytics.test_kpi_marts import run_pipeline


def _ship(conn, order_id):
    record_pick(conn, order_id, WAREHOUSE, actor=ACTOR)
    pack(conn, order_id, WAREHOUSE, actor=ACTOR)
    return create_shipment(conn, order_id, WAREHOUSE, carrier_code="cdek", actor=ACTOR).shipment_id


def test_a_cancelled_parcel_is_never_shipped_in_the_marts(history, conn, ch_client, ch_env, dbt):
    again, lost = add_orders(conn, 2, start=300)
    allocate_batch(conn, config=load_business_config(), actor=ACTOR, now=ts("2025-02-02 06:00:00"))
    # "again": called back before hand-over, its units re-reserved, shipped in a new parcel
    first = _ship(conn, again)
    cancel_shipment(conn, first, location_code=WAREHOUSE, actor=ACTOR, reason="damaged on the packing table")
    second = _ship(conn, again)
    hand_over(conn, [second], actor=ACTOR, at=ts("2025-02-02 15:00:00"))
    # "lost": called back, stock untouched, not shipped again
    gone = _ship(conn, lost)
    cancel_shipment(conn, gone, location_code=None, actor=ACTOR, reason="parcel lost")

    run_pipeline(conn, ch_client, ch_env, dbt)

    shipments = {
        r["shipment_id"]: r
        for r in ch_client.query(
            "SELECT shipment_id, shipment_status, is_cancelled, shipped_at FROM fct_shipments "
            "WHERE shipment_id IN ({ids:Array(Int64)})",
            parameters={"ids": [first, second, gone]},
        ).named_results()
    }
    assert shipments[first]["shipment_status"] == "cancelled" and shipments[first]["is_cancelled"]
    assert shipments[first]["shipped_at"] is None and shipments[gone]["shipped_at"] is None
    assert not shipments[second]["is_cancelled"] and shipments[second]["shipped_at"] is not None
    orders = {
        r["order_id"]: r
        for r in ch_client.query(
            "SELECT order_id, is_shipped, shipment_count, shipped_at, units_shipped FROM fct_orders "
            "WHERE order_id IN ({ids:Array(Int64)})",
            parameters={"ids": [again, lost]},
        ).named_results()
    }
    assert orders[again]["is_shipped"] and orders[again]["shipment_count"] == 1
    assert orders[again]["shipped_at"] == shipments[second]["shipped_at"]
    assert not orders[lost]["is_shipped"] and orders[lost]["shipment_count"] == 0
    assert orders[lost]["units_shipped"] == 0
