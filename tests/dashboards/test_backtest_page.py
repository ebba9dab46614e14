"""Routing backtest page (admins only): pick a period and a draft, run, see the comparison and the load chart.

The page reads as the dashboards' least-privilege login (``dash_url``), so a passing run also proves the
backtest needs no grant beyond reading; the history is the one of tests/core/test_backtest.py (five orders,
a receipt and a cancellation, allocated as they arrived)."""

from __future__ import annotations

from zoneinfo import ZoneInfo

import pytest

from tests.core.test_backtest import _row_counts, draft, make_history, rule
from tests.dashboards.conftest import ADMIN, MANAGER, OPS, frame, page, texts


@pytest.fixture
def period(conn):
    _, start, end, ids = make_history(conn)
    msk = ZoneInfo("Europe/Moscow")  # the sample's business time zone: the page's days are its days
    return start.astimezone(msk).date(), end.astimezone(msk).date(), ids


def run(at, start, end, source="Current configuration file", text=None):
    at.date_input(key="bt_from").set_value(start)
    at.date_input(key="bt_to").set_value(end)
    at.radio(key="bt_source").set_value(source)
    if text is not None:
        at.text_area(key="bt_yaml").input(text)
    at.button[0].click().run()
    assert not at.exception
    return at


@pytest.mark.parametrize("user", [OPS, MANAGER])
def test_only_admins_open_the_page(dash_url, user):
    at = page("backtest", user).run()
    assert not at.exception
    assert f"The {user.role} role cannot open this page." in texts(at)
    assert not at.text_area


def test_the_form_is_there_before_any_run(dash_url):
    at = page("backtest", ADMIN).run()
    assert not at.exception
    assert "Routing backtest" in texts(at) and "Pick a period and a draft" in texts(at)
    assert at.radio(key="bt_source").options == [
        "Current configuration file",
        "Paste YAML",
        "Upload a YAML file",
    ]
    assert "webstore" in at.multiselect(key="bt_channels").options


def test_the_current_configuration_reproduces_the_period_and_nothing_is_written(dash_url, conn, period):
    start, end, _ = period
    counts = _row_counts(conn)
    at = run(page("backtest", ADMIN).run(), start, end)
    out = texts(at)
    assert "5 orders replayed" in out and "read-only transaction: yes" in out
    table = frame(at, "label", "real", "backtest")
    rows = {r["label"]: r for r in table.to_dict("records")}
    assert rows["plans that differ from the real one"]["backtest"] == 0
    assert rows["split rate"]["real"] == rows["split rate"]["backtest"] == 0.25
    load = frame(at, "location", "real_shipments", "backtest_shipments")
    assert "WH-MSK-POD" in load["location"].tolist()
    assert len(at.get("vega_lite_chart")) == 1  # the load chart (st.bar_chart)
    assert _row_counts(conn) == counts


def test_a_pasted_draft_shows_the_changed_plan(dash_url, conn, period):
    start, end, ids = period
    text, _ = draft(lambda d: rule(d, "moscow_courier").update(strategy="fewest_shipments"))
    at = run(page("backtest", ADMIN).run(), start, end, "Paste YAML", text)
    rows = {r["label"]: r for r in frame(at, "label", "real", "backtest").to_dict("records")}
    assert rows["plans that differ from the real one"]["backtest"] == 1
    assert rows["split rate"]["backtest"] < rows["split rate"]["real"]
    changed = frame(at, "order_id", "real", "backtest")
    assert changed["order_id"].tolist() == [ids["split"]]


def test_an_invalid_pasted_draft_names_the_field(dash_url, conn, period):
    start, end, _ = period
    text, _ = draft(lambda d: rule(d, "moscow_courier").update(strategy="cheapest"))
    at = run(page("backtest", ADMIN).run(), start, end, "Paste YAML", text)
    assert "routing_rules[4].strategy" in texts(at)
    assert "orders replayed" not in texts(at)
