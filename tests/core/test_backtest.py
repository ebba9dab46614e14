"""Routing backtest against Postgres: a small period that really happened (orders allocated one by one as they
arrived, a receipt and a cancellation in between), replayed with the live and with a draft configuration.

The history is made by the real operations at wall-clock times (receipts, intake, ``allocate_batch`` with
``now`` = the order's placed_at, ``cancel_orders``), so the ledger's timestamps and the orders' placed_at
interleave as they do in production.
"""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
import yaml
from psycopg import sql
from typer.testing import CliRunner

from oms_ops import cli
from oms_ops.allocation import allocate_batch
from oms_ops.backtest import backtest, read_only
from oms_ops.business_config import DEFAULT_PATH, BusinessConfigError
from oms_ops.orders import cancel_orders
from oms_ops.services.backtest import BacktestError, parse_draft, run_backtest
from tests.core.test_alloc_support import place, receive, sample_config, seed_reference

SKUS = {"KETTLE": 1500, "MUG": 400, "LAMP": 2000}


def draft(edit) -> tuple[str, dict]:
    data = copy.deepcopy(yaml.safe_load(DEFAULT_PATH.read_text(encoding="utf-8")))
    edit(data)
    return yaml.safe_dump(data, allow_unicode=True), data


def rule(data, name):
    return next(r for r in data["routing_rules"] if r["name"] == name)


def make_history(conn):
    """Five web-store courier orders in Moscow (rule moscow_courier: rank, Podolsk first, then the stores).
    Returns (live config, start, end, {name: order_id})."""
    cfg = sample_config()
    seed_reference(conn, cfg, SKUS)
    receive(conn, "WH-MSK-POD", {"KETTLE": 1, "MUG": 1})
    receive(conn, "ST-MSK-1", {"KETTLE": 5})  # 2 kept for walk-in customers
    receive(conn, "WH-SPB-SHU", {"KETTLE": 10})
    start = datetime.now(UTC)
    ids = {}

    def arrive(name, lines):
        t = datetime.now(UTC)
        ids[name] = place(conn, lines, placed_at=t)
        allocate_batch(conn, [ids[name]], config=cfg, now=t)

    arrive("split", [("KETTLE", 2)])  # Podolsk 1 + ST-MSK-1 1
    receive(conn, "WH-MSK-POD", {"KETTLE": 3})  # arrives during the period
    arrive("after_receipt", [("KETTLE", 2)])  # Podolsk alone, thanks to the receipt
    arrive("cancelled", [("MUG", 1)])  # Podolsk's only mug …
    cancel_orders(conn, [ids["cancelled"]], reason="customer changed their mind", actor="test")
    arrive("after_cancel", [("MUG", 1)])  # … given back by the cancellation, taken by this one
    arrive("unfillable", [("LAMP", 1)])  # no lamp anywhere
    end = datetime.now(UTC) + timedelta(seconds=1)
    return cfg, start, end, ids


@pytest.fixture
def history(conn):
    return make_history(conn)


def real_decisions(conn, ids):
    return {
        name: conn.execute(
            "SELECT outcome, locations FROM oms.allocation_decisions WHERE order_id = %s ORDER BY decision_id LIMIT 1",
            (oid,),
        ).fetchone()
        for name, oid in ids.items()
    }


def test_the_live_configuration_reproduces_what_really_happened(conn, history):
    cfg, start, end, ids = history
    real = real_decisions(conn, ids)
    assert real["split"] == ("allocated", ["WH-MSK-POD", "ST-MSK-1"])  # the history is what the test says
    assert real["after_receipt"] == ("allocated", ["WH-MSK-POD"])
    assert real["after_cancel"] == ("allocated", ["WH-MSK-POD"])
    assert real["unfillable"] == ("backordered", [])

    report = backtest(conn, cfg, start=start, end=end)

    assert report.figure("changed_plans")["backtest"] == 0, report.changed
    for f in report.figures:
        assert f["real"] == f["backtest"] or f["figure"] == "changed_plans", f
    assert report.figure("orders")["real"] == 5
    assert report.figure("split_rate")["real"] == 0.25  # 1 of the 4 orders that ship
    assert report.figure("unfillable")["backtest"] == 1
    assert report.figure("shipments")["backtest"] == 5
    load = {r["location"]: r for r in report.locations}
    assert load["WH-MSK-POD"]["backtest_units"] == load["WH-MSK-POD"]["real_units"] == 5
    assert load["ST-MSK-1"]["backtest_shipments"] == load["ST-MSK-1"]["real_shipments"] == 1
    assert report.live_fingerprints == (cfg.fingerprint,) and report.read_only


def test_the_period_and_channels_select_the_orders(conn, history):
    cfg, start, end, ids = history
    before = backtest(conn, cfg, start=start - timedelta(days=1), end=start)
    assert before.figure("orders")["real"] == 0 and before.figure("orders")["backtest"] == 0
    other = backtest(conn, cfg, start=start, end=end, channels=["ozon"])
    assert other.figure("orders")["backtest"] == 0
    web = backtest(conn, cfg, start=start, end=end, channels=["webstore"])
    assert web.figure("orders")["backtest"] == 5


