"""Benchmark: the routing backtest against live allocation of the same orders, on a durable Postgres.

Data (not timed): the allocation benchmark's world (``bench.allocation``: the sample configuration grown to 20
stock-holding locations, Zipf-popular SKUs, its regions and channel mix), with the orders spread over the 30
days of November 2026 (100k orders; ``--quick`` 2k) and the stock arriving in three receipts written to the
ledger at their own times: 60 % of the expected demand the day before the period, 25 % on day 10 and 25 % on
day 20. Every order is paid (expiring payment holds are not replayed, docs/backtest.md).

Measured in the same run, on the same server (durable defaults: fsync on, synchronous_commit on):

* **baseline — live allocation**: the real ``allocate_batch`` on each order as it arrives, in placed_at order,
  one call per order with ``now`` = its placed_at (what the worker does as orders come in; the receipts are
  applied at their time between the calls, untimed). This run is also the history the backtest replays;
* **reference — batched live allocation**: the same orders 500 per call (one ``now`` per batch), on a fresh
  clone: the allocator's best throughput, for scale;
* **backtest**: ``oms_ops.backtest.backtest`` over the period with the live configuration (end to end: the
  read-only reads, the replay, the comparison), ``--repeat`` times, median; it must reproduce every live plan
  (``plans_reproduced``); then once with a draft (``moscow_courier`` → ``fewest_shipments``, the default rule
  never splitting) to show the figures move.

Target: the backtest ≥ 10× the live allocation's orders/s. Usage:
``uv run python bench/backtest.py [--quick] [--orders N] [--repeat R]``; the last line is one JSON object.
"""

from __future__ import annotations

import argparse
import copy
import itertools
import json
import random
import statistics
import sys
import tempfile
import time
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

import psycopg
from psycopg import sql

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.allocation import CHANNELS, REGIONS, bench_config, clone, drop, p95, zipf_weights  # noqa: E402
from oms_ops.allocation import allocate_batch  # noqa: E402
from oms_ops.backtest import backtest  # noqa: E402
from oms_ops.business_config import parse_business_config, sync_reference_data  # noqa: E402
from oms_ops.catalog import upsert_products  # noqa: E402
from oms_ops.db import connect  # noqa: E402
from oms_ops.invariants import check_invariants  # noqa: E402
from oms_ops.orders import accept_orders  # noqa: E402
from oms_ops.platform.migrate import migrate  # noqa: E402
from oms_ops.platform.postgres import EmbeddedPostgres  # noqa: E402

MSK = ZoneInfo("Europe/Moscow")
PERIOD_START = datetime(2026, 11, 1, tzinfo=MSK)
PERIOD_DAYS = 30
PERIOD_END = PERIOD_START + timedelta(days=PERIOD_DAYS)
#: (share of the period's expected demand, arrival): the initial stock and two replenishments
RECEIPTS = ((0.60, PERIOD_START - timedelta(days=1)), (0.25, PERIOD_START + timedelta(days=10)))
RECEIPTS += ((0.25, PERIOD_START + timedelta(days=20)),)
SOURCE_DB = "backtest_src"
TARGET_RATIO = 10.0
BATCH = 500


def draft_config(cfg):
    """The what-if: Moscow couriers by fewest shipments instead of the rank drain; the default rule never
    splits (a single parcel or wait)."""
    data = copy.deepcopy(cfg.model_dump(mode="json", exclude_none=True))
    for loc in data["locations"]:
        if loc.get("cutoff_local"):
            loc["cutoff_local"] = loc["cutoff_local"][:5]  # the file's HH:MM
    for r in data["routing_rules"]:
        if r["name"] == "moscow_courier":
            r["strategy"] = "fewest_shipments"
        if r["name"] == "default":
            r["split"] = {"policy": "never"}
    return parse_business_config(data)


