"""The YooKassa simulator over real HTTP: auth, Idempotence-Key semantics, the customer on the simulated clock,
capture / cancel rules, refund limits, notifications, errors and faults, state across a restart."""

from __future__ import annotations

import uuid

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from tests.simulators.conftest import serve

AUTH = ("100500", "test_sim_yookassa_secret")
RECEIPT = {
    "customer": {"phone": "79991234567"},
    "items": [
        {
            "description": "Чайник",
            "quantity": 2,
            "amount": {"value": "750.00", "currency": "RUB"},
            "vat_code": 1,
            "payment_subject": "commodity",
            "payment_mode": "full_prepayment",
        }
    ],
}


def body(value: str = "1500.00", **extra) -> dict:
    return {
        "amount": {"value": value, "currency": "RUB"},
        "capture": True,
        "confirmation": {"type": "redirect", "return_url": "https://shop.example/back"},
        "description": "Заказ ORD-1",
        "metadata": {"order_id": "1"},
        "receipt": RECEIPT,
        **extra,
    }


def post(client, stack, path, json, key=None, auth=AUTH):
    headers = {"Idempotence-Key": key or str(uuid.uuid4())}
    return client.post(stack.urls["yookassa"] + "/v3" + path, json=json, headers=headers, auth=auth)


def get(client, stack, path):
    return client.get(stack.urls["yookassa"] + "/v3" + path, auth=AUTH)


def paid_payment(client, stack, **options) -> dict:
    p = post(client, stack, "/payments", body(**options)).json()
    client.post(f"{stack.urls['yookassa']}/_sim/yookassa/payments/{p['id']}/pay")
    return get(client, stack, f"/payments/{p['id']}").json()


def test_basic_auth_is_required(make_stack, client):
    stack = make_stack(only=["yookassa"])
    for auth in (None, ("100500", "wrong"), ("other", AUTH[1])):
        r = post(client, stack, "/payments", body(), auth=auth)
        assert r.status_code == 401
        assert r.json()["type"] == "error" and r.json()["code"] == "invalid_credentials"


def test_create_payment_answers_pending_with_a_payment_page(make_stack, client):
    stack = make_stack(only=["yookassa"])
    p = post(client, stack, "/payments", body()).json()
    assert p["status"] == "pending" and p["paid"] is False and p["test"] is True
    assert p["amount"] == {"value": "1500.00", "currency": "RUB"} and p["metadata"] == {"order_id": "1"}
    assert len(p["id"]) == 36 and p["id"].count("-") == 4
    page = client.get(p["confirmation"]["confirmation_url"])
    assert page.status_code == 200 and "1500.00" in page.text
    assert get(client, stack, f"/payments/{p['id']}").json()["status"] == "pending"


def test_idempotence_key_replays_the_first_answer_and_refuses_another_body(make_stack, client):
    stack = make_stack(only=["yookassa"])
    missing = client.post(stack.urls["yookassa"] + "/v3/payments", json=body(), auth=AUTH)
    assert missing.status_code == 400 and missing.json()["parameter"] == "Idempotence-Key"
    first = post(client, stack, "/payments", body(), key="k-1").json()
    again = post(client, stack, "/payments", body(), key="k-1").json()
    assert again == first
    other = post(client, stack, "/payments", body("10.00", receipt=None), key="k-1")
    assert other.status_code == 400 and other.json()["code"] == "invalid_request"
    payments = client.get(stack.urls["yookassa"] + "/_sim/yookassa/payments").json()["payments"]
    assert len(payments) == 1
    stack.advance(25 * 3600)  # after 24 h the key is forgotten: a new payment
    assert post(client, stack, "/payments", body(), key="k-1").json()["id"] != first["id"]


def test_receipt_is_validated_per_54_fz(make_stack, client):
    stack = make_stack(only=["yookassa"])
    bad_vat = {**RECEIPT, "items": [{**RECEIPT["items"][0], "vat_code": 9}]}
    r = post(client, stack, "/payments", body(receipt=bad_vat))
    assert r.status_code == 400 and r.json()["parameter"] == "receipt.items[0].vat_code"
    r = post(client, stack, "/payments", body("1000.00"))
    assert r.status_code == 400 and r.json()["parameter"] == "receipt"  # items sum to 1500
    r = post(client, stack, "/payments", body(receipt={**RECEIPT, "customer": {}}))
    assert r.json()["parameter"] == "receipt.customer"
    r = post(client, stack, "/payments", body("-5"))
    assert r.status_code == 400 and r.json()["parameter"] == "amount.value"


