"""The OMS's HTTP API (Starlette): sessions for dashboard users, and the actions of :mod:`oms_ops.api.actions`.

Why it exists: the dashboards' database login may only read (migration 0016). Whatever a dashboard changes
goes through here and runs under the OMS's own login, after three checks that the database alone could not
make — who is asking (a signed token from ``POST /v1/session``), whether their role may do it, and whether
the arguments are well-formed (a pydantic model per action, errors naming the field).

``POST /v1/session``   ``{"username", "password"}`` → ``{"token", "username", "role", "expires_at"}``.
    Checked against the users file (:mod:`oms_ops.users`) with the same per-name throttling as the
    dashboards' sign-in form (429 with ``retry_after_s`` while a name is locked).
``POST /v1/actions/{name}``   ``Authorization: Bearer <token>``, body: the action's arguments as a JSON
    object → ``{"action", "result"}``. The action runs in one transaction on the OMS's connection.
``GET /v1/health``   ``{"status": "ok"}`` when the database answers (503 otherwise).
``/v1/orders``, ``/v1/orders/{number}``, ``/v1/stock``, ``/v1/openapi.json``   the public part for other
    systems, with API keys instead of sessions (:mod:`oms_ops.api.public`).

Errors are ``{"error", "detail"}``: 400 bad arguments (``detail`` names each field) or refused by the
domain (``detail`` is the domain error's message, as the dashboards show it), 401 no, invalid or expired
token, 403 role, 404 unknown action, 413 body too large, 429 sign-in locked, 503 database unreachable.

Tokens: ``v1.<payload>.<signature>``, the payload ``{"sub", "role", "exp", "pwh"}`` signed with HMAC-SHA256
and a key kept in ``$OMS_HOME/secrets`` (:data:`SIGNING_KEY`). Every request reads the users file again: a
removed user, or one whose password changed (``pwh`` is a fingerprint of the password hash), is refused at
once, and a changed role applies at once — the token's role is only what it was at sign-in.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
from psycopg_pool import ConnectionPool
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from oms_ops.api.actions import ACTIONS
from oms_ops.api.onec import onec_routes
from oms_ops.api.public import public_routes
from oms_ops.db import run_in_transaction
from oms_ops.errors import OmsError
from oms_ops.users import LoginLocked, User, UserError, load_users, sign_in, users_file

log = logging.getLogger("oms.api")

#: the secret (``$OMS_HOME/secrets/<name>``) that signs the session tokens
SIGNING_KEY = "api-signing-key"
#: how long a session token is valid (seconds): a working day
TOKEN_TTL_S = 12 * 3600
#: the largest request body accepted (bytes): a fixed quarantine payload is the biggest argument
MAX_BODY = 1_000_000
_PREFIX = "v1"


# -- tokens ---------------------------------------------------------------------------------------------------


class TokenError(Exception):
    """A token that is missing, malformed, wrongly signed or expired; the message says which."""


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def password_fingerprint(user: User) -> str:
    """A short digest of the user's password hash: a token dies when the password is changed."""
    return hashlib.sha256(user.password_hash.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Claims:
    username: str
    role: str
    expires_at: float
    password_fingerprint: str


def issue_token(
    user: User, key: str, *, ttl_s: float = TOKEN_TTL_S, now: float | None = None
) -> tuple[str, Claims]:
    now = time.time() if now is None else now
    claims = Claims(user.username, user.role, now + ttl_s, password_fingerprint(user))
    payload = _b64(
        json.dumps(
            {
                "sub": claims.username,
                "role": claims.role,
                "exp": claims.expires_at,
                "pwh": claims.password_fingerprint,
            },
            separators=(",", ":"),
        ).encode()
    )
    signed = f"{_PREFIX}.{payload}"
    signature = hmac.new(key.encode(), signed.encode(), hashlib.sha256).digest()
    return f"{signed}.{_b64(signature)}", claims


def verify_token(token: str, key: str, *, now: float | None = None) -> Claims:
    """The token's claims if it is ours, unaltered and unexpired; :class:`TokenError` otherwise."""
    parts = token.split(".")
    if len(parts) != 3 or parts[0] != _PREFIX:
        raise TokenError("malformed token")
    expected = hmac.new(key.encode(), f"{parts[0]}.{parts[1]}".encode(), hashlib.sha256).digest()
    try:
        given = _unb64(parts[2])
        if not hmac.compare_digest(given, expected):
            raise TokenError("invalid token signature")
        data = json.loads(_unb64(parts[1]))
        claims = Claims(str(data["sub"]), str(data["role"]), float(data["exp"]), str(data["pwh"]))
    except (ValueError, KeyError, TypeError):
        raise TokenError("malformed token") from None
    if claims.expires_at <= (time.time() if now is None else now):
        raise TokenError("token expired: sign in again")
    return claims


# -- responses ------------------------------------------------------------------------------------------------


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


class Json(JSONResponse):
    def render(self, content: Any) -> bytes:
        return json.dumps(content, ensure_ascii=False, separators=(",", ":"), default=_json_default).encode()


def _error(status: int, error: str, detail: str, **extra: Any) -> Json:
    return Json({"error": error, "detail": detail, **extra}, status_code=status)


def _field_errors(exc: ValidationError) -> str:
    """Every problem of a request body, each naming its field: ``order_ids.0: Input should be …``."""
    return "; ".join(
        f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}" for e in exc.errors(include_url=False)
    )


