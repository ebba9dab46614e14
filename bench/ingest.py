"""Benchmark: channel orders from the simulators over HTTP through the connectors into Postgres.

Setup (not timed): an embedded Postgres in a temporary folder (``fast_unsafe``: fsync off, as in the tests),
migrated and seeded (products, mappings, stock); the simulators in a **separate process** (so their
rendering does not share our interpreter), with a manual clock advanced by one simulated day so every order
exists before the clock starts (generation time is printed, not counted). Their rate limiters are off: the
real APIs' quotas (WB 300 req/min, Shopify 2 req/s) bound any client, and the benchmark measures ours.

Measured, on the same machine in the same run, for the same N orders:

* **end to end over HTTP**: the three polled connectors (Ozon v4 list, Wildberries v3 orders cursor, web
  store orders.json with Link paging), one process each (as three concurrent pipeline runs would), exactly as the pipeline assets call them: every page
  is stored raw with its cursor (one transaction), then normalised from memory through ``accept_orders``
  (a second transaction) — until every order is in ``oms.orders``. ``orders/s`` = accepted orders / wall
  time;
* **normalisation + load from stored payloads**: the same raw rows queued again and normalised into an
  empty order book (``normalize_pending``: claim and read the payloads, map — the channels' exact fast
  path, pydantic for the rest — and ``accept_orders``), one normaliser per channel in its own process at
  the same time, as the channels' pipeline assets run (the headline figure); also one process channel
  after channel, and a profile;
* **write floor**: the order book that run produced (orders, lines, creation events) exported and COPYed
  back into the emptied real tables in one transaction — what any load must write, at COPY speed;
* **baseline**: raw ``COPY`` of the same number of order rows (the same columns ``accept_orders`` writes)
  into a table like ``oms.orders`` (``LIKE … INCLUDING ALL``: same defaults, checks and indexes); the
  median of three runs.

``uv run python bench/ingest.py [--quick]`` — 200k orders (``--quick``: 20k). The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import multiprocessing as mp
import os
import pstats
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from oms_ops.business_config import load_business_config  # noqa: E402
from oms_ops.channels import normalize as norm  # noqa: E402
from oms_ops.channels import ozon, registry, webstore, wildberries  # noqa: E402
from oms_ops.connectors.config import settings_from_manifest  # noqa: E402
from oms_ops.connectors.http import RetryPolicy  # noqa: E402
from oms_ops.db import connect  # noqa: E402
from oms_ops.platform.migrate import migrate  # noqa: E402
from oms_ops.platform.postgres import EmbeddedPostgres  # noqa: E402
from oms_ops.services.setup import seed_from_simulators  # noqa: E402

CHANNELS = ("ozon", "wildberries", "webstore")
#: share of the N orders per channel (WB counts units: one WB order is one unit)
SHARE = {"ozon": 0.45, "wildberries": 0.40, "webstore": 0.15}
#: WB orders per generated basket (mean units of the generator's baskets)
WB_UNITS_PER_BASKET = 1.85
DAY_MIN = 24 * 60


# -- the simulators in their own process ------------------------------------------------------------------------
def _simulators(pipe, n: int, seed: int, state_dir: str) -> None:
    from simulators import start_simulators

    rates = {
        "ozon": n * SHARE["ozon"] / DAY_MIN,
        "wildberries": n * SHARE["wildberries"] / WB_UNITS_PER_BASKET / DAY_MIN,
        "shopify": n * SHARE["webstore"] / DAY_MIN,
    }
    options = {
        "ozon": {"rate": rates["ozon"], "rps_limit": None},
        "wildberries": {"rate": rates["wildberries"], "rate_limit": False, "confirm_deadline_hours": None},
        "shopify": {"rate": rates["shopify"], "rate_limit": False},
    }
    stack = start_simulators(
        seed=seed,
        manual=True,
        n_skus=200,
        state_dir=state_dir,
        options=options,
        only=["ozon", "wildberries", "shopify", "wms"],
    )
    t = time.perf_counter()
    stack.advance(24 * 3600)
    counts = {
        "ozon": len(stack["ozon"].postings),
        "wildberries": len(stack["wildberries"].orders),
        "webstore": len(stack["shopify"].orders),
    }
    pipe.send({"manifest": stack.manifest(), "generated_s": time.perf_counter() - t, "counts": counts})
    pipe.recv()  # wait for "stop"
    stack.stop()


def _clients(settings):
    policy = RetryPolicy(attempts=6, backoff_base=0.05, read_timeout=120)
    return {
        "ozon": ozon.OzonClient.from_endpoint(settings.endpoint("ozon"), policy=policy, rate=None),
        "wildberries": wildberries.WildberriesClient.from_endpoint(
            settings.endpoint("wildberries"), policy=policy, rate=None
        ),
        "webstore": webstore.ShopifyClient.from_endpoint(
            settings.endpoint("shopify"), policy=policy, rate=None
        ),
    }


def _fetch(url: str, channel: str, manifest: dict, out) -> None:
    """One channel's connector run, exactly as its pipeline asset calls it (pages stored and normalised as
    they come), in its own process (as three concurrent runs would be)."""
    try:
        client = _clients(settings_from_manifest(manifest))[channel]
        with connect(url) as conn:
            out.send("ready")  # imports and connections are not part of the measurement
            out.recv()
            if channel == "ozon":
                ozon.ingest_ozon(conn, client)
            elif channel == "wildberries":
                wildberries.ingest_wildberries(conn, client, use_new=False, sync_status=False)
            else:
                webstore.ingest_webstore(conn, client)
        out.send({"channel": channel, "done": time.time(), "calls": client.calls, "retries": client.retries})
    except Exception as exc:  # noqa: BLE001 - reported by the parent
        out.send({"channel": channel, "error": f"{type(exc).__name__}: {exc}"})


def _side_by_side(target, argsets: list[tuple]) -> tuple[list[dict], float, float]:
    """Run ``target(*args, pipe)`` in one spawned process per argument set; each imports and connects,
    says "ready" and waits: the clock starts when all are ready, so start-up is not measured. Returns their
    reports, the start (``perf_counter``, wall clock); raises with every process's error."""
    ctx = mp.get_context("spawn")
    pipes, procs = [], []
    for args in argsets:
        parent, child = ctx.Pipe()
        procs.append(ctx.Process(target=target, args=(*args, child)))
        pipes.append(parent)
    for p in procs:
        p.start()
    for pipe in pipes:
        assert pipe.recv() == "ready"
    t0, w0 = time.perf_counter(), time.time()
    for pipe in pipes:
        pipe.send("go")
    results = [pipe.recv() for pipe in pipes]
    for p in procs:
        p.join()
    errors = [r["error"] for r in results if "error" in r]
    if errors:
        raise RuntimeError("; ".join(errors))
    return results, t0, w0


