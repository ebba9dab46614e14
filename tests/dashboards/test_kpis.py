"""KPI page and its ClickHouse queries. The KPI glossary ``dim_kpi`` — where the page takes its rates from —
is built by dbt (seed ``kpi_glossary`` → ``dim_kpi``) once for this module. The marts are created from their
dbt contracts (the enforced column names and types in dbt/models/marts/_marts__models.yml), so a contract
change that breaks a query fails here; they are dropped after each test."""

import csv
import re
import uuid
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest
import yaml

from oms_ops import dashboard_queries as dq
from oms_ops.analytics.dbt import analytics_dbt_env, run_dbt
from oms_ops.platform.dbt_env import DBT_PROJECT_DIR
from tests.dashboards.conftest import ADMIN, MANAGER, OPS, frame, page, texts
from tests.fixtures.clickhouse import clickhouse_client
from tests.paths import ROOT

MARTS_YML = ROOT / "dbt" / "models" / "marts" / "_marts__models.yml"
# fct_order_lines has no enforced contract: the columns the dashboard reads, typed as the model casts them
ORDER_LINES_COLUMNS = {
    "line_id": "Int64",
    "order_id": "Int64",
    "sku": "String",
    "channel_code": "String",
    "location_code": "String",
    "placed_date": "Date",
    "qty_sold": "Int64",
    "qty_returned": "Int64",
    "_loaded_at": "DateTime64(6, 'UTC')",
}
TODAY = datetime.now(UTC).date()
D1, D2 = TODAY - timedelta(days=2), TODAY - timedelta(days=1)
LOADED = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)  # far from "now" so the caption is recognisable


def contract_columns(model: str) -> dict[str, str]:
    models = {m["name"]: m for m in yaml.safe_load(MARTS_YML.read_text())["models"]}
    return {c["name"]: c["data_type"] for c in models[model]["columns"]}


def create(ch_client, name: str, columns: dict[str, str]) -> None:
    cols = ", ".join(f"`{c}` {t}" for c, t in columns.items())
    ch_client.command(f"CREATE TABLE `{name}` ({cols}) ENGINE = MergeTree ORDER BY tuple()")


def insert(ch_client, table: str, rows: list[dict]) -> None:
    names = list(rows[0])
    ch_client.insert(table, [[r[n] for n in names] for r in rows], column_names=names)


def agg_row(day: date, channel: str, location: str, **numbers) -> dict:
    row = {"date_day": day, "channel_code": channel, "location_code": location, "_loaded_at": LOADED}
    defaults = dict.fromkeys(dq.KPI_SUMS, 0)
    defaults["revenue"] = defaults["returned_revenue"] = defaults["shipping_cost"] = Decimal("0")
    row.update(defaults)
    row.update(numbers)
    return row


MARTS = ("agg_kpi_daily", "fct_orders", "fct_returns", "fct_order_lines")


@pytest.fixture(scope="module")
def kpi_database(clickhouse_url, tmp_path_factory):
    """A ClickHouse database holding the KPI glossary as dbt builds it (kpi_glossary → dim_kpi)."""
    name = f"kpi_{uuid.uuid4().hex[:12]}"
    env = analytics_dbt_env(None, clickhouse_url, analytics_db=name, raw_db=name)
    res = run_dbt(
        ["build", "--target", "clickhouse", "--select", "kpi_glossary", "dim_kpi"],
        env,
        target_path=tmp_path_factory.mktemp("dbt-kpi"),
    )
    assert res.success, res.failures() or res.exception
    yield name
    admin = clickhouse_client(clickhouse_url)
    try:
        admin.command(f"DROP DATABASE IF EXISTS `{name}` SYNC")
    finally:
        admin.close()


@pytest.fixture
def kpi_client(clickhouse_url, kpi_database):
    """A client on the glossary's database; the marts a test creates there are dropped afterwards."""
    client = clickhouse_client(clickhouse_url, database=kpi_database)
    try:
        yield client
    finally:
        for table in MARTS:
            client.command(f"DROP TABLE IF EXISTS `{table}` SYNC")
        client.close()


