"""The public part of the OMS API: other systems read orders and stock and place orders with an API key.

Why a separate surface from the dashboards' actions: a system is not a person with a role and a working day;
it holds a scoped key (:mod:`oms_ops.api_keys`), sends ``Authorization: Bearer oms_<id>_<secret>`` (or
``X-Api-Key``), and reads JSON shaped for integration — stable field names, ISO timestamps, amounts as
strings, keyset paging — not dashboard tables. Personal data (the customer's name, phone, e-mail, address)
is left out unless the key has ``customer:read``.

``GET /v1/orders/{order_number}``  (``orders:read``) one order: state, payment status, totals, lines,
    shipments with carrier, tracking number and stage timestamps, the order's promise.
``GET /v1/orders``  (``orders:read``) ``channel`` + ``external_id``: the order a channel knows by its own
    number; otherwise orders changed after ``updated_after`` (ISO time), oldest change first, ``limit`` 1–200
    (50), the next page through ``cursor`` (opaque, from ``next_cursor``).
``GET /v1/stock``  (``stock:read``) ``sku`` (1–100, repeatable), optional ``location``: on hand, reserved and
    available per location (a hold whose payment window has passed counts as available, as allocation
    treats it).
``POST /v1/orders``  (``orders:write``) one order in the ``NormalizedOrder`` shape without ``channel_code``
    (the key's channel): 201 with the order's number when accepted (or accepted on hold), 200 with the
    existing order when the ``external_id`` is already known (safe to retry), 422 with the reason when
    refused — the payload is kept in the quarantine with that reason for ops.
``GET /v1/openapi.json``  the OpenAPI 3.1 description of these endpoints.

Every key is rate-limited (token bucket per key: ``RATE_PER_S`` requests a second, bursts of ``BURST``; 429 with
``Retry-After``). Errors are ``{"error", "detail"}`` like the rest of the API.
"""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import psycopg
from psycopg_pool import ConnectionPool
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from oms_ops.db import run_in_transaction
from oms_ops.services import api_keys, intake, public_reads
from oms_ops.services.api_keys import ApiKey, KeyRefused

#: requests a second per key, and the burst a key may send at once
RATE_PER_S, BURST = 20.0, 40.0
MAX_SKUS = 100
PAGE_DEFAULT, PAGE_MAX = 50, 200


class _Bucket:
    """A token bucket per key, in memory (one API process per host; a restart forgives)."""

    def __init__(self, rate: float, burst: float) -> None:
        self.rate, self.burst = rate, burst
        self._state: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def take(self, key: str) -> float:
        """0 when the request may go, else the seconds until it may."""
        now = time.monotonic()
        with self._lock:
            tokens, at = self._state.get(key, (self.burst, now))
            tokens = min(self.burst, tokens + (now - at) * self.rate)
            if tokens >= 1:
                self._state[key] = (tokens - 1, now)
                return 0.0
            self._state[key] = (tokens, now)
            return (1 - tokens) / self.rate


