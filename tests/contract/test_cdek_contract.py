"""Contract: the published ``cdek`` SDK (CDEK API v2) against our CDEK simulator, and our connector's requests
against the SDK's request models.

The SDK (``cdek`` on PyPI) mirrors CDEK's v2 documentation in pydantic models; it talks through ``requests`` to
``client.base_url``, an attribute, so pointing it at the simulator's loopback URL is one assignment (the package
is not touched). Every endpoint the connector calls or the simulator serves is driven through the SDK's own
methods and its response models must parse every answer: OAuth, ``POST /v2/orders`` (and the dedupe by
``number``), ``GET /v2/orders/{uuid}``, ``GET /v2/orders?im_number=`` / ``?cdek_number=``,
``DELETE /v2/orders/{uuid}``, waybills (``/v2/print/orders``) and labels (``/v2/print/barcodes``): create, poll,
download the PDF. Error bodies — validation, not found, a missing token, an unknown path, a throttle, a server
fault — must be CDEK's entity-request shape, which the SDK's ``Request`` model parses.

The connector is checked the other way round: the real booking path (outbox drain → ``book_shipment``, then
``sync_bookings``) runs against the simulator through a recording httpx transport; every JSON body it sent must
be taken whole by the SDK's request model (nothing dropped as unknown, nothing coerced), its token form must carry
the fields the SDK sends, and every call must be one the SDK makes too.

Not covered because neither the simulator nor the connector has them (see ``simulators/cdek.py``): webhooks,
tariff calculation, offices/locations, intakes, order updates (PATCH), refusals and client returns.
"""

from __future__ import annotations

import random
import re
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
import requests
from cdek import CdekAuthException, CdekClient, CdekRequestException
from cdek.apps.form import (
    PrintBarcodeRequest,
    PrintBarcodeResponse,
    PrintInvoiceRequest,
    WaybillEntityResponse,
)
from cdek.apps.models.entity_response import EntityResponse
from cdek.apps.models.request import Request as CdekRequest
from cdek.apps.order import OrderEntityResponse, OrderRequest

from oms_ops.business_config import load_business_config
from oms_ops.channels import callcentre
from oms_ops.connectors import cdek as connector
from oms_ops.connectors.config import settings_from_manifest
from oms_ops.connectors.http import RetryPolicy
from oms_ops.services.allocation import allocate
from oms_ops.services.clients import Clients
from oms_ops.services.outbox import drain_outbox
from oms_ops.services.setup import seed_from_simulators
from oms_ops.services.shipping import ship_reserved
from simulators.callcentre import generate_callcentre_orders

UUID_RE = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")

# -- helpers ------------------------------------------------------------------------------------------------


def sdk_client(stack) -> CdekClient:
    """The SDK's client with the simulator's credentials, redirected to its loopback URL (``base_url``)."""
    sim = stack.manifest()["simulators"]["cdek"]
    creds = sim["credentials"]
    client = CdekClient(creds["client_id"], creds["client_secret"])
    client.base_url = sim["base_url"].rstrip("/") + "/v2/"
    return client


def order_request(number: str, **changes) -> OrderRequest:
    """A complete online-store order, built by the SDK's own model (what it will send is its dump)."""
    body = {
        "type": 1,
        "number": number,
        "tariff_code": 136,
        "comment": "contract",
        "shipment_point": "PDL12",
        "delivery_point": "NSK42",
        "recipient": {
            "name": "Иванов Иван",
            "email": "ivan@example.com",
            "phones": [{"number": "+79161234567"}],
        },
        "packages": [
            {
                "number": f"{number}-1",
                "weight": 1200,
                "length": 30,
                "width": 20,
                "height": 10,
                "items": [
                    {
                        "name": "Кружка",
                        "ware_key": "HOM-10001",
                        "payment": {"value": 0},
                        "cost": 490,
                        "weight": 400,
                        "amount": 3,
                    }
                ],
            }
        ],
    }
    body.update(changes)
    return OrderRequest.model_validate({k: v for k, v in body.items() if v is not None})