def end_to_end(url: str, manifest: dict, batch: int) -> dict:
    results, t0, w0 = _side_by_side(_fetch, [(url, ch, manifest) for ch in CHANNELS])
    with connect(url) as conn:  # anything left pending (none expected)
        for ch in CHANNELS:
            norm.normalize_pending(conn, registry.channel(ch), batch_size=batch)
    elapsed = time.perf_counter() - t0
    return {
        "elapsed_s": elapsed,
        "fetch_done_s": max(r["done"] for r in results) - w0,
        "requests": sum(r["calls"] for r in results),
        "retries": sum(r["retries"] for r in results),
    }


def _reset_order_book(conn) -> None:
    """Empty the order book and make every stored payload pending again (not timed)."""
    conn.execute(
        "TRUNCATE oms.orders, oms.order_lines, oms.order_events, raw.quarantine RESTART IDENTITY CASCADE"
    )
    conn.execute(
        "INSERT INTO raw.pending_orders SELECT channel_code, raw_id FROM raw.channel_orders ON CONFLICT DO NOTHING"
    )
    conn.execute("VACUUM ANALYZE raw.channel_orders")
    conn.execute("VACUUM ANALYZE raw.pending_orders")


def _normalize_channel(url: str, channel: str, batch: int, out) -> None:
    """One channel's ``normalize_pending`` in its own process, as the channel's pipeline asset runs it."""
    try:
        with connect(url) as conn:
            out.send("ready")
            out.recv()
            t = time.perf_counter()
            res = norm.normalize_pending(conn, registry.channel(channel), batch_size=batch)
            out.send({"channel": channel, "result": res, "seconds": time.perf_counter() - t})
    except Exception as exc:  # noqa: BLE001 - reported by the parent
        out.send({"channel": channel, "error": f"{type(exc).__name__}: {exc}"})


