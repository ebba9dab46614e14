"""CDEK API v2 carrier simulator: OAuth, asynchronous orders with advancing statuses, print forms as PDF.

Shapes follow ``reference/channel-apis.md`` §4 (CDEK v2 docs; error codes as used by public SDKs):

* ``POST /v2/oauth/token`` with ``grant_type=client_credentials&client_id&client_secret`` (form body or
  query string) → ``{access_token, token_type: "bearer", expires_in: 3599, scope, jti}``; bad credentials →
  401 ``{"error": "invalid_client"}``. Every other call needs ``Authorization: Bearer <token>``; a missing,
  unknown or expired token → 401 ``{"requests": [{"type": "AUTH", "state": "INVALID", "errors":
  [{"code": "v2_token_expired", …}]}]}``. Token lifetime runs on the protocol (real) clock.
* ``POST /v2/orders`` is asynchronous: structural problems (missing required fields, ``number`` longer than
  40 or non-ASCII, both/neither of ``shipment_point``/``from_location``, ``number`` already used by an active
  order → ``v2_im_number_already_used``) are answered at once with 400 and *every* problem listed;
  otherwise 202 with the request ``ACCEPTED``. ``registration_delay_s`` simulated seconds later the request
  becomes ``SUCCESSFUL`` (``cdek_number`` assigned, status ``CREATED``) or ``INVALID`` (unknown tariff, city
  or pickup point).
* statuses then advance in simulated time: RECEIVED_AT_SHIPMENT_WAREHOUSE → READY_FOR_SHIPMENT_IN_SENDER_CITY →
  SENT_TO_TRANSIT_CITY → ACCEPTED_IN_RECIPIENT_CITY → ACCEPTED_AT_PICK_UP_POINT (``delivery_point`` given) or
  TAKEN_BY_COURIER → DELIVERED, or NOT_DELIVERED for ``not_delivered_share`` of the orders. Transit time grows
  with distance. ``entity.statuses`` lists the newest first, as CDEK does; sort by ``date_time`` if in doubt.
* ``GET /v2/orders/{uuid}``, ``GET /v2/orders?im_number=`` / ``?cdek_number=``; ``DELETE /v2/orders/{uuid}``
  (only before the parcel reached the warehouse; frees the ``number``).
* print forms (``POST /v2/print/orders`` waybills, ``POST /v2/print/barcodes`` labels) are asynchronous too:
  ACCEPTED → PROCESSING → READY (``url`` set) after ``print_delay_s``, or INVALID (``v2_entity_empty``) when
  none of the orders is registered; the ``url`` returns a real PDF (Bearer token required, as in CDEK).
  Labels keep their ``lang`` (RUS default), waybills their template ``type`` (``tpl_*``), as sent.
* every error, whatever its cause (validation, not found, a missing or expired token, an unknown path, a
  throttle or a server fault), is a ``requests`` list of one request ``{request_uuid, type, date_time,
  state: "INVALID", errors: [{code, message}], warnings}`` — the entity-request shape of CDEK v2, which
  clients parse with one model (``type`` AUTH / GET / CREATE / UPDATE / DELETE after what was asked).

State across restarts (``persist``): bookings with their requests and statuses, the pending status
timeline, print forms (their PDFs are drawn again on download) and the counters behind CDEK numbers are
kept; UUIDs come from a stream seeded with the start's ``generation``, so a restarted CDEK never hands out a
UUID it issued before. Tokens are not kept: a client meets a 401 and takes a new one, as after a CDEK key
rotation.

Not simulated (the connector polls and books with tariffs chosen by the business configuration): webhooks
(ORDER_STATUS, PRINT_FORM), tariff calculation, offices and locations, intakes, order changes (PATCH), refusals
and client returns, print-form expiry, and the tariff's mode (door/office) against the points and addresses
given. ``tests/contract/test_cdek_contract.py`` drives the published ``cdek`` SDK against this simulator.
"""

from __future__ import annotations

import base64
import hashlib
import heapq
import hmac
import json
import random
import time
import uuid as uuidlib
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from simulators.base import (
    UNCLEAN_ID_GAP,
    ApiError,
    SimContext,
    Simulator,
    dt_in,
    dt_out,
    read_json,
    secs_header,
)
from simulators.faults import FaultRule, FaultSet
from simulators.geo import CITY_BY_CDEK_CODE, CITY_BY_HUB, CITY_BY_NAME, City, find_city, haversine_km
from simulators.pdf import PAGE_SIZES, PdfPage, build_pdf