def error_request(exc: CdekRequestException) -> CdekRequest:
    """The SDK's exception carries the body: one INVALID entity request, parsed by the SDK's model."""
    assert isinstance(exc.response, dict) and len(exc.response["requests"]) == 1, exc.response
    req = CdekRequest.model_validate(exc.response["requests"][0])
    assert req.state == "INVALID" and req.errors, req
    return req


def raw_error(response: requests.Response | httpx.Response, status: int, kind: str) -> set[str]:
    """A raw error answer in CDEK's shape: ``{"requests": [<INVALID request of ``kind``>]}``; its error codes."""
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"requests"} and len(body["requests"]) == 1, body
    req = CdekRequest.model_validate(body["requests"][0])
    assert req.type == kind and req.state == "INVALID" and req.errors, req
    return {e.code for e in req.errors}


def route(method: str, url: str) -> tuple[str, str, frozenset[str]]:
    """A call as (method, path with ids as ``{uuid}``, query parameter names): what both clients must share."""
    parts = urlsplit(url)
    return method.upper(), UUID_RE.sub("{uuid}", parts.path), frozenset(parse_qs(parts.query))


def record_sdk(app, log: list[requests.PreparedRequest]):
    """Record the HTTP requests one SDK app (it owns a ``requests`` session) sends, its token request too."""
    app._session.hooks["response"].append(lambda r, *a, **kw: log.append(r.request))
    return app


class RecordingTransport(httpx.BaseTransport):
    """The real HTTP transport, keeping every (request, response) pair the connector exchanged."""

    def __init__(self) -> None:
        self.inner = httpx.HTTPTransport()
        self.calls: list[tuple[httpx.Request, httpx.Response]] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self.inner.handle_request(request)
        response.read()
        self.calls.append((request, response))
        return response

    def close(self) -> None:
        self.inner.close()


def assert_taken_whole(model, sent: dict) -> None:
    """``sent`` parses with the SDK's request model and dumps back unchanged: no field the model does not know
    (pydantic would drop it silently) and no value it had to coerce."""
    parsed = model.model_validate(sent)
    assert parsed.model_dump(mode="json", exclude_unset=True) == sent


@pytest.fixture
def cdek_stack(make_stack):
    stack = make_stack(only=["cdek"])
    return stack, sdk_client(stack)


# -- the SDK against the simulator ----------------------------------------------------------------------------


def test_oauth_token_and_auth_errors(cdek_stack):
    stack, client = cdek_stack
    sent: list[requests.PreparedRequest] = []
    orders = record_sdk(client.order, sent)
    orders._authorize()  # the SDK's client-credentials call: form body to {base_url}oauth/token
    assert orders.token and orders.token.count(".") == 2 and orders.expire > 0
    token_call = sent[0]
    assert route(token_call.method, token_call.url) == ("POST", "/v2/oauth/token", frozenset())
    assert token_call.headers["Content-Type"] == "application/x-www-form-urlencoded"

    wrong = CdekClient("not-our-account", "wrong-secret")
    wrong.base_url = client.base_url
    with pytest.raises(CdekAuthException):
        wrong.order.get_by_im_number("ANY-1")
    bad = requests.post(
        client.base_url + "oauth/token",
        data={"grant_type": "client_credentials", "client_id": "x", "client_secret": "y"},
        timeout=5,
    )
    assert bad.status_code == 401 and bad.json()["error"] == "invalid_client"

    # every other call needs the bearer token: CDEK answers an AUTH request INVALID with v2_token_expired
    assert raw_error(requests.get(client.base_url + "orders/whatever", timeout=5), 401, "AUTH") == {
        "v2_token_expired"
    }
    forged = {"Authorization": "Bearer forged.token.value"}
    missing = requests.get(client.base_url + "orders", params={"im_number": "X"}, headers=forged, timeout=5)
    assert raw_error(missing, 401, "AUTH") == {"v2_token_expired"}


