"""Payment provider simulator in the ЮKassa (YooKassa) API v3 shape: payments, capture, cancel, refunds,
notifications.

Why YooKassa's shape: it is the common Russian acquirer for shops that take card payments themselves (the
call centre sends the customer a payment link), and its API has the properties an OMS must get right —
``Idempotence-Key`` on every POST, two-stage payments, partial refunds, unsigned notifications that must be
checked by reading the object back. The connector (``oms_ops/connectors/yookassa.py``) talks to this server
exactly as to ``https://api.yookassa.ru/v3``.

API (HTTP Basic auth ``shopId:secret key``, else 401 ``invalid_credentials``):

* ``POST /v3/payments`` {amount{value,currency}, capture, confirmation{type: redirect, return_url}, description,
  metadata, receipt} → payment {id, status pending, paid false, amount, confirmation{type, return_url,
  confirmation_url}, created_at, description, metadata, recipient, refundable, test: true}. ``receipt`` is
  required (the shop is set up for 54-ФЗ) and validated: customer email or phone, items with description,
  quantity, amount, vat_code 1–6, payment_subject and payment_mode, the items' sum equal to the amount.
* ``POST /v3/payments/{id}/capture`` [{amount}] — only ``waiting_for_capture``, at most the authorised amount;
  ``POST /v3/payments/{id}/cancel`` — only ``waiting_for_capture``; ``GET /v3/payments/{id}``.
* ``POST /v3/refunds`` {payment_id, amount, description, receipt} — the payment must be ``succeeded`` and the
  amount at most what was captured less earlier refunds (else 400 ``invalid_request`` naming ``amount``) →
  refund {id, status succeeded | pending, payment_id, amount, created_at}; ``GET /v3/refunds/{id}``.
* Every POST needs ``Idempotence-Key`` (≤ 64 characters): the same key with the same body within 24 h
  answers what the first request answered (nothing happens again); the same key with another body is 400
  ``invalid_request`` (``parameter: Idempotence-Key``).
* Errors: ``{type: "error", id, code, description, parameter}`` — 400 invalid_request, 401
  invalid_credentials, 404 not_found, 429 too_many_requests, 500 internal_server_error (retry later with
  the same key). Faults are injected as in every simulator (``/_sim/faults``).

The simulated customer (simulator clock): after ``pay_delay_s`` a ``pay_share`` of payments (drawn from the
seed and the payment id) is paid — ``succeeded`` with ``capture: true``, ``waiting_for_capture`` with
``capture: false`` (cancelled ``expired_on_capture`` if not captured within ``capture_window_s``); of the
others half are declined by the bank at that moment (``payment_network`` / ``insufficient_funds``) and half
expire unpaid after ``expire_s`` (``yoo_money`` / ``expired_on_confirmation``). A ``refund_pending_share``
of refunds stays ``pending`` for ``refund_delay_s`` before it succeeds.

Notifications: with ``notification_url`` set, every change (payment.waiting_for_capture, payment.succeeded,
payment.canceled, refund.succeeded) is POSTed as {type: "notification", event, object}, unsigned, as YooKassa
does; an answer other than 200 (or no answer) is retried every ``notify_retry_s`` simulated seconds for a day.

The payment page: ``confirmation_url`` is ``<base>/checkout/<id>`` on this server (GET shows it, POST pays).
Control: ``GET /_sim/yookassa/payments``, ``POST /_sim/yookassa/payments/<id>/pay|decline`` (the customer
acts now), ``GET /_sim/yookassa/notifications`` (deliveries, for tests).
"""

from __future__ import annotations

import hashlib
import json
import logging
import uuid
from base64 import b64decode
from datetime import datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any

import httpx
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from simulators.base import UNCLEAN_ID_GAP, ApiError, SimContext, Simulator, dt_in, dt_out, secs_header
from simulators.clock import iso_z
from simulators.faults import FaultRule, FaultSet

log = logging.getLogger("simulators.yookassa")

