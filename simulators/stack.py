"""Run all simulators in one process: one uvicorn server per external system, each on its own loopback port.

Why threads in one process: the simulators share one clock, one catalog and one fulfilment network (POS
sales lower WMS store stock), which is simplest in shared memory; each still gets its own HTTP port so a
connector's base URL is the only thing that changes between the simulator and the real host.

Python API (tests)::

    with start_simulators(seed=7, manual=True) as stack:
        httpx.post(stack.urls["ozon"] + "/v4/posting/fbs/list", headers=..., json=...)
        stack.advance(3600)          # one simulated hour: new orders, cancellations, CDEK statuses, webhooks

Servers bind ``127.0.0.1`` only. ``stop()`` shuts every server down and joins its thread.

``persist=True`` (the runner, ``python -m simulators``) keeps each simulator's state in
``<state_dir>/state/`` across restarts, as the real systems keep theirs (``simulators.base.StateStore``): it is
loaded before the servers start, saved every ``save_interval`` seconds while something changed and at
``stop()``, and the simulated clock resumes where the saved world left off (never earlier).
"""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import uvicorn

from simulators.base import SimContext, Simulator, StateStore
from simulators.callcentre import CallCentreSimulator
from simulators.catalog import CATALOG_VERSION, generate_catalog, product_record
from simulators.cdek import CdekSimulator
from simulators.clock import DEFAULT_EPOCH, SimClock, iso_z
from simulators.generator import demand_profile
from simulators.network import describe_network
from simulators.onec import OnecSimulator
from simulators.ozon import OzonSimulator
from simulators.pos import PosSimulator
from simulators.shopify import ShopifySimulator
from simulators.sms import SmsSimulator
from simulators.smtp import SmtpSimulator
from simulators.wildberries import WildberriesSimulator
from simulators.wms import WmsSimulator
from simulators.yookassa import YooKassaSimulator

log = logging.getLogger("simulators")

#: Port order for ``base_port``: ozon = base, wildberries = base + 1, …
SIMULATOR_NAMES = (
    "ozon", "wildberries", "shopify", "cdek", "wms", "pos", "callcentre", "sms", "smtp", "yookassa", "onec",
)  # fmt: skip
MANIFEST_NAME = "simulators.json"
#: where a persistent stack keeps its simulators' state, under the state dir
STATE_SUBDIR = "state"


@dataclass
class _Served:
    sim: Simulator
    server: uvicorn.Server
    thread: threading.Thread
    sock: socket.socket
    url: str


