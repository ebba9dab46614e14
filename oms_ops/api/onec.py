"""``GET|POST /1c_exchange``: the OMS as "the site" of 1C's CommerceML 2 exchange (docs/onec.md).

Why a route of its own beside the JSON API: 1C speaks its own protocol — HTTP Basic at ``mode=checkauth``, a
cookie afterwards, plain-text answers (``success``/``progress``/``failure`` and a message) and XML bodies — and
it is configured with exactly one URL. The protocol's state lives in :mod:`oms_ops.services.onec`; this module
only reads the request (the body up to the upload limit) and writes the answer.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Mapping

import psycopg
from psycopg_pool import ConnectionPool
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request as HttpRequest
from starlette.responses import Response
from starlette.routing import Route

from oms_ops.platform.settings import ConfigError
from oms_ops.services import onec

log = logging.getLogger("oms.api.onec")
PATH = "/1c_exchange"


def _text(status: int, message: str) -> Response:
    return Response(message, status_code=status, media_type="text/plain; charset=utf-8")


def onec_routes(
    pool: ConnectionPool, *, config: onec.ExchangeConfig | None = None, env: Mapping[str, str] | None = None
) -> list[Route]:
    """The exchange on the API's pool. ``config``: the exchange's configuration (default: from the
    environment, the password generated into ``$OMS_HOME/secrets``). A stack started by ``oms`` names
    ``OMS_HOME``: the password is generated at start then, so ``oms status --secrets`` shows it before 1C's first
    call; otherwise (an API in a test) at the first call, so an API that never meets 1C writes no secret."""
    source = os.environ if env is None else env
    loaded: list[onec.ExchangeConfig | None] = [config]
    lock = threading.Lock()

    def current() -> onec.ExchangeConfig | None:
        with lock:
            if loaded[0] is None:
                try:
                    loaded[0] = onec.load_config(source)
                except ConfigError as exc:
                    log.error("the 1C exchange is off: %s", exc)
            return loaded[0]

    if config is None and source.get("OMS_HOME"):
        current()

    async def endpoint(request: HttpRequest) -> Response:
        cfg = await run_in_threadpool(current)
        if cfg is None:
            return _text(503, "failure\nthe 1C exchange is not configured; see the API's log\n")
        body, too_large = bytearray(), False
        if request.method == "POST":
            declared = request.headers.get("content-length")
            if declared and declared.isdigit() and int(declared) > cfg.max_file_bytes:
                too_large = True
            else:
                async for chunk in request.stream():
                    body += chunk
                    if len(body) > cfg.max_file_bytes:
                        too_large, body = True, bytearray()
                        break
        req = onec.Request(
            params=dict(request.query_params),
            authorization=request.headers.get("authorization"),
            cookies=dict(request.cookies),
            body=bytes(body),
            body_too_large=too_large,
        )

        def run() -> onec.Answer:
            with pool.connection(timeout=10) as conn:
                return onec.answer(conn, cfg, req)

        try:
            answer = await run_in_threadpool(run)
        except psycopg.OperationalError:
            return _text(503, "failure\nthe database cannot be reached\n")
        except Exception:
            log.exception("1c exchange %s failed", dict(request.query_params))
            return _text(500, "failure\ninternal error; see the API's log\n")
        return Response(answer.content, status_code=200, media_type=answer.content_type)

    return [Route(PATH, endpoint, methods=["GET", "POST"])]