def normalize_parallel(url: str, batch: int) -> dict:
    """Normalisation + load from stored payloads the way the pipelines run it: each channel's normaliser
    in its own process at the same time (one channel's rows are handled in order by one normaliser)."""
    with connect(url) as conn:
        _reset_order_book(conn)
    results, t0, _ = _side_by_side(_normalize_channel, [(url, ch, batch) for ch in CHANNELS])
    elapsed = time.perf_counter() - t0
    total = norm.NormalizeResult()
    for r in results:
        total.add(r["result"])
    return {
        "elapsed_s": elapsed,
        "result": total,
        "per_channel_s": {r["channel"]: r["seconds"] for r in results},
    }


def normalize_from_raw(url: str, batch: int, profile: bool) -> dict:
    with connect(url) as conn:
        _reset_order_book(conn)
        prof = cProfile.Profile() if profile else None
        chunk = norm.CHUNK
        if prof:  # cProfile sees only its own thread: map inline (no worker thread) so the mapping shows up
            norm.CHUNK = 10**9
        t0 = time.perf_counter()
        if prof:
            prof.enable()
        total = norm.NormalizeResult()
        for ch in CHANNELS:
            total.add(norm.normalize_pending(conn, registry.channel(ch), batch_size=batch))
        if prof:
            prof.disable()
            norm.CHUNK = chunk
        elapsed = time.perf_counter() - t0
    return {"elapsed_s": elapsed, "result": total, "profile": prof}


def copy_baseline(url: str) -> dict:
    cols = (
        "channel_code",
        "external_id",
        "placed_at",
        "customer_name",
        "customer_phone",
        "customer_email",
        "delivery_method",
        "pickup_location_code",
        "region",
        "city",
        "address",
        "lat",
        "lon",
        "promised_at",
        "requested_delivery_at",
        "payment_method",
        "payment_status",
        "currency",
        "total_amount",
        "shipping_amount",
        "channel_order_number",
        "raw_id",
        "latest_promised_at",
    )
    col_list = ", ".join(cols)
    with connect(url) as conn:
        buf = io.BytesIO()
        with conn.cursor().copy(f"COPY (SELECT {col_list} FROM oms.orders) TO STDOUT") as cp:  # noqa: S608
            for chunk in cp:
                buf.write(chunk)
        data = buf.getvalue()
        rows = conn.execute("SELECT count(*) FROM oms.orders").fetchone()[0]
        runs = []
        for _ in range(3):  # the median of three: a sub-second COPY is at the mercy of a shared machine
            conn.execute("DROP TABLE IF EXISTS public.bench_copy_orders")
            conn.execute("CREATE TABLE public.bench_copy_orders (LIKE oms.orders INCLUDING ALL)")
            conn.commit()
            t0 = time.perf_counter()
            with (
                conn.transaction(),
                conn.cursor().copy(f"COPY public.bench_copy_orders ({col_list}) FROM STDIN") as cp,
            ):
                for i in range(0, len(data), 1 << 20):
                    cp.write(data[i : i + (1 << 20)])
            runs.append(time.perf_counter() - t0)
        conn.execute("DROP TABLE public.bench_copy_orders")
    return {"rows": rows, "elapsed_s": statistics.median(runs), "runs_s": runs}


def write_floor(url: str) -> dict:
    """What the load must write at the least, written the cheapest way: the order book normalisation made
    (orders, their lines, their creation events) exported, the tables emptied, and the same rows COPYed
    back in one transaction — with the real tables' indexes, checks and foreign keys, but no payload read,
    no mapping, no validation, no duplicate check and no raw-row marking."""
    tables = ("oms.orders", "oms.order_lines", "oms.order_events")
    with connect(url) as conn:
        data: dict[str, bytes] = {}
        for t in tables:
            buf = io.BytesIO()
            with conn.cursor().copy(f"COPY (SELECT * FROM {t} ORDER BY 1) TO STDOUT") as cp:  # noqa: S608
                for chunk in cp:
                    buf.write(chunk)
            data[t] = buf.getvalue()
        rows = conn.execute("SELECT count(*) FROM oms.orders").fetchone()[0]
        conn.execute("TRUNCATE oms.orders, oms.order_lines, oms.order_events, raw.quarantine CASCADE")
        conn.commit()
        t0 = time.perf_counter()
        with conn.transaction(), conn.cursor() as cur:
            for t in tables:  # identity columns keep their values: COPY does not override them
                with cur.copy(f"COPY {t} FROM STDIN") as cp:
                    for i in range(0, len(data[t]), 1 << 20):
                        cp.write(data[t][i : i + (1 << 20)])
        elapsed = time.perf_counter() - t0
    return {"orders": rows, "elapsed_s": elapsed}


