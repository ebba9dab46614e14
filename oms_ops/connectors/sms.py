"""SMS gateway connector in the SMS.ru shape (``/sms/send``, ``/sms/status``, ``/my/balance`` with ``json=1``).

Why a small client of its own: SMS.ru answers HTTP 200 for everything and puts the outcome in the body —
``status`` "OK"/"ERROR" with a ``status_code`` at the top (the whole request) and per phone or per message —
so the shared HTTP layer's status handling (retries on 429/5xx/transport errors) is kept, and this client
turns the body's codes into :class:`SmsRefused` naming ``status_code`` and ``status_text``.

Sending is not idempotent on the gateway's side (SMS.ru has no idempotency key): a send is never retried
after a timeout here (``idempotent=False``), and the notification log keeps the ``sms_id`` of a message sent,
so a replayed outbox effect finds it and does not send again (``oms_ops/notifications.py``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from oms_ops.connectors.http import ApiClient, ApiError, RetryPolicy

#: codes whose cause does not go away by trying again with the same message (bad phone, no text, a
#: phone that may not receive messages); the others (wrong api_id, no balance, sender not approved) are
#: fixed on the account and then the retry succeeds
PERMANENT_CODES = frozenset({202, 203, 207})
DELIVERED = 103
FAILED_CODES = frozenset({104, 105, 106, 107, 108, 150})
PENDING_CODES = frozenset({100, 101, 102})


class SmsRefused(ApiError):
    """The gateway refused the request or the message (``status: ERROR``)."""

    def __init__(self, call: str, status_code: int, status_text: str, body: Any = None) -> None:
        self.status_code = status_code
        self.status_text = status_text
        super().__init__(
            SmsClient.api, call, f"status_code {status_code}: {status_text}", status=200, body=body
        )

    @property
    def permanent(self) -> bool:
        return self.status_code in PERMANENT_CODES


@dataclass(frozen=True)
class SmsStatus:
    sms_id: str
    status_code: int
    status_text: str

    @property
    def delivered(self) -> bool:
        return self.status_code == DELIVERED

    @property
    def failed(self) -> bool:
        return self.status_code in FAILED_CODES or self.status_code == -1


class SmsClient(ApiClient):
    api = "SMS gateway"

    def __init__(
        self,
        base_url: str,
        api_id: str,
        *,
        sender: str | None = None,
        policy: RetryPolicy | None = None,
        **kw,
    ) -> None:
        super().__init__(base_url, policy=policy, **kw)
        self.api_id = api_id
        self.sender = sender or None

    @classmethod
    def from_endpoint(cls, ep, **kw) -> SmsClient:
        return cls(ep.base_url, ep.get("api_id"), sender=ep.get("sender") or None, **kw)

    def _call(self, path: str, params: dict[str, Any], *, idempotent: bool) -> dict:
        call = f"POST {path}"
        body = self.request(
            "POST", path, data={"api_id": self.api_id, "json": 1, **params}, idempotent=idempotent
        ).json()
        if body.get("status") != "OK":
            raise SmsRefused(call, int(body.get("status_code", 0)), str(body.get("status_text", "")), body)
        return body

    def send(self, phone: str, text: str) -> str:
        """Send one message; the gateway's ``sms_id``. :class:`SmsRefused` when the request or the phone is
        refused (``permanent`` says whether trying again can help)."""
        params: dict[str, Any] = {"to": phone, "msg": text}
        if self.sender:
            params["from"] = self.sender
        body = self._call("/sms/send", params, idempotent=False)
        line = (body.get("sms") or {}).get(phone) or {}
        if line.get("status") != "OK":
            raise SmsRefused(
                "POST /sms/send", int(line.get("status_code", 0)), str(line.get("status_text", "")), body
            )
        return str(line["sms_id"])

    def statuses(self, sms_ids: list[str]) -> dict[str, SmsStatus]:
        """The delivery status of each id (``status_code`` -1: the gateway does not know it)."""
        if not sms_ids:
            return {}
        body = self._call("/sms/status", {"sms_id": ",".join(sms_ids)}, idempotent=True)
        return {
            sms_id: SmsStatus(sms_id, int(v.get("status_code", -1)), str(v.get("status_text", "")))
            for sms_id, v in (body.get("sms") or {}).items()
        }

    def balance(self) -> float:
        return float(self._call("/my/balance", {}, idempotent=True)["balance"])
