"""Receiver of the web store's order webhooks (Shopify shape): verify, dedupe, store raw — then acknowledge.

``POST /webhooks/shopify``:

1. The signature ``X-Shopify-Hmac-SHA256`` is checked on the *raw body bytes* with the shared secret, in
   constant time (``hmac.compare_digest``, :func:`oms_ops.channels.webstore.verify_signature`). A missing or
   wrong signature is rejected with 401, logged (warning) and recorded in ``connectors.webhook_receipts``
   (``verified = false``, body hash and size only — the body of a forged request is not kept).
2. Verified deliveries are deduplicated by ``X-Shopify-Webhook-Id`` (Shopify retries 8 times over 4 hours,
   and may deliver twice): the receipt row and the raw payload are written in one transaction; a repeat
   finds the receipt and changes nothing.
3. The payload goes to ``raw.channel_orders`` as received (channel ``webstore``); a body that is not an
   order (no ``id``, not JSON) is quarantined instead. The answer is 200 in both cases: the data is safe
   with us and a retry would not improve it. Normalisation happens in the pipeline (the webstore asset and
   its sensor), keeping the receiver fast — Shopify gives a webhook 5 seconds.

Run it: ``uv run python -m oms_ops.channels.webhooks --port 8000`` (reads ``OMS_DATABASE_URL`` and
``OMS_SHOPIFY_WEBHOOK_SECRET`` or the simulators' manifest).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import psycopg
import uvicorn
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from oms_ops.channels.rawstore import store_payloads
from oms_ops.channels.webstore import CHANNEL as WEBSTORE
from oms_ops.channels.webstore import CODE as CHANNEL
from oms_ops.channels.webstore import verify_signature
from oms_ops.connectors.config import load_settings
from oms_ops.quarantine import quarantine_many

log = logging.getLogger("oms.channels.webhooks")
MAX_BODY = 5 * 1024 * 1024


@dataclass(frozen=True)
class Outcome:
    status: int
    result: str  # stored | duplicate | quarantined | rejected


def handle_delivery(connect: Callable[[], psycopg.Connection], body: bytes, headers, secret: str) -> Outcome:
    """The whole receive step for one delivery (blocking; the app runs it in a thread)."""
    digest = hashlib.sha256(body).hexdigest()
    webhook_id = headers.get("x-shopify-webhook-id")
    topic = headers.get("x-shopify-topic")
    shop = headers.get("x-shopify-shop-domain")
    if not verify_signature(body, headers.get("x-shopify-hmac-sha256"), secret):
        log.warning(
            "webhook rejected: bad or missing X-Shopify-Hmac-SHA256 (topic=%s, id=%s, shop=%s, %d bytes)",
            topic,
            webhook_id,
            shop,
            len(body),
        )
        with connect() as conn, conn.transaction():
            conn.execute(
                """INSERT INTO connectors.webhook_receipts (source, webhook_id, topic, verified, reason, shop_domain,
                                                          body_sha256, body_size)
                   VALUES (%s, %s, %s, false, %s, %s, %s, %s)""",
                (CHANNEL, webhook_id, topic, "bad or missing HMAC signature", shop, digest, len(body)),
            )
        return Outcome(401, "rejected")
    with connect() as conn, conn.transaction():
        row = conn.execute(
            """INSERT INTO connectors.webhook_receipts (source, webhook_id, topic, verified, shop_domain,
                                                      body_sha256, body_size)
               VALUES (%s, %s, %s, true, %s, %s, %s)
               ON CONFLICT (source, webhook_id) WHERE verified AND webhook_id IS NOT NULL DO NOTHING
               RETURNING receipt_id""",
            (CHANNEL, webhook_id, topic, shop, digest, len(body)),
        ).fetchone()
        if row is None:
            return Outcome(200, "duplicate")
        try:
            payload = json.loads(body)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            payload, reason = {"body": body.decode("utf-8", "replace")}, f"webhook body is not JSON: {exc}"
        else:
            reason = (
                None
                if isinstance(payload, dict) and payload.get("id") not in (None, "")
                else ("webhook order without id: cannot be identified")
            )
        if reason:
            quarantine_many(conn, [(CHANNEL, webhook_id, payload, f"{topic}: {reason}")])
            conn.execute(
                "UPDATE connectors.webhook_receipts SET reason = %s WHERE receipt_id = %s", (reason, row[0])
            )
            return Outcome(200, "quarantined")
        store_payloads(conn, CHANNEL, [(str(payload["id"]), payload)])
        raw = conn.execute(
            """SELECT raw_id FROM raw.channel_orders WHERE channel_code = %s AND external_id = %s
               ORDER BY raw_id DESC LIMIT 1""",
            (CHANNEL, str(payload["id"])),
        ).fetchone()
        conn.execute(
            "UPDATE connectors.webhook_receipts SET raw_id = %s WHERE receipt_id = %s",
            (raw[0] if raw else None, row[0]),
        )
    return Outcome(200, "stored")


def build_app(database_url: str, secret: str) -> Starlette:
    """The receiver as an ASGI app. Each delivery opens a short autocommit connection (a pool is not worth it
    at webhook rates; put a pooler in front of Postgres at scale)."""

    def connect() -> psycopg.Connection:
        return psycopg.connect(database_url, autocommit=True)

    async def shopify(request: Request) -> JSONResponse:
        body = await request.body()
        if len(body) > MAX_BODY:
            return JSONResponse({"error": "payload too large"}, status_code=413)
        outcome = await run_in_threadpool(handle_delivery, connect, body, request.headers, secret)
        return JSONResponse({"result": outcome.result}, status_code=outcome.status)

    async def health(request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok"})

    return Starlette(
        routes=[
            Route("/webhooks/shopify", shopify, methods=["POST"]),
            Route("/health", health, methods=["GET"]),
        ]
    )


class WebhookServer:
    """The receiver on a loopback port in a background thread (tests, demo). ``stop()`` shuts it down."""

    def __init__(self, database_url: str, secret: str, *, host: str = "127.0.0.1", port: int = 0) -> None:
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind((host, port))
        self.port = self._sock.getsockname()[1]
        self.url = f"http://{host}:{self.port}/webhooks/shopify"
        config = uvicorn.Config(
            build_app(database_url, secret),
            log_level="warning",
            access_log=False,
            lifespan="off",
            timeout_graceful_shutdown=1,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self._sock]}, name="oms-webhooks", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + 15
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"webhook receiver did not start on {host}:{self.port}")
            time.sleep(0.01)

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)
        try:
            self._sock.close()
        except OSError:
            pass

    def __enter__(self) -> WebhookServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


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
