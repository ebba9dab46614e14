"""SMS gateway simulator in the SMS.ru shape: send, status, balance, delivery callbacks.

Why SMS.ru's shape: it is the common Russian gateway API (a single ``api_id`` key, ``json=1`` answers with a
``status`` / ``status_code`` pair at the top and per phone or per message), and other gateways differ only in
names. The OMS connector (``oms_ops/connectors/sms.py``) talks to this server exactly as to the real host.

API (every answer is HTTP 200 with ``{"status": "OK"|"ERROR", "status_code", …}``, as SMS.ru answers):

* ``GET|POST /sms/send?api_id=…&to=79991234567[,79…]&msg=…&json=1[&from=…]`` → ``{status: "OK",
  status_code: 100, sms: {<phone>: {status, status_code, sms_id} | {status: "ERROR", status_code, status_text}},
  balance}``. The whole request is refused (top-level ``ERROR``) for a wrong ``api_id`` (200), no text (203),
  a sender name not approved (204) or a balance that does not cover the messages (201); a phone that is not a
  Russian mobile number (11 digits, ``7…``) fails on its own line (202) while the others are sent.
  One message costs ``price`` per 70-character part (Cyrillic).
* ``GET|POST /sms/status?api_id=…&sms_id=ID[,ID…]&json=1`` → ``{status: "OK", sms: {<id>: {status,
  status_code, status_text}}, balance}``; an unknown id answers ``status_code`` -1.
* ``GET|POST /my/balance?api_id=…&json=1`` → ``{status: "OK", status_code: 100, balance}``.

Delivery on the simulator clock: a message is ``100`` (queued) when accepted, ``101`` (handed to the operator)
after ``delivery_s / 4``, ``102`` (on its way) after ``delivery_s / 2`` and final after ``delivery_s``: ``103``
(delivered), or — for a ``fail_share`` of messages, drawn from the seed and the id — one of 104 (expired), 105
(deleted by the operator), 106 (phone failure), 107 (unknown reason), 108 (rejected).

Callbacks: with ``callback_url`` set, every status change is POSTed there as SMS.ru does — a form with
``data[]`` lines ``sms_status\\n<sms_id>\\n<status_code>\\n<unix time>`` — expecting the text ``100`` back.
Control: ``GET /_sim/sms/messages[?to=PHONE]`` lists what was sent (tests), ``POST /_sim/sms/balance``
``{"balance": N}`` sets the account balance (e.g. to 0 for the "no balance" error).
"""

from __future__ import annotations

import hashlib
import logging
import math
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import httpx
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from simulators.base import UNCLEAN_ID_GAP, SimContext, Simulator, dt_in, dt_out, read_json
from simulators.faults import FaultSet

log = logging.getLogger("simulators.sms")

STATUS_TEXT = {
    -1: "Сообщение не найдено",
    100: "Сообщение находится в нашей очереди",
    101: "Сообщение передается оператору",
    102: "Сообщение отправлено (в пути)",
    103: "Сообщение доставлено",
    104: "Не может быть доставлено: время жизни истекло",
    105: "Не может быть доставлено: удалено оператором",
    106: "Не может быть доставлено: сбой в телефоне",
    107: "Не может быть доставлено: неизвестная причина",
    108: "Не может быть доставлено: отклонено",
    200: "Неправильный api_id",
    201: "Не хватает средств на лицевом счету",
    202: "Неправильно указан номер телефона получателя, либо на него нет маршрута",
    203: "Нет текста сообщения",
    204: "Имя отправителя не согласовано с администрацией",
}
FAILURE_CODES = (104, 105, 106, 107, 108)
FINAL_CODES = frozenset({103, *FAILURE_CODES})
PHONE = re.compile(r"^7\d{10}$")
#: characters of one Cyrillic (UCS-2) SMS part
PART_CHARS = 70


@dataclass
class SmsMessage:
    sms_id: str
    to: str
    text: str
    sender: str | None
    accepted_at: datetime
    final_code: int
    cost: float
    #: the last status reported by callback (so each change is POSTed once)
    reported: int = 0

    def code_at(self, now: datetime, delivery: timedelta) -> int:
        age = now - self.accepted_at
        if age >= delivery:
            return self.final_code
        if age >= delivery / 2:
            return 102
        if age >= delivery / 4:
            return 101
        return 100


def _error(code: int) -> JSONResponse:
    return JSONResponse({"status": "ERROR", "status_code": code, "status_text": STATUS_TEXT[code]})