def test_the_simulated_customer_pays_a_share_and_the_rest_is_cancelled(make_stack, client):
    stack = make_stack(only=["yookassa"], options={"yookassa": {"pay_share": 0.5, "pay_delay_s": 60}})
    ids = [post(client, stack, "/payments", body()).json()["id"] for _ in range(30)]
    stack.advance(61)
    first = [get(client, stack, f"/payments/{i}").json() for i in ids]
    paid = [p for p in first if p["status"] == "succeeded"]
    assert 5 <= len(paid) <= 25 and all(p["paid"] and p["captured_at"] for p in paid)
    stack.advance(3600)
    final = {get(client, stack, f"/payments/{i}").json()["status"] for i in ids}
    assert final == {"succeeded", "canceled"}
    cancelled = [get(client, stack, f"/payments/{i}").json() for i in ids]
    reasons = {p["cancellation_details"]["reason"] for p in cancelled if p["status"] == "canceled"}
    assert reasons <= {"insufficient_funds", "expired_on_confirmation"} and reasons


def test_two_stage_payment_waits_for_capture_and_captures_less(make_stack, client):
    stack = make_stack(only=["yookassa"])
    p = paid_payment(client, stack, capture=False)
    assert p["status"] == "waiting_for_capture" and p["paid"] is True
    too_much = post(
        client, stack, f"/payments/{p['id']}/capture", {"amount": {"value": "2000.00", "currency": "RUB"}}
    )
    assert too_much.status_code == 400 and too_much.json()["parameter"] == "amount"
    done = post(
        client, stack, f"/payments/{p['id']}/capture", {"amount": {"value": "1200.00", "currency": "RUB"}}
    )
    assert done.json()["status"] == "succeeded" and done.json()["amount"]["value"] == "1200.00"
    again = post(client, stack, f"/payments/{p['id']}/capture", {})
    assert again.status_code == 400 and again.json()["code"] == "invalid_request"


def test_cancel_only_while_waiting_for_capture(make_stack, client):
    stack = make_stack(only=["yookassa"])
    pending = post(client, stack, "/payments", body()).json()
    r = post(client, stack, f"/payments/{pending['id']}/cancel", {})
    assert r.status_code == 400
    p = paid_payment(client, stack, capture=False)
    r = post(client, stack, f"/payments/{p['id']}/cancel", {}).json()
    assert r["status"] == "canceled" and r["cancellation_details"]["party"] == "merchant"


def test_refunds_partial_up_to_the_captured_amount(make_stack, client):
    stack = make_stack(only=["yookassa"])
    p = paid_payment(client, stack)
    one = post(
        client, stack, "/refunds", {"payment_id": p["id"], "amount": {"value": "1000.00", "currency": "RUB"}}
    )
    assert one.json()["status"] == "succeeded" and one.json()["payment_id"] == p["id"]
    over = post(
        client, stack, "/refunds", {"payment_id": p["id"], "amount": {"value": "500.01", "currency": "RUB"}}
    )
    assert over.status_code == 400 and over.json()["parameter"] == "amount"
    assert "500.00" in over.json()["description"]
    two = post(
        client, stack, "/refunds", {"payment_id": p["id"], "amount": {"value": "500.00", "currency": "RUB"}}
    )
    assert two.status_code == 200
    assert get(client, stack, f"/refunds/{one.json()['id']}").json()["amount"]["value"] == "1000.00"
    assert get(client, stack, f"/payments/{p['id']}").json()["refunded_amount"]["value"] == "1500.00"
    unpaid = post(client, stack, "/payments", body()).json()
    r = post(
        client,
        stack,
        "/refunds",
        {"payment_id": unpaid["id"], "amount": {"value": "1.00", "currency": "RUB"}},
    )
    assert r.status_code == 400
    assert get(client, stack, "/refunds/nope").status_code == 404
    assert get(client, stack, "/payments/nope").json()["code"] == "not_found"


