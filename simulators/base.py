"""What every simulator shares: the context (seed, clock, catalog), the request pipeline and ``/_sim/``.

Request pipeline of every real-API route (the order matters and mirrors a real edge → service chain):

1. draw faults for (method, path) — injected delays, 429 and 5xx happen before anything else, like an
   overloaded gateway;
2. ``before_request``: the channel's own rate limiter and authentication (their error bodies are the
   channel's);
3. ``sync()``: bring the simulated world up to ``clock.now()`` (new orders, due status changes) — state is
   materialised lazily, so no background thread is needed for correctness;
4. the handler, which gets the fired data faults (malformed / duplicate / out-of-order) to apply to its
   records;
5. ``after_request``: channel headers such as ``X-Ratelimit-Remaining``.

Control endpoints live under ``/_sim/`` (a prefix no real API uses), need no credentials and never meet
faults: ``GET /_sim/health``, ``GET /_sim/state``, ``POST /_sim/advance``, ``GET|POST|DELETE /_sim/faults``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, ClassVar

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from simulators.catalog import Product, catalog_index
from simulators.clock import SimClock, iso_z, parse_rfc3339
from simulators.faults import FaultInjector, FaultRule, FaultSet

log = logging.getLogger("simulators")

Handler = Callable[[Request, FaultSet], Awaitable[Response]]


@dataclass
class SimContext:
    """Shared by all simulators of one stack."""

    seed: int
    clock: SimClock
    catalog: list[Product]
    rate: float = 30.0  # mean orders per simulated minute per channel
    protocol_time: Callable[[], float] = time.monotonic
    state_dir: Path | None = None
    simulators: dict[str, Simulator] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.products = catalog_index(self.catalog)
        self.by_offer_id = {p.offer_id: p for p in self.catalog}
        self._advance_lock = threading.Lock()

    def register(self, sim: Simulator) -> None:
        self.simulators[sim.name] = sim

    def tick_all(self) -> None:
        """Let every simulator catch up with the clock and do its due background work (webhooks, files)."""
        for sim in list(self.simulators.values()):
            try:
                sim.tick()
            except Exception:  # a failing simulator must not stop the others from ticking
                log.exception("tick of %s failed", sim.name)

    def advance(self, seconds: float) -> datetime:
        """Advance the shared clock and process everything that became due, before returning."""
        with self._advance_lock:
            now = self.clock.advance(seconds)
            self.tick_all()
            return now


class ApiError(Exception):
    """Raised by handlers; carries the exact response (status, channel-specific body, headers)."""

    def __init__(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        super().__init__(f"{status}: {body}")
        self.status = status
        self.body = body
        self.headers = headers or {}

    def response(self) -> Response:
        if self.body is None:
            return Response(status_code=self.status, headers=self.headers)
        return JSONResponse(self.body, status_code=self.status, headers=self.headers)


async def read_json(request: Request) -> Any:
    """Parse the body as JSON; ValueError with a readable reason otherwise."""
    raw = await request.body()
    if not raw:
        raise ValueError("empty request body")
    try:
        return json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"malformed JSON: {exc}") from exc


class Simulator:
    """Base class of one external system. Subclasses add routes, state and channel-specific bodies."""

    name: ClassVar[str] = "base"

    def __init__(self, ctx: SimContext, *, faults: Iterable[FaultRule | dict] = ()) -> None:
        self.ctx = ctx
        self.lock = threading.RLock()
        self.faults = FaultInjector(ctx.seed, self.name, faults)
        self.stats: Counter[str] = Counter()
        ctx.register(self)

    # -- to override --------------------------------------------------------------------------------
    def api_routes(self) -> list[tuple[str, Handler, list[str]]]:
        return []

    def control_routes(self) -> list[Route]:
        """Extra ``/_sim/...`` routes of this simulator."""
        return []

    def credentials(self) -> dict:
        return {}

    def state(self) -> dict:
        return {}

    def sync(self) -> None:
        """Materialise the world up to ``clock.now()``. Called with ``self.lock`` held."""

    def tick(self) -> None:
        with self.lock:
            self.sync()

    def before_request(self, request: Request) -> Response | None:
        return None

    def after_request(self, request: Request, response: Response) -> None:
        return None

    def fault_rate_limited(self, rule: FaultRule) -> Response:
        return JSONResponse(
            {"error": "too many requests"}, status_code=429, headers={"Retry-After": _secs(rule.retry_after)}
        )

    def fault_server_error(self, rule: FaultRule) -> Response:
        return JSONResponse({"error": "internal error"}, status_code=rule.status or 500)

    def not_found(self, request: Request) -> Response:
        return JSONResponse({"error": "not found"}, status_code=404)

    def internal_error(self) -> Response:
        return JSONResponse({"error": "internal error"}, status_code=500)

    # -- helpers ------------------------------------------------------------------------------------
    @property
    def now(self) -> datetime:
        return self.ctx.clock.now()

    def endpoint(self, handler: Handler, label: str = "") -> Callable[[Request], Awaitable[Response]]:
        async def run(request: Request) -> Response:
            self.stats[f"{request.method} {label or request.url.path}"] += 1
            fs = self.faults.draw(request.method, request.url.path)
            for kind in ("timeout", "slow"):
                rule = fs.get(kind)
                if rule:
                    await asyncio.sleep(rule.effective_delay)
            try:
                if rule := fs.get("rate_limit"):
                    response = self.fault_rate_limited(rule)
                elif rule := fs.get("server_error"):
                    response = self.fault_server_error(rule)
                else:
                    response = self.before_request(request)
                    if response is None:
                        with self.lock:
                            self.sync()
                        response = await handler(request, fs)
            except ApiError as exc:
                response = exc.response()
            except Exception:
                log.exception("%s: unhandled error in %s %s", self.name, request.method, request.url.path)
                response = self.internal_error()
            self.after_request(request, response)
            return response

        return run

    def build_app(self) -> Starlette:
        routes: list[Route] = [
            Route(path, self.endpoint(handler), methods=methods)
            for path, handler, methods in self.api_routes()
        ]
        routes += self._common_control_routes() + self.control_routes()

        async def on_404(request: Request, exc: Exception) -> Response:
            if request.url.path.startswith("/_sim/"):
                return JSONResponse({"error": "unknown control endpoint"}, status_code=404)
            return self.not_found(request)

        return Starlette(routes=routes, exception_handlers={404: on_404, 405: on_404})

    def _common_control_routes(self) -> list[Route]:
        async def health(request: Request) -> Response:
            return JSONResponse({"status": "ok", "simulator": self.name, "now": iso_z(self.now)})

        async def state(request: Request) -> Response:
            def collect() -> dict:
                with self.lock:
                    self.sync()
                    body = self.state()
                return {
                    "simulator": self.name,
                    "clock": self.ctx.clock.describe(),
                    "faults": self.faults.snapshot(),
                    "requests": dict(self.stats),
                    **body,
                }

            return JSONResponse(await run_in_threadpool(collect))

        async def advance(request: Request) -> Response:
            try:
                body = await read_json(request)
                if "to" in body:
                    seconds = (parse_rfc3339(body["to"]) - self.now).total_seconds()
                    seconds = max(seconds, 0.0)
                else:
                    seconds = float(body["seconds"])
                if seconds < 0:
                    raise ValueError("seconds must be >= 0")
            except (ValueError, KeyError, TypeError, AttributeError) as exc:
                return JSONResponse({"error": f"expected {{'seconds': N}} or {{'to': ISO}}: {exc}"}, 400)
            now = await run_in_threadpool(self.ctx.advance, seconds)
            return JSONResponse({"now": iso_z(now), "advanced": seconds})

        async def faults(request: Request) -> Response:
            if request.method == "DELETE":
                self.faults.clear()
            elif request.method == "POST":
                try:
                    body = await read_json(request)
                    if isinstance(body, dict) and "faults" in body:
                        rules, replace = body["faults"], bool(body.get("replace", True))
                    elif isinstance(body, list):
                        rules, replace = body, True
                    elif isinstance(body, dict):
                        rules, replace = [body], False
                    else:
                        raise ValueError("expected a rule, a list of rules or {'faults': [...]}")
                    parsed = [FaultRule.from_dict(r) for r in rules]
                except (ValueError, TypeError) as exc:
                    return JSONResponse({"error": str(exc)}, status_code=400)
                if replace:
                    self.faults.set(parsed)
                else:
                    for rule in parsed:
                        self.faults.add(rule)
            return JSONResponse({"faults": self.faults.snapshot()})

        return [
            Route("/_sim/health", health, methods=["GET"]),
            Route("/_sim/state", state, methods=["GET"]),
            Route("/_sim/advance", advance, methods=["POST"]),
            Route("/_sim/faults", faults, methods=["GET", "POST", "DELETE"]),
        ]


def _secs(value: float) -> str:
    """Header value for a number of seconds: integers without a decimal point."""
    return str(int(value)) if float(value).is_integer() else f"{value:.1f}"


def secs_header(value: float) -> str:
    return _secs(value)
