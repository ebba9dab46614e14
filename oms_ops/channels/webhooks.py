"""Receiver of the web store's order webhooks (Shopify shape): verify, dedupe, store raw — then acknowledge.
It also takes the payment provider's notifications at ``POST /webhooks/yookassa`` (:func:`handle_yookassa`:
unsigned, so only the id is taken and the object is read back from YooKassa before anything changes).

``POST /webhooks/shopify``:

0. The body is read as a stream and refused with 413 as soon as it exceeds the limit
   (``limits.max_payload_bytes`` of the business configuration; a ``Content-Length`` above it is refused
   before reading anything): an oversized body is never held in memory, the rest of it is never read.
1. The signature ``X-Shopify-Hmac-SHA256`` is checked on the *raw body bytes* with the shared secret, in
   constant time (``hmac.compare_digest``, :func:`oms_ops.channels.webstore.verify_signature`), before
   anything is written. A missing or wrong signature is answered 401 and writes nothing to the database
   (a flood of forged requests must not become a flood of rows): it is counted in memory
   (:class:`Rejections`, shown by ``GET /health``) and logged as a warning at most once a minute with the
   count since the last such line.
2. Verified deliveries are deduplicated by ``X-Shopify-Webhook-Id`` (Shopify retries 8 times over 4 hours,
   and may deliver twice): the receipt row and the raw payload are written in one transaction; a repeat
   finds the receipt and changes nothing.
3. The payload goes to ``raw.channel_orders`` as received (channel ``webstore``; NUL, lone surrogates and
   NaN escaped losslessly, ``base.prepare_payload``); a body that is no usable order (not JSON, nested too
   deep, no ``id`` or an id holding control characters) is quarantined instead with the reason. The answer
   is 200 in both cases: the data is safe with us and a retry would not improve it. Whatever fails after a
   valid signature is quarantined too (never a 500); only a database that cannot be reached is answered
   503, so that Shopify retries. Normalisation happens in the pipeline (the webstore asset and its
   sensor), keeping the receiver fast — Shopify gives a webhook 5 seconds.

Run it: ``uv run python -m oms_ops.channels.webhooks --port 8000`` (reads ``OMS_DATABASE_URL`` and
``OMS_SHOPIFY_WEBHOOK_SECRET`` or the simulators' manifest).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import math
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import psycopg
import uvicorn
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from oms_ops.channels.base import id_problem, intake_limits, quarantine_safely, storable_text
from oms_ops.channels.rawstore import insert_prepared, prepare_items, record_id
from oms_ops.channels.webstore import CHANNEL as WEBSTORE
from oms_ops.channels.webstore import CODE as CHANNEL
from oms_ops.channels.webstore import verify_signature
from oms_ops.connectors.config import SYSTEM_ENV_VARS, NotConfigured, load_settings
from oms_ops.connectors.http import ConnectorError, RetryPolicy
from oms_ops.connectors.yookassa import SYSTEM, YooKassaClient
from oms_ops.payment_provider import handle_notification as handle_yookassa_notification
from oms_ops.platform.asgi import BackgroundServer

log = logging.getLogger("oms.channels.webhooks")
#: the body limit when the business configuration is not consulted (``build_app(max_body=…)``)
MAX_BODY = 5 * 1024 * 1024
#: a rejected delivery is logged at most this often (with the count since the last line)
LOG_EVERY_S = 60.0


@dataclass(frozen=True)
class Outcome:
    status: int
    result: str  # stored | duplicate | quarantined | rejected | unavailable


@dataclass
class Rejections:
    """Deliveries refused for their signature, counted in memory — never a database row per request. The
    first one is logged at once, later ones at most every ``every`` seconds with the count since."""

    every: float = LOG_EVERY_S
    total: int = 0
    unlogged: int = 0
    last_logged: float = -math.inf
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def record(self, topic: str | None, webhook_id: str | None, shop: str | None, size: int) -> None:
        with self._lock:
            self.total += 1
            self.unlogged += 1
            now = time.monotonic()
            if now - self.last_logged < self.every:
                return
            count, self.unlogged, self.last_logged = self.unlogged, 0, now
        log.warning(
            "webhook rejected: bad or missing X-Shopify-Hmac-SHA256 (%d since the last such line, %d in all; "
            "last: topic=%.100r, id=%.100r, shop=%.100r, %d bytes)",
            count,
            self.total,
            topic,
            webhook_id,
            shop,
            size,
        )


def _connection_lost(exc: BaseException, conn: psycopg.Connection | None) -> bool:
    """The database cannot be reached (answer 503: Shopify retries) — as opposed to a payload it refused."""
    if isinstance(exc, psycopg.OperationalError) and (conn is None or conn.broken or conn.closed):
        return True
    return isinstance(exc, psycopg.InterfaceError)


def handle_delivery(
    connect: Callable[[], psycopg.Connection],
    body: bytes,
    headers,
    secret: str,
    *,
    rejections: Rejections | None = None,
) -> Outcome:
    """The whole receive step for one delivery (blocking; the app runs it in a thread)."""
    webhook_id = headers.get("x-shopify-webhook-id")
    topic = headers.get("x-shopify-topic")
    shop = headers.get("x-shopify-shop-domain")
    if not verify_signature(body, headers.get("x-shopify-hmac-sha256"), secret):
        (rejections if rejections is not None else _REJECTIONS).record(topic, webhook_id, shop, len(body))
        return Outcome(401, "rejected")
    conn = None
    try:
        conn = connect()
        with conn:
            return _store(conn, body, webhook_id, topic, shop)
    except Exception as exc:
        if _connection_lost(exc, conn):
            log.warning("webhook %.100r not stored, the database is unavailable: %s", webhook_id, exc)
            return Outcome(503, "unavailable")
        log.exception("webhook %.100r: storing failed; quarantining the body", webhook_id)
        reason = f"{topic}: webhook could not be stored: {type(exc).__name__}: {str(exc)[:300]}"
    try:  # after a valid signature the delivery is never lost: the body is kept with the reason
        with connect() as conn, conn.transaction():
            quarantine_safely(conn, [(CHANNEL, webhook_id, {"body": _text(body)}, reason)])
    except Exception as exc:  # noqa: BLE001 - nowhere left to keep it: Shopify retries
        log.exception("webhook %.100r: quarantining failed too", webhook_id)
        return Outcome(503, "unavailable") if _connection_lost(exc, None) else Outcome(500, "failed")
    return Outcome(200, "quarantined")


def _text(body: bytes) -> str:
    return body.decode("utf-8", "replace")


def _parse(body: bytes) -> tuple[Any, str | None]:
    """``(payload, None)``, or ``(what to keep, why it is no usable order)``."""
    try:
        payload = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        return {"body": _text(body)}, f"webhook body is not JSON: {exc}"
    except RecursionError:
        return {"body": _text(body)}, "webhook body is nested too deeply"
    _, problem = record_id(payload, "id", what="webhook order")
    return payload, problem


def _store(conn: psycopg.Connection, body: bytes, webhook_id, topic, shop) -> Outcome:
    limits = intake_limits()
    digest = hashlib.sha256(body).hexdigest()
    note = None
    if webhook_id is not None and id_problem(webhook_id, limits.max_text_length.id):
        note = f"X-Shopify-Webhook-Id unusable ({id_problem(webhook_id, limits.max_text_length.id)})"
        webhook_id = None  # cannot dedupe on it; the raw rows still dedupe by payload
    topic, shop = storable_text(topic, 200), storable_text(shop, 300)
    with conn.transaction():
        row = conn.execute(
            """INSERT INTO connectors.webhook_receipts (source, webhook_id, topic, verified, shop_domain,
                                                      body_sha256, body_size, reason)
               VALUES (%s, %s, %s, true, %s, %s, %s, %s)
               ON CONFLICT (source, webhook_id) WHERE verified AND webhook_id IS NOT NULL DO NOTHING
               RETURNING receipt_id""",
            (CHANNEL, webhook_id, topic, shop, digest, len(body), note),
        ).fetchone()
        if row is None:
            return Outcome(200, "duplicate")
        payload, reason = _parse(body)
        ready = []
        if reason is None:
            ready, rejects = prepare_items([(str(payload["id"]), payload)])
            if rejects:
                reason = rejects[0][2]
        if reason:
            quarantine_safely(conn, [(CHANNEL, webhook_id, payload, f"{topic}: {reason}")])
            conn.execute(
                "UPDATE connectors.webhook_receipts SET reason = %s WHERE receipt_id = %s",
                (storable_text(reason, 2000), row[0]),
            )
            return Outcome(200, "quarantined")
        new = insert_prepared(conn, CHANNEL, ready)
        raw_id = new[0][0] if new else None
        if raw_id is None:  # the same payload came before (by poll or another delivery)
            found = conn.execute(
                """SELECT raw_id FROM raw.channel_orders
                   WHERE channel_code = %s AND external_id = %s AND payload_hash = %s""",
                (CHANNEL, ready[0].ext, ready[0].digest),
            ).fetchone()
            raw_id = found[0] if found else None
        conn.execute(
            "UPDATE connectors.webhook_receipts SET raw_id = %s WHERE receipt_id = %s", (raw_id, row[0])
        )
    return Outcome(200, "stored")


_REJECTIONS = Rejections()


def yookassa_from_settings() -> YooKassaClient:
    """The payment provider's client from ``OMS_YOOKASSA_*`` or the simulators' manifest; quick to give up
    (a notification is answered within seconds; YooKassa retries what we answer 503)."""
    endpoint = load_settings(env_vars={SYSTEM: SYSTEM_ENV_VARS[SYSTEM]}).endpoint(SYSTEM)
    return YooKassaClient.from_endpoint(endpoint, policy=RetryPolicy(attempts=2, read_timeout=5.0))


def handle_yookassa(
    connect: Callable[[], psycopg.Connection], body: bytes, client: Callable[[], YooKassaClient]
) -> tuple[int, str]:
    """``POST /webhooks/yookassa``: the body is not trusted (unsigned) — the payment or refund it names is
    read back from the provider and that is applied (:func:`oms_ops.payment_provider.handle_notification`).
    200 when applied, unknown or not a notification (a retry would not change it); 503 when the provider or
    the database cannot be reached, so that YooKassa delivers it again."""
    conn = None
    try:
        with client() as api:
            conn = connect()
            with conn:
                return 200, handle_yookassa_notification(conn, api, body)
    except (ConnectorError, NotConfigured) as exc:
        log.warning("yookassa notification not applied, the provider cannot be asked: %s", exc)
        return 503, "unavailable"
    except Exception as exc:
        if _connection_lost(exc, conn):
            log.warning("yookassa notification not applied, the database is unavailable: %s", exc)
            return 503, "unavailable"
        log.exception("yookassa notification failed")
        return 500, "failed"


class BodyTooLarge(Exception):
    """The request body is larger than the receiver takes."""


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, read as a stream: :class:`BodyTooLarge` as soon as it is longer than ``limit``
    (a ``Content-Length`` above it: before reading anything) — the rest is never read or held."""
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            if int(declared) > limit:
                raise BodyTooLarge
        except ValueError:
            pass  # not a number: the server itself refuses such a request; read and count
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge
        chunks.append(chunk)
    return b"".join(chunks)