TOKEN_LIFETIME_S = 3599
TARIFFS = {
    136: "Посылка склад-склад", 137: "Посылка склад-дверь", 138: "Посылка дверь-склад", 139: "Посылка дверь-дверь",
    233: "Экономичная посылка склад-дверь", 234: "Экономичная посылка склад-склад", 366: "Посылка дверь-постамат",
    368: "Посылка склад-постамат", 480: "Экспресс дверь-дверь", 481: "Экспресс дверь-склад",
    482: "Экспресс склад-дверь", 483: "Экспресс склад-склад", 485: "Экспресс дверь-постамат",
    486: "Экспресс склад-постамат",
}  # fmt: skip
STATUS_NAMES = {
    "ACCEPTED": "Принят",
    "CREATED": "Создан",
    "RECEIVED_AT_SHIPMENT_WAREHOUSE": "Принят на склад отправителя",
    "READY_FOR_SHIPMENT_IN_SENDER_CITY": "Выдан на отправку в г. отправителе",
    "SENT_TO_TRANSIT_CITY": "Отправлен в г. транзит",
    "ACCEPTED_IN_RECIPIENT_CITY": "Встречен в г. получателе",
    "ACCEPTED_AT_PICK_UP_POINT": "Принят на склад до востребования",
    "TAKEN_BY_COURIER": "Выдан на доставку",
    "DELIVERED": "Вручен",
    "NOT_DELIVERED": "Не вручен",
    "REMOVED": "Удален",
    "INVALID": "Некорректный заказ",
}
PRINT_STATUS_NAMES = {
    "ACCEPTED": "Принят",
    "PROCESSING": "Формируется",
    "READY": "Сформирован",
    "INVALID": "Некорректный",
}
DELETABLE = {"ACCEPTED", "CREATED"}
#: label languages (``lang`` of ``POST /v2/print/barcodes``), waybill templates (``type`` of ``/v2/print/orders``)
BARCODE_LANGS = ("RUS", "ENG", "DEU", "ITA", "TUR", "CES", "KOR", "LIT", "LAV")
WAYBILL_TYPES = (
    "tpl_china", "tpl_armenia", "tpl_russia", "tpl_english", "tpl_italian", "tpl_korean", "tpl_latvian",
    "tpl_lithuanian", "tpl_german", "tpl_turkish", "tpl_czech", "tpl_thailand", "tpl_invoice",
)  # fmt: skip
#: the kind of entity request being served (AUTH, GET, CREATE, UPDATE, DELETE): error bodies built without the
#: request at hand (throttles, server faults) still name it, as every CDEK ``requests`` item does
_CALL_KIND: ContextVar[str] = ContextVar("cdek_call_kind", default="GET")
ENTITY_FIELDS = (
    "type", "number", "tariff_code", "comment", "shipment_point", "delivery_point", "from_location", "to_location",
    "sender", "seller", "recipient", "packages", "services", "delivery_recipient_cost", "print",
)  # fmt: skip


def cdek_time(dt: datetime) -> str:
    """CDEK's timestamp form: ``2025-03-03T08:00:00+0000``."""
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S+0000")


def _err(code: str, message: str) -> dict:
    return {"code": code, "message": message}


def call_kind(request: Request) -> str:
    """CDEK's request ``type`` for an HTTP call: AUTH for the token, else after the method."""
    if request.url.path == "/v2/oauth/token":
        return "AUTH"
    return {"POST": "CREATE", "PATCH": "UPDATE", "DELETE": "DELETE"}.get(request.method, "GET")


def _request(
    kind: str, state: str, at: datetime, errors: list[dict] | None = None, request_uuid: str | None = None
):
    return {
        "request_uuid": request_uuid,
        "type": kind,
        "state": state,
        "date_time": cdek_time(at),
        "errors": errors or [],
        "warnings": [],
    }


@dataclass
class CdekOrder:
    uuid: str
    number: str
    payload: dict
    accepted_at: datetime
    requests: list[dict]
    statuses: list[dict] = field(default_factory=list)  # chronological internally
    cdek_number: str | None = None
    state: str = "ACCEPTED"  # of the CREATE request: ACCEPTED | SUCCESSFUL | INVALID
    removed: bool = False
    sender_city: City | None = None
    recipient_city: City | None = None
    related: list[dict] = field(default_factory=list)

    @property
    def last_code(self) -> str | None:
        return self.statuses[-1]["code"] if self.statuses else None

    @property
    def active(self) -> bool:
        return not self.removed and self.state != "INVALID"


@dataclass
class PrintForm:
    uuid: str
    kind: str  # orders | barcodes
    orders: list[dict]
    copy_count: int
    page_format: str
    created_at: datetime
    request: dict
    statuses: list[dict] = field(default_factory=list)
    state: str = "ACCEPTED"
    pdf: bytes | None = None
    lang: str | None = None  # labels: RUS unless asked otherwise
    template: str | None = None  # waybills: the ``type`` asked for, if any