class SimulatorStack:
    """Running simulators. Use as a context manager or call :meth:`stop`."""

    def __init__(
        self,
        ctx: SimContext,
        host: str,
        owned_dirs: list[Path],
        tick_interval: float,
        store: StateStore | None = None,
        save_interval: float = 2.0,
    ) -> None:
        self.ctx = ctx
        self.host = host
        self._served: dict[str, _Served] = {}
        self._owned_dirs = owned_dirs
        self._tick_interval = tick_interval
        self._stop = threading.Event()
        self._tickers: list[threading.Thread] = []
        self._stopped = False
        #: where the simulators' state is kept across restarts (None: nothing is kept)
        self.store = store
        self._save_interval = save_interval

    # -- public -----------------------------------------------------------------------------------------
    @property
    def clock(self) -> SimClock:
        return self.ctx.clock

    @property
    def catalog(self):
        return self.ctx.catalog

    @property
    def sims(self) -> dict[str, Simulator]:
        return {name: s.sim for name, s in self._served.items()}

    def __getitem__(self, name: str) -> Simulator:
        return self._served[name].sim

    @property
    def urls(self) -> dict[str, str]:
        return {name: s.url for name, s in self._served.items()}

    @property
    def credentials(self) -> dict[str, dict]:
        return {name: s.sim.credentials() for name, s in self._served.items()}

    def advance(self, seconds: float) -> datetime:
        """Advance simulated time and process everything due (orders, statuses, webhooks, POS files)."""
        return self.ctx.advance(seconds)

    def manifest(self) -> dict:
        """What ``simulators.json`` contains: base URLs, credentials and the shared world's parameters."""
        return {
            "version": 1,
            "pid": os.getpid(),
            "started_at": iso_z(datetime.now(UTC)),
            "seed": self.ctx.seed,
            "rate": self.ctx.rate,
            "profile": self.ctx.profile,
            "catalog": {
                "seed": self.ctx.seed,
                "n_skus": len(self.ctx.catalog),
                "version": CATALOG_VERSION,
                # the products with every outside system's id for them: what a seller's catalog export holds
                "products": [product_record(p) for p in self.ctx.catalog],
            },
            "clock": {
                "start": iso_z(self.clock.start),
                "speed": self.clock.speed,
                "manual": self.clock.manual,
            },
            "simulators": {
                name: {
                    "base_url": s.url,
                    "control_url": f"{s.url}/_sim",
                    "credentials": s.sim.credentials(),
                    # a system not spoken over HTTP (the mail server) names its own address
                    **(s.sim.manifest_entry(s.url) if hasattr(s.sim, "manifest_entry") else {}),
                }
                for name, s in self._served.items()
            },
            "network": describe_network(),
        }

    def write_manifest(self, path: Path) -> Path:
        """Write the manifest atomically (tmp + rename) so a reader never sees half a file; mode 0600, as it
        holds the simulators' credentials."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(json.dumps(self.manifest(), ensure_ascii=False, indent=2))
        os.replace(tmp, path)
        return path

    def save_state(self, *, clean: bool = False) -> list[str]:
        """Write the state of every simulator that changed since its last save (all of them with ``clean``,
        which also marks the files as written at a clean stop). Returns the simulators written; nothing
        without ``persist``."""
        if self.store is None:
            return []
        written = []
        for name, served in self._served.items():
            try:
                if self.store.save(served.sim, clean=clean):
                    written.append(name)
            except Exception:  # a failed save must not stop the others (the next one tries again)
                log.exception("saving the state of %s failed", name)
        return written

    def stop(self) -> None:
        """Stop the tickers and the servers, then save every simulator's state as a clean stop."""
        if self._stopped:
            return
        self._stopped = True
        self._stop.set()
        for ticker in self._tickers:
            ticker.join(timeout=10)
        for s in self._served.values():
            s.server.should_exit = True
            if hasattr(s.sim, "stop_extra"):  # a listener next to the HTTP server (the SMTP simulator's)
                s.sim.stop_extra()
        for s in self._served.values():
            s.thread.join(timeout=5)
            if s.thread.is_alive():
                s.server.force_exit = True
                s.thread.join(timeout=5)
            try:
                s.sock.close()
            except OSError:
                pass
        self.save_state(clean=True)
        for d in self._owned_dirs:
            shutil.rmtree(d, ignore_errors=True)

    def __enter__(self) -> SimulatorStack:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- internals --------------------------------------------------------------------------------------
    def _serve(self, sim: Simulator, port: int) -> None:
        sock = socket.socket(socket.AF_INET6 if ":" in self.host else socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self.host, port))
        except OSError:
            sock.close()
            raise
        bound = sock.getsockname()[1]
        config = uvicorn.Config(
            sim.build_app(),
            log_level="warning",
            access_log=False,
            lifespan="off",
            timeout_graceful_shutdown=1,
            timeout_keep_alive=5,
            # a simulator whose clients read header names case-sensitively asks for h11 (httptools
            # lower-cases them on the wire): see ShopifySimulator.http_protocol
            http=getattr(sim, "http_protocol", "auto"),
        )
        server = uvicorn.Server(config)
        thread = threading.Thread(
            target=server.run, kwargs={"sockets": [sock]}, name=f"sim-{sim.name}", daemon=True
        )
        thread.start()
        deadline = time.monotonic() + 15
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                server.should_exit = True
                sock.close()
                raise RuntimeError(f"simulator {sim.name} did not start on {self.host}:{bound}")
            time.sleep(0.01)
        host = f"[{self.host}]" if ":" in self.host else self.host
        self._served[sim.name] = _Served(sim, server, thread, sock, f"http://{host}:{bound}")
        if hasattr(sim, "serve_extra"):  # the SMTP simulator's mail listener, beside its HTTP mailbox view
            sim.serve_extra(self.host)

    def _start_tickers(self) -> None:
        """Live clock: one background ticker per simulator, so a slow webhook receiver delays no one else."""

        def loop(sim: Simulator) -> None:
            while not self._stop.wait(self._tick_interval):
                try:
                    sim.tick()
                except Exception:
                    log.exception("tick of %s failed", sim.name)

        for name, served in self._served.items():
            ticker = threading.Thread(target=loop, args=(served.sim,), name=f"sim-tick-{name}", daemon=True)
            ticker.start()
            self._tickers.append(ticker)

    def _start_saver(self) -> None:
        """Persistent stack: save what changed every ``save_interval`` seconds, so a process that dies
        without a clean stop loses at most that much (and id counters skip ahead on the next start). A big
        world (a fast clock makes hundreds of thousands of orders) is saved less often: at least ten times
        as long as the last save took passes between two, so saving never costs more than a tenth of a core."""

        def loop() -> None:
            wait = self._save_interval
            while not self._stop.wait(wait):
                began = time.monotonic()
                self.save_state()
                wait = max(self._save_interval, 10 * (time.monotonic() - began))

        saver = threading.Thread(target=loop, name="sim-state-saver", daemon=True)
        saver.start()
        self._tickers.append(saver)


