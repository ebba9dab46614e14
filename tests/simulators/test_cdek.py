"""CDEK v2 simulator: OAuth, asynchronous orders, statuses over simulated time, print forms as real PDFs."""

import pytest

from tests.simulators.pdfcheck import assert_valid_pdf


@pytest.fixture
def cdek(make_stack, fake_time, client):
    stack = make_stack(only=["cdek"], protocol_time=fake_time)
    url, creds = stack.urls["cdek"], stack.credentials["cdek"]
    r = client.post(url + "/v2/oauth/token", data={"grant_type": "client_credentials", **creds})
    assert r.status_code == 200
    return stack, url, {"Authorization": "Bearer " + r.json()["access_token"]}


def order_body(number="ORD-1001", **kw):
    body = {
        "type": 1,
        "number": number,
        "tariff_code": 136,
        "shipment_point": "PDL12",
        "delivery_point": "NSK42",
        "recipient": {"name": "Иванов Иван", "phones": [{"number": "+79161234567"}]},
        "packages": [{
            "number": "1", "weight": 1200, "length": 30, "width": 20, "height": 10,
            "items": [{"name": "Кружка", "ware_key": "HOM-10001", "payment": {"value": 0}, "cost": 490,
                       "weight": 400, "amount": 3}],
        }],
    }  # fmt: skip
    body.update(kw)
    return body


def test_oauth_token(make_stack, client):
    stack = make_stack(only=["cdek"])
    url, creds = stack.urls["cdek"], stack.credentials["cdek"]
    r = client.post(url + "/v2/oauth/token", params={"grant_type": "client_credentials", **creds})
    body = r.json()
    assert r.status_code == 200 and body["token_type"] == "bearer" and body["expires_in"] == 3599
    assert {"access_token", "scope", "jti"} <= set(body)
    bad = client.post(
        url + "/v2/oauth/token",
        data={"grant_type": "client_credentials", "client_id": "x", "client_secret": "y"},
    )
    assert bad.status_code == 401 and bad.json()["error"] == "invalid_client"


def test_bearer_token_required_and_expires(cdek, client, fake_time):
    _, url, headers = cdek
    r = client.get(url + "/v2/orders/whatever")
    assert r.status_code == 401
    assert r.json()["requests"][0]["state"] == "INVALID" and r.json()["requests"][0]["errors"][0]["code"]
    assert client.get(url + "/v2/orders/whatever", headers=headers).status_code == 404
    fake_time.advance(3600)
    assert client.get(url + "/v2/orders/whatever", headers=headers).status_code == 401


def test_order_lifecycle_statuses_advance_with_the_clock(cdek, client):
    stack, url, headers = cdek
    r = client.post(url + "/v2/orders", headers=headers, json=order_body())
    assert r.status_code == 202
    uuid = r.json()["entity"]["uuid"]
    req = r.json()["requests"][0]
    assert (req["type"], req["state"], req["errors"]) == ("CREATE", "ACCEPTED", []) and req["request_uuid"]
    entity = client.get(f"{url}/v2/orders/{uuid}", headers=headers).json()["entity"]
    assert "cdek_number" not in entity
    stack.advance(10)
    view = client.get(f"{url}/v2/orders/{uuid}", headers=headers).json()
    assert view["requests"][0]["state"] == "SUCCESSFUL"
    assert view["entity"]["cdek_number"] and view["entity"]["statuses"][0]["code"] == "CREATED"
    seen = []
    for _ in range(40):
        stack.advance(6 * 3600)
        code = client.get(f"{url}/v2/orders/{uuid}", headers=headers).json()["entity"]["statuses"][0]["code"]
        if not seen or seen[-1] != code:
            seen.append(code)
    statuses = client.get(f"{url}/v2/orders/{uuid}", headers=headers).json()["entity"]["statuses"]
    chronological = [s["code"] for s in reversed(statuses)]
    assert chronological == [
        "ACCEPTED", "CREATED", "RECEIVED_AT_SHIPMENT_WAREHOUSE", "READY_FOR_SHIPMENT_IN_SENDER_CITY",
        "SENT_TO_TRANSIT_CITY", "ACCEPTED_IN_RECIPIENT_CITY", "ACCEPTED_AT_PICK_UP_POINT", "DELIVERED",
    ]  # fmt: skip
    assert statuses[0]["city"] == "Новосибирск" and statuses[-3]["city"] == "Подольск"
    assert [s["date_time"] for s in statuses] == sorted((s["date_time"] for s in statuses), reverse=True)
    by_number = client.get(url + "/v2/orders", headers=headers, params={"im_number": "ORD-1001"}).json()
    assert by_number["entity"]["uuid"] == uuid