class CdekSimulator(Simulator):
    name = "cdek"

    def __init__(
        self,
        ctx: SimContext,
        *,
        client_id: str = "sim-cdek-account",
        client_secret: str = "sim-cdek-secure-password",
        registration_delay_s: float = 5.0,
        print_delay_s: float = 3.0,
        not_delivered_share: float = 0.05,
        transit_scale: float = 1.0,
        faults=(),
    ) -> None:
        super().__init__(ctx, faults=faults)
        self.client_id = client_id
        self.client_secret = client_secret
        self.registration_delay = timedelta(seconds=registration_delay_s)
        self.print_delay = timedelta(seconds=print_delay_s)
        self.not_delivered_share = not_delivered_share
        #: multiplies every leg of a parcel's journey: a live demo compresses days of transit into minutes
        #: while the order stream keeps real time (so placed/shipped/delivered stay on one clock)
        if transit_scale <= 0:
            raise ValueError("transit_scale must be > 0")
        self.transit_scale = transit_scale
        self.tokens: dict[str, float] = {}
        self.orders: dict[str, CdekOrder] = {}
        self.prints: dict[str, PrintForm] = {}
        self._events: list[tuple[datetime, int, str, str, str]] = []  # (at, seq, kind, uuid, code)
        self._event_seq = 0
        self._uuids = random.Random(f"{ctx.seed}:cdek:uuids")
        self._registered = 0
        self._signing_key = hashlib.sha256(f"cdek-sim:{ctx.seed}".encode()).digest()

    def credentials(self) -> dict:
        return {"client_id": self.client_id, "client_secret": self.client_secret}

    # -- state across restarts ------------------------------------------------------------------------------
    def dump_state(self) -> dict:
        return {
            "orders": [
                {
                    "uuid": o.uuid, "number": o.number, "payload": o.payload, "accepted_at": dt_out(o.accepted_at),
                    "requests": o.requests, "statuses": o.statuses, "cdek_number": o.cdek_number,
                    "state": o.state, "removed": o.removed, "related": o.related,
                    "sender_city": o.sender_city.name if o.sender_city else None,
                    "recipient_city": o.recipient_city.name if o.recipient_city else None,
                }
                for o in self.orders.values()
            ],
            "prints": [
                {
                    "uuid": f.uuid, "kind": f.kind, "orders": f.orders, "copy_count": f.copy_count,
                    "page_format": f.page_format, "created_at": dt_out(f.created_at), "request": f.request,
                    "statuses": f.statuses, "state": f.state, "lang": f.lang, "template": f.template,
                }
                for f in self.prints.values()
            ],
            "events": [[dt_out(at), seq, kind, uuid, code] for at, seq, kind, uuid, code in self._events],
            "event_seq": self._event_seq,
            "registered": self._registered,
        }  # fmt: skip

    def load_state(self, data: dict, *, clean: bool) -> None:
        self.orders = {
            o["uuid"]: CdekOrder(
                o["uuid"], o["number"], o["payload"], dt_in(o["accepted_at"]), o["requests"],
                statuses=o["statuses"], cdek_number=o["cdek_number"], state=o["state"], removed=o["removed"],
                sender_city=CITY_BY_NAME.get(o["sender_city"] or ""),
                recipient_city=CITY_BY_NAME.get(o["recipient_city"] or ""), related=o["related"],
            )
            for o in data["orders"]
        }  # fmt: skip
        self.prints = {
            f["uuid"]: PrintForm(
                f["uuid"], f["kind"], f["orders"], f["copy_count"], f["page_format"], dt_in(f["created_at"]),
                f["request"], statuses=f["statuses"], state=f["state"], template=f.get("template"),
                lang=f.get("lang") or ("RUS" if f["kind"] == "barcodes" else None),
            )
            for f in data["prints"]
        }  # fmt: skip
        self._events = [(dt_in(at), seq, kind, uuid, code) for at, seq, kind, uuid, code in data["events"]]
        heapq.heapify(self._events)
        self._event_seq = int(data["event_seq"])
        # CDEK numbers go on from the last one saved (past any issued after it, if the process died)
        self._registered = int(data["registered"]) + (0 if clean else UNCLEAN_ID_GAP)
        # a new UUID stream per start: no UUID of an earlier start can come out again
        self._uuids = random.Random(f"{self.ctx.seed}:cdek:uuids:{self.generation}")

    def _new_uuid(self) -> str:
        return str(uuidlib.UUID(int=self._uuids.getrandbits(128), version=4))

    def _schedule(self, at: datetime, kind: str, uuid: str, code: str = "") -> None:
        self._event_seq += 1
        heapq.heappush(self._events, (at, self._event_seq, kind, uuid, code))

    # -- world ------------------------------------------------------------------------------------------
    def sync(self) -> None:
        now = self.now
        while self._events and self._events[0][0] <= now:
            at, _, kind, uuid, code = heapq.heappop(self._events)
            if kind == "register":
                self._register(self.orders[uuid], at)
            elif kind == "status":
                order = self.orders[uuid]
                if not order.removed:
                    self._add_status(order, code, at, self._status_city(order, code))
            elif kind == "print":
                self._advance_print(self.prints[uuid], code, at)

    def _add_status(self, order: CdekOrder, code: str, at: datetime, city: City | None) -> None:
        order.statuses.append(
            {
                "code": code,
                "name": STATUS_NAMES[code],
                "date_time": cdek_time(at),
                "city": city.name if city else None,
            }
        )

    def _status_city(self, order: CdekOrder, code: str) -> City | None:
        if code in (
            "RECEIVED_AT_SHIPMENT_WAREHOUSE",
            "READY_FOR_SHIPMENT_IN_SENDER_CITY",
            "SENT_TO_TRANSIT_CITY",
        ):
            return order.sender_city
        return order.recipient_city

    def _resolve_location(self, loc: dict | None, point: str | None) -> City | None:
        if point:
            return CITY_BY_HUB.get("".join(ch for ch in point if ch.isalpha())[:3].upper())
        if not isinstance(loc, dict):
            return None
        if loc.get("code") is not None:
            code = loc["code"]
            if isinstance(code, str) and code.isdigit():
                code = int(code)
            return CITY_BY_CDEK_CODE.get(code) if isinstance(code, int) else None
        if isinstance(loc.get("city"), str) and loc["city"] in CITY_BY_NAME:
            return CITY_BY_NAME[loc["city"]]
        return find_city(loc.get("address"))

    def _register(self, order: CdekOrder, at: datetime) -> None:
        p = order.payload
        errors = []
        if p.get("tariff_code") not in TARIFFS:
            errors.append(_err("v2_tariff_not_found", f"Тариф {p.get('tariff_code')} не найден"))
        order.sender_city = self._resolve_location(p.get("from_location"), p.get("shipment_point"))
        if order.sender_city is None:
            code = (
                "shipment_location_is_not_recognized"
                if p.get("shipment_point")
                else "v2_sender_location_not_recognized"
            )
            errors.append(_err(code, "Не удалось определить город отправителя"))
        order.recipient_city = self._resolve_location(p.get("to_location"), p.get("delivery_point"))
        if order.recipient_city is None:
            code = (
                "delivery_location_is_not_recognized"
                if p.get("delivery_point")
                else "v2_recipient_location_not_recognized"
            )
            errors.append(_err(code, "Не удалось определить город получателя"))
        create = order.requests[0]
        if errors:
            order.state = create["state"] = "INVALID"
            create["errors"] = errors
            create["date_time"] = cdek_time(at)
            self._add_status(order, "INVALID", at, None)
            return
        order.state = create["state"] = "SUCCESSFUL"
        create["date_time"] = cdek_time(at)
        self._registered += 1
        order.cdek_number = str(1_100_000_000 + self._registered * 17 + self.ctx.seed % 17)
        self._add_status(order, "CREATED", at, order.sender_city)
        self._plan(order, at)

    def _plan(self, order: CdekOrder, at: datetime) -> None:
        """Deterministic timeline per order: the same seed and number give the same statuses and times."""
        rng = random.Random(f"{self.ctx.seed}:cdek:plan:{order.number}:{order.uuid}")
        km = haversine_km(
            order.sender_city.lat, order.sender_city.lon, order.recipient_city.lat, order.recipient_city.lon
        )
        transit_h = (6 + km / 45) * rng.uniform(0.8, 1.3)
        last_mile = "ACCEPTED_AT_PICK_UP_POINT" if order.payload.get("delivery_point") else "TAKEN_BY_COURIER"
        final = "NOT_DELIVERED" if rng.random() < self.not_delivered_share else "DELIVERED"
        steps = (
            ("RECEIVED_AT_SHIPMENT_WAREHOUSE", rng.uniform(1, 6)),
            ("READY_FOR_SHIPMENT_IN_SENDER_CITY", rng.uniform(1, 4)),
            ("SENT_TO_TRANSIT_CITY", rng.uniform(1, 8)),
            ("ACCEPTED_IN_RECIPIENT_CITY", transit_h),
            (last_mile, rng.uniform(2, 12)),
            (final, rng.uniform(1, 48) if last_mile == "ACCEPTED_AT_PICK_UP_POINT" else rng.uniform(1, 8)),
        )
        t = at
        for code, hours in steps:
            t = t + timedelta(hours=hours * self.transit_scale)
            self._schedule(t, "status", order.uuid, code)

    # -- protocol -----------------------------------------------------------------------------------------
    def _auth_error(self, message: str) -> Response:
        return self._invalid(401, "AUTH", [_err("v2_token_expired", message)], self.now).response()

    def endpoint(self, handler, label: str = ""):
        """The base endpoint, run with the call's request kind at hand for error bodies (see ``_CALL_KIND``)."""
        run = super().endpoint(handler, label)

        async def tagged(request: Request) -> Response:
            token = _CALL_KIND.set(call_kind(request))
            try:
                return await run(request)
            finally:
                _CALL_KIND.reset(token)

        return tagged

    def before_request(self, request: Request) -> Response | None:
        if request.url.path == "/v2/oauth/token":
            return None
        header = request.headers.get("authorization", "")
        if not header.lower().startswith("bearer "):
            return self._auth_error("Требуется авторизация: передайте Bearer-токен")
        expires = self.tokens.get(header[7:].strip())
        if expires is None:
            return self._auth_error("Токен недействителен")
        if self.ctx.protocol_time() >= expires:
            return self._auth_error("Срок действия токена истёк")
        return None

    @staticmethod
    def _invalid(status: int, kind: str, errors: list[dict], at: datetime, headers=None) -> ApiError:
        return ApiError(status, {"requests": [_request(kind, "INVALID", at, errors)]}, headers)

    def fault_rate_limited(self, rule: FaultRule) -> Response:
        errors = [_err("v2_too_many_requests", "Слишком много запросов")]
        headers = {"Retry-After": secs_header(rule.retry_after)}
        return self._invalid(429, _CALL_KIND.get(), errors, self.now, headers).response()

    def fault_server_error(self, rule: FaultRule) -> Response:
        status = rule.status or 500
        headers = {"Retry-After": secs_header(rule.retry_after)} if status == 503 else None
        errors = [_err("v2_internal_error", "Запрос выполнился с системной ошибкой")]
        return self._invalid(status, _CALL_KIND.get(), errors, self.now, headers).response()

    def not_found(self, request: Request) -> Response:
        errors = [_err("v2_bad_request", "Передан некорректный запрос")]
        return self._invalid(404, call_kind(request), errors, self.now).response()

    def internal_error(self) -> Response:
        errors = [_err("v2_internal_error", "Запрос выполнился с системной ошибкой")]
        return self._invalid(500, _CALL_KIND.get(), errors, self.now).response()

    def api_routes(self):
        return [
            ("/v2/oauth/token", self.token, ["POST"]),
            ("/v2/orders", self.create_order, ["POST"]),
            ("/v2/orders", self.find_order, ["GET"]),
            ("/v2/orders/{uuid}", self.get_order, ["GET"]),
            ("/v2/orders/{uuid}", self.delete_order, ["DELETE"]),
            ("/v2/print/orders", self.create_waybill, ["POST"]),
            ("/v2/print/barcodes", self.create_barcode, ["POST"]),
            ("/v2/print/orders/{uuid}.pdf", self.download_waybill, ["GET"]),
            ("/v2/print/barcodes/{uuid}.pdf", self.download_barcode, ["GET"]),
            ("/v2/print/orders/{uuid}", self.get_waybill, ["GET"]),
            ("/v2/print/barcodes/{uuid}", self.get_barcode, ["GET"]),
        ]

    # -- oauth --------------------------------------------------------------------------------------------
    async def token(self, request: Request, faults: FaultSet) -> Response:
        params = {k: v for k, v in request.query_params.items()}
        raw = await request.body()
        if raw:
            for key, values in parse_qs(raw.decode("utf-8", "replace")).items():
                params[key] = values[-1]
        if params.get("grant_type") != "client_credentials":
            return JSONResponse(
                {"error": "unsupported_grant_type", "error_description": "Unsupported grant type"},
                status_code=400,
            )
        if params.get("client_id") != self.client_id or params.get("client_secret") != self.client_secret:
            return JSONResponse(
                {"error": "invalid_client", "error_description": "Bad credentials"}, status_code=401
            )
        jti = str(uuidlib.uuid4())
        exp = int(time.time()) + TOKEN_LIFETIME_S
        header = base64.urlsafe_b64encode(b'{"alg":"HS256","typ":"JWT"}').rstrip(b"=")
        claims = {"scope": ["order:all", "payment:all"], "exp": exp, "jti": jti, "client_id": self.client_id}
        payload = base64.urlsafe_b64encode(json.dumps(claims, separators=(",", ":")).encode()).rstrip(b"=")
        signature = base64.urlsafe_b64encode(
            hmac.new(self._signing_key, header + b"." + payload, hashlib.sha256).digest()
        ).rstrip(b"=")
        token = (header + b"." + payload + b"." + signature).decode()
        with self.lock:
            self.tokens[token] = self.ctx.protocol_time() + TOKEN_LIFETIME_S
        return JSONResponse(
            {
                "access_token": token,
                "token_type": "bearer",
                "expires_in": TOKEN_LIFETIME_S,
                "scope": "order:all payment:all",
                "jti": jti,
            }
        )

    # -- orders -------------------------------------------------------------------------------------------
    def _validate(self, p) -> list[dict]:
        """Collect every structural problem (CDEK answers all of them at once)."""
        if not isinstance(p, dict):
            return [_err("v2_bad_request", "Тело запроса должно быть JSON-объектом")]
        errors: list[dict] = []

        def empty(path: str) -> None:
            errors.append(_err("v2_field_is_empty", f"Не передано обязательное поле: {path}"))

        if p.get("type", 1) not in (1, 2):
            errors.append(_err("v2_invalid_value_type", "type: допустимые значения 1 или 2"))
        number = p.get("number")
        if p.get("type", 1) == 1:
            if number in (None, ""):
                empty("number")
            elif not isinstance(number, str) or len(number) > 40 or not number.isascii():
                errors.append(
                    _err("v2_invalid_format", "number: не более 40 символов латиницы, цифр и знаков")
                )
        tariff = p.get("tariff_code")
        if tariff is None:
            empty("tariff_code")
        elif not isinstance(tariff, int) or isinstance(tariff, bool):
            errors.append(_err("v2_invalid_value_type", "tariff_code: ожидается целое число"))
        recipient = p.get("recipient")
        if not isinstance(recipient, dict):
            empty("recipient")
        else:
            if not recipient.get("name"):
                empty("recipient.name")
            phones = recipient.get("phones")
            if (
                not isinstance(phones, list)
                or not phones
                or not all(isinstance(x, dict) and x.get("number") for x in phones)
            ):
                empty("recipient.phones[].number")
        if p.get("shipment_point") and p.get("from_location"):
            errors.append(
                _err(
                    "v2_shipment_address_multivalued",
                    "Одновременно переданы ПВЗ отправителя и адрес отправителя",
                )
            )
        if not p.get("shipment_point") and not p.get("from_location"):
            errors.append(
                _err(
                    "v2_order_location_from_and_shipment_point_empty",
                    "Адрес отправителя и ПВЗ отправителя пустые",
                )
            )
        if p.get("delivery_point") and p.get("to_location"):
            errors.append(
                _err(
                    "v2_delivery_address_multivalued",
                    "Одновременно переданы ПВЗ получателя и адрес получателя",
                )
            )
        if not p.get("delivery_point") and not p.get("to_location"):
            errors.append(
                _err(
                    "v2_order_location_to_and_delivery_point_empty",
                    "Адрес получателя и ПВЗ получателя пустые",
                )
            )
        packages = p.get("packages")
        if not isinstance(packages, list) or not packages:
            empty("packages")
        else:
            for i, pkg in enumerate(packages):
                if not isinstance(pkg, dict):
                    errors.append(_err("v2_invalid_value_type", f"packages[{i}]: ожидается объект"))
                    continue
                if not pkg.get("number"):
                    empty(f"packages[{i}].number")
                weight = pkg.get("weight")
                if weight is None:
                    empty(f"packages[{i}].weight")
                elif not isinstance(weight, int) or isinstance(weight, bool) or weight <= 0:
                    errors.append(
                        _err("v2_invalid_value_type", f"packages[{i}].weight: целое число граммов > 0")
                    )
                items = pkg.get("items")
                if p.get("type", 1) == 1:
                    if not isinstance(items, list) or not items:
                        empty(f"packages[{i}].items")
                        continue
                    if len(items) > 126:
                        errors.append(
                            _err(
                                "v2_number_items_is_more_126", "Количество позиций товаров в заказе свыше 126"
                            )
                        )
                    for j, item in enumerate(items):
                        if not isinstance(item, dict):
                            errors.append(
                                _err("v2_invalid_value_type", f"packages[{i}].items[{j}]: ожидается объект")
                            )
                            continue
                        for key in ("name", "ware_key", "payment", "cost", "weight", "amount"):
                            if item.get(key) is None:
                                empty(f"packages[{i}].items[{j}].{key}")
                        amount = item.get("amount")
                        if amount is not None and (
                            not isinstance(amount, int) or isinstance(amount, bool) or amount < 1
                        ):
                            errors.append(
                                _err("v2_invalid_value_type", f"packages[{i}].items[{j}].amount: целое > 0")
                            )
        return errors

    async def create_order(self, request: Request, faults: FaultSet) -> Response:
        try:
            payload = await read_json(request)
        except ValueError as exc:
            raise self._invalid(400, "CREATE", [_err("v2_bad_request", str(exc))], self.now) from exc
        errors = self._validate(payload)
        with self.lock:
            now = self.now
            number = payload.get("number") if isinstance(payload, dict) else None
            if not errors and number and any(o.number == number and o.active for o in self.orders.values()):
                errors.append(_err("v2_im_number_already_used", f"Номер заказа {number} уже используется"))
            if errors:
                raise self._invalid(400, "CREATE", errors, now)
            uuid = self._new_uuid()
            create = _request("CREATE", "ACCEPTED", now, request_uuid=self._new_uuid())
            order = CdekOrder(uuid, number or "", payload, now, [create])
            self._add_status(order, "ACCEPTED", now, None)
            self.orders[uuid] = order
            self._schedule(now + self.registration_delay, "register", uuid)
            body = {"entity": {"uuid": uuid}, "requests": [dict(create)]}
        return JSONResponse(body, status_code=202)

    def _entity(self, order: CdekOrder) -> dict:
        entity = {"uuid": order.uuid}
        entity.update({k: order.payload[k] for k in ENTITY_FIELDS if k in order.payload})
        entity.setdefault("type", 1)
        entity.update({"is_return": False, "is_reverse": False, "is_client_return": False})
        if order.cdek_number:
            entity["cdek_number"] = order.cdek_number
        entity["statuses"] = list(reversed(order.statuses))
        return entity

    def _order_view(self, order: CdekOrder) -> dict:
        body = {"entity": self._entity(order), "requests": [dict(r) for r in order.requests]}
        if order.related:
            body["related_entities"] = [dict(r) for r in order.related]
        return body

    def _not_found(self, code: str, message: str) -> ApiError:
        return self._invalid(404, "GET", [_err(code, message)], self.now)

    async def get_order(self, request: Request, faults: FaultSet) -> Response:
        with self.lock:
            order = self.orders.get(request.path_params["uuid"])
            if order is None:
                raise self._not_found(
                    "v2_entity_not_found", "Заказ с указанным идентификатором не существует либо удален"
                )
            return JSONResponse(self._order_view(order))

    async def find_order(self, request: Request, faults: FaultSet) -> Response:
        im_number = request.query_params.get("im_number")
        cdek_number = request.query_params.get("cdek_number")
        if not im_number and not cdek_number:
            raise self._invalid(
                400,
                "GET",
                [_err("v2_parameters_empty", "Все параметры запроса пустые или не переданы")],
                self.now,
            )
        with self.lock:
            if cdek_number:
                found = [o for o in self.orders.values() if o.cdek_number == cdek_number]
            else:
                found = [o for o in self.orders.values() if o.number == im_number]
            if not found:
                code = "v2_entity_not_found_im_number" if im_number else "v2_entity_not_found"
                raise self._not_found(code, "Сущность с указанным идентификатором не существует либо удалена")
            found.sort(key=lambda o: (o.active, o.accepted_at))  # the latest active order wins
            return JSONResponse(self._order_view(found[-1]))

    async def delete_order(self, request: Request, faults: FaultSet) -> Response:
        with self.lock:
            order = self.orders.get(request.path_params["uuid"])
            now = self.now
            if order is None or order.removed:
                raise self._invalid(
                    404, "DELETE", [_err("v2_entity_not_found", "Заказ не существует либо удален")], now
                )
            if order.last_code not in DELETABLE:
                raise self._invalid(
                    400,
                    "DELETE",
                    [_err("v2_entity_invalid", "Заказ уже передан в доставку и не может быть удален")],
                    now,
                )
            request_uuid = self._new_uuid()
            order.removed = True
            order.requests.append(_request("DELETE", "SUCCESSFUL", now, request_uuid=request_uuid))
            self._add_status(order, "REMOVED", now, order.sender_city)
            accepted = _request("DELETE", "ACCEPTED", now, request_uuid=request_uuid)
        return JSONResponse({"entity": {"uuid": order.uuid}, "requests": [accepted]}, status_code=202)

    # -- print forms --------------------------------------------------------------------------------------
    async def _create_print(self, request: Request, kind: str) -> Response:
        try:
            body = await read_json(request)
        except ValueError as exc:
            raise self._invalid(400, "CREATE", [_err("v2_bad_request", str(exc))], self.now) from exc
        errors = []
        orders = body.get("orders") if isinstance(body, dict) else None
        if not isinstance(orders, list) or not orders:
            errors.append(_err("v2_field_is_empty", "Не передано обязательное поле: orders"))
        else:
            for i, ref in enumerate(orders):
                if not isinstance(ref, dict) or not (ref.get("order_uuid") or ref.get("cdek_number")):
                    errors.append(
                        _err(
                            "v2_order_number_empty", f"orders[{i}]: не переданы номер и идентификатор заказа"
                        )
                    )
        copy_count = body.get("copy_count", 2 if kind == "orders" else 1) if isinstance(body, dict) else 1
        if not isinstance(copy_count, int) or isinstance(copy_count, bool) or not 1 <= copy_count <= 10:
            errors.append(_err("v2_invalid_value_type", "copy_count: целое от 1 до 10"))
        page_format = (body.get("format") or "A4") if isinstance(body, dict) and kind == "barcodes" else "A4"
        if page_format not in PAGE_SIZES:
            errors.append(_err("v2_invalid_format", "format: допустимые значения A4, A5, A6, A7"))
        lang = template = None
        if kind == "barcodes":
            lang = (body.get("lang") or "RUS") if isinstance(body, dict) else "RUS"
            if lang not in BARCODE_LANGS:
                errors.append(
                    _err("v2_invalid_format", f"lang: допустимые значения {', '.join(BARCODE_LANGS)}")
                )
        elif isinstance(body, dict) and body.get("type") is not None:
            template = body["type"]
            if template not in WAYBILL_TYPES:
                errors.append(_err("v2_invalid_format", "type: неизвестный шаблон квитанции"))
        with self.lock:
            now = self.now
            if errors:
                raise self._invalid(400, "CREATE", errors, now)
            uuid = self._new_uuid()
            req = _request("CREATE", "ACCEPTED", now, request_uuid=self._new_uuid())
            form = PrintForm(
                uuid, kind, orders, copy_count, page_format, now, req, lang=lang, template=template
            )
            self._print_status(form, "ACCEPTED", now)
            self.prints[uuid] = form
            self._schedule(now + min(timedelta(seconds=1), self.print_delay), "print", uuid, "PROCESSING")
            self._schedule(now + self.print_delay, "print", uuid, "DONE")
        return JSONResponse({"entity": {"uuid": uuid}, "requests": [dict(req)]}, status_code=202)

    def _print_status(self, form: PrintForm, code: str, at: datetime) -> None:
        form.state = code
        form.statuses.append({"code": code, "name": PRINT_STATUS_NAMES[code], "date_time": cdek_time(at)})

    def _form_orders(self, form: PrintForm) -> list[CdekOrder]:
        """The registered, not removed orders a print form names (by uuid or CDEK number)."""
        found = []
        for ref in form.orders:
            order = self.orders.get(ref.get("order_uuid") or "")
            if order is None and ref.get("cdek_number"):
                order = next(
                    (o for o in self.orders.values() if o.cdek_number == str(ref["cdek_number"])), None
                )
            if order is not None and not order.removed and order.cdek_number:
                found.append(order)
        return found

    def _render(self, form: PrintForm, orders: list[CdekOrder]) -> bytes:
        pages: list[PdfPage] = []
        for order in orders:
            pages.extend([self._page(form, order)] * form.copy_count)
        title = "CDEK waybill" if form.kind == "orders" else "CDEK barcode"
        return build_pdf(pages, page_format=form.page_format, title=title)

    def _advance_print(self, form: PrintForm, step: str, at: datetime) -> None:
        if step == "PROCESSING":
            if form.state == "ACCEPTED":
                self._print_status(form, "PROCESSING", at)
            return
        orders = self._form_orders(form)
        for order in orders:
            order.related.append(
                {"type": "waybill" if form.kind == "orders" else "barcode", "uuid": form.uuid}
            )
        if form.state == "ACCEPTED":
            self._print_status(form, "PROCESSING", at)
        if not orders:
            self._print_status(form, "INVALID", at)
            form.request["state"] = "INVALID"
            form.request["errors"] = [
                _err("v2_entity_empty", "Печатная форма не сформировалась, так как все заказы некорректны")
            ]
            return
        form.pdf = self._render(form, orders)
        form.request["state"] = "SUCCESSFUL"
        self._print_status(form, "READY", at)

    def _page(self, form: PrintForm, order: CdekOrder) -> PdfPage:
        p = order.payload
        recipient = p.get("recipient") or {}
        phones = recipient.get("phones") or [{}]
        packages = p.get("packages") or []
        weight = sum(pkg.get("weight", 0) for pkg in packages if isinstance(pkg, dict))
        destination = p.get("delivery_point") or (p.get("to_location") or {}).get("address", "")
        lines = [
            f"Order number (IM): {order.number}",
            f"CDEK number: {order.cdek_number}",
            f"Tariff: {p.get('tariff_code')}",
            f"From: {order.sender_city.name if order.sender_city else ''}",
            f"To: {order.recipient_city.name if order.recipient_city else ''} {destination}",
            f"Recipient: {recipient.get('name', '')}, {phones[0].get('number', '')}",
            f"Packages: {len(packages)}, weight {weight} g",
        ]
        title = "CDEK WAYBILL" if form.kind == "orders" else "CDEK"
        return PdfPage(title=title, lines=lines, barcode=order.cdek_number)

    def _print_view(self, form: PrintForm, request: Request) -> dict:
        entity = {
            "uuid": form.uuid,
            "orders": [dict(r) for r in form.orders],
            "copy_count": form.copy_count,
            "statuses": list(reversed(form.statuses)),
        }
        if form.kind == "barcodes":
            entity["format"] = form.page_format
            entity["lang"] = form.lang or "RUS"
        elif form.template:
            entity["type"] = form.template
        if form.state == "READY":
            entity["url"] = f"{str(request.base_url).rstrip('/')}/v2/print/{form.kind}/{form.uuid}.pdf"
        return {"entity": entity, "requests": [dict(form.request)]}

    async def create_waybill(self, request: Request, faults: FaultSet) -> Response:
        return await self._create_print(request, "orders")

    async def create_barcode(self, request: Request, faults: FaultSet) -> Response:
        return await self._create_print(request, "barcodes")

    def _get_print(self, request: Request, kind: str) -> PrintForm:
        form = self.prints.get(request.path_params["uuid"])
        if form is None or form.kind != kind:
            raise self._not_found(
                "v2_entity_not_found", "Печатная форма с указанным идентификатором не существует"
            )
        return form

    async def get_waybill(self, request: Request, faults: FaultSet) -> Response:
        with self.lock:
            return JSONResponse(self._print_view(self._get_print(request, "orders"), request))

    async def get_barcode(self, request: Request, faults: FaultSet) -> Response:
        with self.lock:
            return JSONResponse(self._print_view(self._get_print(request, "barcodes"), request))

    async def _download(self, request: Request, kind: str) -> Response:
        with self.lock:
            form = self._get_print(request, kind)
            if form.pdf is None and form.state == "READY":  # restored from saved state: draw it again
                form.pdf = self._render(form, self._form_orders(form))
            if form.pdf is None:
                raise self._not_found("v2_entity_not_found", "Печатная форма ещё не сформирована")
            pdf = form.pdf
        return Response(
            pdf,
            media_type="application/pdf",
            headers={"Content-Disposition": f'attachment; filename="{kind}-{form.uuid}.pdf"'},
        )

    async def download_waybill(self, request: Request, faults: FaultSet) -> Response:
        return await self._download(request, "orders")

    async def download_barcode(self, request: Request, faults: FaultSet) -> Response:
        return await self._download(request, "barcodes")

    # -- inspection ---------------------------------------------------------------------------------------
    def state(self) -> dict:
        by_status: dict[str, int] = {}
        for o in self.orders.values():
            code = o.last_code or "NONE"
            by_status[code] = by_status.get(code, 0) + 1
        return {
            "orders": len(self.orders),
            "by_last_status": by_status,
            "print_forms": {u: f.state for u, f in self.prints.items()},
            "tokens": len(self.tokens),
        }
