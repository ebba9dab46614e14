"""The `oms` command line: up/status/down leave no process behind; bad configuration fails clearly."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import httpx
import psutil
import pytest

from oms_ops.platform import stack
from oms_ops.platform.settings import load_settings

OMS = [sys.executable, "-m", "oms_ops.cli"]


def run_oms(args, env, timeout=300):
    return subprocess.run([*OMS, *args], env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def oms_env(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("OMS_")}
    env["OMS_HOME"] = str(tmp_path / "home")
    env["OMS_DAGSTER_PORT"] = "0"
    env["OMS_STREAMLIT_PORT"] = "0"
    yield env
    subprocess.run([*OMS, "down"], env=env, capture_output=True, timeout=120)


def _tree(pid):
    try:
        p = psutil.Process(pid)
        return [p, *p.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


@pytest.mark.slow  # the whole stack up and down (about 2 minutes): runs in make test's slow lane, beside the rest
def test_up_status_down_leaves_no_process(oms_env):
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    oms_env["OMS_STREAMLIT_PORT"] = str(busy.getsockname()[1])  # taken: another port must be chosen
    try:
        res = run_oms(["up"], oms_env)
        assert res.returncode == 0, res.stderr
        for name in stack.ALL_SERVICES:
            assert name in res.stdout
        settings = load_settings(oms_env)
        state = stack.read_state(settings)
        assert state.services["streamlit"].url != f"http://127.0.0.1:{busy.getsockname()[1]}"
        procs = [p for info in state.services.values() if info.pid for p in _tree(info.pid)]
        assert len(procs) >= 5

        res = run_oms(["status"], oms_env)
        assert res.returncode == 0, res.stdout + res.stderr
        assert res.stdout.count(" up ") == len(stack.ALL_SERVICES)
        assert "http://127.0.0.1:" in res.stdout
        # after the services, whether the work keeps up; nothing is bad on a fresh stack
        health_lines = res.stdout.split("Health:\n", 1)[1].splitlines()
        labels = {line.split("  ")[1].strip() for line in health_lines}
        assert {"Worker", "Unallocated orders", "Dagster runs", "KPI marts"} <= labels
        assert not [line for line in health_lines if " bad " in line]
        # the webserver and the daemon load the code location from the one persistent code server
        workspace = str(settings.dagster_home / "workspace.yaml")
        for name in ("dagster-webserver", "dagster-daemon"):
            assert workspace in psutil.Process(state.services[name].pid).cmdline()
        assert state.services["dagster-code-server"].url.startswith("grpc://127.0.0.1:")
        # the dashboards send their actions to the OMS API, which refuses a request without a token
        api = state.services["api"].url
        assert httpx.get(api + "/v1/health", timeout=10).json()["status"] == "ok"
        assert httpx.post(api + "/v1/actions/orders.release", json={}, timeout=10).status_code == 401
        assert psutil.Process(state.services["streamlit"].pid).environ()["OMS_API_URL"] == api

        # the embedded servers take the passwords generated into OMS_HOME; the URLs handed out carry them,
        # the services' display URLs and plain `oms status` do not
        _check_credentials(settings, state, res.stdout, oms_env)

        again = run_oms(["up"], oms_env)
        assert again.returncode == 0
        assert "already running" in again.stdout
        assert stack.read_state(settings).services["postgres"].pid == state.services["postgres"].pid

        res = run_oms(["down"], oms_env)
        assert res.returncode == 0, res.stderr
        gone, alive = psutil.wait_procs(procs, timeout=30)
        assert not [p for p in alive if p.status() != psutil.STATUS_ZOMBIE]
        assert run_oms(["status"], oms_env).returncode == 3
    finally:
        busy.close()


def _check_credentials(settings, state, status_output, env):
    from urllib.parse import urlsplit

    import httpx
    import psycopg

    from oms_ops.platform import credentials

    owner = credentials.secret(settings.home, credentials.POSTGRES_OWNER)
    assert urlsplit(state.database_url).password == owner and owner not in status_output
    assert "***" in state.services["postgres"].url
    pg = urlsplit(state.database_url)
    with pytest.raises(psycopg.OperationalError, match="no password supplied"):
        psycopg.connect(f"host=127.0.0.1 port={pg.port} dbname=oms user=postgres", connect_timeout=10)
    dashboards = psycopg.connect(state.dashboard_database_url, connect_timeout=10)
    dashboards.close()
    ch = urlsplit(state.clickhouse_url)
    assert httpx.post(f"http://127.0.0.1:{ch.port}/", content=b"SELECT 1").status_code == 401
    reader = httpx.post(state.clickhouse_dashboard_url + "/", content=b"CREATE DATABASE x")
    assert reader.headers["X-ClickHouse-Exception-Code"] == "164"
    for path in credentials.stored_secrets(settings.home).values():
        assert path.stat().st_mode & 0o777 == 0o600
    res = run_oms(["status", "--secrets"], env)
    assert res.returncode == 0, res.stdout + res.stderr
    assert owner in res.stdout and state.clickhouse_url in res.stdout


def test_unreachable_database_url_is_one_line_error(oms_env):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    oms_env["OMS_DATABASE_URL"] = f"postgresql://oms:secret@127.0.0.1:{port}/oms"
    res = run_oms(["up"], oms_env, timeout=60)
    assert res.returncode != 0
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    assert lines[0].startswith("error: OMS_DATABASE_URL: cannot connect")
    assert "secret" not in res.stderr


def test_malformed_clickhouse_url_names_the_variable(oms_env):
    oms_env["OMS_CLICKHOUSE_URL"] = "ftp://somewhere"
    res = run_oms(["status"], oms_env, timeout=60)
    assert res.returncode == 2
    assert "OMS_CLICKHOUSE_URL" in res.stderr and "scheme" in res.stderr


def test_unreachable_clickhouse_url_is_reported(oms_env, pg_admin_url):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    oms_env["OMS_DATABASE_URL"] = pg_admin_url.rsplit("/", 1)[0] + "/postgres"
    oms_env["OMS_DAGSTER_DATABASE_URL"] = oms_env["OMS_DATABASE_URL"]
    oms_env["OMS_CLICKHOUSE_URL"] = f"http://127.0.0.1:{port}"
    res = run_oms(["up", "--services", "postgres,clickhouse"], oms_env, timeout=120)
    assert res.returncode != 0
    assert res.stderr.strip().startswith("error: OMS_CLICKHOUSE_URL: cannot reach")


def test_postgres_port_in_use_is_reported_by_number(oms_env):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        oms_env["OMS_PG_PORT"] = str(port)
        res = run_oms(["up", "--services", "postgres"], oms_env, timeout=120)
    assert res.returncode != 0
    assert str(port) in res.stderr and "in use" in res.stderr


def test_bad_port_variable_is_rejected():
    from oms_ops.platform.settings import ConfigError

    with pytest.raises(ConfigError, match="OMS_PG_PORT"):
        load_settings({"OMS_PG_PORT": "abc"})


def test_invalid_business_config_stops_start_up_naming_the_field(oms_env, tmp_path):
    bad = tmp_path / "business.yaml"
    from oms_ops.business_config import DEFAULT_PATH

    bad.write_text(DEFAULT_PATH.read_text().replace("capacity_per_day: 8000", "capacity_per_day: -5", 1))
    oms_env["OMS_BUSINESS_CONFIG"] = str(bad)
    res = run_oms(["up", "--services", "postgres"], oms_env, timeout=120)
    assert res.returncode == 2
    assert "OMS_BUSINESS_CONFIG" in res.stderr and "capacity_per_day" in res.stderr
    assert not (tmp_path / "home" / "postgres" / "postmaster.pid").exists()


def test_status_reports_health_and_fails_when_a_figure_is_bad(
    oms_env, db_url, conn, empty_db_url, clickhouse_url
):
    """`oms status` against a recorded stack of external servers (this test's databases): the health figures
    follow the services, and a bad one (an order waiting 20 minutes for allocation) makes it exit 1."""
    from tests.core import factories as f

    settings = load_settings(oms_env)
    state = stack.StackState(database_url=db_url, clickhouse_url=clickhouse_url)
    state.services["postgres"] = stack.ServiceInfo("postgres", "postgresql://test", embedded=False)
    state.services["clickhouse"] = stack.ServiceInfo("clickhouse", clickhouse_url, embedded=False)
    stack._write_state(settings, state)
    oms_env["OMS_DAGSTER_DATABASE_URL"] = empty_db_url
    res = run_oms(["status"], oms_env, timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "Health:" in res.stdout
    assert "Unallocated orders       ok    no order waits for allocation" in res.stdout
    assert "Dagster runs             warn  no Dagster run storage yet (Dagster never ran)" in res.stdout

    f.world(conn)
    oid = f.order(conn, [("SKU-1", 1)])
    conn.execute(
        "UPDATE oms.orders SET created_at = now() - interval '20 minutes' WHERE order_id = %s", (oid,)
    )
    res = run_oms(["status"], oms_env, timeout=120)
    assert res.returncode == 1, res.stdout + res.stderr
    assert "Unallocated orders       bad   1 new, the oldest waiting 20 min" in res.stdout
    assert res.stdout.count(" up ") == 2  # the services themselves are up