class _Refused(Exception):
    def __init__(self, status: int, error: str, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.status, self.error, self.detail, self.extra = status, error, detail, extra


def _encode_cursor(updated_at: datetime, order_id: int) -> str:
    raw = json.dumps([updated_at.isoformat(), order_id]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(text: str) -> tuple[datetime, int]:
    try:
        at, oid = json.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
        return datetime.fromisoformat(at), int(oid)
    except (ValueError, TypeError) as exc:
        raise _Refused(400, "invalid_arguments", "cursor: not a cursor this API gave out") from exc


def _parse_time(name: str, text: str) -> datetime:
    try:
        value = datetime.fromisoformat(text)
    except ValueError as exc:
        raise _Refused(400, "invalid_arguments", f"{name}: not an ISO 8601 time: {text[:40]!r}") from exc
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def openapi() -> dict[str, Any]:
    """The OpenAPI 3.1 description of the public endpoints (the order body's schema from ``NormalizedOrder``)."""
    order_schema = intake.order_json_schema(ref_template="#/components/schemas/{model}")
    defs = order_schema.pop("$defs", {})
    order_schema.get("properties", {}).pop("channel_code", None)
    if "channel_code" in order_schema.get("required", []):
        order_schema["required"].remove("channel_code")
    error = {"$ref": "#/components/schemas/Error"}

    def answer(description: str, schema: dict | None = None) -> dict:
        return {"description": description, "content": {"application/json": {"schema": schema or error}}}

    refused = {
        "401": answer("no key, or a key that is unknown, revoked or expired"),
        "403": answer("the key lacks the scope"),
        "429": answer("rate limit: wait Retry-After seconds"),
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": "OMS public API", "version": "1"},
        "components": {
            "securitySchemes": {"apiKey": {"type": "http", "scheme": "bearer", "bearerFormat": "oms_<id>_<secret>"}},
            "schemas": {
                "Error": {
                    "type": "object",
                    "properties": {"error": {"type": "string"}, "detail": {"type": "string"}},
                    "required": ["error", "detail"],
                },
                "PlacedOrder": order_schema,
                **defs,
            },
        },
        "security": [{"apiKey": []}],
        "paths": {
            "/v1/orders/{order_number}": {
                "get": {
                    "summary": "One order with its lines and shipments (scope orders:read)",
                    "parameters": [{"name": "order_number", "in": "path", "required": True, "schema": {"type": "string"}}],
                    "responses": {"200": answer("the order", {"type": "object"}), "404": answer("no such order"), **refused},
                }
            },
            "/v1/orders": {
                "get": {
                    "summary": "Orders by channel number, or changed after a time (scope orders:read)",
                    "parameters": [
                        {"name": n, "in": "query", "schema": {"type": t}}
                        for n, t in (("channel", "string"), ("external_id", "string"), ("updated_after", "string"),
                                     ("cursor", "string"), ("limit", "integer"))
                    ],
                    "responses": {"200": answer("orders and next_cursor", {"type": "object"}), "400": answer("bad arguments"), **refused},
                },
                "post": {
                    "summary": "Place an order on the key's channel (scope orders:write)",
                    "requestBody": {"required": True, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/PlacedOrder"}}}},
                    "responses": {
                        "201": answer("accepted", {"type": "object"}),
                        "200": answer("already known: the existing order", {"type": "object"}),
                        "422": answer("refused, kept in the quarantine with the reason"),
                        **refused,
                    },
                },
            },
            "/v1/stock": {
                "get": {
                    "summary": "Available stock per SKU and location (scope stock:read)",
                    "parameters": [
                        {"name": "sku", "in": "query", "required": True, "schema": {"type": "array", "items": {"type": "string"}}},
                        {"name": "location", "in": "query", "schema": {"type": "string"}},
                    ],
                    "responses": {"200": answer("stock per SKU", {"type": "object"}), "400": answer("bad arguments"), **refused},
                }
            },
        },
    }  # fmt: skip


def public_routes(
    pool: ConnectionPool,
    *,
    respond: Callable[..., Response],
    read_body: Callable[..., Any],
    rate_per_s: float = RATE_PER_S,
    burst: float = BURST,
) -> list[Route]:
    """The public endpoints on the API's pool. ``respond(status, body)`` renders JSON the way the rest of the
    API does; ``read_body(request)`` reads a size-limited JSON body (OverflowError / ValueError)."""
    bucket = _Bucket(rate_per_s, burst)

    def error(exc: _Refused) -> Response:
        headers = {"Retry-After": str(exc.extra.pop("retry_after"))} if "retry_after" in exc.extra else None
        return respond(exc.status, {"error": exc.error, "detail": exc.detail, **exc.extra}, headers=headers)

    def authorise(request: Request, scope: str) -> ApiKey:
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        presented = token.strip() if scheme.lower() == "bearer" else request.headers.get("x-api-key", "")
        if not presented:
            raise _Refused(401, "unauthorized", "no API key: send Authorization: Bearer oms_<id>_<secret>")
        try:
            with pool.connection(timeout=10) as conn:
                key = api_keys.authenticate(conn, presented)
        except KeyRefused as exc:
            raise _Refused(401, "unauthorized", str(exc)) from None
        wait = bucket.take(key.key_id)
        if wait:
            raise _Refused(429, "rate_limited", f"more than {rate_per_s:g} requests a second for this key",
                           retry_after=max(1, int(wait + 0.999)))  # fmt: skip
        if scope not in key.scopes:
            raise _Refused(403, "forbidden", f"this key lacks the scope {scope}")
        return key

    def guarded(scope: str, handler: Callable[..., tuple[int, Any]], *, with_body: bool = False):
        """An endpoint that checks the key and its scope, then runs ``handler(request, key[, body])`` in a
        worker thread; ``with_body``: the JSON body is read first (size-limited)."""

        async def endpoint(request: Request) -> Response:
            extra: tuple[Any, ...] = ()
            if with_body:
                try:
                    extra = (await read_body(request),)
                except OverflowError:
                    return respond(413, {"error": "too_large", "detail": "body: too large"})
                except ValueError:
                    return respond(400, {"error": "invalid_arguments", "detail": "body: not valid JSON"})

            def run() -> tuple[int, Any]:
                return handler(request, authorise(request, scope), *extra)

            try:
                status, body = await run_in_threadpool(run)
            except _Refused as exc:
                return error(exc)
            except psycopg.OperationalError:
                return respond(503, {"error": "unavailable", "detail": "the database cannot be reached"})
            return respond(status, body)

        return endpoint

    def get_order(request: Request, key: ApiKey) -> tuple[int, Any]:
        number = request.path_params["order_number"]
        with pool.connection(timeout=10) as conn:
            row = conn.execute(
                "SELECT order_id FROM oms.orders WHERE order_number = %s", (number[:40],)
            ).fetchone()
            if row is None:
                raise _Refused(404, "not_found", f"no order {number[:40]!r}")
            return 200, public_reads.orders(conn, [row[0]], personal="customer:read" in key.scopes)[0]

    def list_orders(request: Request, key: ApiKey) -> tuple[int, Any]:
        q = request.query_params
        unknown = set(q) - {"channel", "external_id", "updated_after", "cursor", "limit"}
        if unknown:
            raise _Refused(400, "invalid_arguments", f"unknown parameters: {', '.join(sorted(unknown))}")
        personal = "customer:read" in key.scopes
        with pool.connection(timeout=10) as conn:
            if "external_id" in q or "channel" in q:
                if not q.get("channel") or not q.get("external_id"):
                    raise _Refused(400, "invalid_arguments", "channel and external_id go together")
                ids = public_reads.by_channel_number(conn, q["channel"][:64], q["external_id"][:200])
                return 200, {"orders": public_reads.orders(conn, ids, personal=personal), "next_cursor": None}
            try:
                limit = int(q.get("limit", PAGE_DEFAULT))
            except ValueError:
                limit = -1
            if not 1 <= limit <= PAGE_MAX:
                raise _Refused(400, "invalid_arguments", f"limit: 1 to {PAGE_MAX}")
            if "cursor" in q:
                after_at, after_id = _decode_cursor(q["cursor"])
            elif "updated_after" in q:
                after_at, after_id = _parse_time("updated_after", q["updated_after"]), 2**62
            else:
                raise _Refused(
                    400, "invalid_arguments", "give channel + external_id, updated_after or cursor"
                )
            rows = public_reads.changed_after(conn, after_at, after_id, limit)
            nxt = _encode_cursor(rows[-1][1], rows[-1][0]) if len(rows) == limit else None
            return 200, {
                "orders": public_reads.orders(conn, [r[0] for r in rows], personal=personal),
                "next_cursor": nxt,
            }

    def stock(request: Request, key: ApiKey) -> tuple[int, Any]:
        q = request.query_params
        skus = list(dict.fromkeys(s.strip() for s in q.getlist("sku") if s.strip()))
        unknown = set(q) - {"sku", "location"}
        if unknown:
            raise _Refused(400, "invalid_arguments", f"unknown parameters: {', '.join(sorted(unknown))}")
        if not 1 <= len(skus) <= MAX_SKUS or any(len(s) > 64 for s in skus):
            raise _Refused(400, "invalid_arguments", f"sku: 1 to {MAX_SKUS} SKUs of at most 64 characters")
        with pool.connection(timeout=10) as conn:
            return 200, {"stock": public_reads.stock(conn, skus, q.get("location"))}

    def place_order(request: Request, key: ApiKey, raw: Any) -> tuple[int, Any]:
        if not isinstance(raw, dict):
            raise _Refused(400, "invalid_arguments", "body: must be one order as a JSON object")
        if "channel_code" in raw:
            raise _Refused(400, "invalid_arguments", "channel_code: set by the key, leave it out")
        order = {**raw, "channel_code": key.channel_code}
        actor = f"api:{key.key_id}"
        with pool.connection(timeout=10) as conn:
            res = run_in_transaction(
                conn,
                lambda c: intake.take_orders(c, [order], actor=actor, source=f"api:{key.channel_code}"),
            )
            if res.rejected:
                _, reason = res.rejected[0]
                raise _Refused(422, "refused", reason, quarantine_ids=list(res.quarantined))
            ids = public_reads.by_channel_number(conn, key.channel_code, str(raw.get("external_id")))
            body = public_reads.orders(conn, ids, personal="customer:read" in key.scopes)[0]
            return (200 if res.duplicates else 201), body

    async def spec(_request: Request) -> Response:
        return respond(200, openapi())

    read_orders = guarded("orders:read", list_orders)
    post_order = guarded("orders:write", place_order, with_body=True)

    async def orders(request: Request) -> Response:
        return await (post_order if request.method == "POST" else read_orders)(request)

    return [
        Route("/v1/openapi.json", spec, methods=["GET"]),
        Route("/v1/orders", orders, methods=["GET", "POST"]),
        Route("/v1/orders/{order_number:str}", guarded("orders:read", get_order), methods=["GET"]),
        Route("/v1/stock", guarded("stock:read", stock), methods=["GET"]),
    ]
