"""Streamlit: the health page (AppTest runs the real page script) shows the services and whether the work
keeps up — and never says all is well while a figure is not: the figures come from what the worker, the
domain and a Dagster instance configured by dagster.yaml wrote. The page needs a signed-in user; only admins
see where the stores are (URLs without credentials), everyone else the verdicts without hosts and ports."""

from urllib.parse import urlsplit

import streamlit as st
from streamlit.testing.v1 import AppTest

from oms_ops.connectors.config import ConnectorSettings
from oms_ops.platform.stack import dagster_storage_url
from oms_ops.services.clients import Clients
from oms_ops.users import User
from oms_ops.worker import Worker
from tests.core import factories as f
from tests.dagster_runs import dagster_instance, fail_before_start, fail_in_a_step
from tests.dashboards.conftest import DASHBOARD_PASSWORD, as_login, dashboard_login  # noqa: F401 (fixture)
from tests.paths import DASHBOARDS

ADMIN = User("root", "admin", "scrypt$unused")


def _page(user: User | None = ADMIN) -> AppTest:
    st.cache_data.clear()  # the page caches its reads for 10 s
    at = AppTest.from_file(str(DASHBOARDS / "pages/health.py"), default_timeout=60)
    if user is not None:
        at.session_state["user"] = user
    return at.run()


def _texts(at: AppTest) -> str:
    parts = [e.value for kind in (at.success, at.info, at.warning, at.error, at.caption) for e in kind]
    return "\n".join(str(p) for p in parts + [f"{m.label}: {m.value}" for m in at.metric])


def test_health_page_needs_a_signed_in_user(db_url, monkeypatch):
    monkeypatch.setenv("OMS_DATABASE_URL", db_url)
    at = _page(None)
    assert not at.exception
    assert [w.value for w in at.warning] == ["Please sign in first."]
    assert not at.success and not at.error and not at.metric


def test_only_admins_see_where_the_stores_are_and_nobody_sees_credentials(
    db_url,
    dashboard_login,  # noqa: F811 (the fixture imported above)
    monkeypatch,
):
    login_url = as_login(db_url, dashboard_login, DASHBOARD_PASSWORD)
    parts = urlsplit(login_url)
    monkeypatch.setenv("OMS_DATABASE_URL", db_url)
    monkeypatch.setenv("OMS_DASHBOARD_DATABASE_URL", login_url)
    monkeypatch.setenv("OMS_CLICKHOUSE_URL", "http://default:ch-secret@127.0.0.1:9")  # down
    admin = _texts(_page())
    assert f"postgresql://***@{parts.hostname}:{parts.port}{parts.path}" in admin
    for role in ("ops", "manager"):
        at = _page(User("someone", role, "scrypt$unused"))
        assert not at.exception
        out = _texts(at)
        assert "Postgres is up" in out and "ClickHouse is down" in out  # the verdicts stay
        assert parts.hostname not in out and str(parts.port) not in out and "http://" not in out
        assert dashboard_login not in out
    for out in (admin, _texts(at)):
        assert DASHBOARD_PASSWORD not in out and "ch-secret" not in out


def test_health_page_shows_both_services_up(db_url, clickhouse_url, monkeypatch):
    monkeypatch.setenv("OMS_DATABASE_URL", db_url)
    monkeypatch.setenv("OMS_CLICKHOUSE_URL", clickhouse_url)
    monkeypatch.delenv("OMS_DAGSTER_STORAGE_URL", raising=False)
    monkeypatch.delenv("OMS_DAGSTER_DATABASE_URL", raising=False)
    at = _page()
    assert not at.exception
    successes = [s.value for s in at.success]
    assert "Postgres is up" in successes
    assert "ClickHouse is up" in successes
    assert "Unallocated orders — ok: no order waits for allocation" in successes
    assert not at.error
    # no worker has beaten and Dagster's storage is unknown: said, not hidden behind "all up"
    warnings = [w.value for w in at.warning]
    assert "Worker — warn: no worker has reported a heartbeat" in warnings
    assert "Dagster runs — warn: Dagster's storage is not known" in warnings
    assert any(w.startswith("2 of 4 figures need attention") for w in warnings)
    assert "Every figure is within its thresholds." not in successes


def test_health_page_reports_a_down_service(db_url, monkeypatch):
    monkeypatch.setenv("OMS_DATABASE_URL", db_url)
    monkeypatch.setenv("OMS_CLICKHOUSE_URL", "http://127.0.0.1:9")
    at = _page()
    assert not at.exception
    errors = [e.value for e in at.error]
    assert any("ClickHouse is down" in e for e in errors)
    assert any(e.startswith("KPI marts — bad: ClickHouse cannot be read") for e in errors)


def test_every_figure_ok_is_said_once_the_worker_beats(
    db_url, conn, clickhouse_url, empty_db_url, tmp_path, monkeypatch
):
    worker = Worker(db_url, Clients(ConnectorSettings()), ship=False)  # no outside system: a cycle, a beat
    worker.run_once(conn)
    monkeypatch.setenv("OMS_DATABASE_URL", db_url)
    monkeypatch.setenv("OMS_CLICKHOUSE_URL", clickhouse_url)
    monkeypatch.setenv("OMS_CH_DATABASE", "analytics_not_built_yet")  # nothing has shipped: nothing to build
    with dagster_instance(empty_db_url, tmp_path / "dagster", monkeypatch):  # Dagster ran, nothing failed
        at = _page()
    assert not at.exception
    assert not at.warning and not at.error
    successes = [s.value for s in at.success]
    assert "Every figure is within its thresholds." in successes
    assert any(s.startswith("Worker — ok: 1 alive, heartbeat") for s in successes)
    assert "Dagster runs — ok: no failed run in the last hour" in successes
    assert "Dagster queue — ok: no run waits in the queue" in successes
    assert "KPI marts — ok: no shipment yet: nothing for the marts to show" in successes


def test_health_page_tells_when_the_work_stalls(
    db_url, conn, clickhouse_url, empty_db_url, tmp_path, monkeypatch
):
    f.world(conn)
    oid = f.order(conn, [("SKU-1", 1)])
    conn.execute(
        "UPDATE oms.orders SET created_at = now() - interval '20 minutes' WHERE order_id = %s", (oid,)
    )
    monkeypatch.setenv("OMS_DATABASE_URL", db_url)
    monkeypatch.setenv("OMS_CLICKHOUSE_URL", clickhouse_url)
    with dagster_instance(empty_db_url, tmp_path / "dagster", monkeypatch) as instance:
        for _ in range(3):
            fail_in_a_step(instance)
        fail_before_start(instance)
        # the page finds Dagster's storage the way `oms up` gives it to Streamlit
        assert dagster_storage_url(empty_db_url, empty_db_url).startswith("postgresql+psycopg2://")
        at = _page()
    assert not at.exception
    errors = [e.value for e in at.error]
    assert "figures need attention" in errors[0] and "Unallocated orders (bad)" in errors[0]
    assert "Unallocated orders — bad: 1 new, the oldest waiting 20 min" in errors
    assert (
        "Dagster runs — bad: 3 failed in the last hour, not retried (failing_job); 1 more failed and retried"
        in errors
    )
    assert "Every figure is within its thresholds." not in [s.value for s in at.success]
