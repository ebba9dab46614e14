"""The SMS gateway simulator speaks SMS.ru: send (one or several phones, GET or POST), per-phone and top-level
errors with status_code/status_text, delivery 100 → 103 on the simulated clock (a share failing 104–108),
balance, status callbacks, and its messages survive a restart."""

from __future__ import annotations

from urllib.parse import parse_qs

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from simulators.sms import FAILURE_CODES
from tests.simulators.conftest import serve

API_ID = "sim-sms-api-id"


def _send(client, stack, method="GET", **params):
    body = {"api_id": API_ID, "json": 1, **params}
    url = stack.urls["sms"] + "/sms/send"
    r = client.get(url, params=body) if method == "GET" else client.post(url, data=body)
    assert r.status_code == 200
    return r.json()


def _status(client, stack, *ids):
    r = client.post(
        stack.urls["sms"] + "/sms/status", data={"api_id": API_ID, "sms_id": ",".join(ids), "json": 1}
    )
    return r.json()


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_send_to_several_phones_charges_per_part_and_reports_each(make_stack, client, method):
    stack = make_stack(only=["sms"])
    body = _send(
        client, stack, method, to="79991234567,79997654321,12345", msg="Заказ принят", **{"from": "SHOP"}
    )
    assert body["status"] == "OK" and body["status_code"] == 100
    ok = body["sms"]["79991234567"]
    assert ok["status"] == "OK" and ok["status_code"] == 100 and ok["sms_id"]
    assert body["sms"]["12345"] == {
        "status": "ERROR",
        "status_code": 202,
        "status_text": "Неправильно указан номер телефона получателя, либо на него нет маршрута",
    }
    assert body["balance"] == 995.0  # two messages of one part at 2.50
    long = _send(client, stack, to="79991234567", msg="я" * 71)  # Cyrillic: 70 characters a part
    assert long["balance"] == 990.0
    assert client.get(stack.urls["sms"] + "/my/balance", params={"api_id": API_ID, "json": 1}).json() == {
        "status": "OK",
        "status_code": 100,
        "balance": 990.0,
    }


@pytest.mark.parametrize(
    ("params", "code", "text"),
    [
        ({"api_id": "wrong"}, 200, "Неправильный api_id"),
        ({"msg": "  "}, 203, "Нет текста сообщения"),
    ],
)
def test_request_errors_answer_status_error_with_code_and_text(make_stack, client, params, code, text):
    stack = make_stack(only=["sms"])
    body = _send(client, stack, **{"to": "79991234567", "msg": "текст", **params})
    assert body == {"status": "ERROR", "status_code": code, "status_text": text}


def test_no_balance_refuses_the_whole_request_and_an_unapproved_sender_too(make_stack, client):
    stack = make_stack(only=["sms"], options={"sms": {"allowed_senders": ["SHOP"]}})
    assert _send(client, stack, to="79991234567", msg="x", **{"from": "OTHER"})["status_code"] == 204
    client.post(stack.urls["sms"] + "/_sim/sms/balance", json={"balance": 0})
    body = _send(client, stack, to="79991234567", msg="x")
    assert body == {
        "status": "ERROR",
        "status_code": 201,
        "status_text": "Не хватает средств на лицевом счету",
    }
    assert client.get(stack.urls["sms"] + "/_sim/sms/messages").json()["messages"] == []


def test_delivery_moves_on_the_simulated_clock_and_a_share_fails(make_stack, client):
    stack = make_stack(only=["sms"], options={"sms": {"delivery_s": 40, "fail_share": 0.0}})
    sms_id = _send(client, stack, to="79991234567", msg="x")["sms"]["79991234567"]["sms_id"]
    codes = []
    for _ in range(4):
        codes.append(_status(client, stack, sms_id)["sms"][sms_id]["status_code"])
        stack.advance(10)
    codes.append(_status(client, stack, sms_id)["sms"][sms_id]["status_code"])
    assert codes == [100, 101, 102, 102, 103]
    assert _status(client, stack, "nope")["sms"]["nope"]["status_code"] == -1
    failing = make_stack(only=["sms"], options={"sms": {"fail_share": 1.0, "delivery_s": 1}})
    sms_id = _send(client, failing, to="79991234567", msg="x")["sms"]["79991234567"]["sms_id"]
    failing.advance(5)
    status = _status(client, failing, sms_id)["sms"][sms_id]
    assert status["status_code"] in FAILURE_CODES and status["status_text"].startswith(
        "Не может быть доставлено"
    )


def test_status_callbacks_are_posted_as_sms_ru_does(make_stack, client):
    calls: list[dict] = []

    async def hook(request: Request):
        calls.append(parse_qs((await request.body()).decode()))
        return PlainTextResponse("100")

    with serve(Starlette(routes=[Route("/sms-callback", hook, methods=["POST"])])) as url:
        stack = make_stack(
            only=["sms"], options={"sms": {"callback_url": url + "/sms-callback", "delivery_s": 4}}
        )
        sms_id = _send(client, stack, to="79991234567", msg="x")["sms"]["79991234567"]["sms_id"]
        stack.advance(10)
    lines = [v[0] for c in calls for k, v in sorted(c.items()) if k.startswith("data[")]
    assert lines and all(line.startswith(f"sms_status\n{sms_id}\n") for line in lines)
    assert lines[-1].split("\n")[2] == "103"


def test_messages_and_balance_survive_a_restart_and_ids_never_repeat(make_stack, client):
    first = make_stack(only=["sms"], persist=True)
    sent = _send(client, first, to="79991234567", msg="x")["sms"]["79991234567"]["sms_id"]
    first.stop()
    second = make_stack(only=["sms"], persist=True)
    assert _status(client, second, sent)["sms"][sent]["status_code"] in (100, 101, 102, 103)
    again = _send(client, second, to="79991234567", msg="y")
    assert again["balance"] == 995.0 and again["sms"]["79991234567"]["sms_id"] != sent
