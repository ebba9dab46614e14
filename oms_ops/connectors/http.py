"""The HTTP layer every connector shares: timeouts, retries with back-off, rate pacing, one error type.

Why one layer: the channels fail in the same few ways (429 with ``Retry-After`` or WB's
``X-Ratelimit-Retry``, 5xx, timeouts, dropped connections), and each connector must survive all of them
the same way and, when it cannot, say so in one line naming the API and the cause.

* **Retries**: 429, 500, 502, 503, 504 and transport errors (timeouts, refused / reset connections) are
  retried up to ``RetryPolicy.attempts`` times. The wait is the server's ``Retry-After`` (seconds or an
  HTTP date) or ``X-Ratelimit-Retry`` when given, otherwise exponential back-off with full jitter
  (``base × 2^n``, capped). Other 4xx answers are not retried: they raise :class:`ApiError` at once.
* **Writes**: a request is retried after a transport error only when the caller marks it ``idempotent``
  (absolute stock sets, reads, CDEK orders — whose ``number`` makes a replay a detectable duplicate).
* **Pacing**: a token bucket per client keeps us under the documented limits (Ozon 50 req/s, WB
  300 req/min with a burst of 20, Shopify 2 req/s with a bucket of 40) so 429s are the exception.
* **Tests** inject ``sleep`` and ``clock`` so no test waits for real back-off.
"""

from __future__ import annotations

import email.utils
import logging
import random
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx

log = logging.getLogger("oms.connectors")

RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})


class ConnectorError(RuntimeError):
    """A call to an external API failed for good. The message names the API, the call and the cause."""

    def __init__(
        self,
        api: str,
        call: str,
        cause: str,
        *,
        status: int | None = None,
        body: Any = None,
        attempts: int = 1,
    ) -> None:
        self.api = api
        self.call = call
        self.cause = cause
        self.status = status
        self.body = body
        self.attempts = attempts
        tries = f" after {attempts} attempts" if attempts > 1 else ""
        super().__init__(f"{api}: {call} failed{tries}: {cause}")


class ApiError(ConnectorError):
    """The API answered with an error that retrying will not fix (4xx other than 429)."""


@dataclass
class RetryPolicy:
    """How hard to try. ``sleep``/``clock`` are injectable so tests never wait for real."""

    attempts: int = 6
    backoff_base: float = 0.5
    backoff_cap: float = 30.0
    #: never wait longer than this for one Retry-After (a server asking for an hour is treated as failure)
    max_retry_after: float = 120.0
    connect_timeout: float = 5.0
    read_timeout: float = 30.0
    sleep: Callable[[float], None] = time.sleep
    clock: Callable[[], float] = time.monotonic
    rng: random.Random = field(default_factory=random.Random)

    @property
    def timeout(self) -> httpx.Timeout:
        return httpx.Timeout(self.read_timeout, connect=self.connect_timeout)

    def backoff(self, attempt: int) -> float:
        """Full jitter: uniform in [0, min(cap, base × 2^(attempt-1))]."""
        return self.rng.uniform(0, min(self.backoff_cap, self.backoff_base * 2 ** (attempt - 1)))


def retry_after_seconds(headers: Mapping[str, str], now: datetime | None = None) -> float | None:
    """The server's requested wait: ``Retry-After`` (seconds or HTTP date) or WB's ``X-Ratelimit-Retry``."""
    for name in ("retry-after", "x-ratelimit-retry"):
        raw = headers.get(name)
        if raw is None or str(raw).strip() == "":
            continue
        raw = str(raw).strip()
        try:
            return max(float(raw), 0.0)
        except ValueError:
            pass
        try:
            when = email.utils.parsedate_to_datetime(raw)
        except (TypeError, ValueError):
            continue
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        return max((when - (now or datetime.now(UTC))).total_seconds(), 0.0)
    return None


class RatePacer:
    """Token bucket on the client side: ``rate`` requests per second with a ``burst``."""

    def __init__(
        self, rate: float, burst: float, *, clock: Callable[[], float], sleep: Callable[[float], None]
    ):
        self.rate = float(rate)
        self.burst = float(burst)
        self._clock = clock
        self._sleep = sleep
        self._tokens = float(burst)
        self._t = clock()
        self._lock = threading.Lock()

    def acquire(self, cost: float = 1.0) -> float:
        """Take ``cost`` tokens, sleeping until they are there. Returns the time slept."""
        with self._lock:
            now = self._clock()
            self._tokens = min(self.burst, self._tokens + (now - self._t) * self.rate)
            self._t = now
            self._tokens -= cost
            wait = -self._tokens / self.rate if self._tokens < 0 else 0.0
        if wait > 0:
            self._sleep(wait)
        return wait

    def penalise(self, cost: float) -> None:
        """Charge extra tokens after the fact (WB counts each 4xx as 10 requests)."""
        with self._lock:
            self._tokens -= cost


_PACERS: dict[tuple, RatePacer] = {}
_PACERS_LOCK = threading.Lock()