@pytest.fixture
def marts(kpi_client):
    ch_client = kpi_client
    for model in ("agg_kpi_daily", "fct_orders", "fct_returns"):
        create(ch_client, model, contract_columns(model))
    create(ch_client, "fct_order_lines", ORDER_LINES_COLUMNS)
    insert(
        ch_client,
        "agg_kpi_daily",
        [
            agg_row(
                D1,
                "ozon",
                "WH-MSK",
                orders_placed=10,
                orders_cancelled=1,
                orders_sold=9,
                units_sold=20,
                revenue=Decimal("2000"),
                orders_shipped=8,
                orders_delivered=6,
                orders_shipped_with_ship_by=8,
                orders_shipped_on_time=6,
                orders_delivered_with_promise=6,
                orders_delivered_on_time=3,
                orders_picked=8,
                orders_picked_accurately=8,
                units_returned=2,
                orders_returned=1,
                returned_revenue=Decimal("200"),
                orders_perfect=3,
            ),
            agg_row(
                D2,
                "webstore",
                "WH-SPB",
                orders_placed=30,
                orders_sold=30,
                units_sold=40,
                revenue=Decimal("4000"),
                orders_shipped=20,
                orders_delivered=10,
                orders_shipped_with_ship_by=20,
                orders_shipped_on_time=20,
                orders_delivered_with_promise=10,
                orders_delivered_on_time=9,
                orders_picked=20,
                orders_picked_accurately=19,
                units_returned=0,
                orders_returned=0,
                orders_perfect=9,
            ),
        ],
    )
    base = {"order_number": "", "currency": "RUB", "_loaded_at": LOADED}
    insert(
        ch_client,
        "fct_orders",
        [
            {
                **base,
                "order_id": i,
                "channel_code": ch,
                "location_code": loc,
                "placed_date": day,
                "is_shipped": True,
                "fulfillment_seconds": secs,
            }
            for i, (ch, loc, day, secs) in enumerate(
                [
                    ("ozon", "WH-MSK", D1, 3600),
                    ("ozon", "WH-MSK", D1, 7200),
                    ("ozon", "WH-MSK", D1, 36000),
                    ("webstore", "WH-SPB", D2, 1800),
                ],
                start=1,
            )
        ],
    )
    insert(
        ch_client,
        "fct_order_lines",
        [
            {
                "line_id": 1,
                "order_id": 1,
                "sku": "SKU-1",
                "channel_code": "ozon",
                "location_code": "WH-MSK",
                "placed_date": D1,
                "qty_sold": 4,
                "qty_returned": 2,
                "_loaded_at": LOADED,
            },
            {
                "line_id": 2,
                "order_id": 2,
                "sku": "SKU-2",
                "channel_code": "ozon",
                "location_code": "WH-MSK",
                "placed_date": D1,
                "qty_sold": 16,
                "qty_returned": 0,
                "_loaded_at": LOADED,
            },
        ],
    )
    insert(
        ch_client,
        "fct_returns",
        [
            {
                "return_line_id": 1,
                "reason_code": "defective",
                "reason_description": "Defect",
                "is_damage": True,
                "is_seller_fault": True,
                "qty_received": 2,
                "is_received": True,
                "channel_code": "ozon",
                "location_code": "WH-MSK",
                "placed_date": D1,
                "_loaded_at": LOADED,
            },
        ],
    )
    return ch_client


@pytest.fixture
def kpi_env(monkeypatch, clickhouse_url, kpi_database, kpi_client, dash_url):
    monkeypatch.setenv("OMS_CLICKHOUSE_URL", clickhouse_url)
    monkeypatch.setenv("OMS_CH_DATABASE", kpi_database)