def test_a_draft_strategy_changes_the_figures_in_the_expected_direction(conn, history):
    _, start, end, ids = history
    text, _ = draft(lambda d: rule(d, "moscow_courier").update(strategy="fewest_shipments"))
    report = backtest(conn, parse_draft(text), start=start, end=end)

    # fewest_shipments: the store that holds both kettles ships them in one parcel instead of a rank drain
    assert report.figure("changed_plans")["backtest"] == 1
    assert report.changed[0]["order_id"] == ids["split"]
    assert "ST-MSK-1:KETTLE:2" in report.changed[0]["backtest"]
    split, per_order, cost = (
        report.figure(k) for k in ("split_rate", "shipments_per_order", "carrier_cost_rub")
    )
    assert split["backtest"] < split["real"] and split["backtest"] == 0
    assert per_order["backtest"] < per_order["real"]
    assert cost["backtest"] < cost["real"]
    assert report.figure("unfillable")["backtest"] == report.figure("unfillable")["real"] == 1


def test_a_draft_that_never_splits_leaves_the_kettle_order_to_one_location(conn, history):
    _, start, end, _ = history

    def never(d):
        r = rule(d, "moscow_courier")
        r["split"] = {"policy": "never"}

    report = backtest(conn, parse_draft(draft(never)[0]), start=start, end=end)
    assert report.figure("split_rate")["backtest"] == 0 < report.figure("split_rate")["real"]
    assert report.figure("shipments")["backtest"] == report.figure("shipments")["real"] - 1


def _row_counts(conn) -> dict[str, int]:
    tables = conn.execute(
        """SELECT table_schema, table_name FROM information_schema.tables
           WHERE table_schema IN ('oms', 'raw', 'connectors') AND table_type = 'BASE TABLE' ORDER BY 1, 2"""
    ).fetchall()
    return {
        f"{s}.{t}": conn.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(s, t))).fetchone()[
            0
        ]
        for s, t in tables
    }


def test_the_backtest_writes_nothing_and_runs_read_only(conn, history):
    cfg, start, end, _ = history
    counts = _row_counts(conn)
    stock = conn.execute("SELECT * FROM oms.stock ORDER BY 1, 2").fetchall()

    report = backtest(conn, cfg, start=start, end=end)

    assert report.read_only  # Postgres said transaction_read_only = on inside the backtest's transaction
    assert _row_counts(conn) == counts
    assert conn.execute("SELECT * FROM oms.stock ORDER BY 1, 2").fetchall() == stock
    assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
    # the transaction it reads in refuses writes, whatever the code inside tries
    with pytest.raises(psycopg.errors.ReadOnlySqlTransaction), read_only(conn):
        conn.execute("UPDATE oms.stock SET on_hand = on_hand + 1")
    assert conn.execute("SELECT * FROM oms.stock ORDER BY 1, 2").fetchall() == stock


def test_an_invalid_draft_names_the_field(conn, history):
    text, _ = draft(lambda d: rule(d, "moscow_courier").update(strategy="cheapest"))
    with pytest.raises(BusinessConfigError) as exc:
        parse_draft(text, source="draft.yaml")
    assert "draft.yaml" in str(exc.value) and "routing_rules[4].strategy" in str(exc.value)
    with pytest.raises(BusinessConfigError, match=r"\(yaml\)"):
        parse_draft("routing_rules: [unclosed")
    with pytest.raises(BacktestError, match="^to: "):
        run_backtest(
            conn, sample_config(), start=datetime(2026, 11, 30).date(), end=datetime(2026, 11, 1).date()
        )
    with pytest.raises(BacktestError, match="^channel: unknown nowhere"):
        run_backtest(conn, sample_config(), start=start_day(), end=start_day(), channels=["nowhere"])


def start_day():
    return datetime.now(UTC).date()


def test_the_cli_replays_a_period_and_refuses_an_invalid_draft(conn, db_url, history, tmp_path, monkeypatch):
    cfg, start, end, _ = history
    monkeypatch.setenv("OMS_DATABASE_URL", db_url)
    day_from = (start - timedelta(days=1)).date().isoformat()
    day_to = (end + timedelta(days=1)).date().isoformat()
    good = tmp_path / "draft.yaml"
    good.write_text(draft(lambda d: rule(d, "moscow_courier").update(strategy="fewest_shipments"))[0])
    res = CliRunner().invoke(
        cli.app, ["routing", "backtest", "--from", day_from, "--to", day_to, "--config", str(good), "--json"]
    )
    assert res.exit_code == 0, res.output
    out = json.loads(res.output.strip().splitlines()[-1])
    figures = {f["figure"]: f for f in out["figures"]}
    assert figures["orders"]["backtest"] == 5 and figures["changed_plans"]["backtest"] == 1
    assert out["read_only"] is True

    table = CliRunner().invoke(cli.app, ["routing", "backtest", "--from", day_from, "--to", day_to])
    assert table.exit_code == 0, table.output
    assert "split rate" in table.output and "WH-MSK-POD" in table.output

    bad = tmp_path / "bad.yaml"
    bad.write_text(draft(lambda d: rule(d, "moscow_courier").update(strategy="cheapest"))[0])
    res = CliRunner().invoke(
        cli.app, ["routing", "backtest", "--from", day_from, "--to", day_to, "--config", str(bad)]
    )
    assert res.exit_code == 2
    assert "routing_rules[4].strategy" in res.output and "bad.yaml" in res.output