def test_courier_delivery_and_not_delivered_share(make_stack, client):
    stack = make_stack(only=["cdek"], options={"cdek": {"not_delivered_share": 1.0}})
    url, creds = stack.urls["cdek"], stack.credentials["cdek"]
    token = client.post(url + "/v2/oauth/token", data={"grant_type": "client_credentials", **creds}).json()
    headers = {"Authorization": "Bearer " + token["access_token"]}
    body = order_body("ORD-2", delivery_point=None, to_location={"code": 44, "address": "ул. Тверская, 1"})
    body.pop("delivery_point")
    uuid = client.post(url + "/v2/orders", headers=headers, json=body).json()["entity"]["uuid"]
    stack.advance(20 * 86400)
    codes = [
        s["code"] for s in client.get(f"{url}/v2/orders/{uuid}", headers=headers).json()["entity"]["statuses"]
    ]
    assert codes[:2] == ["NOT_DELIVERED", "TAKEN_BY_COURIER"]


def test_validation_lists_every_problem(cdek, client):
    _, url, headers = cdek
    body = order_body(number="Заказ-1", recipient={"name": ""}, packages=[{"number": "1"}])
    body["from_location"] = {"code": 44}
    r = client.post(url + "/v2/orders", headers=headers, json=body)
    assert r.status_code == 400
    request = r.json()["requests"][0]
    assert request["state"] == "INVALID" and request["type"] == "CREATE"
    codes = {e["code"] for e in request["errors"]}
    assert {"v2_invalid_format", "v2_field_is_empty", "v2_shipment_address_multivalued"} <= codes
    assert len(request["errors"]) >= 5


def test_duplicate_number_among_active_orders(cdek, client):
    stack, url, headers = cdek
    first = client.post(url + "/v2/orders", headers=headers, json=order_body("ORD-7"))
    dup = client.post(url + "/v2/orders", headers=headers, json=order_body("ORD-7"))
    assert dup.status_code == 400
    assert dup.json()["requests"][0]["errors"][0]["code"] == "v2_im_number_already_used"
    uuid = first.json()["entity"]["uuid"]
    stack.advance(10)
    deleted = client.delete(f"{url}/v2/orders/{uuid}", headers=headers)
    assert deleted.status_code == 202 and deleted.json()["requests"][0]["type"] == "DELETE"
    assert (
        client.get(f"{url}/v2/orders/{uuid}", headers=headers).json()["entity"]["statuses"][0]["code"]
        == "REMOVED"
    )
    again = client.post(url + "/v2/orders", headers=headers, json=order_body("ORD-7"))
    assert again.status_code == 202  # a removed order frees its number


def test_delete_is_refused_after_handover(cdek, client):
    stack, url, headers = cdek
    uuid = client.post(url + "/v2/orders", headers=headers, json=order_body("ORD-8")).json()["entity"]["uuid"]
    stack.advance(86400)
    r = client.delete(f"{url}/v2/orders/{uuid}", headers=headers)
    assert r.status_code == 400 and r.json()["requests"][0]["state"] == "INVALID"