PICK_ACCURACY = dq.KpiRate(
    "pick_accuracy",
    "Order picking accuracy",
    "percent",
    "pick_accuracy_pct",
    "orders_picked_accurately",
    "orders_picked",
)
RETURN_RATE_UNITS = dq.KpiRate(
    "return_rate_units",
    "Return rate (units)",
    "percent",
    "return_rate_units_pct",
    "units_returned",
    "units_sold",
)


def test_rollup_recomputes_rates_from_sums():
    rows = [
        {"day": 1, "orders_placed": 1, "orders_picked": 1, "orders_picked_accurately": 0},
        {"day": 2, "orders_placed": 99, "orders_picked": 99, "orders_picked_accurately": 99},
    ]
    (total,) = dq.rollup(rows, [PICK_ACCURACY, RETURN_RATE_UNITS])
    assert total["pick_accuracy_pct"] == 99.0  # not the mean of 0 % and 100 %
    assert total["return_rate_units_pct"] is None  # no units sold: no rate, not 0 %
    by_day = dq.rollup(rows, [PICK_ACCURACY], ["day"])
    assert [d["pick_accuracy_pct"] for d in by_day] == [0.0, 100.0]
    assert [d["share_of_orders_pct"] for d in by_day] == [1.0, 99.0]


def test_queries_against_the_marts(marts):
    f = dq.KpiFilter(D1, D2)
    assert dq.kpi_tables(marts) == set(dq.KPI_TABLES)
    assert dq.kpi_freshness(marts, dq.KPI_TABLES)["agg_kpi_daily"] == LOADED
    rates = dq.kpi_rates(marts)
    (total,) = dq.rollup(dq.kpi_rows(marts, f), rates)
    assert total["orders_placed"] == 40
    assert total["on_time_shipment_pct"] == pytest.approx(100 * 26 / 28)
    assert total["return_rate_units_pct"] == pytest.approx(100 * 2 / 60)
    trend = {r["date_day"]: r for r in dq.fulfillment_time_trend(marts, f)}
    assert trend[D1]["fulfillment_hours_p50"] == pytest.approx(2.0)
    assert trend[D1]["fulfillment_hours_p90"] == pytest.approx(
        8.4
    )  # linear interpolation between 2 h and 10 h
    ozon = dq.KpiFilter(D1, D2, channels=("ozon",))
    assert [r["orders_placed"] for r in dq.kpi_rows(marts, ozon)] == [10]
    assert dq.kpi_rows(marts, dq.KpiFilter(D1, D2, locations=("NOWHERE",))) == []
    (sku,) = dq.return_rate_by_sku(marts, f)
    assert (sku["sku"], sku["return_rate_units_pct"]) == ("SKU-1", 50.0)
    (reason,) = dq.returns_by_reason(marts, f)
    assert (reason["reason_code"], reason["units_returned"], reason["share_pct"]) == ("defective", 2, 100.0)


def test_page_without_marts_says_no_data_yet(kpi_env):
    at = page("kpis", MANAGER).run()
    assert not at.exception
    out = texts(at)
    assert "No KPI data yet" in out
    assert "no mart built yet" in out


def test_page_with_empty_mart_shows_freshness(kpi_env, kpi_client):
    create(kpi_client, "agg_kpi_daily", contract_columns("agg_kpi_daily"))
    at = page("kpis", ADMIN).run()
    assert not at.exception
    assert "No KPI data yet" in texts(at)
    assert "agg_kpi_daily: —" in texts(at)


def test_page_shows_kpis_charts_downloads_and_freshness(kpi_env, marts):
    at = page("kpis", MANAGER).run()
    assert not at.exception
    out = texts(at)
    assert "Orders placed: 40" in out
    assert "On-time shipment rate: 92.9 %" in out  # names from the glossary (dim_kpi)
    assert "Order picking accuracy: 96.4 %" in out
    assert "Perfect order rate: 75.0 %" in out
    assert "agg_kpi_daily: 2030-01-02 03:04:05 UTC" in out
    assert [b.label for b in at.download_button] == [
        "Daily KPIs (CSV)",
        "By channel (CSV)",
        "By location (CSV)",
    ]
    assert frame(at, "sku", "return_rate_units_pct")["sku"].tolist() == ["SKU-1"]
    assert sorted(frame(at, "location", "orders_placed")["location"]) == ["WH-MSK", "WH-SPB"]

    at.multiselect(key="kpi_channels").select("ozon").run()
    assert not at.exception
    out = texts(at)
    assert "Orders placed: 10" in out and "On-time shipment rate: 75.0 %" in out