def test_pending_refund_succeeds_later(make_stack, client):
    stack = make_stack(
        only=["yookassa"], options={"yookassa": {"refund_pending_share": 1.0, "refund_delay_s": 30}}
    )
    p = paid_payment(client, stack)
    r = post(
        client, stack, "/refunds", {"payment_id": p["id"], "amount": {"value": "100.00", "currency": "RUB"}}
    ).json()
    assert r["status"] == "pending"
    stack.advance(31)
    assert get(client, stack, f"/refunds/{r['id']}").json()["status"] == "succeeded"


def test_notifications_are_posted_and_retried_until_acknowledged(make_stack, client):
    calls: list[dict] = []
    answers = [500, 200, 200, 200]

    async def hook(request: Request):
        calls.append(await request.json())
        return JSONResponse({}, status_code=answers[min(len(calls) - 1, len(answers) - 1)])

    with serve(Starlette(routes=[Route("/webhooks/yookassa", hook, methods=["POST"])])) as url:
        stack = make_stack(
            only=["yookassa"], options={"yookassa": {"notification_url": url + "/webhooks/yookassa"}}
        )
        p = paid_payment(client, stack)
        stack.advance(1)  # first delivery: refused with 500
        stack.advance(61)  # retried
        post(
            client, stack, "/refunds", {"payment_id": p["id"], "amount": {"value": "1.00", "currency": "RUB"}}
        )
        stack.advance(1)
    events = [c["event"] for c in calls]
    assert events == ["payment.succeeded", "payment.succeeded", "refund.succeeded"]
    assert calls[0]["type"] == "notification" and calls[0]["object"]["id"] == p["id"]


def test_faults_answer_in_yookassa_shape_and_the_key_makes_a_retry_safe(make_stack, client):
    stack = make_stack(
        only=["yookassa"],
        faults={"yookassa": [{"kind": "server_error", "count": 1, "path": "/v3/payments"}]},
    )
    r = post(client, stack, "/payments", body(), key="k-retry")
    assert r.status_code == 500 and r.json()["code"] == "internal_server_error"
    ok = post(client, stack, "/payments", body(), key="k-retry")
    assert ok.status_code == 200
    client.post(stack.urls["yookassa"] + "/_sim/faults", json={"kind": "rate_limit", "count": 1})
    limited = post(client, stack, "/payments", body())
    assert limited.status_code == 429 and limited.json()["code"] == "too_many_requests"
    assert "retry-after" in limited.headers


def test_payments_refunds_and_keys_survive_a_restart(make_stack, client):
    first = make_stack(only=["yookassa"], persist=True)
    p = paid_payment(client, first)
    waiting = post(client, first, "/payments", body(), key="k-persist").json()
    r = post(
        client, first, "/refunds", {"payment_id": p["id"], "amount": {"value": "100.00", "currency": "RUB"}}
    ).json()
    first.stop()
    second = make_stack(only=["yookassa"], persist=True)
    assert get(client, second, f"/payments/{p['id']}").json()["status"] == "succeeded"
    assert get(client, second, f"/refunds/{r['id']}").json()["status"] == "succeeded"
    assert post(client, second, "/payments", body(), key="k-persist").json()["id"] == waiting["id"]
    assert post(client, second, "/payments", body()).json()["id"] not in (p["id"], waiting["id"])
    over = post(
        client, second, "/refunds", {"payment_id": p["id"], "amount": {"value": "1400.01", "currency": "RUB"}}
    )
    assert over.status_code == 400
    second.advance(3600)  # the customer's due payment goes on after the restart
    assert get(client, second, f"/payments/{waiting['id']}").json()["status"] in ("succeeded", "canceled")


def test_registered_in_the_stack_with_credentials_in_the_manifest(make_stack):
    stack = make_stack(only=["yookassa"], webhook_url="http://127.0.0.1:9/webhooks/shopify")
    entry = stack.manifest()["simulators"]["yookassa"]
    assert entry["credentials"] == {"shop_id": "100500", "secret_key": "test_sim_yookassa_secret"}
    assert stack["yookassa"].notification_url == "http://127.0.0.1:9/webhooks/yookassa"
    assert httpx.get(entry["control_url"] + "/health").json()["simulator"] == "yookassa"