def test_unknown_tariff_becomes_invalid_asynchronously(cdek, client):
    stack, url, headers = cdek
    r = client.post(url + "/v2/orders", headers=headers, json=order_body("ORD-9", tariff_code=9999))
    assert r.status_code == 202
    stack.advance(10)
    view = client.get(f"{url}/v2/orders/{r.json()['entity']['uuid']}", headers=headers).json()
    assert view["requests"][0]["state"] == "INVALID"
    assert view["requests"][0]["errors"][0]["code"] == "v2_tariff_not_found"


def test_waybill_and_barcode_print_forms(cdek, client):
    stack, url, headers = cdek
    uuid = client.post(url + "/v2/orders", headers=headers, json=order_body("ORD-PRINT-1")).json()["entity"][
        "uuid"
    ]
    stack.advance(10)
    r = client.post(
        url + "/v2/print/orders", headers=headers, json={"orders": [{"order_uuid": uuid}], "copy_count": 2}
    )
    assert r.status_code == 202
    form = r.json()["entity"]["uuid"]
    pending = client.get(f"{url}/v2/print/orders/{form}", headers=headers).json()["entity"]
    assert "url" not in pending and pending["statuses"][0]["code"] == "ACCEPTED"
    stack.advance(5)
    ready = client.get(f"{url}/v2/print/orders/{form}", headers=headers).json()["entity"]
    assert [s["code"] for s in ready["statuses"]] == ["READY", "PROCESSING", "ACCEPTED"]
    pdf = client.get(ready["url"], headers=headers)
    assert pdf.status_code == 200 and pdf.headers["content-type"] == "application/pdf"
    assert pdf.content.startswith(b"%PDF-") and pdf.content.endswith(b"%%EOF")
    assert_valid_pdf(pdf.content, pages=2)
    assert b"ORD-PRINT-1" in pdf.content
    assert client.get(ready["url"]).status_code == 401  # the download needs the token too

    r = client.post(
        url + "/v2/print/barcodes", headers=headers, json={"orders": [{"order_uuid": uuid}], "format": "A6"}
    )
    label = r.json()["entity"]["uuid"]
    stack.advance(5)
    entity = client.get(f"{url}/v2/print/barcodes/{label}", headers=headers).json()["entity"]
    assert entity["format"] == "A6"
    assert_valid_pdf(client.get(entity["url"], headers=headers).content, pages=1)
    bad = client.post(
        url + "/v2/print/barcodes", headers=headers, json={"orders": [{"order_uuid": uuid}], "format": "A3"}
    )
    assert bad.status_code == 400


def test_print_form_for_unregistered_orders_is_invalid(cdek, client):
    stack, url, headers = cdek
    r = client.post(url + "/v2/print/orders", headers=headers, json={"orders": [{"order_uuid": "nope"}]})
    form = r.json()["entity"]["uuid"]
    stack.advance(5)
    view = client.get(f"{url}/v2/print/orders/{form}", headers=headers).json()
    assert view["entity"]["statuses"][0]["code"] == "INVALID" and "url" not in view["entity"]
    assert view["requests"][0]["errors"][0]["code"] == "v2_entity_empty"


def test_transit_scale_compresses_the_journey(make_stack, fake_time, client):
    """A demo compresses transit: with transit_scale 1/100 a parcel is delivered within hours, not days."""

    def final_code_after(scale: float, hours: float) -> str:
        stack = make_stack(only=["cdek"], protocol_time=fake_time, options={"cdek": {"transit_scale": scale}})
        url, creds = stack.urls["cdek"], stack.credentials["cdek"]
        token = client.post(url + "/v2/oauth/token", data={"grant_type": "client_credentials", **creds})
        headers = {"Authorization": "Bearer " + token.json()["access_token"]}
        uuid = client.post(url + "/v2/orders", headers=headers, json=order_body()).json()["entity"]["uuid"]
        stack.advance(hours * 3600)
        return client.get(f"{url}/v2/orders/{uuid}", headers=headers).json()["entity"]["statuses"][0]["code"]

    assert final_code_after(1.0, 3) not in ("DELIVERED", "NOT_DELIVERED")
    assert final_code_after(0.01, 3) in ("DELIVERED", "NOT_DELIVERED")