def build(url: str, *, orders_target: int, skus: int, seed: int) -> dict:
    """Reference data, products, the initial stock (ledger entry dated the day before the period) and the
    period's orders through ``accept_orders``; returns the later receipts to apply as time passes."""
    rng = random.Random(seed)
    cfg = bench_config()
    sku_codes = [f"SKU-{i:05d}" for i in range(skus)]
    weights = zipf_weights(skus)
    total_w = sum(weights)
    cum = list(itertools.accumulate(weights))
    stock_locs = [loc for loc in cfg.locations if loc.kind != "pickup_point"]
    stores = [loc.code for loc in cfg.locations if loc.kind == "store"]
    points = [loc.code for loc in cfg.locations if loc.kind == "pickup_point"]
    lines_per_order, units_per_line = 2.1, 1.3
    # where the stock lives: warehouses carry every SKU, stores the 10 % most popular ones
    split: list[tuple[str, str, float]] = []
    for i, sku in enumerate(sku_codes):
        demand = orders_target * lines_per_order * weights[i] / total_w * units_per_line
        for loc in stock_locs:
            if loc.kind == "store" and i >= skus // 10:
                continue
            share = (0.10 if loc.kind == "warehouse" else 0.02) * rng.random() * 2
            split.append((loc.code, sku, demand * share * 1.6))
    receipts = [[(loc, sku, int(q * part + rng.random())) for loc, sku, q in split] for part, _ in RECEIPTS]
    with connect(url) as conn:
        migrate(conn)
        sync_reference_data(conn, cfg)
        upsert_products(
            conn,
            [
                {"sku": s, "name": s, "weight_g": rng.choice([150, 300, 600, 1200, 2500, 8000]), "price": 990}
                for s in sku_codes
            ],
        )
        with conn.transaction(), conn.cursor() as cur:
            with cur.copy("COPY oms.stock (location_code, sku, on_hand) FROM STDIN") as cp:
                for loc, sku, _ in split:
                    cp.write_row((loc, sku, 0))
        apply_receipt(conn, receipts[0], RECEIPTS[0][1], "initial")
        orders = []
        span = PERIOD_DAYS * 86400
        times = sorted(rng.uniform(0, span) for _ in range(orders_target))
        for n, offset in enumerate(times, start=1):
            channel = rng.choices([c for c, _ in CHANNELS], [w for _, w in CHANNELS])[0]
            k = rng.choices([1, 2, 3, 4, 5], [35, 30, 18, 10, 7])[0]
            chosen = {sku_codes[rng.choices(range(skus), cum_weights=cum)[0]] for _ in range(k)}
            if channel == "offline":
                method, pickup = "store_pickup", rng.choice(stores)
            else:
                method = rng.choices(["courier", "pickup_point", "store_pickup"], [75, 15, 10])[0]
                pickup = {
                    "courier": None,
                    "pickup_point": rng.choice(points),
                    "store_pickup": rng.choice(stores),
                }[method]
            orders.append(
                {
                    "channel_code": channel,
                    "external_id": f"BT-{n}",
                    "placed_at": PERIOD_START + timedelta(seconds=offset),
                    "delivery_method": method,
                    "pickup_location_code": pickup,
                    "region": rng.choices([r for r, _ in REGIONS], [w for _, w in REGIONS])[0],
                    "payment_status": "paid",
                    "lines": [
                        {
                            "sku": s,
                            "qty": rng.choices([1, 2, 3, 5], [80, 14, 4, 2])[0],
                            "unit_price": Decimal(990),
                        }
                        for s in sorted(chosen)
                    ],
                }
            )
        for i in range(0, len(orders), 5000):
            res = accept_orders(conn, orders[i : i + 5000], actor="bench")
            assert len(res.accepted) == len(orders[i : i + 5000]), res.counts
        conn.execute("VACUUM ANALYZE")
        ids = conn.execute(
            "SELECT order_id, placed_at FROM oms.orders ORDER BY placed_at, order_id"
        ).fetchall()
        n_lines = conn.execute("SELECT count(*) FROM oms.order_lines").fetchone()[0]
    later = [
        (at, rows, f"receipt-{n}")
        for n, ((_, at), rows) in enumerate(zip(RECEIPTS[1:], receipts[1:], strict=True))
    ]
    return {"config": cfg, "orders": ids, "lines": n_lines, "stock_rows": len(split), "receipts": later}


