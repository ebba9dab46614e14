"""The live demo: `make demo` in the background, orders get allocated and a mart fills; Ctrl-C leaves nothing.

This is the newcomer's first command, so it is tested as a newcomer runs it: through make, in its own
OMS_HOME, with free ports. It takes a few minutes (the marts are built by Dagster's schedules/sensors).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import clickhouse_connect
import psutil
import psycopg
import pytest

from tests.paths import ROOT

pytestmark = pytest.mark.slow
DEADLINE_S = 900


def _descendants(pid: int) -> list[psutil.Process]:
    try:
        p = psutil.Process(pid)
        return [p, *p.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def _processes_mentioning(home: str) -> list[psutil.Process]:
    found = []
    for p in psutil.process_iter(["cmdline", "environ"]):
        try:
            cmd = " ".join(p.info["cmdline"] or [])
            env = p.info["environ"] or {}
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        if home in cmd or env.get("OMS_HOME") == home:
            if p.pid != os.getpid() and p.status() != psutil.STATUS_ZOMBIE:
                found.append(p)
    return found


def test_make_demo_flows_orders_into_marts_and_stops_cleanly(tmp_path):
    home = str(tmp_path / "home")
    env = {k: v for k, v in os.environ.items() if not k.startswith("OMS_")}
    env.update(OMS_HOME=home, OMS_DAGSTER_PORT="0", OMS_STREAMLIT_PORT="0", OMS_DEMO_RATE="20")
    log = open(tmp_path / "demo.log", "wb")  # noqa: SIM115
    demo = subprocess.Popen(
        ["make", "demo"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    state_file = tmp_path / "home" / "run" / "stack.json"
    allocated = mart_rows = 0
    tracked: list[psutil.Process] = []
    try:
        deadline = time.monotonic() + DEADLINE_S
        while time.monotonic() < deadline and not (allocated and mart_rows):
            assert demo.poll() is None, (tmp_path / "demo.log").read_text()[-3000:]
            time.sleep(5)
            if (
                not state_file.exists()
                or "streamlit" not in (state := json.loads(state_file.read_text()))["services"]
            ):
                continue
            tracked = [p for s in state["services"].values() if s.get("pid") for p in _descendants(s["pid"])]
            with psycopg.connect(state["database_url"], autocommit=True) as conn:
                allocated = conn.execute(
                    "SELECT count(*) FROM oms.orders WHERE allocated_at IS NOT NULL"
                ).fetchone()[0]
            client = clickhouse_connect.get_client(dsn=state["clickhouse_url"])
            try:
                if client.command("EXISTS TABLE analytics.fct_orders") == 1:
                    mart_rows = client.command("SELECT count() FROM analytics.fct_orders")
            finally:
                client.close()
        out = (tmp_path / "demo.log").read_text()
        assert allocated > 0, f"no order was allocated within {DEADLINE_S}s:\n{out[-3000:]}"
        assert mart_rows > 0, f"no mart rows within {DEADLINE_S}s:\n{out[-3000:]}"
        assert "Dashboard logins (demo)" in out and "Dagster UI:" in out
    finally:
        os.killpg(demo.pid, signal.SIGINT)  # Ctrl-C in the terminal
        try:
            demo.wait(120)
        except subprocess.TimeoutExpired:
            os.killpg(demo.pid, signal.SIGKILL)
            demo.wait(10)
        log.close()
    _, alive = psutil.wait_procs(tracked, timeout=30)
    assert not [p for p in alive if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    assert not _processes_mentioning(home)
    assert "Stopped:" in (tmp_path / "demo.log").read_text()