def test_order_lifecycle_parses_and_finds_by_every_key(cdek_stack):
    stack, client = cdek_stack
    req = order_request("CONTRACT-1")
    created = client.order.create(req)
    assert isinstance(created, EntityResponse)
    uuid = created.get_entry_uuid()
    (create,) = created.get_requests()
    assert (create.type, create.state, create.errors) == ("CREATE", "ACCEPTED", []) and create.request_uuid

    pending = client.order.get_by_uuid(uuid)
    assert isinstance(pending, OrderEntityResponse) and pending.entity.cdek_number is None
    assert [s.code for s in pending.entity.statuses] == ["ACCEPTED"]

    stack.advance(10)  # registration is asynchronous
    view = client.order.get_by_uuid(uuid)
    order = view.entity
    assert view.requests[0].state == "SUCCESSFUL" and order.cdek_number
    assert str(order.uuid) == uuid and order.type == 1 and order.is_return is False
    # the entity keeps what was booked, field for field, in the SDK's own models
    assert (order.number, order.tariff_code, order.comment) == ("CONTRACT-1", 136, "contract")
    assert (order.shipment_point, order.delivery_point) == ("PDL12", "NSK42")
    assert order.recipient == req.recipient and order.packages == req.packages
    assert [s.code for s in order.statuses] == ["CREATED", "ACCEPTED"]  # newest first
    assert order.statuses[0].date_time.tzinfo is not None and order.statuses[0].city

    by_im = client.order.get_by_im_number("CONTRACT-1")
    by_cdek = client.order.get_by_cdek_number(str(order.cdek_number))
    assert str(by_im.entity.uuid) == str(by_cdek.entity.uuid) == uuid

    stack.advance(30 * 86400)  # the parcel travels: every status on the way parses
    codes = [s.code for s in client.order.get_by_uuid(uuid).entity.statuses]
    assert codes[0] in ("DELIVERED", "NOT_DELIVERED") and codes[-2:] == ["CREATED", "ACCEPTED"]
    assert "ACCEPTED_AT_PICK_UP_POINT" in codes  # delivery_point given: the parcel waits at the office


def test_door_to_door_order_with_addresses(cdek_stack):
    stack, client = cdek_stack
    req = order_request(
        "CONTRACT-DOOR",
        tariff_code=139,
        shipment_point=None,
        delivery_point=None,
        from_location={"code": 44, "address": "ул. Складская, 1"},
        to_location={"city": "Новосибирск", "address": "Новосибирск, Красный проспект, 1"},
    )
    uuid = client.order.create(req).get_entry_uuid()
    stack.advance(10)
    order = client.order.get_by_uuid(uuid).entity
    assert order.cdek_number and order.from_location.code == 44
    assert order.to_location.address == req.to_location.address


def test_number_dedupes_among_active_orders(cdek_stack):
    stack, client = cdek_stack
    first = client.order.create(order_request("CONTRACT-DUP")).get_entry_uuid()
    with pytest.raises(CdekRequestException) as dup:
        client.order.create(order_request("CONTRACT-DUP"))
    req = error_request(dup.value)
    assert dup.value.status_code == 400 and req.type == "CREATE"
    assert [e.code for e in req.errors] == ["v2_im_number_already_used"]
    # the dedupe answer points the client to the existing order
    assert str(client.order.get_by_im_number("CONTRACT-DUP").entity.uuid) == first

    deleted = client.order.delete(first)
    assert str(deleted.entity.uuid) == first and deleted.requests[0].type == "DELETE"
    assert client.order.get_by_uuid(first).entity.statuses[0].code == "REMOVED"
    again = client.order.create(order_request("CONTRACT-DUP"))  # a removed order frees its number
    assert again.get_entry_uuid() != first
    assert str(client.order.get_by_im_number("CONTRACT-DUP").entity.uuid) == again.get_entry_uuid()


