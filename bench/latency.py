"""Live latency: channel order → reserved, stock change → ATS at every channel, with a CPU hog beside it.

Starts the live loop on this machine — a durable embedded Postgres (fsync on) with the read model's views,
the simulators (Ozon, Wildberries, web store, WMS, CDEK) generating orders at ``--rate`` per minute per
channel in real time, and a process burning one core — then measures two lanes on identical copies of the
seeded database:

* **worker**: the always-on worker (``python -m oms_ops.worker``, its supervisor included), woken by
  LISTEN/NOTIFY; once, mid-run, its worker process is killed with SIGKILL (the supervisor starts it again);
* **baseline — schedules only**: what the Dagster schedules do, at their cadence on the wall clock (ingest +
  allocate every minute, outbox every minute, WMS stock snapshots and ATS every 5 minutes), run in-process
  without Dagster's own per-run cost (so the baseline is a lower bound of the schedules' latency).

Measured per lane: placed (the channel's timestamp) → reserved (the order's first allocated event), p50 /
p95 / max over the orders placed in the window; a WMS receipt (+units counted at a warehouse) → the new
value visible at every channel's simulator that sells that warehouse, p50 / p95 (a value not seen by the
end of the window counts as the window's length); worker step errors; and, after a final sweep, orders
lost (in the simulators, not in the OMS) or doubled (two OMS orders for one channel order).

``uv run python bench/latency.py [--quick]`` (``--quick``: 40 s per lane; full: 300 s per lane). The last line
is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import psutil
import psycopg
from psycopg import sql

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from oms_ops.analytics.dbt import build_ops_views  # noqa: E402
from oms_ops.business_config import load_business_config  # noqa: E402
from oms_ops.db import connect  # noqa: E402
from oms_ops.platform.migrate import migrate  # noqa: E402
from oms_ops.platform.postgres import EmbeddedPostgres  # noqa: E402
from oms_ops.services import allocation, ats, intake, stock  # noqa: E402
from oms_ops.services.clients import Clients  # noqa: E402
from oms_ops.services.outbox import drain_outbox  # noqa: E402
from oms_ops.services.settings import connectors_of, load_oms_settings  # noqa: E402
from oms_ops.services.setup import LOCATION_MAP, seed_from_simulators  # noqa: E402
from simulators import start_simulators  # noqa: E402

CHANNELS = ("ozon", "wildberries", "shopify", "wms", "cdek")
#: the warehouse whose counts change: every marketplace and the web store sell it
WAREHOUSE = ("MSK1", "WH-MSK-POD")
TEMPLATE = "oms_seeded"
#: units a stock change adds at the warehouse
RECEIVED = 50
#: worker process groups started by the lanes: stopped however the benchmark ends
WORKERS: list[subprocess.Popen] = []


def _hog(stop_at: float) -> None:
    """Burn one core until ``stop_at`` (the noisy neighbour of the issue)."""
    x = 0
    while time.time() < stop_at:
        x = (x * 31 + 7) % 1_000_003


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    s = sorted(values)
    return round(s[min(len(s) - 1, int(round(q * (len(s) - 1))))], 2)


def summary(values: list[float]) -> dict:
    return {
        "n": len(values),
        "p50_s": pct(values, 0.5),
        "p95_s": pct(values, 0.95),
        "max_s": round(max(values), 2) if values else None,
        "mean_s": round(statistics.fmean(values), 2) if values else None,
    }


class AtsWatch:
    """The channels' view of one (warehouse, SKU), read straight from the simulators' stock stores."""

    def __init__(self, stack, conn: psycopg.Connection, location: str, sku: str) -> None:
        self.stack, self.sku = stack, sku
        ids = dict(
            conn.execute(
                "SELECT system, external_id FROM connectors.channel_locations WHERE location_code = %s",
                (location,),
            ).fetchall()
        )
        listing = {
            r[0]: r[1:]
            for r in conn.execute(
                """SELECT channel_code, offer_id, chrt_id, inventory_item_id FROM connectors.channel_listings
                   WHERE sku = %s AND active""",
                (sku,),
            ).fetchall()
        }
        self.keys = {}
        if "ozon" in ids and "ozon" in listing:
            self.keys["ozon"] = (listing["ozon"][0], int(ids["ozon"]))
        if "wildberries" in ids and "wildberries" in listing:
            self.keys["wildberries"] = (int(ids["wildberries"]), int(listing["wildberries"][1]))
        if "webstore" in ids and "webstore" in listing:
            self.keys["webstore"] = (int(listing["webstore"][2]), int(ids["webstore"]))

    def values(self) -> dict[str, int | None]:
        out: dict[str, int | None] = {}
        for ch, key in self.keys.items():
            if ch == "ozon":
                out[ch] = (self.stack["ozon"].stocks.get(key) or {}).get("stock")
            elif ch == "wildberries":
                out[ch] = (self.stack["wildberries"].stocks.get(key) or {}).get("amount")
            else:
                out[ch] = (self.stack["shopify"].inventory.get(key) or {}).get("available")
        return out


def run_lane(
    name: str, url: str, stack, manifest: Path, seconds: float, *, worker: bool, skus: list[str]
) -> dict:
    """One lane: the loop runs for ``seconds`` while stock changes are made and watched."""
    env = {**os.environ, "OMS_DATABASE_URL": url, "OMS_SIMULATORS_MANIFEST": str(manifest)}
    settings = load_oms_settings(env)
    clients = Clients(connectors_of(settings))
    config = load_business_config()
    conn = connect(url)
    proc = None
    started_wall = datetime.now(UTC)
    t_start = time.monotonic()
    kills = 0
    if worker:
        proc = subprocess.Popen(
            [sys.executable, "-m", "oms_ops.worker"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        WORKERS.append(proc)
    changes: list[dict] = []
    next_change = t_start + 5
    # the schedules tick on the wall clock, as cron does: every minute on the minute, ATS every 5 minutes
    wall = time.time()
    next_tick = {
        "ingest": t_start + (60 - wall % 60),
        "outbox": t_start + (60 - wall % 60),
        "ats": t_start + (300 - wall % 300),
    }
    killed = False
    i = 0
    while time.monotonic() - t_start < seconds:
        now = time.monotonic()
        if worker and not killed and now - t_start > seconds / 2:
            children = psutil.Process(proc.pid).children()
            if children:
                os.kill(children[0].pid, signal.SIGKILL)
                kills += 1
            killed = True
        if not worker:  # the schedules' cadence
            if now >= next_tick["ingest"]:
                for code in ("ozon", "wildberries", "webstore"):
                    intake.poll(conn, code, clients)
                allocation.allocate(conn, config)
                next_tick["ingest"] += 60
            if now >= next_tick["outbox"]:
                drain_outbox(conn, clients)
                next_tick["outbox"] += 60
            if now >= next_tick["ats"]:  # stock_snapshots and ats_push both run every 5 minutes
                for wms_code, location in LOCATION_MAP.items():
                    stock.sync_location(conn, clients, location, wms_code=wms_code)
                ats.push_all(conn, clients)
                next_tick["ats"] += 300
        if now >= next_change and i < len(skus):
            sku = skus[i]
            i += 1
            watch = AtsWatch(stack, conn, WAREHOUSE[1], sku)
            before = watch.values()
            wms = stack["wms"]
            wms.adjust(WAREHOUSE[0], sku, wms.on_hand[WAREHOUSE[0]][sku] + RECEIVED, reason="bench receipt")
            changes.append({"at": time.monotonic(), "watch": watch, "before": before, "seen": {}})
            next_change = now + max(4.0, seconds / 30)  # full lanes: about 30 changes, each on its own SKU
        for ch in changes:
            values = ch["watch"].values()
            for key, v in values.items():
                if (
                    key not in ch["seen"]
                    and v is not None
                    and v != ch["before"].get(key)
                    and (ch["before"].get(key) is None or v > ch["before"][key])
                ):
                    ch["seen"][key] = time.monotonic() - ch["at"]
        time.sleep(0.1)
    window_end = datetime.now(UTC)
    ats_latency = []
    by_channel: dict[str, list[float]] = {}
    for ch in changes:
        for key in ch["watch"].keys:
            ats_latency.append(ch["seen"].get(key, time.monotonic() - ch["at"]))
            by_channel.setdefault(key, []).append(ats_latency[-1])
    # "at every channel": a change counts when the slowest channel shows it
    ats_all = [
        max(ch["seen"].get(key, time.monotonic() - ch["at"]) for key in ch["watch"].keys)
        for ch in changes
        if ch["watch"].keys
    ]
    # final sweep: everything generated in the window gets in (for the lost / doubled count)
    if proc is not None:  # the worker and everything it started (its restarted process included) stop here
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    # the channel orders that exist now must all reach the OMS (later ones belong to no window)
    channel_ids = {
        "ozon": {p["posting_number"] for p in stack["ozon"].rendered_postings()},
        "wildberries": {str(o.id) for o in stack["wildberries"].orders},
        "webstore": {str(o["id"]) for o in stack["shopify"].rendered_orders()},
    }
    for code in ("ozon", "wildberries", "webstore"):
        intake.poll(conn, code, clients)
    allocation.allocate(conn, config)
    # placed → first allocated event; an order still waiting at the end of the window counts with the time
    # it has waited so far (a lower bound), so a slow lane cannot look fast by leaving orders out
    reserved = [
        float(r[0])
        for r in conn.execute(
            """SELECT extract(epoch FROM coalesce(
                      (SELECT min(e.created_at) FROM oms.order_events e
                       WHERE e.order_id = o.order_id AND e.entity = 'order'
                         AND e.to_state IN ('allocated', 'partially_allocated') AND e.created_at < %(end)s),
                      %(end)s) - o.placed_at)
               FROM oms.orders o
               WHERE o.placed_at BETWEEN %(start)s AND %(end)s
                 AND o.channel_code IN ('ozon', 'wildberries', 'webstore')
                 AND o.state NOT IN ('on_hold', 'backordered', 'cancelled')""",
            {"start": started_wall, "end": window_end},
        ).fetchall()
    ]
    waiting = conn.execute(
        """SELECT count(*) FROM oms.orders o WHERE o.placed_at BETWEEN %s AND %s
           AND o.channel_code IN ('ozon', 'wildberries', 'webstore')
           AND NOT EXISTS (SELECT 1 FROM oms.order_events e WHERE e.order_id = o.order_id AND e.entity = 'order'
                           AND e.to_state IN ('allocated', 'partially_allocated') AND e.created_at < %s)
           AND o.state NOT IN ('on_hold', 'backordered', 'cancelled')""",
        (started_wall, window_end, window_end),
    ).fetchone()[0]
    oms_ids: dict[str, list[str]] = {}
    for ch, ext in conn.execute(
        "SELECT channel_code, external_id FROM oms.orders WHERE channel_code IN ('ozon', 'wildberries', 'webstore')"
    ).fetchall():
        oms_ids.setdefault(ch, []).append(ext)
    doubled = sum(len(v) - len(set(v)) for v in oms_ids.values())
    # lost: a channel order the OMS never stored (every stored payload becomes an order or a quarantine row
    # with its reason, or is a channel order first seen already cancelled)
    stored: dict[str, set[str]] = {}
    for ch, ext in conn.execute(
        "SELECT channel_code, external_id FROM raw.channel_orders WHERE channel_code IN ('ozon', 'wildberries', 'webstore')"
    ).fetchall():
        stored.setdefault(ch, set()).add(ext)
    lost = sum(len(ids - stored.get(ch, set())) for ch, ids in channel_ids.items())
    errors = conn.execute(
        "SELECT count(*) FROM oms.worker_heartbeats WHERE last_error IS NOT NULL"
    ).fetchone()[0]
    conn.close()
    clients.close()
    return {
        "lane": name,
        "order_to_reserved": summary(reserved),
        "orders_unreserved_at_end": waiting,
        "stock_change_to_ats": summary(ats_latency),
        "stock_change_to_ats_at_every_channel": summary(ats_all),
        "stock_change_to_ats_by_channel": {k: summary(v) for k, v in sorted(by_channel.items())},
        "stock_changes": len(changes),
        "ats_values_seen_share": round(
            sum(len(ch["seen"]) for ch in changes) / max(1, sum(len(ch["watch"].keys) for ch in changes)), 2
        ),
        "worker_kills": kills,
        "worker_step_errors": errors,
        "orders_lost": lost,
        "orders_doubled": doubled,
    }


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="40 s per lane (about two minutes in all)")
    ap.add_argument("--seconds", type=float, default=None, help="seconds per lane (default 300, quick 40)")
    ap.add_argument("--rate", type=float, default=6.0, help="orders per minute per channel")
    ap.add_argument("--seed", type=int, default=42)
    args = ap.parse_args(argv)
    # a SIGTERM (timeout, Ctrl-C from a supervisor) unwinds through the finally blocks: the embedded Postgres,
    # the simulators and the worker stop instead of being left running
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    seconds = args.seconds or (40.0 if args.quick else 300.0)
    t_all = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="oms-bench-latency-") as tmp:
        server = EmbeddedPostgres(Path(tmp) / "pg")  # durable: fsync on, as users run it
        server.start(("oms",))
        stack = None
        hog = None
        try:
            admin = server.url("postgres")
            with psycopg.connect(admin, autocommit=True) as a:
                a.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(TEMPLATE)))
            template_url = server.url(TEMPLATE)
            with psycopg.connect(template_url, autocommit=True) as c:
                migrate(c)
            build_ops_views(template_url)
            stack = start_simulators(
                seed=args.seed,
                rate=args.rate,
                speed=1.0,
                start=datetime.now(UTC),
                n_skus=80,
                state_dir=Path(tmp) / "sim",
                only=CHANNELS,
                options={"cdek": {"transit_scale": 1 / 240}},
            )
            manifest = stack.write_manifest(Path(tmp) / "simulators.json")
            with connect(template_url) as c:
                seed_from_simulators(c, stack, load_business_config())
            with psycopg.connect(admin, autocommit=True) as a:
                for lane in ("lane_worker", "lane_baseline"):
                    a.execute(
                        sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                            sql.Identifier(lane), sql.Identifier(TEMPLATE)
                        )
                    )
            hog = multiprocessing.Process(target=_hog, args=(time.time() + 3 * seconds + 120,), daemon=True)
            hog.start()
            print(f"setup {time.perf_counter() - t_all:.0f}s; lanes of {seconds:.0f}s with one core busy")
            skus = [p.sku for p in stack.catalog]
            worker_lane = run_lane(
                "worker", server.url("lane_worker"), stack, manifest, seconds, worker=True, skus=skus[:40]
            )
            print(json.dumps(worker_lane))
            base_lane = run_lane(
                "schedules",
                server.url("lane_baseline"),
                stack,
                manifest,
                seconds,
                worker=False,
                skus=skus[40:],
            )
            print(json.dumps(base_lane))
        finally:
            for proc in WORKERS:
                if proc.poll() is None:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
            if hog is not None:
                hog.terminate()
            if stack is not None:
                stack.stop()
            server.stop()
    w, b = worker_lane, base_lane
    out = {
        "lane_seconds": seconds,
        "rate_orders_per_min_per_channel": args.rate,
        "fsync": "on",
        "cpu_hog_cores": 1,
        "worker_order_to_reserved_p50_s": w["order_to_reserved"]["p50_s"],
        "worker_order_to_reserved_p95_s": w["order_to_reserved"]["p95_s"],
        "worker_order_to_reserved_max_s": w["order_to_reserved"]["max_s"],
        "worker_orders_measured": w["order_to_reserved"]["n"],
        "worker_stock_to_ats_p50_s": w["stock_change_to_ats"]["p50_s"],
        "worker_stock_to_ats_p95_s": w["stock_change_to_ats"]["p95_s"],
        "worker_stock_to_ats_every_channel_p50_s": w["stock_change_to_ats_at_every_channel"]["p50_s"],
        "worker_stock_to_ats_every_channel_p95_s": w["stock_change_to_ats_at_every_channel"]["p95_s"],
        "worker_stock_to_ats_p95_by_channel_s": {
            k: v["p95_s"] for k, v in w["stock_change_to_ats_by_channel"].items()
        },
        "schedules_order_to_reserved_p50_s": b["order_to_reserved"]["p50_s"],
        "schedules_order_to_reserved_p95_s": b["order_to_reserved"]["p95_s"],
        "schedules_stock_to_ats_p50_s": b["stock_change_to_ats"]["p50_s"],
        "schedules_stock_to_ats_p95_s": b["stock_change_to_ats"]["p95_s"],
        "schedules_stock_to_ats_every_channel_p95_s": b["stock_change_to_ats_at_every_channel"]["p95_s"],
        "worker_kills_survived": w["worker_kills"],
        "worker_step_errors": w["worker_step_errors"],
        "orders_lost": w["orders_lost"] + b["orders_lost"],
        "orders_doubled": w["orders_doubled"] + b["orders_doubled"],
        "target_order_p95_s": 10,
        "target_ats_p95_s": 30,
        "targets_met": {
            "order_to_reserved_p95": (w["order_to_reserved"]["p95_s"] or 0) <= 10,
            "stock_to_ats_every_channel_p95": (w["stock_change_to_ats_at_every_channel"]["p95_s"] or 0) <= 30,
            "no_step_errors_beyond_the_kill": w["worker_step_errors"] <= w["worker_kills"],
            "no_lost_or_doubled": w["orders_lost"] + w["orders_doubled"] == 0,
        },
        "total_s": round(time.perf_counter() - t_all, 1),
    }
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