VAT_CODES = frozenset(range(1, 7))
PAYMENT_SUBJECTS = frozenset(
    {"commodity", "excise", "job", "service", "payment", "casino", "gambling_bet", "lottery", "agent_commission",
     "composite", "another", "property_right", "non_operating_gain", "insurance_premium", "sales_tax",
     "resort_fee", "marked", "non_marked"}
)  # fmt: skip
PAYMENT_MODES = frozenset(
    {"full_prepayment", "partial_prepayment", "advance", "full_payment", "partial_payment", "credit",
     "credit_payment"}
)  # fmt: skip
CURRENCIES = frozenset({"RUB"})
IDEMPOTENCE_TTL = timedelta(hours=24)
NOTIFY_FOR = timedelta(hours=24)


def _money(value: Decimal) -> str:
    return str(value.quantize(Decimal("0.01"), rounding=ROUND_HALF_UP))


def _error(status: int, code: str, description: str, parameter: str | None = None) -> ApiError:
    body: dict[str, Any] = {
        "type": "error",
        "id": str(uuid.uuid4()),
        "code": code,
        "description": description,
    }
    if parameter:
        body["parameter"] = parameter
    return ApiError(status, body)


def invalid(description: str, parameter: str | None = None) -> ApiError:
    return _error(400, "invalid_request", description, parameter)


def parse_amount(raw: Any, parameter: str = "amount") -> tuple[Decimal, str]:
    """``{value, currency}`` → (value, currency), or 400 naming ``parameter``."""
    if not isinstance(raw, dict):
        raise invalid("amount must be an object {value, currency}", parameter)
    try:
        value = Decimal(str(raw.get("value")))
    except (InvalidOperation, ValueError) as exc:
        raise invalid(f"amount.value {raw.get('value')!r} is not a number", f"{parameter}.value") from exc
    if not value.is_finite() or value <= 0 or value != value.quantize(Decimal("0.01")):
        raise invalid("amount.value must be > 0 with at most 2 decimals", f"{parameter}.value")
    currency = raw.get("currency")
    if currency not in CURRENCIES:
        raise invalid(f"currency {currency!r} is not supported", f"{parameter}.currency")
    return value, currency


def validate_receipt(receipt: Any, total: Decimal) -> None:
    """A 54-ФЗ receipt as YooKassa checks it: who gets it, what is sold and how it is taxed."""
    if not isinstance(receipt, dict):
        raise invalid("receipt is required: the shop sends receipts under 54-FZ", "receipt")
    customer = receipt.get("customer") or {}
    if not isinstance(customer, dict) or not (customer.get("email") or customer.get("phone")):
        raise invalid("receipt.customer needs an email or a phone", "receipt.customer")
    items = receipt.get("items")
    if not isinstance(items, list) or not items:
        raise invalid("receipt.items must be a non-empty list", "receipt.items")
    if len(items) > 100:
        raise invalid("receipt.items: at most 100 items", "receipt.items")
    s = Decimal(0)
    for i, item in enumerate(items):
        at = f"receipt.items[{i}]"
        if not isinstance(item, dict):
            raise invalid("an item must be an object", at)
        desc = item.get("description")
        if not isinstance(desc, str) or not desc.strip() or len(desc) > 128:
            raise invalid("description: 1..128 characters", f"{at}.description")
        try:
            qty = Decimal(str(item.get("quantity")))
        except (InvalidOperation, ValueError) as exc:
            raise invalid("quantity must be a number", f"{at}.quantity") from exc
        if not qty.is_finite() or qty <= 0:
            raise invalid("quantity must be > 0", f"{at}.quantity")
        value, _ = parse_amount(item.get("amount"), f"{at}.amount")
        if item.get("vat_code") not in VAT_CODES:
            raise invalid("vat_code must be 1..6", f"{at}.vat_code")
        if item.get("payment_subject") not in PAYMENT_SUBJECTS:
            raise invalid(f"unknown payment_subject {item.get('payment_subject')!r}", f"{at}.payment_subject")
        if item.get("payment_mode") not in PAYMENT_MODES:
            raise invalid(f"unknown payment_mode {item.get('payment_mode')!r}", f"{at}.payment_mode")
        s += value * qty
    if s.quantize(Decimal("0.01")) != total:
        raise invalid(
            f"the items of the receipt sum to {_money(s)}, the amount is {_money(total)}", "receipt"
        )