def test_filters_with_no_orders(kpi_env, marts):
    at = page("kpis", MANAGER).run()
    at.date_input(key="kpi_period").set_value(
        (TODAY - timedelta(days=400), TODAY - timedelta(days=300))
    ).run()
    assert not at.exception
    assert "No orders in this period" in texts(at)


def test_unreachable_clickhouse_is_reported(dash_url, monkeypatch):
    monkeypatch.setenv("OMS_CLICKHOUSE_URL", "http://127.0.0.1:9")
    at = page("kpis", MANAGER).run()
    assert not at.exception
    assert any("ClickHouse cannot be read" in e.value for e in at.error)


def test_ops_cannot_open_kpis(kpi_env):
    at = page("kpis", OPS).run()
    assert "The ops role cannot open this page." in texts(at)


def test_missing_analytics_database_is_no_data_yet(dash_url, clickhouse_url, monkeypatch):
    monkeypatch.setenv("OMS_CLICKHOUSE_URL", clickhouse_url)
    monkeypatch.setenv("OMS_CH_DATABASE", "analytics_not_built_yet")
    at = page("kpis", MANAGER).run()
    assert not at.exception
    assert "No KPI data yet" in texts(at)


def test_page_without_the_glossary_says_so(dash_url, clickhouse_url, ch_client, monkeypatch):
    create(ch_client, "agg_kpi_daily", contract_columns("agg_kpi_daily"))
    insert(ch_client, "agg_kpi_daily", [agg_row(D1, "ozon", "WH-MSK", orders_placed=1)])
    monkeypatch.setenv("OMS_CLICKHOUSE_URL", clickhouse_url)
    monkeypatch.setenv("OMS_CH_DATABASE", ch_client.database)
    at = page("kpis", MANAGER).run()
    assert not at.exception
    assert "No KPI definitions yet" in texts(at)


def test_every_glossary_rate_is_the_marts_formula(kpi_client):
    """The page re-computes a rate from the columns the glossary names; the mart computes the same rate
    from the same columns (agg_kpi_daily.sql), and the page reads every one of them."""
    seed = list(csv.DictReader((DBT_PROJECT_DIR / "seeds" / "kpi_glossary.csv").open()))
    agg = (DBT_PROJECT_DIR / "models" / "marts" / "agg_kpi_daily.sql").read_text()
    rated = [k for k in seed if k["numerator_column"]]
    assert len(rated) >= 10
    for k in rated:
        num, den, col = k["numerator_column"], k["denominator_column"], k["mart_column"]
        assert num in dq.KPI_SUMS and den in dq.KPI_SUMS, k["kpi_code"]
        if k["unit"] == "percent":
            formula = rf"safe_pct\('daily\.{num}', 'daily\.{den}'\) }}}}[^,]*?as {col}\b"
        else:
            formula = rf"daily\.{num} / daily\.{den}\).*?\) as {col}\b"
        assert re.search(formula, agg, re.S), f"{k['kpi_code']}: agg_kpi_daily.{col} is not {num} / {den}"
    rates = {r.code: r for r in dq.kpi_rates(kpi_client)}
    assert set(rates) == {k["kpi_code"] for k in rated}
    assert rates["pick_accuracy"] == dq.KpiRate(
        "pick_accuracy",
        "Order picking accuracy",
        "percent",
        "pick_accuracy_pct",
        "orders_picked_accurately",
        "orders_picked",
        "orders picked without error (every pick line picked as expected)",
        "orders picked",
    )
