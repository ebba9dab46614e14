"""The always-on OMS worker: the fast lane of the operational loop.

Dagster is the control plane (every step is an asset, schedules are the safety-net sweep), but a process per
run every minute left orders waiting minutes for a reservation. The worker runs the same service functions
event by event instead:

* it ``LISTEN``s on ``oms_work`` (triggers of migration 0013 notify at commit: ``queued`` payloads,
  new ``orders``, ``stock`` moved, ``outbox`` rows) and also sweeps on a timer, so a notification lost while
  it restarted delays work, never loses it;
* feeds are polled every few seconds (``services.intake.poll``: one poll per feed at a time, whoever runs
  it), queued payloads normalised as they arrive, new orders allocated at once, changed available-to-sell
  pushed to every channel (the pushers batch and throttle to each API's limits), the outbox drained
  continuously; the WMS's counts are read on a slower cadence, reserved orders shipped (the demo's floor)
  and own-courier parcels moved on when the configuration asks for it;
* every step is one or more transactions of the services (SKIP LOCKED, advisory locks): several workers may
  run at once, and a worker killed at any point loses nothing — the next one finds the work where it was;
* a heartbeat row (``oms.worker_heartbeats``) says it is alive and how far behind it is (the age of the
  oldest queued payload or unallocated order); every step that moved something is written to
  ``oms.worker_journal``, which a Dagster sensor turns into materializations of the same assets.

``python -m oms_ops.worker`` runs a supervisor that restarts the worker process when it dies (``oms up`` and
``oms demo`` start it; ``oms down`` stops both); ``--once`` runs one cycle of every step and exits.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from oms_ops.business_config import load_business_config
from oms_ops.channels import registry
from oms_ops.db import connect
from oms_ops.platform.settings import ConfigError
from oms_ops.services import allocation, ats, carrier, discovery, intake, journal, returns, shipping, stock
from oms_ops.services import notifications as notifications_service
from oms_ops.services import payments as payments_service
from oms_ops.services import supply as supply_service
from oms_ops.services.clients import Clients
from oms_ops.services.outbox import drain_outbox
from oms_ops.services.settings import connectors_of, load_oms_settings
from oms_ops.services.setup import LOCATION_MAP
from oms_ops.services.unfillable import sweep as sweep_unfillable

log = logging.getLogger("oms.worker")
CHANNEL = "oms_work"
#: at most this many values per push to a channel that declares a per-run cap (APIs taking one call per
#: value): a push started now never keeps a change made a second later waiting long
ATS_ITEMS_PER_PUSH = 20


@dataclass
class Cadence:
    """Seconds between timer sweeps of each step (events run a step sooner)."""

    poll: float = 2.0
    normalize: float = 10.0
    allocate: float = 10.0
    ats: float = 15.0
    #: at most one ATS push per this many seconds, however often stock moves (API limits, batching)
    ats_min_gap: float = 2.0
    outbox: float = 5.0
    wms: float = 5.0
    returns: float = 15.0
    #: CDEK bookings (registration, labels) and tracking: hand-over and delivery reach the order within this
    carrier: float = 20.0
    courier: float = 30.0
    housekeeping: float = 3600.0
    ship: float = 20.0
    #: channel discovery: at start for channels never discovered, then a full re-read this often
    discover: float = 6 * 3600.0
    #: park orders the routing cascade gave up on, cancel parked ones past their date (dates are in days)
    unfillable_sweep: float = 3600.0
    #: customer notifications: new order events → SMS / e-mail in the outbox, SMS delivery statuses
    notifications: float = 10.0
    #: payment links for orders that wait for one, the poll of open payments / refunds at the provider
    payments: float = 15.0


@dataclass
class Step:
    name: str
    every: float
    run: Callable[[psycopg.Connection], dict[str, Any]]
    #: notifications that make it due now
    wakes_on: frozenset[str] = frozenset()
    min_gap: float = 0.0
    #: runs in its own thread (own connection): a slow API (a channel's ATS window or a slow store, the WMS's
    #: paged counts) must not hold up reservations
    background: bool = False
    due_at: float = 0.0
    last_run: float = 0.0
    thread: threading.Thread | None = None
    again: bool = False


@dataclass
class Worker:
    """One worker process: its connections, clients and steps (see the module docstring)."""

    database_url: str
    clients: Clients
    config_path: str | None = None
    cadence: Cadence = field(default_factory=Cadence)
    ship: bool = True
    #: play the own courier (the demo: parcels of carriers without an API handed over, then delivered)
    demo_courier: bool = False
    courier_day_s: float = 360.0
    worker_id: str = field(default_factory=lambda: f"{socket.gethostname()}:{os.getpid()}")
    steps: list[Step] = field(default_factory=list)
    stopping: bool = False

    def __post_init__(self) -> None:
        # each background step has its own clients: a client is used by one thread at a time
        self._step_clients: dict[str, Clients] = {}
        self._discovered_once = False
        c = self.cadence
        self.steps = [
            Step("poll", c.poll, self._poll),
            Step("normalize", c.normalize, self._normalize, frozenset({"queued"})),
            Step("allocate", c.allocate, self._allocate, frozenset({"orders", "stock"})),
            # one ATS lane per channel: Ozon's 30-s windows or a slow store must not hold up the others
            *(
                Step(
                    f"ats:{ch.code}",
                    c.ats,
                    self._ats_of(ch.code),
                    frozenset({"stock"}),
                    min_gap=c.ats_min_gap,
                    background=True,
                )
                for ch in registry.with_ats()
            ),
            Step("outbox", c.outbox, self._outbox, frozenset({"outbox"}), background=True),
            Step("wms", c.wms, self._wms, background=True),
            Step("supply", c.wms, self._supply, background=True),  # inbound supply → arrivals, promises
            Step("returns", c.returns, self._returns, background=True),
            Step("carrier", c.carrier, self._carrier, background=True),
            Step("housekeeping", c.housekeeping, self._housekeeping, background=True),
            Step("discover", c.discover, self._discover, background=True),
            Step("unfillable_sweep", c.unfillable_sweep, self._unfillable_sweep, background=True),
            Step(
                "notifications", c.notifications, self._notifications, frozenset({"orders"}), background=True
            ),
            Step("payments", c.payments, self._payments, frozenset({"orders"}), background=True),
        ]
        if self.ship:
            self.steps.append(Step("ship", c.ship, self._ship, background=True))
        if self.demo_courier:
            self.steps.append(Step("courier", c.courier, self._courier, background=True))

    def _clients_of(self, step: str) -> Clients:
        if step not in self._step_clients:
            self._step_clients[step] = Clients(self.clients.settings, **self.clients.client_kw)
        return self._step_clients[step]

    # -- the steps ------------------------------------------------------------------------------------------
    def _poll(self, conn: psycopg.Connection) -> dict[str, Any]:
        out = {}
        for channel in registry.CHANNELS:
            if channel.poll is None or not self.clients.settings.configured(channel.system):
                continue
            try:
                res = intake.poll(conn, channel.code, self.clients)
            except Exception as exc:  # noqa: BLE001 - one feed failing must not stop the others
                log.warning("poll %s: %s", channel.code, exc)
                continue
            if res.new_raw or res.normalized.rows:
                out[channel.asset_name] = res.metadata()
        return out

    def _normalize(self, conn: psycopg.Connection) -> dict[str, Any]:
        out = {}
        for channel in registry.CHANNELS:
            newest, _ = intake.queued(conn, channel.code)
            if newest is None:
                continue
            res = intake.normalize(conn, channel.code)
            if res.rows:
                out[channel.asset_name] = {f"normalized_{k}": v for k, v in res.as_dict().items()}
        return out

    def _allocate(self, conn: psycopg.Connection) -> dict[str, Any]:
        res = allocation.allocate(conn, load_business_config(self.config_path))
        moved = any(v for v in res.metadata().values())
        return {"allocation": res.metadata()} if moved else {}

    def _ats_of(self, code: str) -> Callable[[psycopg.Connection], dict[str, Any]]:
        def run(conn: psycopg.Connection) -> dict[str, Any]:
            res = ats.push_all(conn, self._clients_of(f"ats:{code}"), max_items=ATS_ITEMS_PER_PUSH, only=code)
            due = res.next_due_s
            if due is not None:  # a value waits for the API's window or a retry: come back exactly then
                self._wake_at(f"ats:{code}", time.monotonic() + max(due, 0.0) + 0.2)
            pushed = {c: r.pushed for c, r in res.results.items()}
            return {"ats_pushes": {**res.metadata, "errors": res.errors[:10]}} if any(pushed.values()) else {}

        return run

    def _wake_at(self, step_name: str, at: float) -> None:
        """Make ``step_name`` due no later than ``at`` (monotonic seconds)."""
        for step in self.steps:
            if step.name == step_name:
                step.due_at = min(step.due_at, at)

    def _outbox(self, conn: psycopg.Connection) -> dict[str, Any]:
        res = drain_outbox(conn, self._clients_of("outbox"), limit=500)
        return {"outbox_delivery": res.metadata()} if res.claimed else {}

    def _wms(self, conn: psycopg.Connection) -> dict[str, Any]:
        if not self.clients.settings.configured("wms"):
            return {}
        adjusted = {}
        for wms_code, location in LOCATION_MAP.items():
            try:
                r = stock.sync_location(conn, self._clients_of("wms"), location, wms_code=wms_code)
            except Exception as exc:  # noqa: BLE001 - one location failing must not stop the others
                log.warning("wms %s: %s", location, exc)
                continue
            if r.adjusted:
                adjusted[location] = {"adjusted": len(r.adjusted), "released_orders": len(r.released_orders)}
        # one entry per location: Dagster shows each as an event of that location's stock asset
        return {f"stock:{loc}": meta for loc, meta in adjusted.items()}

    def _supply(self, conn: psycopg.Connection) -> dict[str, Any]:
        """The WMS's inbound supply (arrivals allocate what was promised from them), then the promise dates of
        waiting lines; without a WMS only the promises (supplies imported from files)."""
        config = load_business_config(self.config_path)
        if self.clients.settings.configured("wms"):
            meta = supply_service.sync_wms(conn, self._clients_of("supply").get("wms"), config)
        else:
            meta = supply_service.recompute(conn, config).metadata()
        quiet = ("promised_lines", "unpromised_lines", "supplies_unchanged")  # figures, not movements
        moved = any(v for k, v in meta.items() if k not in quiet)
        return {"wms_inbound_supply": meta} if moved else {}

    def _carrier(self, conn: psycopg.Connection) -> dict[str, Any]:
        """The carrier's side of shipping, as the schedules' ``carrier_documents`` and ``carrier_tracking``
        do: bookings registered and labels stored, then the statuses of open parcels → handed over,
        delivered, not delivered. In the worker, so that "shipped" and "delivered" follow the carrier within
        seconds instead of waiting for the 5-minute tracking schedule."""
        clients = self._clients_of("carrier")
        if not clients.settings.configured("cdek"):
            return {}
        docs = carrier.sync_documents(conn, clients)
        tracking = carrier.poll_tracking(conn, clients)
        out = {}
        if any(v for k, v in docs.items() if isinstance(v, int) and k != "skipped_busy"):
            out["carrier_documents"] = docs
        if any(tracking.get(k) for k in ("events_new", "transitions", "reconciled", "errors")):
            out["carrier_tracking"] = tracking
        return out

    def _returns(self, conn: psycopg.Connection) -> dict[str, Any]:
        """Customers' return requests from the channels, the warehouse's receipts of returned parcels
        (received and inspected by the reported condition), then refunds (and replacement orders for
        exchanges) of what was inspected."""
        clients = self._clients_of("returns")
        asked = returns.sync_channel_returns(conn, clients)
        received = {}
        if clients.settings.configured("wms"):
            received = returns.sync_return_receipts(conn, clients.get("wms")).metadata()
        refunded = returns.refund_inspected(conn, actor="returns")
        exchanged = returns.exchange_inspected(conn, actor="returns")
        moved = (
            asked.requested
            or asked.quarantined
            or refunded.refunded
            or exchanged
            or any(v for v in received.values() if isinstance(v, int))
        )
        meta = {
            "customer_requests": asked.metadata(),
            "wms_receipts": received,
            "refunded": refunded.refunded,
            "exchanged": len(exchanged),
        }
        return {"returns": meta} if moved else {}

    def _courier(self, conn: psycopg.Connection) -> dict[str, Any]:
        """The demo's own courier: hands parcels over two minutes after they are ready and delivers them a
        demo day later (a day × the demo's transit compression)."""
        res = shipping.advance_own_courier(
            conn, hand_over_after_s=120, deliver_after_s=self.courier_day_s, actor="courier:demo"
        )
        meta = res.metadata()
        return (
            {"shipments": {"own_courier": meta}}
            if any(v for v in meta.values() if isinstance(v, int))
            else {}
        )

    def _housekeeping(self, conn: psycopg.Connection) -> dict[str, Any]:
        """Forget journal entries older than a week (Dagster keeps the events made of them)."""
        journal.prune(conn)
        return {}

    def _discover(self, conn: psycopg.Connection) -> dict[str, Any]:
        """First contact: a channel account never read before is asked for its warehouses and items at once;
        later runs re-read every account (new items, renamed or closed warehouses). Operators' mappings stay."""
        first = not self._discovered_once
        found = discovery.discover_all(
            conn, self._clients_of("discover"), load_business_config(self.config_path), only_new=first
        )
        self._discovered_once = True
        reports = {code: r.as_dict() for code, r in found.items() if not isinstance(r, str)}
        return {"channel_mappings": {"discovered": reports}} if reports else {}

    def _unfillable_sweep(self, conn: psycopg.Connection) -> dict[str, Any]:
        res = sweep_unfillable(conn, load_business_config(self.config_path))
        return {"allocation": res.metadata()} if any(res.metadata().values()) else {}

    def _notifications(self, conn: psycopg.Connection) -> dict[str, Any]:
        """Customer notifications of new order events handed to the outbox (the outbox step sends them), and
        the SMS gateway's delivery statuses (oms_ops/notifications.py)."""
        meta = notifications_service.run(
            conn, self._clients_of("notifications"), load_business_config(self.config_path)
        )
        # journalled under the Dagster asset that does the same (pipelines/defs/operations/assets.py)
        return {"customer_notifications": meta} if meta else {}

    def _payments(self, conn: psycopg.Connection) -> dict[str, Any]:
        """Payment links for the orders that wait for one (the outbox step sends them) and the poll of what is
        open at the payment provider (oms_ops/payment_provider.py)."""
        meta = payments_service.run(conn, self._clients_of("payments"))
        return {"payment_requests": meta} if meta else {}  # journalled under the Dagster asset doing the same

    def _ship(self, conn: psycopg.Connection) -> dict[str, Any]:
        res = shipping.ship_reserved(conn)
        return {"shipments": res.metadata()} if res.shipments or res.errors else {}

    # -- the loop -------------------------------------------------------------------------------------------
    def run_step(self, conn: psycopg.Connection, step: Step) -> None:
        if step.background:
            self._start_background(step)
            return
        self._run(conn, step)

    def _start_background(self, step: Step) -> None:
        """Start ``step`` in its thread; while it still runs, remember that it was asked for again."""
        now = time.monotonic()
        if step.thread is not None and step.thread.is_alive():
            step.again = True
            step.due_at = now + max(step.min_gap, 0.5)
            return
        step.again = False
        step.last_run = now
        step.due_at = now + step.every

        def target() -> None:
            with connect(self.database_url) as c:
                self._run(c, step)

        step.thread = threading.Thread(target=target, name=f"worker-{step.name}", daemon=True)
        step.thread.start()

    def _run(self, conn: psycopg.Connection, step: Step) -> None:
        started = time.monotonic()
        step.last_run = started
        step.due_at = max(step.due_at, started + step.every) if step.background else started + step.every
        try:
            moved = step.run(conn)
        except Exception as exc:  # noqa: BLE001 - recorded; the step runs again at its next turn
            log.exception("step %s failed", step.name)
            self._beat(conn, error=f"{step.name}: {type(exc).__name__}: {exc}")
            return
        if moved:
            self._journal(conn, step.name, moved, time.monotonic() - started)

    def _journal(self, conn: psycopg.Connection, step: str, moved: dict[str, Any], seconds: float) -> None:
        with conn.transaction():
            for asset, meta in moved.items():
                conn.execute(
                    "INSERT INTO oms.worker_journal (worker_id, asset, metadata) VALUES (%s, %s, %s)",
                    (self.worker_id, asset, Jsonb({**meta, "step": step, "seconds": round(seconds, 3)})),
                )

    def lag_seconds(self, conn: psycopg.Connection) -> float:
        """How far behind the loop is: the age of the oldest queued payload or unallocated order."""
        row = conn.execute(
            """SELECT greatest(
                   (SELECT extract(epoch FROM now() - min(r.received_at)) FROM raw.pending_orders p
                    JOIN raw.channel_orders r USING (raw_id)),
                   (SELECT extract(epoch FROM now() - min(created_at)) FROM oms.orders WHERE state = 'new'))"""
        ).fetchone()
        return float(row[0] or 0.0)

    def _beat(self, conn: psycopg.Connection, *, error: str | None = None, cycle: bool = False) -> None:
        conn.execute(
            """INSERT INTO oms.worker_heartbeats (worker_id, pid, host, lag_seconds, cycles, last_error,
                                                  last_error_at)
               VALUES (%(id)s, %(pid)s, %(host)s, %(lag)s, %(c)s, %(err)s::text,
                       CASE WHEN %(err)s::text IS NOT NULL THEN now() END)
               ON CONFLICT (worker_id) DO UPDATE SET beat_at = now(),
                   lag_seconds = coalesce(excluded.lag_seconds, oms.worker_heartbeats.lag_seconds),
                   cycles = oms.worker_heartbeats.cycles + excluded.cycles,
                   last_error = coalesce(excluded.last_error, oms.worker_heartbeats.last_error),
                   last_error_at = coalesce(excluded.last_error_at, oms.worker_heartbeats.last_error_at)""",
            {
                "id": self.worker_id,
                "pid": os.getpid(),
                "host": socket.gethostname(),
                "lag": self.lag_seconds(conn) if cycle else None,
                "c": 1 if cycle else 0,
                "err": error[:2000] if error else None,
            },
        )

    def run_once(self, conn: psycopg.Connection) -> None:
        """Every step once, in the loop's order (poll → normalise → allocate → ATS → outbox → WMS → ship),
        in this thread."""
        for step in self.steps:
            self._run(conn, step)
        self._beat(conn, cycle=True)

    def wait_for_background(self, timeout: float | None = None) -> None:
        for step in self.steps:
            if step.thread is not None:
                step.thread.join(timeout)

    def close(self) -> None:
        """Stop: a background step still running is abandoned after a moment — each of them is safe to cut
        (ATS values are absolute, the outbox and the WMS counts are idempotent), the next worker goes on."""
        self.stopping = True
        self.wait_for_background(timeout=2)
        self.clients.close()
        for clients in self._step_clients.values():
            clients.close()

    def run_forever(self) -> None:
        with connect(self.database_url) as listen, connect(self.database_url) as conn:
            listen.execute(f"LISTEN {CHANNEL}")
            while not self.stopping:
                now = time.monotonic()
                timeout = max(0.05, min(s.due_at for s in self.steps) - now)
                woken: set[str] = set()
                # wait for the first notification (or the next timer), then take what else is pending
                for note in listen.notifies(timeout=min(timeout, 1.0), stop_after=1):
                    woken.add(note.payload)
                if woken:
                    woken.update(n.payload for n in listen.notifies(timeout=0.05))
                now = time.monotonic()
                for step in self.steps:
                    if step.wakes_on & woken:
                        step.due_at = min(step.due_at, step.last_run + step.min_gap)
                ran = False
                for step in self.steps:
                    if step.due_at <= now and not self.stopping:
                        self.run_step(conn, step)
                        ran = True
                if ran:
                    self._beat(conn, cycle=True)


# -- process entry points ---------------------------------------------------------------------------------------
def build_worker(*, ship: bool = True, demo_courier: bool = False) -> Worker:
    """A worker configured from the environment (the whole settings model is validated first)."""
    settings = load_oms_settings()
    if not settings.database_url:
        raise ConfigError("OMS_DATABASE_URL: not set (the worker runs against the stack's Postgres)")
    clients = Clients(connectors_of(settings))
    return Worker(
        settings.database_url,
        clients,
        config_path=str(settings.business_config) if settings.business_config else None,
        ship=ship,
        demo_courier=demo_courier,
        courier_day_s=86_400 * settings.demo_transit_scale,
    )


def run_child(args: argparse.Namespace) -> int:
    worker = build_worker(ship=not args.no_ship, demo_courier=args.demo_courier)

    def stop(signum, frame):  # noqa: ARG001
        worker.stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        if args.once:
            with connect(worker.database_url) as conn:
                worker.run_once(conn)
        else:
            worker.run_forever()
    finally:
        worker.close()
    return 0


def supervise(argv: list[str]) -> int:
    """Run the worker as a child process and start it again when it dies (at once the first time, then a
    back-off doubling to 30 s, reset after a minute of good health); SIGTERM/SIGINT stop the child, then
    the supervisor."""
    stopping = False
    child: subprocess.Popen | None = None

    def stop(signum, frame):  # noqa: ARG001
        nonlocal stopping
        stopping = True
        if child is not None and child.poll() is None:
            child.terminate()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    backoff = 0.2
    while not stopping:
        started = time.monotonic()
        child = subprocess.Popen([sys.executable, "-m", "oms_ops.worker", "--child", *argv])
        code = child.wait()
        if stopping:
            break
        if time.monotonic() - started > 60:
            backoff = 0.2
        log.warning("worker exited with %s; starting it again in %.0f s", code, backoff)
        time.sleep(backoff)
        backoff = min(30.0, backoff * 2)
    if child is not None and child.poll() is None:
        try:
            child.wait(timeout=20)
        except subprocess.TimeoutExpired:
            child.kill()
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m oms_ops.worker", description="The always-on OMS worker.")
    p.add_argument("--child", action="store_true", help="run the worker itself (without the supervisor)")
    p.add_argument("--once", action="store_true", help="one cycle of every step, then exit")
    p.add_argument("--no-ship", action="store_true", help="leave shipping to the Dagster schedule / a WMS")
    p.add_argument(
        "--demo-courier", action="store_true", help="play the own courier (hand over, deliver) for the demo"
    )
    args = p.parse_args(argv)
    logging.basicConfig(level="INFO", format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        if args.child or args.once:
            return run_child(args)
        return supervise([a for a in (argv if argv is not None else sys.argv[1:]) if a != "--child"])
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
