"""The API action ``shipments.cancel`` (the Lookup page's button): run as the signed-in ops user, refused for
managers, a refusal after hand-over is 400 naming the shipment and its state and changes nothing."""

from __future__ import annotations

from oms_ops import fulfillment as ff
from tests.api.conftest import sign_in
from tests.api.test_change_actions import post
from tests.core import factories as f


def test_ops_cancel_a_shipment_through_the_api_and_managers_may_not(client, conn):
    f.world(conn)
    oid, sid = f.shipped_order(conn, [("SKU-1", 2)])
    manager = post(client, "shipments.cancel", sign_in(client, "maria"), {"shipment_id": sid, "reason": "x"})
    assert manager.status_code == 403
    token = sign_in(client, "olga")
    res = post(
        client,
        "shipments.cancel",
        token,
        {"shipment_id": sid, "location_code": "WH-MSK", "reason": "customer called"},
    )
    assert res.status_code == 200, res.text
    body = res.json()["result"]
    assert body["order_state"] == "allocated" and body["location_code"] == "WH-MSK" and body["carrier_cancel"]
    assert f.stock_row(conn, "WH-MSK", "SKU-1") == (10, 2)
    actor = conn.execute(
        "SELECT actor FROM oms.order_events WHERE entity = 'shipment' AND entity_id = %s AND to_state = 'cancelled'",
        (sid,),
    ).fetchone()[0]
    assert actor == "dashboard:olga"


def test_a_handed_over_shipment_is_refused_naming_it(client, conn):
    f.world(conn)
    _, sid = f.shipped_order(conn, [("SKU-1", 1)])
    ff.hand_over(conn, [sid], actor="cdek")
    number = conn.execute(
        "SELECT shipment_number FROM oms.shipments WHERE shipment_id = %s", (sid,)
    ).fetchone()[0]
    res = post(client, "shipments.cancel", sign_in(client, "olga"), {"shipment_id": sid, "reason": "late"})
    assert res.status_code == 400 and res.json()["error"] == "refused"
    assert f"shipment {number}" in res.json()["detail"] and "is handed_over" in res.json()["detail"]
    assert conn.execute("SELECT state FROM oms.shipments WHERE shipment_id = %s", (sid,)).fetchone()[0] == (
        "handed_over"
    )
    assert f.stock_row(conn, "WH-MSK", "SKU-1") == (9, 0)