def yookassa_notification_url(webhook_url: str | None) -> str | None:
    """The OMS receiver's YooKassa route next to the web store's (``…/webhooks/shopify`` →
    ``…/webhooks/yookassa``): one receiver serves both."""
    if not webhook_url or "/webhooks/" not in webhook_url:
        return None
    return webhook_url.rsplit("/webhooks/", 1)[0] + "/webhooks/yookassa"


def onec_exchange_options(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """Where the simulated 1C finds "the site": ``OMS_ONEC_EXCHANGE_URL``, else, in a stack started by ``oms``
    (``OMS_HOME`` set), the OMS API on ``OMS_API_PORT`` (8600) with the password the OMS generates into
    ``$OMS_HOME/secrets/onec-exchange`` (read at each session: it appears when the API first starts). None of
    this outside such a stack: the simulated 1C then waits for ``exchange_url`` in its options."""
    env = os.environ if env is None else env
    out: dict[str, str] = {}
    home = env.get("OMS_HOME")
    if env.get("OMS_ONEC_EXCHANGE_URL"):
        out["exchange_url"] = env["OMS_ONEC_EXCHANGE_URL"]
    elif home:
        out["exchange_url"] = f"http://127.0.0.1:{env.get('OMS_API_PORT') or 8600}/1c_exchange"
    if home:
        out["password_file"] = str(Path(home).expanduser() / "secrets" / "onec-exchange")
    if env.get("OMS_ONEC_LOGIN"):
        out["login"] = env["OMS_ONEC_LOGIN"]
    return out


def start_simulators(
    *,
    seed: int = 42,
    rate: float = 30.0,
    profile: str = "daily",
    speed: float = 1.0,
    manual: bool = False,
    clock: SimClock | None = None,
    start: datetime | None = None,
    n_skus: int = 200,
    state_dir: Path | str | None = None,
    webhook_url: str | None = None,
    base_port: int = 0,
    host: str = "127.0.0.1",
    only: Iterable[str] | None = None,
    faults: Mapping[str, list[dict]] | None = None,
    options: Mapping[str, Mapping[str, Any]] | None = None,
    protocol_time: Callable[[], float] | None = None,
    tick_interval: float = 0.25,
    persist: bool = False,
    fresh: bool = False,
    save_interval: float = 2.0,
) -> SimulatorStack:
    """Start the simulators on free (or ``base_port``-based) loopback ports and return the running stack.

    * ``rate`` — mean orders per simulated minute per channel (POS: ``rate / 10`` receipts per store);
    * ``profile`` — demand over the clock: ``daily`` (the Moscow day's curve) or ``steady`` (the same at every
      hour, shops never closed: a demo at any hour), see :class:`simulators.generator.DemandProfile`;
    * ``speed`` — simulated seconds per real second; ``manual=True`` freezes the clock (tests advance it);
      ``clock`` overrides both;
    * ``state_dir`` — where the POS drop folder lives (``<state_dir>/pos_drop``); a temporary folder (removed
      on stop) when omitted;
    * ``only`` — a subset of :data:`SIMULATOR_NAMES`;
    * ``faults`` — initial fault rules per simulator, e.g. ``{"ozon": [{"kind": "rate_limit", "count": 2}]}``;
    * ``options`` — constructor keyword arguments per simulator, e.g. ``{"cdek": {"not_delivered_share": 0.5}}``;
    * ``protocol_time`` — the clock for rate limits and token lifetimes (default ``time.monotonic``);
    * ``persist`` — keep each simulator's state in ``<state_dir>/state/`` across restarts (needs
      ``state_dir``): loaded now, saved every ``save_interval`` s while it changes and at ``stop()``; without
      an explicit ``start``/``clock`` the simulated clock resumes at the later of its default start and the
      saved world's time. ``fresh`` discards the saved state first.
    """
    if not ipaddress.ip_address(host).is_loopback:
        raise ValueError("simulators only listen on a loopback address")
    names = tuple(only) if only is not None else SIMULATOR_NAMES
    unknown = set(names) - set(SIMULATOR_NAMES)
    if unknown:
        raise ValueError(f"unknown simulators: {', '.join(sorted(unknown))}")
    demand_profile(profile)  # an unknown name fails here, naming the choices
    if persist and state_dir is None:
        raise ValueError("persist needs a state_dir to keep the simulators' state in")
    owned: list[Path] = []
    if state_dir is None:
        state = Path(tempfile.mkdtemp(prefix="oms-sim-"))
        owned.append(state)
    else:
        state = Path(state_dir)
        state.mkdir(parents=True, exist_ok=True)
    catalog = generate_catalog(seed, n_skus)
    store = None
    if persist:
        world = {"seed": seed, "n_skus": len(catalog), "catalog_version": CATALOG_VERSION}
        store = StateStore(state / STATE_SUBDIR, world)
        if fresh:
            store.discard()
        saved_now = store.saved_clock(names) if clock is None and start is None else None
        if saved_now is not None:  # the world goes on from where it was saved: time never runs backwards
            default = DEFAULT_EPOCH if manual else datetime.now(UTC).replace(microsecond=0)
            start = max(default, saved_now)
    clock = clock or SimClock(start=start, speed=speed, manual=manual)
    ctx = SimContext(
        seed=seed,
        clock=clock,
        catalog=catalog,
        rate=rate,
        profile=profile,
        protocol_time=protocol_time or time.monotonic,
        state_dir=state,
    )
    faults = faults or {}
    opts = {k: dict(v) for k, v in (options or {}).items()}
    stack = SimulatorStack(ctx, host, owned, tick_interval, store, save_interval)
    try:
        wms = None
        for i, name in enumerate(SIMULATOR_NAMES):
            if name not in names:
                continue
            kw = opts.get(name, {})
            kw.setdefault("faults", faults.get(name, ()))
            if name == "ozon":
                sim = OzonSimulator(ctx, **kw)
            elif name == "wildberries":
                sim = WildberriesSimulator(ctx, **kw)
            elif name == "shopify":
                kw.setdefault("webhook_url", webhook_url)
                sim = ShopifySimulator(ctx, **kw)
            elif name == "cdek":
                sim = CdekSimulator(ctx, **kw)
            elif name == "wms":
                sim = wms = WmsSimulator(ctx, **kw)
            elif name == "callcentre":
                sim = CallCentreSimulator(ctx, **kw)
            elif name == "sms":
                sim = SmsSimulator(ctx, **kw)
            elif name == "smtp":
                sim = SmtpSimulator(ctx, **kw)
            elif name == "onec":
                # 1C polls the OMS API's /1c_exchange with the password the OMS generated (onec_exchange_options)
                for key, value in onec_exchange_options().items():
                    kw.setdefault(key, value)
                sim = OnecSimulator(ctx, **kw)
            elif name == "yookassa":
                # YooKassa notifies the URL set in the shop's settings: the OMS receiver beside the web store's
                kw.setdefault("notification_url", yookassa_notification_url(webhook_url))
                sim = YooKassaSimulator(ctx, **kw)
            else:
                kw.setdefault("drop_dir", state / "pos_drop")
                kw.setdefault("wms", wms)
                sim = PosSimulator(ctx, **kw)
            if store is not None:
                store.restore(sim)
            stack._serve(sim, base_port + i if base_port else 0)
        if not clock.manual:
            stack._start_tickers()
        if store is not None and not clock.manual:
            stack._start_saver()
    except BaseException:
        stack.stop()
        raise
    log.info("simulators running: %s", stack.urls)
    return stack
