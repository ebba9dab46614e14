"""Streamlit: the health page shows both services up (AppTest runs the real page script)."""

from streamlit.testing.v1 import AppTest

from tests.paths import DASHBOARDS


def test_health_page_shows_both_services_up(db_url, clickhouse_url, monkeypatch):
    monkeypatch.setenv("OMS_DATABASE_URL", db_url)
    monkeypatch.setenv("OMS_CLICKHOUSE_URL", clickhouse_url)
    at = AppTest.from_file(str(DASHBOARDS / "pages/health.py"), default_timeout=30).run()
    assert not at.exception
    successes = [s.value for s in at.success]
    assert "Postgres is up" in successes
    assert "ClickHouse is up" in successes
    assert not at.error


def test_health_page_reports_a_down_service(db_url, monkeypatch):
    monkeypatch.setenv("OMS_DATABASE_URL", db_url)
    monkeypatch.setenv("OMS_CLICKHOUSE_URL", "http://127.0.0.1:9")
    at = AppTest.from_file(str(DASHBOARDS / "pages/health.py"), default_timeout=30).run()
    assert not at.exception
    assert any("ClickHouse is down" in e.value for e in at.error)