class SmsSimulator(Simulator):
    """SMS.ru-like gateway: see the module docstring."""

    name = "sms"

    def __init__(
        self,
        ctx: SimContext,
        *,
        api_id: str = "sim-sms-api-id",
        balance: float = 1000.0,
        price: float = 2.5,
        delivery_s: float = 20.0,
        fail_share: float = 0.05,
        allowed_senders: list[str] | None = None,
        callback_url: str | None = None,
        callback_timeout: float = 5.0,
        keep: int = 20_000,
        faults=(),
    ) -> None:
        super().__init__(ctx, faults=faults)
        if not 0 <= fail_share <= 1:
            raise ValueError("fail_share must be within 0..1")
        self.api_id = api_id
        self.balance = float(balance)
        self.price = float(price)
        self.delivery = timedelta(seconds=delivery_s)
        self.fail_share = fail_share
        self.allowed_senders = set(allowed_senders) if allowed_senders is not None else None
        self.callback_url = callback_url
        self.callback_timeout = callback_timeout
        #: the newest messages kept (a long demo sends hundreds an hour; older ids answer -1, as expired ones)
        self.keep = keep
        self.messages: dict[str, SmsMessage] = {}
        self._counter = 0
        self._callbacks: list[tuple[str, int, datetime]] = []
        self.callbacks_sent = 0
        self.callbacks_failed = 0

    def credentials(self) -> dict:
        return {"api_id": self.api_id}

    # -- state across restarts ------------------------------------------------------------------------------
    def dump_state(self) -> dict:
        return {
            "balance": self.balance,
            "counter": self._counter,
            "messages": [
                {
                    "sms_id": m.sms_id, "to": m.to, "text": m.text, "sender": m.sender,
                    "accepted_at": dt_out(m.accepted_at), "final_code": m.final_code, "cost": m.cost,
                    "reported": m.reported,
                }
                for m in self.messages.values()
            ],
        }  # fmt: skip

    def load_state(self, data: dict, *, clean: bool) -> None:
        self.balance = float(data["balance"])
        self._counter = int(data["counter"]) + (0 if clean else UNCLEAN_ID_GAP)
        self.messages = {
            m["sms_id"]: SmsMessage(
                m["sms_id"], m["to"], m["text"], m["sender"], dt_in(m["accepted_at"]), int(m["final_code"]),
                float(m["cost"]), int(m.get("reported", 0)),
            )
            for m in data["messages"]
        }  # fmt: skip

    # -- the world ------------------------------------------------------------------------------------------
    def _final_code(self, sms_id: str) -> int:
        digest = hashlib.sha256(f"{self.ctx.seed}:sms:{sms_id}".encode()).digest()
        draw = int.from_bytes(digest[:8], "big") / 2**64
        if draw < self.fail_share:
            return FAILURE_CODES[digest[8] % len(FAILURE_CODES)]
        return 103

    def sync(self) -> None:
        """Queue a callback for every status a message reached since the last one reported."""
        if not self.callback_url:
            return
        now = self.now
        for m in self.messages.values():
            if m.reported in FINAL_CODES:
                continue
            code = m.code_at(now, self.delivery)
            if code != m.reported:
                m.reported = code
                self._callbacks.append((m.sms_id, code, now))
                self.dirty = True

    def tick(self) -> None:
        with self.lock:
            self.sync()
            due, self._callbacks = self._callbacks, []
        if due and self.callback_url:
            self._post_callbacks(due)

    def _post_callbacks(self, due: list[tuple[str, int, datetime]]) -> None:
        lines = [f"sms_status\n{sms_id}\n{code}\n{int(at.timestamp())}" for sms_id, code, at in due]
        try:
            r = httpx.post(
                self.callback_url,
                data={f"data[{i}]": line for i, line in enumerate(lines)},
                timeout=self.callback_timeout,
            )
            ok = r.status_code == 200 and r.text.strip() == "100"
        except httpx.HTTPError as exc:
            log.warning("sms callback to %s failed: %s", self.callback_url, exc)
            ok = False
        if ok:
            self.callbacks_sent += len(due)
        else:  # SMS.ru tries again later: keep them for the next tick
            self.callbacks_failed += len(due)
            with self.lock:
                self._callbacks[:0] = due

    # -- API ------------------------------------------------------------------------------------------------
    def api_routes(self):
        return [
            ("/sms/send", self._send, ["GET", "POST"]),
            ("/sms/status", self._status, ["GET", "POST"]),
            ("/my/balance", self._balance, ["GET", "POST"]),
        ]

    @staticmethod
    async def _params(request: Request) -> dict[str, str]:
        params = dict(request.query_params)
        if request.method == "POST":
            form = await request.form()
            params.update({k: str(v) for k, v in form.items()})
        return params

    def _new_id(self) -> str:
        self._counter += 1
        return f"{self.generation:06d}-{10_000_000 + self._counter}"

    async def _send(self, request: Request, faults: FaultSet) -> Response:
        p = await self._params(request)
        if p.get("api_id") != self.api_id:
            return _error(200)
        text = (p.get("msg") or "").strip()
        if not text:
            return _error(203)
        sender = p.get("from") or None
        if sender is not None and self.allowed_senders is not None and sender not in self.allowed_senders:
            return _error(204)
        phones = [t.strip() for t in (p.get("to") or "").split(",") if t.strip()]
        if not phones:
            return _error(202)
        good = [ph for ph in phones if PHONE.match(ph)]
        cost = self.price * max(1, math.ceil(len(text) / PART_CHARS))
        with self.lock:
            if good and self.balance + 1e-9 < cost * len(good):
                return _error(201)
            out: dict[str, Any] = {}
            for ph in phones:
                if ph not in good:
                    out[ph] = {"status": "ERROR", "status_code": 202, "status_text": STATUS_TEXT[202]}
                    continue
                sms_id = self._new_id()
                self.messages[sms_id] = SmsMessage(
                    sms_id, ph, text, sender, self.now, self._final_code(sms_id), cost
                )
                self.balance = round(self.balance - cost, 2)
                out[ph] = {"status": "OK", "status_code": 100, "sms_id": sms_id}
            for old in list(self.messages)[: max(0, len(self.messages) - self.keep)]:
                del self.messages[old]
            self.dirty = True
            balance = self.balance
        return JSONResponse({"status": "OK", "status_code": 100, "sms": out, "balance": balance})

    async def _status(self, request: Request, faults: FaultSet) -> Response:
        p = await self._params(request)
        if p.get("api_id") != self.api_id:
            return _error(200)
        ids = [i.strip() for i in (p.get("sms_id") or "").split(",") if i.strip()]
        out: dict[str, Any] = {}
        with self.lock:
            now = self.now
            for sms_id in ids:
                m = self.messages.get(sms_id)
                if m is None:
                    out[sms_id] = {"status": "ERROR", "status_code": -1, "status_text": STATUS_TEXT[-1]}
                    continue
                code = m.code_at(now, self.delivery)
                out[sms_id] = {
                    "status": "OK",
                    "status_code": code,
                    "status_text": STATUS_TEXT[code],
                    "cost": m.cost,
                }
            balance = self.balance
        return JSONResponse({"status": "OK", "status_code": 100, "sms": out, "balance": balance})

    async def _balance(self, request: Request, faults: FaultSet) -> Response:
        p = await self._params(request)
        if p.get("api_id") != self.api_id:
            return _error(200)
        return JSONResponse({"status": "OK", "status_code": 100, "balance": self.balance})

    # -- control --------------------------------------------------------------------------------------------
    def control_routes(self) -> list[Route]:
        async def messages(request: Request) -> Response:
            to = request.query_params.get("to")
            with self.lock:
                now = self.now
                rows = [
                    {
                        "sms_id": m.sms_id,
                        "to": m.to,
                        "text": m.text,
                        "from": m.sender,
                        "accepted_at": dt_out(m.accepted_at),
                        "status_code": m.code_at(now, self.delivery),
                    }
                    for m in self.messages.values()
                    if to is None or m.to == to
                ]
            return JSONResponse({"messages": rows})

        async def balance(request: Request) -> Response:
            try:
                body = await read_json(request)
                value = float(body["balance"])
            except (ValueError, KeyError, TypeError) as exc:
                return JSONResponse({"error": f"expected {{'balance': N}}: {exc}"}, status_code=400)
            with self.lock:
                self.balance = value
                self.dirty = True
            return JSONResponse({"balance": value})

        return [
            Route("/_sim/sms/messages", messages, methods=["GET"]),
            Route("/_sim/sms/balance", balance, methods=["POST"]),
        ]

    def state(self) -> dict:
        now = self.now
        by_code: dict[str, int] = {}
        for m in self.messages.values():
            code = str(m.code_at(now, self.delivery))
            by_code[code] = by_code.get(code, 0) + 1
        return {
            "messages": len(self.messages),
            "by_status_code": by_code,
            "balance": self.balance,
            "callbacks": {"sent": self.callbacks_sent, "failed": self.callbacks_failed},
        }
