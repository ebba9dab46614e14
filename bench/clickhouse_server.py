"""Benchmark: the embedded ClickHouse HTTP server against chdb in-process, through the same client library.

Both sides use clickhouse-connect — its HTTP client against the project's server (``oms_ops.platform.clickhouse``,
started in a temporary directory) and its in-process chdb interface (``get_client(interface="chdb", path=...)``,
another temporary directory). The ratio server/in-process is what the HTTP hop costs; the target is >= 0.70 for
both insert and scan. The headline ("server") uses ``compress=False``, the right client setting for a server on the
same host; "server_default" repeats the measurement with the client's default settings (lz4-compressed inserts).

* insert: ``client.insert(..., column_oriented=True)`` — a chunked, compressed ``INSERT ... FORMAT Native``;
* scan:   ``query_column_block_stream("SELECT * FROM bench")`` — streamed Native blocks, all columns decoded;
  an Arrow scan (``query_arrow``) is reported as well.

Measurements of the two sides are interleaved and each is repeated; medians are reported because the machine is
small and shared. Next to wall time, the CPU seconds spent (client process, plus the server process on the server
side) are reported: when other work competes for the two cores, a client/server pipeline loses more wall time
than one process does, while CPU seconds still show what the HTTP hop itself costs. After every timed insert
``OPTIMIZE ... FINAL`` (untimed) finishes background merges so they do not leak into the next measurement.

Usage: ``uv run python bench/clickhouse_server.py [--quick] [--rows N] [--repeat R]``. The last line printed is
one JSON object with the results.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import clickhouse_connect
import numpy as np
import psutil
from clickhouse_connect.driver.client import Client

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from oms_ops.platform.clickhouse.supervisor import start_clickhouse_process  # noqa: E402

TABLE = "bench"
DDL = (
    f"CREATE TABLE {TABLE} (id UInt64, ts DateTime64(3, 'UTC'), sku LowCardinality(String), "
    "qty Int32, price Float64) ENGINE = MergeTree ORDER BY id"
)
COLUMNS = ["id", "ts", "sku", "qty", "price"]


def make_data(rows: int) -> list:
    """Order-line-like columns: ids, millisecond timestamps, 5000 SKUs, quantities and prices."""
    rng = np.random.default_rng(42)
    ids = np.arange(rows, dtype=np.uint64)
    ts = (np.int64(1_700_000_000_000) + np.arange(rows, dtype=np.int64) * 37).tolist()
    catalogue = np.array([f"SKU-{i:05d}" for i in range(5000)], dtype=object)
    skus = catalogue[rng.integers(0, 5000, rows)].tolist()
    qty = rng.integers(1, 10, rows, dtype=np.int32)
    price = rng.integers(100, 100_000, rows).astype(np.float64) / 100
    return [ids, ts, skus, qty, price]


class Meter:
    """Wall time and CPU time of one measurement. CPU seconds are summed over the processes doing the work
    (client, plus the server process on the server side) and stay meaningful when the machine is busy."""

    def __init__(self, pids: list[int]):
        self.procs = [psutil.Process(pid) for pid in pids]

    def _cpu(self) -> float:
        return sum(t.user + t.system for t in (p.cpu_times() for p in self.procs))

    def __call__(self, fn: Callable[[], object]) -> tuple[float, float]:
        cpu, start = self._cpu(), time.perf_counter()
        fn()
        return time.perf_counter() - start, self._cpu() - cpu


def insert_once(client: Client, meter: Meter, data: list, rows: int) -> tuple[float, float]:
    client.command("DROP TABLE IF EXISTS bench")
    client.command(DDL)
    measured = meter(lambda: client.insert(TABLE, data, column_names=COLUMNS, column_oriented=True))
    client.command("OPTIMIZE TABLE bench FINAL")
    count = client.command("SELECT count() FROM bench")
    if count != rows:
        raise SystemExit(f"insert check failed: {count} rows instead of {rows}")
    return measured


def scan_native(client: Client, meter: Meter, rows: int) -> tuple[float, float]:
    seen = [0]

    def run() -> None:
        with client.query_column_block_stream("SELECT * FROM bench") as stream:
            for block in stream:
                seen[0] += len(block[0])

    measured = meter(run)
    if seen[0] != rows:
        raise SystemExit(f"scan check failed: {seen[0]} rows instead of {rows}")
    return measured


def scan_arrow(client: Client, meter: Meter, rows: int) -> tuple[float, float]:
    result = {}
    measured = meter(lambda: result.setdefault("t", client.query_arrow("SELECT * FROM bench")))
    if result["t"].num_rows != rows:
        raise SystemExit(f"arrow scan check failed: {result['t'].num_rows} rows instead of {rows}")
    return measured


SIDES = ("server", "server_default", "inprocess")
KINDS: dict[str, Callable] = {"insert": insert_once, "scan": scan_native, "scan_arrow": scan_arrow}
LABELS = {"insert": "insert (Native)", "scan": "scan (Native)", "scan_arrow": "scan (Arrow)"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1M rows (default 10M)")
    parser.add_argument("--rows", type=int, help="rows to insert and scan")
    parser.add_argument("--repeat", type=int, default=5, help="repetitions per measurement (median reported)")
    args = parser.parse_args(argv)
    rows = args.rows or (1_000_000 if args.quick else 10_000_000)

    started = time.perf_counter()
    data = make_data(rows)
    print(f"generated {rows:,} rows in {time.perf_counter() - started:.1f}s", flush=True)

    samples: dict[str, dict[str, list[tuple[float, float]]]] = {
        side: {k: [] for k in KINDS} for side in SIDES
    }
    with tempfile.TemporaryDirectory(prefix="oms-ch-bench-") as tmp:
        server = start_clickhouse_process(Path(tmp) / "server")
        try:
            admin = clickhouse_connect.get_client(host=server.host, port=server.port)
            admin.command("CREATE DATABASE IF NOT EXISTS compressed")
            admin.close()
            clients = {
                # compress=False: the recommended client setting for a server on the same host (dbt-clickhouse's
                # default too) — compressing bytes that never cross a network only burns the shared CPUs
                "server": clickhouse_connect.get_client(host=server.host, port=server.port, compress=False),
                # clickhouse-connect's defaults: lz4-compressed inserts (the server skips compressing responses
                # to loopback clients, so scans are the same as above)
                "server_default": clickhouse_connect.get_client(
                    host=server.host, port=server.port, database="compressed"
                ),
                "inprocess": clickhouse_connect.get_client(
                    interface="chdb", path=str(Path(tmp) / "inprocess")
                ),
            }
            meters = {
                "server": Meter([os.getpid(), server.pid]),
                "server_default": Meter([os.getpid(), server.pid]),
                "inprocess": Meter([os.getpid()]),
            }
            warm = [column[:10_000] for column in data]
            for side in SIDES:  # first-use costs (imports, codec set-up) are not what we measure
                insert_once(clients[side], meters[side], warm, len(warm[0]))
                scan_native(clients[side], meters[side], len(warm[0]))
                scan_arrow(clients[side], meters[side], len(warm[0]))
            # Interleave the sides so that a burst of load on the machine hits all of them alike.
            for phase in (("insert",), ("scan", "scan_arrow")):
                for rep in range(args.repeat):
                    line = []
                    for side in SIDES:
                        for kind in phase:
                            if kind == "insert":
                                sample = insert_once(clients[side], meters[side], data, rows)
                            else:
                                sample = KINDS[kind](clients[side], meters[side], rows)
                            samples[side][kind].append(sample)
                            line.append(f"{side} {kind} {sample[0]:.2f}s (cpu {sample[1]:.2f}s)")
                    print(f"round {rep + 1}: " + ", ".join(line), flush=True)
            for client in clients.values():
                client.close()
        finally:
            server.stop()

    wall = {
        s: {k: statistics.median(w for w, _ in v) for k, v in kinds.items()} for s, kinds in samples.items()
    }
    cpu = {
        s: {k: statistics.median(c for _, c in v) for k, v in kinds.items()} for s, kinds in samples.items()
    }
    result: dict[str, float | int] = {"rows": rows, "repeat": args.repeat}
    extra: dict[str, float | int] = {}
    for kind in KINDS:
        inproc_rate = rows / wall["inprocess"][kind]
        for side, out in (("server", result), ("server_default", extra)):
            rate = rows / wall[side][kind]
            out[f"{side}_{kind}_rows_per_s"] = round(rate)
            if side == "server":
                out[f"inprocess_{kind}_rows_per_s"] = round(inproc_rate)
            out[f"{kind}_ratio" if side == "server" else f"{side}_{kind}_ratio"] = round(
                rate / inproc_rate, 3
            )
            verdict = (
                ""
                if kind == "scan_arrow"
                else ("  (target >= 0.70 " + ("met)" if rate >= 0.7 * inproc_rate else "MISSED)"))
            )
            print(
                f"{LABELS[kind]:16} {side:14} {rate / 1e6:6.2f}M rows/s vs in-process {inproc_rate / 1e6:6.2f}M rows/s"
                f"  ratio {rate / inproc_rate:.2f}{verdict}  cpu s {cpu[side][kind]:.2f} vs {cpu['inprocess'][kind]:.2f}"
            )
        for side in SIDES:
            extra[f"{side}_{kind}_cpu_s"] = round(cpu[side][kind], 3)
    print(f"total {time.perf_counter() - started:.1f}s")
    print(json.dumps(result | extra))
    return 0


if __name__ == "__main__":
    sys.exit(main())
