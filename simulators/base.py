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

State across restarts (``StateStore``): a real carrier, marketplace or WMS does not forget its bookings,
orders and stock when our side restarts, so a stack started with ``persist=True`` keeps each simulator's
state in ``<state_dir>/state/<name>.json``. A simulator says what to keep with :meth:`Simulator.dump_state`
and takes it back with :meth:`Simulator.load_state`; the file is written atomically (tmp + rename), at start
(with the start counted: ``generation``), every few seconds while something changed and at a clean stop.
Counters that hand out ids (CDEK UUIDs and numbers, marketplace order ids) resume past everything handed out;
after an unclean stop (``clean`` false: the process died between two saves) they skip ahead, so an id a
client may have seen is never handed out again.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
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
from simulators.generator import OrderGenerator

log = logging.getLogger("simulators")

Handler = Callable[[Request, FaultSet], Awaitable[Response]]


@dataclass
class SimContext:
    """Shared by all simulators of one stack."""

    seed: int
    clock: SimClock
    catalog: list[Product]
    rate: float = 30.0  # mean orders per simulated minute per channel
    profile: str = "daily"  # demand over the clock: "daily" | "steady" (simulators.generator.PROFILES)
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


def cursor_page_params(params: Mapping[str, str], *, max_limit: int = 500) -> tuple[int, int]:
    """``(after, limit)`` of a cursor feed (the WMS's and the call centre's: ``?after=<next_cursor>&limit=``),
    or ``ApiError`` 400 with the feeds' ``{"error": {"code", "message"}}`` body."""

    def bad(message: str) -> ApiError:
        return ApiError(400, {"error": {"code": "invalid_argument", "message": message}})

    try:
        after = int(params.get("after") or "0")
        limit = int(params.get("limit", "100"))
    except ValueError as exc:
        raise bad("after must be a cursor from next_cursor, limit an integer") from exc
    if after < 0:
        raise bad("after must be a cursor from next_cursor")
    if not 1 <= limit <= max_limit:
        raise bad(f"limit must be within 1..{max_limit}")
    return after, limit


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
        #: how many times this simulator's saved state was started before (0: a new world); id streams that
        #: must never repeat across restarts are seeded with it
        self.generation = 0
        #: set when the state may have changed since the last save (a request that writes, new records)
        self.dirty = False
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

    def dump_state(self) -> dict | None:
        """What to keep across a restart, as JSON-able data (None: nothing). Called with ``self.lock`` held.

        Only what cannot be derived again: records, their statuses, pending timed events and the counters
        that hand out ids. Protocol-time state (tokens, rate buckets, throttles) is not kept: it is measured
        on the process's monotonic clock, and a real client copes with a token a server no longer knows."""
        return None

    def load_state(self, data: dict, *, clean: bool) -> None:
        """Take back what :meth:`dump_state` returned, before the server starts. ``clean``: the previous
        process saved at a clean stop; when False, records created after its last save are lost and the
        id counters must skip ahead (see :data:`UNCLEAN_ID_GAP`)."""

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
                        if request.method not in ("GET", "HEAD"):
                            self.dirty = True  # a write (or a read sent as POST): worth a save
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


# -- state across restarts ----------------------------------------------------------------------------------------

#: how far id counters jump after an unclean stop: more than a simulator hands out between two saves
UNCLEAN_ID_GAP = 100_000
STATE_FORMAT = 1


def resume_stream(gen: OrderGenerator, produced: int) -> None:
    """Continue an order stream after a restart: the next order is number ``produced + 1``.

    The generator's content is a pure function of (seed, channel, number), so numbering on from what was
    handed out gives new orders with new ids instead of the first orders of the stream again. (The generator
    keeps its position in ``_seq``; it has no public setter, so this one helper touches it.)"""
    gen._seq = max(gen._seq, int(produced))


