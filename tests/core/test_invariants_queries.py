"""check_invariants reports each broken invariant with its numbers; read helpers find orders."""

from __future__ import annotations

from datetime import timedelta

from oms_ops import fulfillment as ff
from oms_ops import queries
from oms_ops.fulfillment import TrackingEvent
from oms_ops.invariants import check_invariants
from tests.core import factories as f


def by_name(violations):
    out = {}
    for v in violations:
        out.setdefault(v.invariant, []).append(v)
    return out


def test_healthy_database_has_no_violations(conn):
    f.world(conn)
    f.shipped_order(conn)
    f.allocated_order(conn)
    assert check_invariants(conn) == []


def test_each_broken_invariant_is_reported_with_numbers(conn):
    f.world(conn)
    oid = f.allocated_order(conn, [("SKU-1", 2)])
    (line,) = f.line_ids(conn, oid)
    # ledger entry without the stock change
    conn.execute("""INSERT INTO oms.inventory_ledger (location_code, sku, kind, on_hand_delta, actor)
                    VALUES ('WH-MSK', 'SKU-2', 'adjustment', 3, 'rogue')""")
    # reserved moved without a reservation or ledger entry
    conn.execute(
        "UPDATE oms.stock SET reserved = reserved + 1 WHERE location_code = 'WH-SPB' AND sku = 'SKU-3'"
    )
    # a second reservation of the same line (over-reserved) and shipped qty without a shipment
    conn.execute(
        """INSERT INTO oms.reservations (order_id, line_id, location_code, sku, qty, state)
                    VALUES (%s, %s, 'WH-SPB', 'SKU-1', 2, 'consumed')""",
        (oid, line),
    )
    conn.execute("UPDATE oms.order_lines SET qty_shipped = 1 WHERE line_id = %s", (line,))
    conn.execute("UPDATE oms.orders SET state = 'cancelled' WHERE order_id = %s", (oid,))
    v = by_name(check_invariants(conn))
    assert (
        str(v["stock_on_hand_equals_ledger"][0])
        == "stock_on_hand_equals_ledger [WH-MSK/SKU-2]: stock_on_hand=10, ledger_on_hand=13"
    )
    assert v["stock_reserved_equals_ledger"][0].numbers == {"stock_reserved": 1, "ledger_reserved": 0}
    assert v["stock_reserved_equals_active_reservations"][0].key == "WH-SPB/SKU-3"
    assert v["line_reserved_at_most_once"][0].numbers == {
        "qty": 2,
        "qty_cancelled": 0,
        "reserved_active_or_consumed": 4,
    }
    assert v["line_shipped_equals_shipment_lines"][0].numbers == {"qty_shipped": 1, "shipment_lines_qty": 0}
    assert v["line_shipped_equals_consumed_reservations"][0].numbers == {
        "qty_shipped": 1,
        "consumed_reservations": 2,
    }
    assert v["no_active_reservation_on_closed_order"][0].key == f"order {oid} (cancelled)"
    conn.execute("UPDATE oms.orders SET state = 'lost' WHERE order_id = %s", (oid,))
    assert by_name(check_invariants(conn))["state_in_transition_table"][0].key == "order state 'lost'"


def test_find_orders_and_timeline(conn):
    f.world(conn)
    oid, sid = f.shipped_order(conn, customer_phone="+7 (915) 123-45-67", channel_order_number="OZ-777")
    other = f.order(conn)
    ff.record_carrier_booking(conn, sid, tracking_number="CDEK-42", actor="cdek")
    ff.record_tracking_events(
        conn,
        [
            TrackingEvent(
                "cdek", "RECEIVED_AT_SHIPMENT_WAREHOUSE", f.T0 + timedelta(days=1), tracking_number="CDEK-42"
            )
        ],
    )
    number = conn.execute("SELECT order_number FROM oms.orders WHERE order_id = %s", (oid,)).fetchone()[0]
    assert queries.find_orders(conn, order_number=number) == [oid]
    assert queries.find_orders(conn, order_number="OZ-777") == [oid]
    assert queries.find_orders(conn, phone="8 915 123 45 67") == [oid]
    assert queries.find_orders(conn, tracking_number="CDEK-42") == [oid]
    ext = conn.execute("SELECT external_id FROM oms.orders WHERE order_id = %s", (other,)).fetchone()[0]
    assert queries.find_orders(conn, channel_code="webstore", external_id=ext) == [other]
    (tl,) = queries.lookup_timeline(conn, tracking_number="CDEK-42")
    assert tl.order["order_id"] == oid and len(tl.lines) == 1 and len(tl.shipments) == 1
    assert [e["to_state"] for e in tl.events if e["entity"] == "order"] == [
        "new",
        "allocated",
        "picking",
        "packed",
        "shipped",
    ]
    assert [t["status_code"] for t in tl.tracking] == ["RECEIVED_AT_SHIPMENT_WAREHOUSE"]
