"""The live demo: `make demo` in the background, stopped with Ctrl-C and started again on the same OMS_HOME;
across the restart an order lives its whole life (placed, reserved, shipped, delivered, returned, received,
inspected, refunded), nothing is doubled, no Dagster run fails for good, and Ctrl-C leaves nothing running.

This is the newcomer's first command, so it is tested as a newcomer runs it: through make, in its own
OMS_HOME, with free ports. It takes a few minutes (`make test` runs it beside the rest of the suite); the
carrier's transit is compressed further than the demo's default so the whole life fits in them.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from datetime import UTC, datetime

import psutil
import psycopg
import pytest

from oms_ops.platform.stack import dagster_storage_url
from oms_ops.services.health import WILL_RETRY_TAG, libpq_url
from tests.paths import ROOT

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]
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


#: a day in the simulated network lasts about 4 s: deliveries, customers' return requests and returned parcels'
#: journeys happen within a minute or two, so one test sees an order's whole life
TRANSIT_SCALE = "0.00005"


def _start(env: dict, log_path) -> tuple[subprocess.Popen, object]:
    log = open(log_path, "ab")  # noqa: SIM115 - closed by _stop
    demo = subprocess.Popen(
        ["make", "demo"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    return demo, log


def _stop(demo: subprocess.Popen, log) -> None:
    os.killpg(demo.pid, signal.SIGINT)  # Ctrl-C in the terminal
    try:
        demo.wait(120)
    except subprocess.TimeoutExpired:
        os.killpg(demo.pid, signal.SIGKILL)
        demo.wait(10)
    log.close()


def _wait(demo, state_file, log_path, done, what: str) -> tuple[dict, list[psutil.Process]]:
    """Poll the running demo's database until ``done(conn, state)`` is true; returns the stack state and the
    processes it started."""
    deadline = time.monotonic() + DEADLINE_S
    while time.monotonic() < deadline:
        assert demo.poll() is None, log_path.read_text()[-3000:]
        time.sleep(3)
        if not state_file.exists():
            continue
        state = json.loads(state_file.read_text())
        if "streamlit" not in state["services"]:
            continue
        tracked = [p for s in state["services"].values() if s.get("pid") for p in _descendants(s["pid"])]
        try:
            with psycopg.connect(state["database_url"], autocommit=True, connect_timeout=5) as conn:
                if done(conn, state):
                    return state, tracked
        except psycopg.OperationalError:
            continue
    raise AssertionError(f"{what}: not within {DEADLINE_S}s\n{log_path.read_text()[-3000:]}")


def _assert_all_stopped(tracked: list[psutil.Process], home: str, log_path) -> None:
    _, alive = psutil.wait_procs(tracked, timeout=30)
    assert not [p for p in alive if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    assert not _processes_mentioning(home)
    assert "Stopped:" in log_path.read_text()


#: an order that went all the way: placed, reserved, shipped (handed over), delivered, part of it returned,
#: the parcel received and inspected at the warehouse, refunded
WHOLE_LIFE = """
SELECT o.order_id FROM oms.orders o
  JOIN oms.returns r ON r.order_id = o.order_id AND r.kind = 'refund' AND r.state = 'closed'
 WHERE o.allocated_at IS NOT NULL AND o.shipped_at IS NOT NULL AND o.delivered_at IS NOT NULL
   AND r.received_at IS NOT NULL AND r.inspected_at IS NOT NULL
   AND EXISTS (SELECT 1 FROM oms.refunds f WHERE f.return_id = r.return_id)
 LIMIT 1"""


def test_make_demo_shows_an_orders_whole_life_across_a_restart_and_stops_cleanly(tmp_path):
    home = str(tmp_path / "home")
    env = {k: v for k, v in os.environ.items() if not k.startswith("OMS_")}
    env.update(
        OMS_HOME=home,
        OMS_DAGSTER_PORT="0",
        OMS_STREAMLIT_PORT="0",
        OMS_DEMO_RATE="10",
        OMS_DEMO_TRANSIT_SCALE=TRANSIT_SCALE,
    )
    log_path = tmp_path / "demo.log"
    state_file = tmp_path / "home" / "run" / "stack.json"

    # first start: orders come in, are reserved and handed to the carrier
    demo, log = _start(env, log_path)
    tracked: list[psutil.Process] = []
    try:
        state, tracked = _wait(
            demo,
            state_file,
            log_path,
            lambda conn, _s: (
                "Press Ctrl-C" in log_path.read_text()  # the URLs and logins are printed
                and conn.execute(
                    "SELECT count(*) FROM oms.orders WHERE shipped_at IS NOT NULL AND delivered_at IS NULL"
                ).fetchone()[0]
                > 0
            ),
            "an order reserved and shipped",
        )
        with psycopg.connect(state["database_url"], autocommit=True) as conn:
            in_flight = [
                r[0]
                for r in conn.execute(
                    "SELECT order_id FROM oms.orders WHERE shipped_at IS NOT NULL AND delivered_at IS NULL"
                ).fetchall()
            ]
        assert "Dashboard logins (demo)" in log_path.read_text() and "Dagster UI:" in log_path.read_text()
    finally:
        _stop(demo, log)
    _assert_all_stopped(tracked, home, log_path)
    first_db = state["database_url"]

    # second start on the same OMS_HOME: the same database (same port), the parcels shipped before the restart
    # are delivered, an order lives its whole life; nothing is doubled
    second_start = datetime.now(UTC).replace(tzinfo=None)  # Dagster stamps runs in UTC without a zone
    demo, log = _start(env, log_path)
    try:

        def done(conn, st) -> bool:
            delivered = conn.execute(
                "SELECT count(*) FROM oms.orders WHERE order_id = ANY(%s) AND delivered_at IS NOT NULL",
                (in_flight,),
            ).fetchone()[0]
            return delivered > 0 and conn.execute(WHOLE_LIFE).fetchone() is not None

        state, tracked = _wait(demo, state_file, log_path, done, "whole life after the restart")
        assert state["database_url"] == first_db, "the embedded Postgres kept its port across the restart"
        with psycopg.connect(state["database_url"], autocommit=True) as conn:
            doubled = conn.execute(
                """SELECT count(*) FROM (SELECT channel_code, external_id FROM oms.orders
                   GROUP BY 1, 2 HAVING count(*) > 1) d"""
            ).fetchone()[0]
            assert doubled == 0
            oid = conn.execute(WHOLE_LIFE).fetchone()[0]
            timeline = [
                r[0]
                for r in conn.execute(
                    """SELECT to_state FROM oms.order_events WHERE order_id = %s AND entity = 'order'
                       ORDER BY event_id""",
                    (oid,),
                ).fetchall()
            ]
        for step in ("allocated", "shipped", "delivered"):
            assert step in timeline, timeline
        # Dagster, the control plane beside the worker: no run of this start failed for good
        with psycopg.connect(libpq_url(dagster_storage_url(state["database_url"])), autocommit=True) as dconn:
            failed = dconn.execute(
                """SELECT r.pipeline_name FROM runs r
                   WHERE r.status = 'FAILURE' AND r.create_timestamp >= %s AND NOT EXISTS (
                       SELECT 1 FROM run_tags t WHERE t.run_id = r.run_id AND t.key = %s AND t.value = 'true')""",
                (second_start, WILL_RETRY_TAG),
            ).fetchall()
        assert failed == [], f"Dagster runs failed and not retried: {failed}"
    finally:
        _stop(demo, log)
    _assert_all_stopped(tracked, home, log_path)