def apply_receipt(conn: psycopg.Connection, rows, at: datetime, reference: str) -> None:
    """A WMS receipt that happened at ``at``: on-hand up, and its ledger entries dated ``at`` (one transaction)."""
    rows = [r for r in rows if r[2] > 0]
    with conn.transaction():
        conn.execute(
            """UPDATE oms.stock s SET on_hand = s.on_hand + v.q
               FROM unnest(%s::text[], %s::text[], %s::int[]) AS v(l, k, q)
               WHERE s.location_code = v.l AND s.sku = v.k""",
            ([r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows]),
        )
        with conn.cursor().copy(
            "COPY oms.inventory_ledger (location_code, sku, kind, on_hand_delta, reference, actor, created_at) "
            "FROM STDIN"
        ) as cp:
            for loc, sku, q in rows:
                cp.write_row((loc, sku, "receipt", q, f"bench-{reference}", "bench", at))


def live(url: str, cfg, orders, receipts, *, batch: int | None) -> dict:
    """Allocate the orders as they arrive (``batch`` None: one call per order, ``now`` = placed_at; else
    ``batch`` orders per call, ``now`` = the first one's placed_at), receipts applied at their time (untimed)."""
    pending = list(receipts)
    times = []
    with connect(url) as conn:
        groups = [orders[i : i + (batch or 1)] for i in range(0, len(orders), batch or 1)]
        for group in groups:
            now = group[0][1]
            while pending and pending[0][0] <= now:
                at, rows, ref = pending.pop(0)
                apply_receipt(conn, rows, at, ref)
            ids = [oid for oid, _ in group]
            t0 = time.perf_counter()
            allocate_batch(conn, ids, config=cfg, actor="bench", now=now, chunk_size=len(ids))
            times.append(time.perf_counter() - t0)
        for at, rows, ref in pending:
            apply_receipt(conn, rows, at, ref)
        outcomes = dict(
            conn.execute("SELECT state, count(*) FROM oms.orders GROUP BY 1 ORDER BY 1").fetchall()
        )
        violations = check_invariants(conn)
    return {"times": times, "outcomes": outcomes, "violations": violations}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="2k orders, under two minutes")
    ap.add_argument(
        "--orders", type=int, default=None, help="orders in the period (default 100000, quick 2000)"
    )
    ap.add_argument("--skus", type=int, default=None, help="SKUs (default 10000, quick 2000)")
    ap.add_argument("--repeat", type=int, default=3, help="timed backtest runs (median)")
    ap.add_argument("--seed", type=int, default=42)
    args = ap.parse_args(argv)
    n_orders = args.orders or (2_000 if args.quick else 100_000)
    n_skus = args.skus or (2_000 if args.quick else 10_000)

    with tempfile.TemporaryDirectory(prefix="oms-bench-backtest-") as tmp:
        server = EmbeddedPostgres(Path(tmp) / "pg")  # durable defaults: fsync on, synchronous_commit on
        server.start(("oms",))
        try:
            admin = server.url("postgres")
            with psycopg.connect(admin, autocommit=True) as a:
                fsync = a.execute("SHOW fsync").fetchone()[0]
                sync_commit = a.execute("SHOW synchronous_commit").fetchone()[0]
                a.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(SOURCE_DB)))
            t0 = time.perf_counter()
            src = build(server.url(SOURCE_DB), orders_target=n_orders, skus=n_skus, seed=args.seed)
            cfg, orders = src["config"], src["orders"]
            print(
                f"loaded {n_skus} SKUs, {src['stock_rows']} stock rows, {len(orders)} orders with {src['lines']} "
                f"lines over {PERIOD_DAYS} days in {time.perf_counter() - t0:.1f}s; fsync={fsync}, "
                f"synchronous_commit={sync_commit}"
            )

            url = clone(admin, "backtest_batched", SOURCE_DB)
            batched = live(url, cfg, orders, src["receipts"], batch=BATCH)
            drop(admin, "backtest_batched")
            batched_rate = len(orders) / sum(batched["times"])
            print(f"reference: live allocation {BATCH} orders per call: {batched_rate:,.0f} orders/s")

            url = clone(admin, "backtest_live", SOURCE_DB)
            t0 = time.perf_counter()
            base = live(url, cfg, orders, src["receipts"], batch=None)
            live_rate = len(orders) / sum(base["times"])
            per_order_ms = [t * 1000 for t in base["times"]]
            print(
                f"baseline: live allocation order by order: {live_rate:,.0f} orders/s (p50 "
                f"{statistics.median(per_order_ms):.1f} ms, p95 {p95(per_order_ms):.1f} ms per order; "
                f"{time.perf_counter() - t0:.0f}s with the receipts); states {base['outcomes']}; "
                f"invariant violations {len(base['violations'])}"
            )

            runs, report = [], None
            with connect(url) as conn:
                conn.execute("VACUUM ANALYZE")
                for r in range(args.repeat):
                    t0 = time.perf_counter()
                    report = backtest(conn, cfg, start=PERIOD_START, end=PERIOD_END)
                    runs.append(time.perf_counter() - t0)
                    print(
                        f"backtest run {r + 1}/{args.repeat}: {len(orders) / runs[-1]:,.0f} orders/s "
                        f"({report.timings_s}); plans that differ from the live ones: "
                        f"{report.figure('changed_plans')['backtest']}"
                    )
                t0 = time.perf_counter()
                what_if = backtest(conn, draft_config(cfg), start=PERIOD_START, end=PERIOD_END)
                what_if_s = time.perf_counter() - t0
            drop(admin, "backtest_live")
        finally:
            server.stop()

    bt_rate = len(orders) / statistics.median(runs)
    ratio = bt_rate / live_rate
    changed = report.figure("changed_plans")["backtest"]
    fig = {f["figure"]: f for f in what_if.figures}
    print(
        f"backtest {bt_rate:,.0f} orders/s vs live allocation {live_rate:,.0f} orders/s: {ratio:.1f}x "
        f"(target {TARGET_RATIO:.0f}x); vs batched live allocation {bt_rate / batched_rate:.1f}x"
    )
    print(
        f"draft (moscow_courier fewest_shipments, default never splits) in {what_if_s:.1f}s: split rate "
        f"{fig['split_rate']['real']} → {fig['split_rate']['backtest']}, shipments/order "
        f"{fig['shipments_per_order']['real']} → {fig['shipments_per_order']['backtest']}, unfillable "
        f"{fig['unfillable']['real']} → {fig['unfillable']['backtest']}, changed plans {fig['changed_plans']['backtest']}"
    )
    result = {
        "orders": len(orders),
        "lines": src["lines"],
        "days": PERIOD_DAYS,
        "backtest_orders_per_s": round(bt_rate, 1),
        "backtest_median_s": round(statistics.median(runs), 3),
        "baseline_live_allocation_orders_per_s": round(live_rate, 1),
        "baseline_p50_ms_per_order": round(statistics.median(per_order_ms), 2),
        "ratio": round(ratio, 2),
        "reference_batched_allocation_orders_per_s": round(batched_rate, 1),
        "ratio_vs_batched": round(bt_rate / batched_rate, 2),
        "plans_reproduced_share": round(1 - changed / len(orders), 4),
        "draft_changed_plans": fig["changed_plans"]["backtest"],
        "draft_split_rate_real": fig["split_rate"]["real"],
        "draft_split_rate_backtest": fig["split_rate"]["backtest"],
        "repeats": args.repeat,
        "fsync": fsync,
        "target_ratio": TARGET_RATIO,
        "target_met": ratio >= TARGET_RATIO and changed == 0,
    }
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