def _children(stats: pstats.Stats, file: str, func: str, top: int) -> list[tuple[str, float]]:
    """The direct callees of ``file:func`` with their cumulative seconds (largest first)."""
    out: dict[str, float] = {}
    for key in stats.stats:
        if key[0].endswith(file) and key[2] == func:
            for callee, value in stats.all_callees.get(key, {}).items():
                label = f"{Path(callee[0]).name}:{callee[1]}({callee[2]})" if callee[0] != "~" else callee[2]
                out[label] = out.get(label, 0.0) + value[3]
    return sorted(out.items(), key=lambda kv: -kv[1])[:top]


def _top(prof: cProfile.Profile, total_s: float) -> list[tuple[str, float]]:
    """Where normalisation + load spends its time: the steps of one batch and, inside accept_orders,
    its own steps (cumulative seconds; the profiler adds overhead, so read them as shares)."""
    stats = pstats.Stats(prof)
    stats.calc_callees()
    rows = [("batch: lock, claim + read pending raw rows (_normalize_batch)", None)]
    rows += [(f"  {k}", v) for k, v in _children(stats, "normalize.py", "_normalize_batch", 4)]
    rows += [("batch: map + validate, accept, quarantine, cancel (_process)", None)]
    rows += [(f"  {k}", v) for k, v in _children(stats, "normalize.py", "_process", 6)]
    rows += [("map + validate (_map_rows)", None)]
    rows += [(f"  {k}", v) for k, v in _children(stats, "normalize.py", "_map_rows", 6)]
    rows += [("inside accept_orders (A: oms_ops/orders.py _accept)", None)]
    rows += [(f"  {k}", v) for k, v in _children(stats, "orders.py", "_accept", 6)]
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="~20k orders instead of 200k")
    ap.add_argument("--orders", type=int, help="override the number of orders")
    ap.add_argument("--batch", type=int, default=5000, help="raw rows per normalisation transaction")
    ap.add_argument("--seed", type=int, default=42)
    args = ap.parse_args(argv)
    n = args.orders or (20_000 if args.quick else 200_000)
    tmp = Path(tempfile.mkdtemp(prefix="oms-bench-ingest-"))
    pg = EmbeddedPostgres(tmp / "pg", fast_unsafe=True)
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=_simulators, args=(child, n, args.seed, str(tmp / "sim")), daemon=True)
    try:
        url = pg.start(("oms",))
        with connect(url) as conn:
            migrate(conn)
        proc.start()
        t = time.perf_counter()
        info = parent.recv()
        print(
            f"simulators: {sum(info['counts'].values())} orders generated in a separate process "
            f"({info['generated_s']:.1f} s, not timed): {info['counts']}"
        )
        with connect(url) as conn:
            seed_from_simulators(conn, info["manifest"], load_business_config())
        print(f"setup: Postgres, migrations, seed in {time.perf_counter() - t:.1f} s")

        e2e = end_to_end(url, info["manifest"], args.batch)
        with connect(url) as conn:
            accepted = conn.execute("SELECT count(*) FROM oms.orders").fetchone()[0]
            raw = conn.execute("SELECT count(*) FROM raw.channel_orders").fetchone()[0]
            quarantined = conn.execute("SELECT count(*) FROM raw.quarantine").fetchone()[0]
            by_channel = dict(
                conn.execute("SELECT channel_code, count(*) FROM oms.orders GROUP BY 1").fetchall()
            )
        e2e_rate = accepted / e2e["elapsed_s"]
        print(
            f"end to end over HTTP: {accepted} orders ({by_channel}) from {raw} raw payloads in "
            f"{e2e['elapsed_s']:.1f} s = {e2e_rate:,.0f} orders/s "
            f"(last channel done after {e2e['fetch_done_s']:.1f} s; {e2e['requests']} requests, "
            f"{e2e['retries']} retries; {quarantined} quarantined)"
        )

        one = normalize_from_raw(url, args.batch, profile=False)
        one_rate = one["result"].accepted / one["elapsed_s"]
        print(
            f"normalisation + load from stored payloads, one process (channel after channel): "
            f"{one['result'].accepted} orders in {one['elapsed_s']:.2f} s = {one_rate:,.0f} orders/s"
        )
        nl = normalize_parallel(url, args.batch)
        nl_rate = nl["result"].accepted / nl["elapsed_s"]
        per = ", ".join(f"{k} {v:.2f} s" for k, v in nl["per_channel_s"].items())
        print(
            f"normalisation + load from stored payloads, one normaliser per channel at once (as the pipelines "
            f"run): {nl['result'].accepted} orders in {nl['elapsed_s']:.2f} s = {nl_rate:,.0f} orders/s ({per})"
        )
        base = copy_baseline(url)
        copy_rate = base["rows"] / base["elapsed_s"]
        floor = write_floor(url)
        floor_rate = floor["orders"] / floor["elapsed_s"]
        print(
            f"write floor: the same orders with their lines and creation events COPYed into the real tables "
            f"(nothing read, mapped or checked): {floor['elapsed_s']:.2f} s = {floor_rate:,.0f} orders/s "
            f"= {100 * floor_rate / copy_rate:.1f} % of raw COPY"
        )
        print(
            f"baseline: raw COPY of {base['rows']} order rows into a table LIKE oms.orders: "
            f"{base['elapsed_s']:.2f} s = {copy_rate:,.0f} rows/s"
        )
        ratio = nl_rate / copy_rate
        print(
            f"normalisation + load = {100 * ratio:.1f} % of raw COPY speed (target >= 25 %); "
            f"end to end {'meets' if e2e_rate >= 5000 else 'misses'} the 5,000 orders/s target"
        )

        prof = normalize_from_raw(url, args.batch, profile=True)
        print(
            f"profile of normalisation + load ({prof['elapsed_s']:.1f} s under the profiler, mapping inline "
            "rather than one chunk ahead in a thread), cumulative:"
        )
        breakdown: dict[str, float] = {}
        section = ""
        for label, secs in _top(prof["profile"], prof["elapsed_s"]):
            if secs is None:
                print(f"  {label}")
                section = label.split("(")[-1].rstrip(")").split()[-1]
                continue
            print(f"  {label:<72} {secs:7.2f} s  {100 * secs / prof['elapsed_s']:5.1f} %")
            breakdown[f"{section} > {label.strip()}"] = round(secs / prof["elapsed_s"], 3)
        load = os.getloadavg()[0]
        print(
            f"machine: {os.cpu_count()} CPUs, load average {load:.1f} during the run (other work skews the figures)"
        )
        print(
            json.dumps(
                {
                    "cpus": os.cpu_count(),
                    "load_average_1min": round(load, 2),
                    "orders": accepted,
                    "raw_payloads": raw,
                    "e2e_http_orders_per_s": round(e2e_rate),
                    "e2e_http_seconds": round(e2e["elapsed_s"], 2),
                    "e2e_http_requests": e2e["requests"],
                    "normalize_load_orders_per_s": round(nl_rate),
                    "normalize_load_seconds": round(nl["elapsed_s"], 2),
                    "normalize_load_one_process_orders_per_s": round(one_rate),
                    "baseline_copy_rows_per_s": round(copy_rate),
                    "baseline_copy_seconds": round(base["elapsed_s"], 3),
                    "normalize_load_vs_copy_ratio": round(ratio, 4),
                    "write_floor_orders_per_s": round(floor_rate),
                    "write_floor_vs_copy_ratio": round(floor_rate / copy_rate, 4),
                    "normalize_load_vs_write_floor_ratio": round(nl_rate / floor_rate, 4),
                    "target_e2e_orders_per_s": 5000,
                    "target_normalize_vs_copy_ratio": 0.25,
                    "normalize_profile_share": breakdown,
                    "simulator_generation_seconds_untimed": round(info["generated_s"], 1),
                },
                ensure_ascii=False,
            )
        )
    finally:
        if proc.is_alive():
            parent.send("stop")
            proc.join(timeout=30)
            if proc.is_alive():
                proc.terminate()
        pg.stop()
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
