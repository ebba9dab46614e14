"""The API's order-change and amendment actions: run as the signed-in user, refusals are 400 with the
domain's message naming the line and limit, and change nothing."""

from __future__ import annotations

import json

from oms_ops.amendments import process_versions
from oms_ops.business_config import load_business_config
from oms_ops.orders import NormalizedOrder
from tests.api.conftest import bearer, sign_in
from tests.core import factories as f


def post(client, name: str, token: str, body: object):
    return client.post(
        f"/v1/actions/{name}",
        content=json.dumps(body, default=str),
        headers={**bearer(token), "Content-Type": "application/json"},
    )


def test_change_quantity_runs_as_the_user_and_a_refusal_names_the_limit(client, conn):
    f.world(conn)
    oid = f.allocated_order(conn, [("SKU-1", 3)])
    token = sign_in(client, "olga")
    res = post(client, "orders.change_quantity", token, {"order_id": oid, "line_no": 1, "qty": 1})
    assert res.status_code == 200, res.text
    assert res.json()["result"]["applied"] == ["line 1 (SKU-1) quantity 3 → 1"]
    assert f.stock_row(conn, "WH-MSK", "SKU-1") == (10, 1)
    bad = post(client, "orders.change_quantity", token, {"order_id": oid, "line_no": 1, "qty": 10_001})
    assert bad.status_code == 400 and bad.json()["error"] == "refused"
    assert (
        "line 1 (SKU-1): quantity 10001 is more than limits.max_line_quantity (10000)" in bad.json()["detail"]
    )
    assert f.stock_row(conn, "WH-MSK", "SKU-1") == (10, 1)
    actors = {r[0] for r in conn.execute("SELECT actor FROM oms.order_events WHERE order_id = %s", (oid,))}
    assert "dashboard:olga" in actors


def test_an_amendment_is_rejected_through_the_api(client, conn):
    f.world(conn)
    oid = f.order(conn, [("SKU-1", 2)], external_id="WEB-9")
    placed = conn.execute("SELECT placed_at FROM oms.orders WHERE order_id = %s", (oid,)).fetchone()[0]
    later = NormalizedOrder.model_validate(
        f.order_dict([("SKU-2", 2)], external_id="WEB-9", placed_at=placed)
    )
    aid = process_versions(
        conn, "webstore", {"WEB-9": (later, None)}, config=load_business_config(), actor="test"
    ).amendments[0]
    token = sign_in(client, "olga")
    res = post(client, "amendments.reject", token, {"amendment_id": aid, "note": "no"})
    assert res.status_code == 200, res.text
    again = post(client, "amendments.accept", token, {"amendment_id": aid})
    assert again.status_code == 400 and f"amendment {aid} is rejected" in again.json()["detail"]
    assert conn.execute("SELECT sku FROM oms.order_lines WHERE order_id = %s", (oid,)).fetchall() == [
        ("SKU-1",)
    ]