def shared_pacer(
    api: str, base_url: str, rate: float, burst: float, *, clock: Callable[[], float], sleep: Callable
) -> RatePacer:
    """One token bucket per API endpoint and process: a channel's limit is per seller account, so the clients
    of one process (the worker's feed poll and its ATS push, say) share it instead of each spending the whole
    budget and drawing 429s from each other."""
    key = (api, base_url, rate, burst, clock, sleep)
    with _PACERS_LOCK:
        if key not in _PACERS:
            _PACERS[key] = RatePacer(rate, burst, clock=clock, sleep=sleep)
        return _PACERS[key]


def _short(text: str, limit: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


class ApiClient:
    """An httpx client for one API with the shared retry/pacing behaviour.

    Subclasses set ``api`` (a human name used in errors) and call :meth:`request`.
    """

    api = "API"

    def __init__(
        self,
        base_url: str,
        *,
        headers: Mapping[str, str] | None = None,
        policy: RetryPolicy | None = None,
        rate: float | None = None,
        burst: float | None = None,
        transport: httpx.BaseTransport | None = None,
        error_penalty: float = 0.0,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.policy = policy or RetryPolicy()
        self._client = httpx.Client(
            base_url=self.base_url,
            headers=dict(headers or {}),
            timeout=self.policy.timeout,
            transport=transport,
            follow_redirects=False,
        )
        self.pacer = (
            shared_pacer(
                self.api, self.base_url, rate, burst or rate, clock=self.policy.clock, sleep=self.policy.sleep
            )
            if rate
            else None
        )
        self.error_penalty = error_penalty
        self.calls = 0
        self.retries = 0

    # -- lifecycle ------------------------------------------------------------------------------------
    def close(self) -> None:
        self._client.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- hooks ------------------------------------------------------------------------------------------
    def auth_headers(self) -> dict[str, str]:
        """Per-request auth headers (CDEK's bearer token); static ones go in ``headers``."""
        return {}

    def on_unauthorized(self, response: httpx.Response) -> bool:
        """Called on 401; return True to retry once (e.g. after refreshing a token)."""
        return False

    # -- the call ---------------------------------------------------------------------------------------
    def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Mapping[str, Any] | None = None,
        data: Mapping[str, Any] | None = None,
        content: bytes | None = None,
        expect: Iterable[int] = (200,),
        idempotent: bool | None = None,
        allow: Iterable[int] = (),
    ) -> httpx.Response:
        """Send a request with retries. Statuses in ``expect`` or ``allow`` are returned; 429/5xx/transport
        errors are retried; anything else raises :class:`ApiError` naming the API, call and cause.

        ``idempotent`` (default: True for GET) allows retrying after a transport error, when the request
        may or may not have reached the server.
        """
        expect = set(expect) | set(allow)
        idempotent = method.upper() in ("GET", "HEAD") if idempotent is None else idempotent
        call = f"{method.upper()} {path}"
        policy = self.policy
        reauthed = False
        last_cause = ""
        last_status: int | None = None
        for attempt in range(1, policy.attempts + 1):
            if self.pacer:
                self.pacer.acquire()
            self.calls += 1
            try:
                response = self._client.request(
                    method,
                    path,
                    json=json,
                    params=params,
                    data=data,
                    content=content,
                    headers=self.auth_headers(),
                )
            except httpx.TimeoutException as exc:
                last_cause, last_status = f"timed out ({type(exc).__name__})", None
                if not idempotent:
                    raise ConnectorError(
                        self.api, call, last_cause + "; not retried (not idempotent)"
                    ) from exc
                delay = policy.backoff(attempt)
            except httpx.TransportError as exc:
                last_cause, last_status = f"{type(exc).__name__}: {exc}", None
                if not idempotent and not isinstance(exc, httpx.ConnectError):
                    raise ConnectorError(
                        self.api, call, last_cause + "; not retried (not idempotent)"
                    ) from exc
                delay = policy.backoff(attempt)
            else:
                status = response.status_code
                if status in expect:
                    return response
                if status == 401 and not reauthed and self.on_unauthorized(response):
                    reauthed = True
                    continue
                body = _body(response)
                if status not in RETRY_STATUSES:
                    if self.pacer and 400 <= status < 500 and self.error_penalty:
                        self.pacer.penalise(self.error_penalty)
                    raise ApiError(
                        self.api, call, f"HTTP {status}: {_short(str(body))}", status=status, body=body
                    )
                last_cause, last_status = f"HTTP {status}: {_short(str(body))}", status
                wait = retry_after_seconds(response.headers)
                if wait is not None and wait > policy.max_retry_after:
                    raise ConnectorError(
                        self.api,
                        call,
                        f"{last_cause}; server asks to wait {wait:.0f} s",
                        status=status,
                        body=body,
                        attempts=attempt,
                    )
                delay = wait if wait is not None else policy.backoff(attempt)
            if attempt == policy.attempts:
                break
            self.retries += 1
            log.warning(
                "%s: %s: %s; retry %d/%d in %.2f s",
                self.api,
                call,
                last_cause,
                attempt,
                policy.attempts - 1,
                delay,
            )
            policy.sleep(delay)
        raise ConnectorError(self.api, call, last_cause, status=last_status, attempts=policy.attempts)


def _body(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return response.text[:2000]