def build_app(
    database_url: str,
    secret: str,
    *,
    max_body: int | None = None,
    rejections: Rejections | None = None,
    yookassa: Callable[[], YooKassaClient] | None = None,
) -> Starlette:
    """The receiver as an ASGI app. Each delivery opens a short autocommit connection (a pool is not worth it
    at webhook rates; put a pooler in front of Postgres at scale). ``max_body``: the body limit (default the
    business configuration's ``limits.max_payload_bytes``)."""
    limit = max_body if max_body is not None else intake_limits().max_payload_bytes
    counted = rejections if rejections is not None else Rejections()

    def connect() -> psycopg.Connection:
        return psycopg.connect(database_url, autocommit=True)

    async def body_or_refusal(request: Request) -> bytes | JSONResponse:
        """The body, read within ``limit`` while it streams; or the answer refusing it (413, 400)."""
        try:
            return await read_body(request, limit)
        except BodyTooLarge:
            return JSONResponse(
                {"error": "payload too large"}, status_code=413, headers={"Connection": "close"}
            )
        except ClientDisconnect:
            return JSONResponse({"error": "client went away"}, status_code=400)

    async def shopify(request: Request) -> JSONResponse:
        body = await body_or_refusal(request)
        if isinstance(body, JSONResponse):
            return body
        outcome = await run_in_threadpool(
            handle_delivery, connect, body, request.headers, secret, rejections=counted
        )
        return JSONResponse({"result": outcome.result}, status_code=outcome.status)

    async def health(request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok", "rejected": counted.total})

    async def yookassa_notification(request: Request) -> JSONResponse:
        body = await body_or_refusal(request)
        if isinstance(body, JSONResponse):
            return body
        status, result = await run_in_threadpool(
            handle_yookassa, connect, body, yookassa or yookassa_from_settings
        )
        return JSONResponse({"result": result}, status_code=status)

    app = Starlette(
        routes=[
            Route("/webhooks/shopify", shopify, methods=["POST"]),
            Route("/webhooks/yookassa", yookassa_notification, methods=["POST"]),
            Route("/health", health, methods=["GET"]),
        ]
    )
    app.state.rejections = counted
    return app


class WebhookServer(BackgroundServer):
    """The receiver on a loopback port in a background thread (tests, demo). ``stop()`` shuts it down."""

    def __init__(
        self,
        database_url: str,
        secret: str,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        max_body: int | None = None,
        yookassa: Callable[[], YooKassaClient] | None = None,
    ) -> None:
        self.rejections = Rejections()
        app = build_app(
            database_url, secret, max_body=max_body, rejections=self.rejections, yookassa=yookassa
        )
        super().__init__(app, name="oms-webhooks", host=host, port=port, lifespan="off")
        self.url = f"http://{host}:{self.port}/webhooks/shopify"
        self.yookassa_url = f"http://{host}:{self.port}/webhooks/yookassa"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m oms_ops.channels.webhooks", description="Receive the web store's order webhooks."
    )
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    args = p.parse_args(argv)
    url = os.environ.get("OMS_DATABASE_URL")
    if not url:
        raise SystemExit("error: OMS_DATABASE_URL is not set")
    secret = load_settings(env_vars={WEBSTORE.system: WEBSTORE.env}).endpoints.get(WEBSTORE.system)
    secret = secret.get("webhook_secret") if secret else ""
    if not secret:
        raise SystemExit(
            "error: OMS_SHOPIFY_WEBHOOK_SECRET is not set (and no simulators manifest names one)"
        )
    logging.basicConfig(level="INFO", format="%(asctime)s %(name)s %(levelname)s %(message)s")
    uvicorn.run(build_app(url, secret), host=args.host, port=args.port, log_level="warning")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