class YooKassaSimulator(Simulator):
    """YooKassa-like payment provider: see the module docstring."""

    name = "yookassa"

    def __init__(
        self,
        ctx: SimContext,
        *,
        shop_id: str = "100500",
        secret_key: str = "test_sim_yookassa_secret",
        notification_url: str | None = None,
        pay_share: float = 0.85,
        pay_delay_s: float = 90.0,
        expire_s: float = 3600.0,
        capture_window_s: float = 7 * 86400.0,
        refund_pending_share: float = 0.0,
        refund_delay_s: float = 60.0,
        notify_retry_s: float = 60.0,
        notify_timeout: float = 5.0,
        require_receipt: bool = True,
        faults=(),
    ) -> None:
        super().__init__(ctx, faults=faults)
        for name, share in (("pay_share", pay_share), ("refund_pending_share", refund_pending_share)):
            if not 0 <= share <= 1:
                raise ValueError(f"{name} must be within 0..1")
        self.shop_id = str(shop_id)
        self.secret_key = secret_key
        self.notification_url = notification_url
        self.pay_share = pay_share
        self.pay_delay = timedelta(seconds=pay_delay_s)
        self.expire = timedelta(seconds=expire_s)
        self.capture_window = timedelta(seconds=capture_window_s)
        self.refund_pending_share = refund_pending_share
        self.refund_delay = timedelta(seconds=refund_delay_s)
        self.notify_retry = timedelta(seconds=notify_retry_s)
        self.notify_timeout = notify_timeout
        self.require_receipt = require_receipt
        self.payments: dict[str, dict] = {}
        self.refunds: dict[str, dict] = {}
        #: payment id → when its next automatic change is due, and what it will be
        self._due: dict[str, tuple[datetime, str]] = {}
        self._refund_due: dict[str, datetime] = {}
        #: Idempotence-Key → {digest, status, body, at}
        self._keys: dict[str, dict] = {}
        self._counter = 0
        #: notifications not yet acknowledged: {event, object, first_at, next_at, attempts}
        self._outbox: list[dict] = []
        self.delivered: list[dict] = []

    def credentials(self) -> dict:
        return {"shop_id": self.shop_id, "secret_key": self.secret_key}

    # -- state across restarts ------------------------------------------------------------------------------
    def dump_state(self) -> dict:
        return {
            "counter": self._counter,
            "payments": self.payments,
            "refunds": self.refunds,
            "due": {k: [dt_out(at), what] for k, (at, what) in self._due.items()},
            "refund_due": {k: dt_out(at) for k, at in self._refund_due.items()},
            "keys": {k: {**v, "at": dt_out(v["at"])} for k, v in self._keys.items()},
            "outbox": [
                {**n, "first_at": dt_out(n["first_at"]), "next_at": dt_out(n["next_at"])}
                for n in self._outbox
            ],
        }

    def load_state(self, data: dict, *, clean: bool) -> None:
        self._counter = int(data["counter"]) + (0 if clean else UNCLEAN_ID_GAP)
        self.payments = dict(data["payments"])
        self.refunds = dict(data["refunds"])
        self._due = {k: (dt_in(v[0]), v[1]) for k, v in data.get("due", {}).items()}
        self._refund_due = {k: dt_in(v) for k, v in data.get("refund_due", {}).items()}
        self._keys = {k: {**v, "at": dt_in(v["at"])} for k, v in data.get("keys", {}).items()}
        self._outbox = [
            {**n, "first_at": dt_in(n["first_at"]), "next_at": dt_in(n["next_at"])}
            for n in data.get("outbox", [])
        ]

    # -- ids and draws --------------------------------------------------------------------------------------
    def _new_id(self, kind: str) -> str:
        """An id in YooKassa's form (``2419a771-000f-5000-9000-1edaf29243f2``), never repeated: the generation
        and a counter that resumes past everything handed out are hashed with the seed."""
        self._counter += 1
        h = hashlib.sha256(f"{self.ctx.seed}:{kind}:{self.generation}:{self._counter}".encode()).hexdigest()
        middle = "000f-5000-9000" if kind == "payment" else "0015-5000-8000"
        return f"{h[:8]}-{middle}-{h[8:20]}"

    def _draw(self, what: str, ident: str) -> float:
        digest = hashlib.sha256(f"{self.ctx.seed}:yookassa:{what}:{ident}".encode()).digest()
        return int.from_bytes(digest[:8], "big") / 2**64

    # -- the world ------------------------------------------------------------------------------------------
    def _notify(self, event: str, obj: dict) -> None:
        if self.notification_url:
            now = self.now
            self._outbox.append(
                {"event": event, "object": json.loads(json.dumps(obj)), "first_at": now, "next_at": now,
                 "attempts": 0}
            )  # fmt: skip
        self.dirty = True

    def _pay(self, p: dict, now: datetime) -> None:
        """The customer paid on the payment page."""
        p["paid"] = True
        p["payment_method"] = {"type": "bank_card", "id": p["id"], "saved": False, "title": "Bank card *4444"}
        if p["capture"]:
            p["status"] = "succeeded"
            p["captured_at"] = iso_z(now, ms=True)
            p["refundable"] = True
            p["income_amount"] = dict(p["amount"])
            self._due.pop(p["id"], None)
            self._notify("payment.succeeded", p)
        else:
            p["status"] = "waiting_for_capture"
            p["expires_at"] = iso_z(now + self.capture_window, ms=True)
            self._due[p["id"]] = (now + self.capture_window, "expire_capture")
            self._notify("payment.waiting_for_capture", p)

    def _cancel(self, p: dict, party: str, reason: str) -> None:
        p["status"] = "canceled"
        p["paid"] = False
        p["refundable"] = False
        p["cancellation_details"] = {"party": party, "reason": reason}
        self._due.pop(p["id"], None)
        self._notify("payment.canceled", p)

    def sync(self) -> None:
        """Apply every automatic change that fell due up to the clock's now."""
        now = self.now
        for pid, (at, what) in sorted(self._due.items(), key=lambda x: x[1][0]):
            if at > now:
                continue
            p = self.payments[pid]
            if what == "pay" and p["status"] == "pending":
                self._pay(p, at)
            elif what == "decline" and p["status"] == "pending":
                self._cancel(p, "payment_network", "insufficient_funds")
            elif what == "expire" and p["status"] == "pending":
                self._cancel(p, "yoo_money", "expired_on_confirmation")
            elif what == "expire_capture" and p["status"] == "waiting_for_capture":
                self._cancel(p, "yoo_money", "expired_on_capture")
            else:
                self._due.pop(pid, None)
        for rid, at in list(self._refund_due.items()):
            if at <= now:
                r = self.refunds[rid]
                del self._refund_due[rid]
                if r["status"] == "pending":
                    r["status"] = "succeeded"
                    self._notify("refund.succeeded", r)
        cutoff = now - IDEMPOTENCE_TTL
        for key in [k for k, v in self._keys.items() if v["at"] < cutoff]:
            del self._keys[key]

    def tick(self) -> None:
        with self.lock:
            self.sync()
            now = self.now
            due = [n for n in self._outbox if n["next_at"] <= now]
        for n in due:
            ok = self._deliver(n)
            with self.lock:
                n["attempts"] += 1
                if ok or now - n["first_at"] > NOTIFY_FOR:
                    if n in self._outbox:
                        self._outbox.remove(n)
                else:
                    n["next_at"] = now + self.notify_retry
                self.dirty = True

    def _deliver(self, n: dict) -> bool:
        body = {"type": "notification", "event": n["event"], "object": n["object"]}
        fs = self.faults.draw("WEBHOOK", f"webhook:{n['event']}")
        times = 2 if fs.get("duplicate") else 1
        ok = False
        for _ in range(times):
            try:
                r = httpx.post(self.notification_url, json=body, timeout=self.notify_timeout)
                ok = r.status_code == 200
            except httpx.HTTPError as exc:
                log.warning("yookassa notification to %s failed: %s", self.notification_url, exc)
                ok = False
            self.delivered.append({"event": n["event"], "id": n["object"]["id"], "ok": ok})
            del self.delivered[:-1000]
        return ok

    # -- the pipeline ---------------------------------------------------------------------------------------
    def before_request(self, request: Request) -> Response | None:
        header = request.headers.get("authorization", "")
        ok = False
        if header.lower().startswith("basic "):
            try:
                user, _, password = b64decode(header[6:]).decode().partition(":")
                ok = user == self.shop_id and password == self.secret_key
            except (ValueError, UnicodeDecodeError):
                ok = False
        if not ok:
            return _error(
                401, "invalid_credentials", "Authentication by given credentials failed", "Authorization"
            ).response()
        return None

    def fault_rate_limited(self, rule: FaultRule) -> Response:
        err = _error(429, "too_many_requests", "Too many requests. Try again later")
        err.headers["Retry-After"] = secs_header(rule.retry_after)
        return err.response()

    def fault_server_error(self, rule: FaultRule) -> Response:
        err = _error(
            rule.status or 500, "internal_server_error", "Internal server error, retry the request later"
        )
        if (rule.status or 500) == 503:
            err.headers["Retry-After"] = secs_header(rule.retry_after)
        return err.response()

    def not_found(self, request: Request) -> Response:
        return _error(404, "not_found", "Resource not found").response()

    def internal_error(self) -> Response:
        return _error(
            500, "internal_server_error", "Internal server error, retry the request later"
        ).response()

    def api_routes(self):
        return [
            ("/v3/payments", self._create_payment, ["POST"]),
            ("/v3/payments/{payment_id}", self._get_payment, ["GET"]),
            ("/v3/payments/{payment_id}/capture", self._capture, ["POST"]),
            ("/v3/payments/{payment_id}/cancel", self._cancel_payment, ["POST"]),
            ("/v3/refunds", self._create_refund, ["POST"]),
            ("/v3/refunds/{refund_id}", self._get_refund, ["GET"]),
        ]

    async def _idempotent(self, request: Request, action) -> Response:
        """Run ``action(body) -> (status, json)`` once per Idempotence-Key (24 h): a repeat with the same body
        gets the first answer, one with another body is refused."""
        key = request.headers.get("idempotence-key")
        if not key:
            raise invalid("Idempotence-Key header is required", "Idempotence-Key")
        if len(key) > 64:
            raise invalid("Idempotence-Key: at most 64 characters", "Idempotence-Key")
        raw = await request.body()
        digest = hashlib.sha256(request.url.path.encode() + b"\n" + raw).hexdigest()
        with self.lock:
            seen = self._keys.get(key)
            if seen is not None:
                if seen["digest"] != digest:
                    raise invalid(
                        "Idempotence-Key was already used with another request body", "Idempotence-Key"
                    )
                return JSONResponse(seen["body"], status_code=seen["status"])
            try:
                body = json.loads(raw) if raw else {}
            except (UnicodeDecodeError, json.JSONDecodeError) as exc:
                raise invalid(f"malformed JSON: {exc}") from exc
            if not isinstance(body, dict):
                raise invalid("the request body must be a JSON object")
            try:
                status, answer = action(body)
            except ApiError as exc:
                status, answer = exc.status, exc.body
            if status < 500:  # YooKassa keeps the outcome; a server error may be retried with the key
                self._keys[key] = {"digest": digest, "status": status, "body": answer, "at": self.now}
            self.dirty = True
        return JSONResponse(answer, status_code=status)

    def _payment(self, payment_id: str) -> dict:
        p = self.payments.get(payment_id)
        if p is None:
            raise _error(404, "not_found", f"Payment {payment_id} not found", "payment_id")
        return p

    async def _create_payment(self, request: Request, faults: FaultSet) -> Response:
        base = str(request.base_url).rstrip("/")

        def create(body: dict) -> tuple[int, dict]:
            value, currency = parse_amount(body.get("amount"))
            confirmation = body.get("confirmation") or {}
            if confirmation.get("type") != "redirect":
                raise invalid("confirmation.type: only redirect is supported", "confirmation.type")
            return_url = confirmation.get("return_url")
            if not isinstance(return_url, str) or not return_url.startswith(("http://", "https://")):
                raise invalid("confirmation.return_url must be an http(s) URL", "confirmation.return_url")
            metadata = body.get("metadata") or {}
            if not isinstance(metadata, dict) or len(metadata) > 16:
                raise invalid("metadata: an object of at most 16 keys", "metadata")
            description = body.get("description")
            if description is not None and (not isinstance(description, str) or len(description) > 128):
                raise invalid("description: at most 128 characters", "description")
            if self.require_receipt or body.get("receipt") is not None:
                validate_receipt(body.get("receipt"), value)
            now = self.now
            pid = self._new_id("payment")
            amount = {"value": _money(value), "currency": currency}
            p = {
                "id": pid,
                "status": "pending",
                "paid": False,
                "amount": amount,
                "refunded_amount": {"value": "0.00", "currency": currency},
                "confirmation": {
                    "type": "redirect",
                    "return_url": return_url,
                    "confirmation_url": f"{base}/checkout/{pid}",
                },
                "capture": bool(body.get("capture", False)),
                "created_at": iso_z(now, ms=True),
                "description": description,
                "metadata": {str(k): str(v) for k, v in metadata.items()},
                "recipient": {"account_id": self.shop_id, "gateway_id": "1000001"},
                "refundable": False,
                "test": True,
            }
            self.payments[pid] = p
            if self._draw("pay", pid) < self.pay_share:
                self._due[pid] = (now + self.pay_delay, "pay")
            elif self._draw("decline", pid) < 0.5:
                self._due[pid] = (now + self.pay_delay, "decline")
            else:
                self._due[pid] = (now + self.expire, "expire")
            return 200, self._public(p)

        return await self._idempotent(request, create)

    @staticmethod
    def _public(p: dict) -> dict:
        out = {k: v for k, v in p.items() if k != "capture" and v is not None}
        return json.loads(json.dumps(out))

    async def _get_payment(self, request: Request, faults: FaultSet) -> Response:
        with self.lock:
            return JSONResponse(self._public(self._payment(request.path_params["payment_id"])))

    async def _capture(self, request: Request, faults: FaultSet) -> Response:
        pid = request.path_params["payment_id"]

        def capture(body: dict) -> tuple[int, dict]:
            p = self._payment(pid)
            if p["status"] != "waiting_for_capture":
                raise invalid(
                    f"Payment is {p['status']}: only a payment waiting_for_capture can be captured",
                    "payment_id",
                )
            authorised = Decimal(p["amount"]["value"])
            value = authorised
            if body.get("amount") is not None:
                value, _ = parse_amount(body["amount"])
                if value > authorised:
                    raise invalid(
                        f"capture amount {_money(value)} exceeds the payment's {_money(authorised)}", "amount"
                    )
            if body.get("receipt") is not None:
                validate_receipt(body["receipt"], value)
            p["amount"] = {"value": _money(value), "currency": p["amount"]["currency"]}
            p["status"] = "succeeded"
            p["captured_at"] = iso_z(self.now, ms=True)
            p["refundable"] = True
            p.pop("expires_at", None)
            self._due.pop(pid, None)
            self._notify("payment.succeeded", p)
            return 200, self._public(p)

        return await self._idempotent(request, capture)

    async def _cancel_payment(self, request: Request, faults: FaultSet) -> Response:
        pid = request.path_params["payment_id"]

        def cancel(body: dict) -> tuple[int, dict]:
            p = self._payment(pid)
            if p["status"] != "waiting_for_capture":
                raise invalid(
                    f"Payment is {p['status']}: only a payment waiting_for_capture can be cancelled",
                    "payment_id",
                )
            self._cancel(p, "merchant", "canceled_by_merchant")
            return 200, self._public(p)

        return await self._idempotent(request, cancel)

    async def _create_refund(self, request: Request, faults: FaultSet) -> Response:
        def refund(body: dict) -> tuple[int, dict]:
            pid = body.get("payment_id")
            if not isinstance(pid, str) or not pid:
                raise invalid("payment_id is required", "payment_id")
            p = self.payments.get(pid)
            if p is None:
                raise invalid(f"Payment {pid} not found", "payment_id")
            if p["status"] != "succeeded":
                raise invalid(
                    f"Payment is {p['status']}: only a succeeded payment can be refunded", "payment_id"
                )
            value, currency = parse_amount(body.get("amount"))
            if currency != p["amount"]["currency"]:
                raise invalid("the refund's currency differs from the payment's", "amount.currency")
            refunded = sum(
                (Decimal(r["amount"]["value"]) for r in self.refunds.values()
                 if r["payment_id"] == pid and r["status"] in ("pending", "succeeded")),
                Decimal(0),
            )  # fmt: skip
            left = Decimal(p["amount"]["value"]) - refunded
            if value > left:
                raise invalid(
                    f"Refund amount {_money(value)} exceeds the amount available for refund ({_money(left)})",
                    "amount",
                )
            if body.get("receipt") is not None:
                validate_receipt(body["receipt"], value)
            description = body.get("description")
            if description is not None and (not isinstance(description, str) or len(description) > 250):
                raise invalid("description: at most 250 characters", "description")
            now = self.now
            rid = self._new_id("refund")
            pending = self._draw("refund", rid) < self.refund_pending_share
            r = {
                "id": rid,
                "payment_id": pid,
                "status": "pending" if pending else "succeeded",
                "amount": {"value": _money(value), "currency": currency},
                "created_at": iso_z(now, ms=True),
                "description": description,
            }
            self.refunds[rid] = {k: v for k, v in r.items() if v is not None}
            p["refunded_amount"] = {"value": _money(refunded + value), "currency": currency}
            if refunded + value >= Decimal(p["amount"]["value"]):
                p["refundable"] = False
            if pending:
                self._refund_due[rid] = now + self.refund_delay
            else:
                self._notify("refund.succeeded", self.refunds[rid])
            return 200, dict(self.refunds[rid])

        return await self._idempotent(request, refund)

    async def _get_refund(self, request: Request, faults: FaultSet) -> Response:
        rid = request.path_params["refund_id"]
        with self.lock:
            r = self.refunds.get(rid)
            if r is None:
                raise _error(404, "not_found", f"Refund {rid} not found", "refund_id")
            return JSONResponse(dict(r))

    # -- the customer's side and control --------------------------------------------------------------------
    def customer_pays(self, payment_id: str) -> dict:
        """The customer pays now (the checkout page's button; tests)."""
        with self.lock:
            p = self._payment(payment_id)
            if p["status"] != "pending":
                raise invalid(f"Payment is {p['status']}", "payment_id")
            self._pay(p, self.now)
            return self._public(p)

    def customer_declined(self, payment_id: str) -> dict:
        with self.lock:
            p = self._payment(payment_id)
            if p["status"] != "pending":
                raise invalid(f"Payment is {p['status']}", "payment_id")
            self._cancel(p, "payment_network", "insufficient_funds")
            return self._public(p)

    def state(self) -> dict:
        by: dict[str, int] = {}
        for p in self.payments.values():
            by[p["status"]] = by.get(p["status"], 0) + 1
        return {
            "payments": by,
            "refunds": len(self.refunds),
            "notifications_waiting": len(self._outbox),
            "notification_url": self.notification_url,
        }

    def control_routes(self) -> list[Route]:
        async def checkout(request: Request) -> Response:
            pid = request.path_params["payment_id"]
            try:
                if request.method == "POST":
                    p = self.customer_pays(pid)
                else:
                    with self.lock:
                        self.sync()
                        p = self._public(self._payment(pid))
            except ApiError as exc:
                return HTMLResponse(f"<p>{exc.body.get('description')}</p>", status_code=exc.status)
            html = (
                f"<html><body><h1>ЮKassa (simulator)</h1><p>{p.get('description') or ''}</p>"
                f"<p>{p['amount']['value']} {p['amount']['currency']} — {p['status']}</p>"
                f"<form method='post'><button>Pay</button></form>"
                f"<a href='{p['confirmation']['return_url']}'>Back to the shop</a></body></html>"
            )
            return HTMLResponse(html)

        async def payments(request: Request) -> Response:
            with self.lock:
                self.sync()
                return JSONResponse({"payments": [self._public(p) for p in self.payments.values()]})

        async def act(request: Request) -> Response:
            pid, action = request.path_params["payment_id"], request.path_params["action"]
            try:
                if action == "pay":
                    p = self.customer_pays(pid)
                elif action == "decline":
                    p = self.customer_declined(pid)
                else:
                    return JSONResponse({"error": "expected pay or decline"}, status_code=404)
            except ApiError as exc:
                return exc.response()
            return JSONResponse(p)

        async def notifications(request: Request) -> Response:
            with self.lock:
                return JSONResponse({"delivered": list(self.delivered), "waiting": len(self._outbox)})

        return [
            Route("/checkout/{payment_id}", checkout, methods=["GET", "POST"]),
            Route("/_sim/yookassa/payments", payments, methods=["GET"]),
            Route("/_sim/yookassa/payments/{payment_id}/{action}", act, methods=["POST"]),
            Route("/_sim/yookassa/notifications", notifications, methods=["GET"]),
        ]
