"""ЮKassa (YooKassa) API v3 client: payments (links the customer pays on), capture, cancel, refunds.

Why every write carries the outbox item's idempotency key as ``Idempotence-Key``: YooKassa answers a repeat
of the same key and body (within 24 h) with the first answer and does nothing again. The drain calls out
*before* it records the outcome; a drain that dies in between replays the effect, and the key turns that
replay into a read. :class:`ApiClient`'s retries (429, 5xx, timeouts) reuse the key too — a POST is marked
idempotent because of it.

Authentication is HTTP Basic (``shopId:secret key``). The base URL is ``https://api.yookassa.ru`` (or the
simulator's); ``/v3`` is added when missing. Errors: 400 ``invalid_request`` and 403 ``forbidden`` are the
provider's refusal (retrying cannot help: :func:`refusal` gives its description); 401 is a configuration
problem and raises like any other failure, so the outbox retries once it is fixed.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from oms_ops.connectors.config import Endpoint
from oms_ops.connectors.http import ApiClient, ApiError, ConnectorError, RetryPolicy

SYSTEM = "yookassa"
#: where the payment page sends the customer when the shop has not set ``OMS_YOOKASSA_RETURN_URL``
DEFAULT_RETURN_URL = "http://localhost/payment-complete"
#: provider payment status → oms.payments state (oms_ops/state_machine.py)
PAYMENT_STATES = {
    "pending": "pending",
    "waiting_for_capture": "authorized",
    "succeeded": "paid",
    "canceled": "cancelled",
}
#: provider refund status → oms.refunds state
REFUND_STATES = {"pending": "pending", "succeeded": "succeeded", "canceled": "failed"}
REFUSAL_STATUSES = frozenset({400, 403})


def money(value: Decimal | str, currency: str = "RUB") -> dict[str, str]:
    """``{value, currency}`` with two decimals, as YooKassa takes amounts."""
    return {"value": str(Decimal(value).quantize(Decimal("0.01"))), "currency": currency}


def refusal(exc: ConnectorError) -> str | None:
    """The provider's reason when it refused a request for good (400 / 403), else None."""
    if not isinstance(exc, ApiError) or exc.status not in REFUSAL_STATUSES:
        return None
    body = exc.body if isinstance(exc.body, Mapping) else {}
    text = body.get("description") or exc.cause
    parameter = body.get("parameter")
    return f"{text} (parameter {parameter})" if parameter else str(text)


def cancellation_text(obj: Mapping[str, Any]) -> str | None:
    details = obj.get("cancellation_details") or {}
    if not details:
        return None
    return f"cancelled by {details.get('party', '?')}: {details.get('reason', '?')}"


class YooKassaClient(ApiClient):
    """One shop's YooKassa account. A client is used by one thread at a time (the key is per call)."""

    api = "YooKassa"

    def __init__(
        self,
        base_url: str,
        shop_id: str,
        secret_key: str,
        *,
        return_url: str = DEFAULT_RETURN_URL,
        policy: RetryPolicy | None = None,
        **kw: Any,
    ) -> None:
        base = base_url.rstrip("/")
        if not base.endswith("/v3"):
            base += "/v3"
        token = base64.b64encode(f"{shop_id}:{secret_key}".encode()).decode()
        super().__init__(base, headers={"Authorization": f"Basic {token}"}, policy=policy, **kw)
        self.shop_id = shop_id
        self.return_url = return_url
        self._key: str | None = None

    @classmethod
    def from_endpoint(cls, ep: Endpoint, **kw: Any) -> YooKassaClient:
        return cls(
            ep.base_url,
            ep.get("shop_id"),
            ep.get("secret_key"),
            return_url=ep.get("return_url", DEFAULT_RETURN_URL),
            **kw,
        )

    def auth_headers(self) -> dict[str, str]:
        return {"Idempotence-Key": self._key} if self._key else {}

    def _post(self, path: str, body: Mapping[str, Any], key: str) -> dict:
        if not key or len(key) > 64:
            raise ValueError(f"Idempotence-Key must be 1..64 characters, got {key!r}")
        self._key = key
        try:
            return self.request("POST", path, json=dict(body), idempotent=True).json()
        finally:
            self._key = None

    # -- payments ---------------------------------------------------------------------------------------
    def create_payment(self, body: Mapping[str, Any], *, key: str) -> dict:
        return self._post("/payments", body, key)

    def get_payment(self, payment_id: str) -> dict:
        return self.request("GET", f"/payments/{payment_id}").json()

    def capture(self, payment_id: str, *, key: str, amount: Mapping[str, str] | None = None) -> dict:
        return self._post(f"/payments/{payment_id}/capture", {"amount": amount} if amount else {}, key)

    def cancel(self, payment_id: str, *, key: str) -> dict:
        return self._post(f"/payments/{payment_id}/cancel", {}, key)

    # -- refunds ----------------------------------------------------------------------------------------
    def create_refund(self, body: Mapping[str, Any], *, key: str) -> dict:
        return self._post("/refunds", body, key)

    def get_refund(self, refund_id: str) -> dict:
        return self.request("GET", f"/refunds/{refund_id}").json()
