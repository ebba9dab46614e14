"""The actions: every registered action is reachable (validated, then run against the database), bad
arguments are answered 400 naming the field, a refusal changes nothing, and what an action does is recorded
under the user who did it."""

from __future__ import annotations

import json

import pytest

from oms_ops.api.actions import ACTIONS
from oms_ops.orders import hold_orders
from tests.api.conftest import bearer, sign_in
from tests.core import factories as f

MISSING = 987_654_321
#: valid arguments for each action, naming rows that do not exist: the action must get past validation and
#: reach the domain, which answers with its result or its own refusal (never a validation error or a 500)
EXAMPLES = {
    "orders.release": {"order_ids": [MISSING]},
    "orders.cancel": {"order_ids": [MISSING], "reason": "customer called"},
    "orders.reroute": {"order_id": MISSING, "exclude_locations": ["WH-MSK"]},
    "orders.take": {"order": {**f.order_dict(), "channel_code": "callcentre"}},
    "quarantine.replay": {"quarantine_ids": [MISSING]},
    "quarantine.replay_fixed": {"quarantine_id": MISSING, "payload": {"external_id": "X"}},
    "quarantine.discard": {"quarantine_ids": [MISSING]},
    "outbox.retry": {"outbox_ids": [MISSING]},
    "returns.request": {
        "order_id": MISSING,
        "lines": [{"line_id": MISSING, "qty": 1, "reason_code": "defect"}],
    },
    "returns.exchange": {"return_id": MISSING},
    "returns.receive": {"return_id": MISSING, "location_code": "WH-MSK", "received": {str(MISSING): 1}},
    "returns.inspect": {"return_id": MISSING, "dispositions": {str(MISSING): "restock"}},
    "returns.refund": {"return_ids": [MISSING]},
    "returns.cancel": {"return_id": MISSING, "reason": "customer kept it"},
    "shipping.hand_over": {"shipment_ids": [MISSING]},
    "shipping.courier_delivered": {"shipment_ids": [MISSING]},
    "mappings.location": {"system": "ozon", "external_id": "nope", "location_code": "WH-MSK"},
    "mappings.listing": {"channel_code": "ozon", "key": "nope", "sku": "SKU-1"},
    "unfillable.clear": {"order_id": MISSING, "reason": "stock on the way"},
    "api_keys.create": {"system": "ERP", "scopes": ["orders:read"]},
    "api_keys.revoke": {"key_id": "0123456789ab"},
}


def post(client, name: str, token: str, body: object):
    return client.post(
        f"/v1/actions/{name}",
        content=json.dumps(body, default=str),
        headers={**bearer(token), "Content-Type": "application/json"},
    )


@pytest.mark.parametrize("name", sorted(ACTIONS))
def test_every_action_is_reachable(client, conn, name):
    f.world(conn)
    token = sign_in(client, "olga" if "ops" in ACTIONS[name].roles else "ada")  # admin-only: as an admin
    res = post(client, name, token, EXAMPLES.get(name, {}))
    assert res.status_code in (200, 400), res.text
    if name in EXAMPLES:  # past validation: the domain answered
        assert res.status_code == 200 or res.json()["error"] == "refused", res.text
    else:  # an action without an example here is still routed and validated (never a 404 or a 500)
        assert res.status_code == 200 or res.json()["error"] in ("refused", "invalid_arguments"), res.text


def test_the_dashboards_actions_all_have_an_example():
    assert set(EXAMPLES) <= set(ACTIONS)


@pytest.mark.parametrize(
    ("name", "body", "field"),
    [
        ("orders.release", {"order_ids": ["one"]}, "order_ids.0"),
        ("orders.release", {"order_ids": []}, "order_ids"),
        ("orders.cancel", {"order_ids": [1]}, "reason"),
        ("orders.cancel", {"order_ids": [1], "reason": "x" * 501}, "reason"),
        ("orders.release", {"order_ids": [1], "colour": "red"}, "colour"),
        ("returns.inspect", {"return_id": 1, "dispositions": {"7": "burn"}}, "dispositions.7"),
        (
            "returns.request",
            {"order_id": 1, "lines": [{"line_id": 1, "qty": 0, "reason_code": "x"}]},
            "lines.0.qty",
        ),
        ("returns.request", {"order_id": 1, "lines": [], "kind": "swap"}, "kind"),
        ("outbox.retry", {"outbox_ids": [-4]}, "outbox_ids.0"),
        ("orders.take", {"order": "not an order"}, "order"),
    ],
)
def test_bad_arguments_are_400_naming_the_field(client, name, body, field):
    res = post(client, name, sign_in(client, "olga"), body)
    assert res.status_code == 400, res.text
    assert res.json()["error"] == "invalid_arguments"
    assert res.json()["detail"].startswith(field + ":") or f"; {field}:" in res.json()["detail"], res.json()


def test_a_body_that_is_no_object_is_400(client):
    res = post(client, "orders.release", sign_in(client, "olga"), [1, 2])
    assert res.status_code == 400 and "JSON object" in res.json()["detail"]


def test_release_runs_as_the_signed_in_user(client, conn):
    f.world(conn)
    oid = f.order(conn)
    hold_orders(conn, [oid], reason="fraud check", actor="test")
    res = post(client, "orders.release", sign_in(client, "olga"), {"order_ids": [oid], "reason": "checked"})
    assert res.status_code == 200, res.text
    assert res.json()["result"] == {"released": [oid]}
    assert f.order_state(conn, oid) == "new"
    assert ("dashboard:olga", "checked") in conn.execute(
        "SELECT actor, reason FROM oms.order_events WHERE order_id = %s", (oid,)
    ).fetchall()


def test_a_refusal_is_400_with_the_domain_message_and_changes_nothing(client, conn):
    f.world(conn)
    oid = f.allocated_order(conn)
    res = post(client, "orders.cancel", sign_in(client, "ada"), {"order_ids": [oid, MISSING], "reason": "x"})
    assert res.status_code == 400
    assert res.json()["error"] == "refused" and str(MISSING) in res.json()["detail"]
    assert f.order_state(conn, oid) == "allocated"  # the existing order was not cancelled either


def test_the_call_centre_cannot_enter_orders_of_another_channel(client, conn):
    f.world(conn)
    res = post(client, "orders.take", sign_in(client, "olga"), {"order": f.order_dict(channel_code="ozon")})
    assert res.status_code == 400 and "order.channel_code" in res.json()["detail"]
    assert conn.execute("SELECT count(*) FROM oms.orders").fetchone()[0] == 0


def test_a_call_centre_order_is_accepted(client, conn):
    f.world(conn)
    f.channel(conn, "callcentre", "callcentre")
    order = f.order_dict(channel_code="callcentre")
    res = post(client, "orders.take", sign_in(client, "olga"), {"order": order})
    assert res.status_code == 200, res.text
    (accepted,) = res.json()["result"]["ids"]
    assert accepted["external_id"] == order["external_id"]
    assert conn.execute(
        "SELECT channel_code FROM oms.orders WHERE order_id = %s", (accepted["order_id"],)
    ).fetchone() == ("callcentre",)