def test_validation_and_refusals_in_official_shape(cdek_stack):
    stack, client = cdek_stack
    both = order_request("Заказ-1", from_location={"code": 44, "address": "ул. Складская, 1"})
    with pytest.raises(CdekRequestException) as bad:
        client.order.create(both)  # non-ASCII number and both shipment_point and from_location
    req = error_request(bad.value)
    assert bad.value.status_code == 400 and req.type == "CREATE"
    assert {"v2_invalid_format", "v2_shipment_address_multivalued"} <= {e.code for e in req.errors}

    # asynchronous refusal: accepted first, INVALID with its errors once CDEK has looked at it
    uuid = client.order.create(order_request("CONTRACT-TARIFF", tariff_code=9999)).get_entry_uuid()
    stack.advance(10)
    view = client.order.get_by_uuid(uuid)
    assert view.requests[0].state == "INVALID" and view.requests[0].errors[0].code == "v2_tariff_not_found"
    assert view.entity.statuses[0].code == "INVALID" and view.entity.cdek_number is None

    # deleting: refused once the parcel reached the warehouse, unknown uuid not found
    shipped = client.order.create(order_request("CONTRACT-SHIPPED")).get_entry_uuid()
    stack.advance(86400)
    with pytest.raises(CdekRequestException) as late:
        client.order.delete(shipped)
    assert late.value.status_code == 400 and error_request(late.value).type == "DELETE"
    with pytest.raises(CdekRequestException) as gone:
        client.order.delete("00000000-0000-4000-8000-000000000000")
    assert gone.value.status_code == 404 and error_request(gone.value).errors[0].code == "v2_entity_not_found"


def test_not_found_answers(cdek_stack):
    stack, client = cdek_stack
    cases = (
        (lambda: client.order.get_by_uuid("00000000-0000-4000-8000-000000000000"), "v2_entity_not_found"),
        (lambda: client.order.get_by_im_number("NO-SUCH-ORDER"), "v2_entity_not_found_im_number"),
        (lambda: client.order.get_by_cdek_number("1"), "v2_entity_not_found"),
        (lambda: client.invoice.get("00000000-0000-4000-8000-000000000000"), "v2_entity_not_found"),
        (lambda: client.barcode.get("00000000-0000-4000-8000-000000000000"), "v2_entity_not_found"),
    )
    for call, code in cases:
        with pytest.raises(CdekRequestException) as exc:
            call()
        req = error_request(exc.value)
        assert exc.value.status_code == 404 and req.type == "GET" and req.errors[0].code == code

    orders = client.order
    orders._authorize()
    headers = {"Authorization": f"Bearer {orders.token}"}
    no_params = requests.get(client.base_url + "orders", headers=headers, timeout=5)
    assert raw_error(no_params, 400, "GET") == {"v2_parameters_empty"}
    unknown = requests.get(client.base_url + "no/such/path", headers=headers, timeout=5)
    assert raw_error(unknown, 404, "GET") == {"v2_bad_request"}


def test_print_forms_poll_and_download(cdek_stack):
    stack, client = cdek_stack
    uuid = client.order.create(order_request("CONTRACT-PRINT")).get_entry_uuid()
    stack.advance(10)
    cdek_number = int(client.order.get_by_uuid(uuid).entity.cdek_number)

    waybill = client.invoice.set(
        PrintInvoiceRequest(orders=[{"order_uuid": uuid}], copy_count=2, type="tpl_russia")
    )
    label = client.barcode.set(
        PrintBarcodeRequest(orders=[{"cdek_number": cdek_number}], format="A6", lang="ENG")
    )
    assert waybill.requests[0].state == label.requests[0].state == "ACCEPTED"
    pending = client.invoice.get(waybill.get_entry_uuid())
    assert isinstance(pending, WaybillEntityResponse) and pending.entity.url is None
    assert [s.code for s in pending.entity.statuses] == ["ACCEPTED"]

    stack.advance(5)
    ready = client.invoice.get(waybill.get_entry_uuid())
    assert [s.code for s in ready.entity.statuses] == ["READY", "PROCESSING", "ACCEPTED"]
    assert ready.entity.copy_count == 2 and ready.entity.type.value == "tpl_russia"
    assert ready.requests[0].state == "SUCCESSFUL" and ready.entity.url.endswith(
        f"{waybill.get_entry_uuid()}.pdf"
    )
    barcode = client.barcode.get(label.get_entry_uuid())
    assert isinstance(barcode, PrintBarcodeResponse) and barcode.entity.statuses[0].code == "READY"
    assert (barcode.entity.format, barcode.entity.lang) == ("A6", "ENG")
    assert barcode.entity.orders[0].cdek_number == cdek_number

    for pdf in (
        client.invoice.get_pdf(waybill.get_entry_uuid()),
        client.barcode.get_pdf(label.get_entry_uuid()),
    ):
        assert pdf.startswith(b"%PDF-") and pdf.rstrip().endswith(b"%%EOF") and b"CONTRACT-PRINT" in pdf

    # the order now names its print forms (the SDK upper-cases the related entity type)
    related = client.order.get_by_uuid(uuid).related_entities
    assert {(r.type.value, str(r.uuid)) for r in related} == {
        ("WAYBILL", waybill.get_entry_uuid()),
        ("BARCODE", label.get_entry_uuid()),
    }

    # a form for no registered order ends INVALID (v2_entity_empty); a malformed one is refused at once
    empty = client.invoice.set(
        PrintInvoiceRequest(orders=[{"order_uuid": "00000000-0000-4000-8000-00000000000a"}])
    )
    stack.advance(5)
    failed = client.invoice.get(empty.get_entry_uuid())
    assert failed.entity.statuses[0].code == "INVALID" and failed.entity.url is None
    assert failed.requests[0].state == "INVALID" and failed.requests[0].errors[0].code == "v2_entity_empty"
    with pytest.raises(CdekRequestException) as bad:
        client.barcode.set(PrintBarcodeRequest(orders=[{}]))
    assert bad.value.status_code == 400 and error_request(bad.value).errors[0].code == "v2_order_number_empty"