class _Unauthorized(Exception):
    pass


# -- the app --------------------------------------------------------------------------------------------------


class SessionRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    username: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=256)


async def _json_body(request: Request) -> Any:
    """The body as JSON (an empty body is ``{}``); ValueError when it is not JSON or too large."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > MAX_BODY:
        raise OverflowError
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY:
            raise OverflowError
    if not body.strip():
        return {}
    return json.loads(body)


def build_app(
    database_url: str,
    *,
    signing_key: str,
    users_path: Path | None = None,
    token_ttl_s: float = TOKEN_TTL_S,
    health_figures: Callable[[], list[Any]] | None = None,
) -> Starlette:
    """The API on the OMS's own login (``database_url``): it owns the pool, closed at shutdown.
    ``health_figures``: what ``GET /v1/health/figures`` reports (``services.health.system_health`` on the
    OMS's own URLs) — the dashboards' Service health page reads the figures here, so the dashboards need
    neither the OMS's login nor Dagster's storage URL."""
    if not signing_key:
        raise ValueError("signing_key: empty")
    pool = ConnectionPool(
        database_url,
        min_size=1,
        max_size=4,
        kwargs={"autocommit": True, "connect_timeout": 5, "application_name": "oms-api"},
        check=ConnectionPool.check_connection,
        name="oms-api",
        open=False,
    )

    def current_user(request: Request) -> User:
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise _Unauthorized("no bearer token: sign in with POST /v1/session")
        try:
            claims = verify_token(token.strip(), signing_key)
        except TokenError as exc:
            raise _Unauthorized(str(exc)) from None
        try:
            user = load_users(users_path or users_file()).get(claims.username)
        except (UserError, OSError):
            user = None
        if user is None or password_fingerprint(user) != claims.password_fingerprint:
            raise _Unauthorized("the account was changed or removed: sign in again")
        return user

    async def session(request: Request) -> Response:
        try:
            body = SessionRequest.model_validate(await _json_body(request))
        except OverflowError:
            return _error(413, "too_large", f"body: larger than {MAX_BODY} bytes")
        except ValueError as exc:  # ValidationError is a ValueError
            detail = _field_errors(exc) if isinstance(exc, ValidationError) else "body: not valid JSON"
            return _error(400, "invalid_arguments", detail)
        name = body.username.strip().lower()
        try:
            user = await run_in_threadpool(sign_in, name, body.password, users_path or users_file())
        except LoginLocked as exc:
            return _error(
                429,
                "locked",
                f"too many failed sign-ins for this user name: try again in {int(exc.retry_after_s) + 1} s",
                retry_after_s=exc.retry_after_s,
            )
        except (UserError, OSError) as exc:
            log.error("sign-in unavailable: %s", exc)
            return _error(
                503, "unavailable", "sign-in is unavailable: the users file cannot be read or written"
            )
        if user is None:
            return _error(401, "unauthorized", "unknown user or wrong password")
        token, claims = issue_token(user, signing_key, ttl_s=token_ttl_s)
        return Json(
            {
                "token": token,
                "username": user.username,
                "role": user.role,
                "expires_at": datetime.fromtimestamp(claims.expires_at, UTC),
            }
        )

    async def run_action(request: Request) -> Response:
        try:
            user = await run_in_threadpool(current_user, request)
        except _Unauthorized as exc:
            return _error(401, "unauthorized", str(exc))
        name = request.path_params["name"]
        act = ACTIONS.get(name)
        if act is None:
            return _error(404, "unknown_action", f"no action {name!r}")
        if user.role not in act.roles:
            return _error(403, "forbidden", f"the {user.role} role may not run {name}")
        try:
            raw = await _json_body(request)
        except OverflowError:
            return _error(413, "too_large", f"body: larger than {MAX_BODY} bytes")
        except ValueError:
            return _error(400, "invalid_arguments", "body: not valid JSON")
        if not isinstance(raw, dict):
            return _error(400, "invalid_arguments", "body: must be a JSON object of the action's arguments")
        try:
            args = act.args.model_validate(raw)
        except ValidationError as exc:
            return _error(400, "invalid_arguments", _field_errors(exc))
        actor = f"dashboard:{user.username}"

        def run() -> Any:
            with pool.connection(timeout=10) as conn:
                return run_in_transaction(conn, lambda c: act.run(c, actor, args))

        try:
            result = await run_in_threadpool(run)
        except OmsError as exc:
            return _error(400, "refused", str(exc), kind=type(exc).__name__)
        except (psycopg.errors.IntegrityError, psycopg.errors.DataError) as exc:
            return _error(400, "refused", f"database error: {str(exc).strip().splitlines()[0]}")
        except psycopg.OperationalError as exc:
            log.error("action %s: database unavailable: %s", name, exc)
            return _error(503, "unavailable", "the database cannot be reached")
        except Exception:
            log.exception("action %s failed", name)
            return _error(500, "internal", f"{name} failed; see the API's log")
        log.info("%s ran %s", actor, name)
        return Json({"action": name, "result": result})

    async def health(_request: Request) -> Response:
        def ping() -> None:
            with pool.connection(timeout=5) as conn:
                conn.execute("SELECT 1")

        try:
            await run_in_threadpool(ping)
        except Exception as exc:  # noqa: BLE001 - any failure means "not healthy"
            return _error(503, "unavailable", f"database: {type(exc).__name__}")
        return Json({"status": "ok", "actions": len(ACTIONS)})

    async def figures(request: Request) -> Response:
        try:
            await run_in_threadpool(current_user, request)
        except _Unauthorized as exc:
            return _error(401, "unauthorized", str(exc))
        if health_figures is None:
            return _error(404, "not_configured", "this API was started without the health figures")
        try:
            found = await run_in_threadpool(health_figures)
        except Exception:
            log.exception("health figures failed")
            return _error(500, "internal", "the health figures failed; see the API's log")
        return Json({"figures": [asdict(f) for f in found]})

    @asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        pool.open(wait=False)
        try:
            yield
        finally:
            await run_in_threadpool(pool.close)

    def respond(status: int, body: Any, headers: dict[str, str] | None = None) -> Response:
        return Json(body, status_code=status, headers=headers)

    return Starlette(
        routes=[
            *public_routes(pool, respond=respond, read_body=_json_body),
            *onec_routes(pool),  # GET|POST /1c_exchange: 1C's CommerceML exchange (docs/onec.md)
            Route("/v1/session", session, methods=["POST"]),
            Route("/v1/actions/{name:str}", run_action, methods=["POST"]),
            Route("/v1/health", health, methods=["GET"]),
            Route("/v1/health/figures", figures, methods=["GET"]),
        ],
        lifespan=lifespan,
    )
