"""Benchmark: set-based "ship what is reserved" against the order-by-order path, on a durable Postgres.

Data: the allocation benchmark's world (``bench/allocation.py``: 10k Zipf-popular SKUs, 20 stock-holding
locations and 4 pickup points, orders from five channels weighted to Moscow and St Petersburg, courier,
pickup-point and click-and-collect deliveries, till sales), loaded once into a template database and
allocated there with ``allocate_batch``, so every order carries a real decision (carrier, tariff, handover)
and some are split over two locations. The server runs with its durable defaults (fsync on,
synchronous_commit on): commits cost what they cost in production.

Measured, on the same machine in the same run, each on its own fresh clone of that database:

* **set-based**: ``oms_ops.services.shipping.ship_reserved`` over the ``--orders`` oldest shippable orders —
  pick in full, pack, create shipment, consume reservations, outbox, events, and the store handovers —
  ``--chunk`` orders per transaction;
* **per order**: the same orders through the per-order domain calls exactly as the pipeline step did
  them before (per (order, location): ``record_pick``, ``pack``, ``create_shipment``, each its own
  transaction; then ``mark_ready_for_pickup`` / ``mark_picked_up`` for handovers);
* **commit floor**: single-row INSERT transactions per second on the same server (what one durable commit
  costs here), for scale.

Both runs are checked: no invariant violation, and the same number of shipments, lines, ledger entries,
events and outbox rows. Target (from the issue): set-based ≥ 5× the per-order path.
Usage: ``uv run python bench/fulfilment.py [--quick] [--orders N]``; ``--quick`` (500 orders) takes well
under two minutes. The last line printed is one JSON object with the results.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import psycopg
from psycopg import sql

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.allocation import NOW, build_source, clone, drop  # noqa: E402
from oms_ops.allocation import allocate_batch  # noqa: E402
from oms_ops.db import connect  # noqa: E402
from oms_ops.invariants import check_invariants  # noqa: E402
from oms_ops.platform.postgres import EmbeddedPostgres  # noqa: E402
from oms_ops.services import shipping  # noqa: E402
from oms_ops.services.shipping import INSTANT_HANDOVER_CHANNELS, SHIPPABLE_STATES, ship_reserved  # noqa: E402

SOURCE_DB = "bench_src"
TARGET_SPEEDUP = 5.0
#: order lines generated per order wanted: ~2.2 lines per order, and room for orders that do not allocate
LINES_PER_ORDER = 3.0
COMMIT_FLOOR_TXNS = 300
COUNTED = ("shipments", "shipment_lines", "picks", "pick_lines", "inventory_ledger", "order_events", "outbox")


def shippable_orders(conn: psycopg.Connection, n: int) -> list[int]:
    """The ``n`` oldest orders ``ship_reserved`` takes (shippable state, active reservations)."""
    return [
        r[0]
        for r in conn.execute(
            """SELECT o.order_id FROM oms.orders o
               WHERE o.state = ANY(%s)
                 AND EXISTS (SELECT 1 FROM oms.reservations r WHERE r.order_id = o.order_id AND r.state = 'active')
               ORDER BY o.placed_at, o.order_id LIMIT %s""",
            (list(SHIPPABLE_STATES), n),
        )
    ]


def ship_per_order(conn: psycopg.Connection, order_ids: list[int]) -> int:
    """The per-order path, as the pipeline step ran it: per (order, location) a pick, a pack and a shipment
    transaction, then the handover transactions. Returns shipments created."""
    work = conn.execute(
        """SELECT DISTINCT o.order_id, r.location_code, o.channel_code, o.placed_at
           FROM oms.orders o JOIN oms.reservations r ON r.order_id = o.order_id AND r.state = 'active'
           WHERE o.order_id = ANY(%s)
           ORDER BY o.placed_at, o.order_id, r.location_code""",
        (order_ids,),
    ).fetchall()
    created = 0
    for order_id, location, channel, _ in work:
        created += shipping.ship_one(
            conn, order_id, location, channel=channel, instant_handover_channels=INSTANT_HANDOVER_CHANNELS
        )
    return created


def counts(conn: psycopg.Connection) -> dict[str, int]:
    return {
        t: conn.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier("oms", t))).fetchone()[0]
        for t in COUNTED
    }


def commit_floor(url: str) -> float:
    """Single-row INSERT transactions per second (durable commits) on the benchmark's server."""
    with connect(url) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS bench_commit (id bigint)")
        t0 = time.perf_counter()
        for i in range(COMMIT_FLOOR_TXNS):
            with conn.transaction():
                conn.execute("INSERT INTO bench_commit VALUES (%s)", (i,))
        elapsed = time.perf_counter() - t0
        conn.execute("DROP TABLE bench_commit")
    return COMMIT_FLOOR_TXNS / elapsed


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="500 orders, well under two minutes")
    ap.add_argument("--orders", type=int, default=None, help="orders to ship (default 5000, quick 500)")
    ap.add_argument("--chunk", type=int, default=500, help="orders per set-based transaction")
    ap.add_argument("--skus", type=int, default=10_000)
    ap.add_argument("--seed", type=int, default=42)
    args = ap.parse_args(argv)
    n_orders = args.orders or (500 if args.quick else 5_000)

    with tempfile.TemporaryDirectory(prefix="oms-bench-ship-") as tmp:
        server = EmbeddedPostgres(Path(tmp) / "pg")  # durable defaults: fsync on, synchronous_commit on
        server.start(("oms",))
        try:
            admin = server.url("postgres")
            with psycopg.connect(admin, autocommit=True) as a:
                fsync, sync_commit = (
                    a.execute("SHOW fsync").fetchone()[0],
                    a.execute("SHOW synchronous_commit").fetchone()[0],
                )
                a.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(SOURCE_DB)))
            t0 = time.perf_counter()
            src = build_source(
                admin,
                server.url(SOURCE_DB),
                skus=args.skus,
                lines_target=int(n_orders * LINES_PER_ORDER),
                seed=args.seed,
            )
            with connect(server.url(SOURCE_DB)) as conn:
                alloc = allocate_batch(conn, config=src["config"], actor="bench", now=NOW)
                conn.execute("VACUUM ANALYZE")
                ids = shippable_orders(conn, n_orders)
                pairs, lines, split = conn.execute(
                    """WITH r AS (SELECT order_id, location_code, line_id FROM oms.reservations
                                  WHERE state = 'active' AND order_id = ANY(%s)),
                            s AS (SELECT order_id FROM r GROUP BY order_id HAVING count(DISTINCT location_code) > 1)
                       SELECT (SELECT count(*) FROM (SELECT DISTINCT order_id, location_code FROM r) p),
                              (SELECT count(DISTINCT line_id) FROM r), (SELECT count(*) FROM s)""",
                    (ids,),
                ).fetchone()
            print(
                f"loaded and allocated {len(src['order_ids'])} orders ({src['lines']} lines; allocated "
                f"{len(alloc.allocated)}, partially {len(alloc.partially_allocated)}, backordered "
                f"{len(alloc.backordered)}) in {time.perf_counter() - t0:.1f}s; shipping the {len(ids)} oldest: "
                f"{pairs} (order, location) pairs, {lines} lines, {split} orders split over locations; fsync={fsync}, synchronous_commit={sync_commit}"
            )
            if len(ids) < n_orders:
                print(f"note: only {len(ids)} shippable orders (asked for {n_orders})")

            url = clone(admin, "ship_set", SOURCE_DB)
            with connect(url) as conn:
                t0 = time.perf_counter()
                res = ship_reserved(conn, limit=len(ids), chunk_size=args.chunk)
                set_s = time.perf_counter() - t0
                set_counts = counts(conn)
                set_violations = check_invariants(conn)
            drop(admin, "ship_set")
            print(
                f"set-based: {len(ids)} orders in {set_s:.2f}s = {len(ids) / set_s:,.0f} orders/s "
                f"({res.shipments} shipments, {res.handovers} handovers, {res.transactions} transactions, "
                f"{len(res.errors)} errors, {len(set_violations)} invariant violations)"
            )

            url = clone(admin, "ship_per_order", SOURCE_DB)
            with connect(url) as conn:
                t0 = time.perf_counter()
                per_order_shipments = ship_per_order(conn, ids)
                per_s = time.perf_counter() - t0
                per_counts = counts(conn)
                per_violations = check_invariants(conn)
            drop(admin, "ship_per_order")
            print(
                f"per order: {len(ids)} orders in {per_s:.2f}s = {len(ids) / per_s:,.0f} orders/s "
                f"({per_order_shipments} shipments, {len(per_violations)} invariant violations)"
            )
            floor = commit_floor(server.url(SOURCE_DB))
            print(f"commit floor: {floor:,.0f} single-row transactions/s ({1000 / floor:.2f} ms per commit)")
        finally:
            server.stop()

    same = set_counts == per_counts and res.shipments == per_order_shipments and not res.errors
    if not same:
        print(f"MISMATCH: set-based {set_counts} vs per order {per_counts}")
    speedup = per_s / set_s
    print(
        f"set-based {len(ids) / set_s:,.0f} orders/s vs per order {len(ids) / per_s:,.0f} orders/s: "
        f"{speedup:.1f}x (target {TARGET_SPEEDUP:.0f}x — {'met' if speedup >= TARGET_SPEEDUP else 'NOT met'}); "
        f"rows written identical in count: {same}"
    )
    result = {
        "orders": len(ids),
        "pairs": pairs,
        "lines": lines,
        "split_orders": split,
        "chunk_size": args.chunk,
        "set_based_s": round(set_s, 3),
        "set_based_orders_per_s": round(len(ids) / set_s, 1),
        "set_based_transactions": res.transactions,
        "per_order_s": round(per_s, 3),
        "per_order_orders_per_s": round(len(ids) / per_s, 1),
        "speedup_x": round(speedup, 2),
        "commit_floor_tps": round(floor, 1),
        "shipments": res.shipments,
        "handovers": res.handovers,
        "row_counts_after": set_counts,
        "same_row_counts": same,
        "invariant_violations": len(set_violations) + len(per_violations),
        "fsync": fsync,
        "synchronous_commit": sync_commit,
        "target_speedup_x": TARGET_SPEEDUP,
        "target_met": speedup >= TARGET_SPEEDUP and same and not set_violations and not per_violations,
    }
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