def test_throttles_and_server_faults_in_official_shape(cdek_stack):
    stack, client = cdek_stack
    sim = stack["cdek"]
    sim.faults.set(
        [
            {"kind": "rate_limit", "count": 1, "path": "/v2/orders", "method": "GET", "retry_after": 2},
            {"kind": "server_error", "count": 1, "path": "/v2/orders", "method": "POST", "status": 503},
            {"kind": "server_error", "count": 1, "path": "/v2/print", "method": "POST"},
        ]
    )
    with pytest.raises(CdekRequestException) as throttled:
        client.order.get_by_im_number("ANY-1")
    req = error_request(throttled.value)
    assert (
        throttled.value.status_code == 429
        and req.type == "GET"
        and req.errors[0].code == "v2_too_many_requests"
    )
    with pytest.raises(CdekRequestException) as down:
        client.order.create(order_request("CONTRACT-FAULT"))
    req = error_request(down.value)
    assert (
        down.value.status_code == 503 and req.type == "CREATE" and req.errors[0].code == "v2_internal_error"
    )
    with pytest.raises(CdekRequestException) as broken:
        client.invoice.set(
            PrintInvoiceRequest(orders=[{"order_uuid": "00000000-0000-4000-8000-00000000000b"}])
        )
    assert broken.value.status_code == 500 and error_request(broken.value).type == "CREATE"
    # the faults are spent: the same calls go through
    assert client.order.create(order_request("CONTRACT-FAULT")).requests[0].state == "ACCEPTED"


# -- our connector's requests against the SDK's models ---------------------------------------------------------