def dt_out(value: datetime | None) -> str | None:
    """A timestamp for a state file (RFC 3339 with microseconds, UTC)."""
    return None if value is None else value.astimezone(UTC).isoformat()


def dt_in(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value)


class StateStore:
    """The simulators' saved state: one JSON file per simulator in ``directory``, written atomically.

    A file holds ``{format, simulator, world, generation, clean, saved_at, clock_now, state}``. ``world``
    (seed, catalog size and version) must match the running stack: state of another world (another seed) is
    not loaded — it is left as ``<name>.json.<saved_at>.old`` — and the simulator starts fresh."""

    def __init__(self, directory: Path, world: dict) -> None:
        self.directory = Path(directory)
        self.world = dict(world)
        self._written: dict[str, str] = {}  # simulator → sha256 of the last state written
        self._lock = threading.Lock()

    def path(self, name: str) -> Path:
        return self.directory / f"{name}.json"

    def _read(self, name: str) -> dict | None:
        path = self.path(name)
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            log.error("simulator state %s is unreadable (%s): starting %s fresh", path, exc, name)
            return None
        if doc.get("format") != STATE_FORMAT or doc.get("world") != self.world:
            old = path.with_name(f"{path.name}.{int(time.time())}.old")
            os.replace(path, old)
            log.warning(
                "simulator state %s belongs to another world (%s, not %s): moved to %s, starting %s fresh",
                path, doc.get("world"), self.world, old.name, name,
            )  # fmt: skip
            return None
        return doc

    def saved_clock(self, names: Iterable[str]) -> datetime | None:
        """The latest simulated time any of these simulators saved (the clock resumes there)."""
        times = [dt_in(doc["clock_now"]) for n in names if (doc := self._read(n)) and doc.get("clock_now")]
        return max(times) if times else None

    def restore(self, sim: Simulator) -> bool:
        """Load ``sim``'s saved state (if any), count this start and write the file again at once, so even a
        process that dies before its first periodic save never reuses this generation's ids."""
        doc = self._read(sim.name)
        if doc is not None:
            sim.generation = int(doc.get("generation", 0)) + 1
            with sim.lock:
                sim.load_state(doc["state"], clean=bool(doc.get("clean")))
            log.info(
                "%s: state restored from %s (generation %d, %s stop)",
                sim.name, self.path(sim.name), sim.generation, "clean" if doc.get("clean") else "unclean",
            )  # fmt: skip
        self.save(sim, clean=False, force=True)
        return doc is not None

    def save(self, sim: Simulator, *, clean: bool, force: bool = False) -> bool:
        """Write ``sim``'s state if it changed since the last write (or ``force``). Returns True if written."""
        with sim.lock:
            if not force and not sim.dirty and not clean:
                return False
            sim.dirty = False
            state = sim.dump_state()
            now = sim.now
        if state is None:
            return False
        body = json.dumps(state, ensure_ascii=False, separators=(",", ":"), sort_keys=True)
        digest = hashlib.sha256(body.encode()).hexdigest()
        with self._lock:
            if not force and not clean and self._written.get(sim.name) == digest:
                return False
            doc = {
                "format": STATE_FORMAT,
                "simulator": sim.name,
                "world": self.world,
                "generation": sim.generation,
                "clean": clean,
                "saved_at": datetime.now(UTC).isoformat(),
                "clock_now": dt_out(now),
            }
            text = json.dumps(doc, ensure_ascii=False)[:-1] + ',"state":' + body + "}"
            self.directory.mkdir(parents=True, exist_ok=True)
            path = self.path(sim.name)
            tmp = path.with_name(f".{path.name}.tmp")
            with open(tmp, "w", encoding="utf-8") as fh:
                fh.write(text)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
            self._written[sim.name] = digest
        return True

    def discard(self) -> None:
        """Forget every saved state (``python -m simulators --fresh``)."""
        if self.directory.is_dir():
            for path in self.directory.glob("*.json"):
                path.unlink()