def test_connector_requests_fit_the_sdk_models(conn, make_stack):
    stack = make_stack(only=["cdek", "wms"])
    config = load_business_config()
    seed_from_simulators(conn, stack, config, initial_stock=True)
    # call-centre orders of every delivery method: courier, own pickup points, store pickup
    callcentre.submit_orders(conn, generate_callcentre_orders(5, 30, catalog=stack.catalog, messy_share=0.0))
    allocate(conn, config)
    assert ship_reserved(conn).shipments > 0

    transport = RecordingTransport()
    policy = RetryPolicy(attempts=2, sleep=lambda s: None, rng=random.Random(1))
    ep = settings_from_manifest(stack.manifest()).endpoint("cdek")
    client = connector.CdekClient.from_endpoint(ep, policy=policy, rate=None, transport=transport)
    with Clients(settings_from_manifest(stack.manifest())) as clients:
        clients.put("cdek", client)
        assert drain_outbox(conn, clients, effects=("carrier.create_shipment",)).failed == 0
        stack.advance(10)
        connector.sync_bookings(conn, client)  # registered → waybill and label requested
        stack.advance(10)
        done = connector.sync_bookings(conn, client)  # polled READY → PDFs downloaded
        assert done["documents"] > 0 and done["errors"] == 0

        # the same operations through the SDK, on the connector's own bookings: the calls both make
        sdk = sdk_client(stack)
        sdk_calls: list[requests.PreparedRequest] = []
        booked = next(
            httpx.Response(200, content=r.content).json()
            for r, _ in transport.calls
            if (r.method, r.url.path) == ("POST", "/v2/orders")
        )
        uuid, waybill_uuid, label_uuid = conn.execute(
            """SELECT b.carrier_uuid, b.waybill_print_uuid, b.label_print_uuid
               FROM connectors.carrier_bookings b JOIN oms.shipments s USING (shipment_id)
               WHERE s.shipment_number = %s""",
            (booked["number"],),
        ).fetchone()
        orders = record_sdk(sdk.order, sdk_calls)
        assert orders.get_by_uuid(uuid).entity.number == booked["number"]
        assert str(orders.get_by_im_number(booked["number"]).entity.uuid) == uuid
        with pytest.raises(CdekRequestException) as dup:  # the number is booked: CDEK's dedupe answer
            orders.create(OrderRequest.model_validate(booked))
        assert error_request(dup.value).errors[0].code == "v2_im_number_already_used"
        invoices, barcodes = record_sdk(sdk.invoice, sdk_calls), record_sdk(sdk.barcode, sdk_calls)
        invoices.set(PrintInvoiceRequest(orders=[{"order_uuid": uuid}], copy_count=2))
        barcodes.set(PrintBarcodeRequest(orders=[{"order_uuid": uuid}], format="A6"))
        assert invoices.get(waybill_uuid).entity.url and barcodes.get(label_uuid).entity.url
        assert invoices.get_pdf(waybill_uuid).startswith(b"%PDF")
        assert barcodes.get_pdf(label_uuid).startswith(b"%PDF")

    sdk_routes = {route(r.method, r.url) for r in sdk_calls}
    sdk_token_form = next(parse_qs(r.body) for r in sdk_calls if r.url.endswith("/oauth/token"))
    by_route: dict[tuple, int] = {}
    for request, response in transport.calls:
        key = route(request.method, str(request.url))
        assert key in sdk_routes, f"the connector calls {key}, which the SDK never does"
        by_route[key[:2]] = by_route.get(key[:2], 0) + 1
        path = key[1]
        if path == "/v2/oauth/token":
            form = parse_qs(request.content.decode())
            assert request.headers["content-type"] == "application/x-www-form-urlencoded"
            assert form.keys() == sdk_token_form.keys() and form["grant_type"] == ["client_credentials"]
        elif request.method == "POST":
            model = {
                "/v2/orders": OrderRequest,
                "/v2/print/orders": PrintInvoiceRequest,
                "/v2/print/barcodes": PrintBarcodeRequest,
            }[path]
            assert_taken_whole(model, httpx.Response(200, content=request.content).json())
        # what the connector read back parses with the SDK's response models too
        if response.status_code in (200, 202) and path != "/v2/oauth/token" and not path.endswith(".pdf"):
            answer = response.json()
            parser = {
                "/v2/print/orders/{uuid}": WaybillEntityResponse,
                "/v2/print/barcodes/{uuid}": PrintBarcodeResponse,
            }.get(path, OrderEntityResponse if request.method == "GET" else EntityResponse)
            parser.model_validate(answer)
    for call in (
        ("POST", "/v2/oauth/token"),
        ("POST", "/v2/orders"),
        ("GET", "/v2/orders/{uuid}"),
        ("POST", "/v2/print/orders"),
        ("POST", "/v2/print/barcodes"),
        ("GET", "/v2/print/orders/{uuid}"),
        ("GET", "/v2/print/barcodes/{uuid}"),
        ("GET", "/v2/print/orders/{uuid}.pdf"),
        ("GET", "/v2/print/barcodes/{uuid}.pdf"),
    ):
        assert by_route.get(call), f"the connector never called {call}: nothing checked"
