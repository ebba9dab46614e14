"""POS drop-folder files, call-centre submissions and WMS snapshots."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from oms_ops import cli
from oms_ops.channels import callcentre, pos
from oms_ops.channels.base import normalize_phone
from oms_ops.connectors import wms
from simulators.callcentre import generate_callcentre_orders
from tests.connectors.conftest import count, settings_of

DAY = 24 * 3600


def _pos_world(world, **faults):
    conn, stack, settings = world(only=["wms", "pos"], rate=2.0, faults={"pos": faults.get("rules", [])})
    stack.advance(DAY)  # the first business day closes at 23:00 Moscow time
    return conn, stack, Path(settings.endpoint("pos").get("drop_dir"))


def test_pos_files_become_offline_orders_and_a_rerun_skips_them(world):
    conn, stack, drop = _pos_world(world)
    files = sorted(p.name for p in drop.glob("sales_*.csv"))
    assert len(files) == 4
    res = pos.ingest_pos(conn, drop)
    assert res.processed == files
    sim_receipts = sum(f["receipts"] for f in stack["pos"].files)
    stored = count(conn, "SELECT count(*) FROM raw.channel_orders WHERE channel_code = 'offline'")
    assert stored == sim_receipts
    orders = count(conn, "SELECT count(*) FROM oms.orders WHERE channel_code = 'offline'")
    assert orders == stored - res.normalized.skipped  # return receipts create nothing
    row = conn.execute(
        "SELECT delivery_method, pickup_location_code, payment_status FROM oms.orders "
        "WHERE channel_code = 'offline' LIMIT 1"
    ).fetchone()
    assert row[0] == "store_pickup" and row[1].startswith("ST-") and row[2] == "paid"
    again = pos.ingest_pos(conn, drop)
    assert again.files == [] and count(conn, "SELECT count(*) FROM oms.orders") == orders
    assert count(conn, "SELECT count(*) FROM connectors.processed_files") == 4


@pytest.mark.parametrize("kind", ["malformed", "duplicate", "out_of_order"])
def test_pos_bad_rows_are_quarantined_duplicates_and_order_do_not_matter(world, kind):
    conn, stack, drop = _pos_world(world, rules=[{"kind": kind, "probability": 1.0, "share": 0.2}])
    clean_conn_receipts = sum(f["receipts"] for f in stack["pos"].files)
    res = pos.ingest_pos(conn, drop)
    quarantined = count(conn, "SELECT count(*) FROM raw.quarantine WHERE source = 'pos'")
    receipts = count(conn, "SELECT count(*) FROM raw.channel_orders WHERE channel_code = 'offline'")
    if kind == "malformed":
        assert quarantined > 0
        reason = conn.execute("SELECT reason FROM raw.quarantine WHERE source = 'pos' LIMIT 1").fetchone()[0]
        assert reason.startswith("line ")
        assert receipts + quarantined == clean_conn_receipts  # every receipt stored or quarantined
    else:
        assert quarantined == 0 and receipts == clean_conn_receipts
        if kind == "duplicate":
            assert sum(f.duplicate_rows for f in res.files) > 0
    lines = conn.execute("""SELECT count(*), count(DISTINCT (order_id, line_no)) FROM oms.order_lines l
                            JOIN oms.orders o USING (order_id) WHERE o.channel_code = 'offline'""").fetchone()
    assert lines[0] == lines[1]


def test_pos_crash_before_commit_leaves_the_file_for_the_next_run(world):
    conn, stack, drop = _pos_world(world)

    def crash():
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        pos.ingest_pos(conn, drop, before_commit=crash)
    assert count(conn, "SELECT count(*) FROM connectors.processed_files") == 0
    assert count(conn, "SELECT count(*) FROM raw.channel_orders") == 0
    pos.ingest_pos(conn, drop)
    assert count(conn, "SELECT count(*) FROM connectors.processed_files") == 4


def test_dot_files_are_ignored(tmp_path, conn):
    (tmp_path / ".sales_X_2025-01-01.csv.tmp").write_text("half")
    assert pos.pending_files(conn, tmp_path) == []


@pytest.mark.parametrize(
    "raw,expected",
    [
        ("8 (916) 123-45-67", "+79161234567"),
        ("+7(916)1234567", "+79161234567"),
        ("9161234567", "+79161234567"),
        ("+7 916 123 45 67", "+79161234567"),
        ("12345", "12345"),
        ("", None),
    ],
)
def test_phone_normalisation(raw, expected):
    assert normalize_phone(raw) == expected


def test_callcentre_messy_input_is_normalised(world):
    conn, stack, _ = world(only=["wms"])
    orders = generate_callcentre_orders(7, 40, messy_share=1.0, catalog=stack.catalog)
    orders.append(
        {
            "external_id": "CC-BAD",
            "entered_at": "2025-03-03T08:00:00Z",
            "lines": [{"sku": "X", "qty": "два", "unit_price": "1"}],
        }
    )
    res = callcentre.submit_orders(conn, orders)
    assert res.accepted == 40 and res.quarantined == 1
    bad = conn.execute("SELECT external_id, reason FROM raw.quarantine").fetchone()
    assert bad[0] == "CC-BAD" and "qty" in bad[1]
    phones = [
        r[0] for r in conn.execute("SELECT customer_phone FROM oms.orders WHERE channel_code = 'callcentre'")
    ]
    assert all(p.startswith("+79") and len(p) == 12 for p in phones)
    skus = {r[0] for r in conn.execute("SELECT sku FROM oms.order_lines")}
    assert all(s == s.strip().upper() for s in skus)
    assert (
        count(conn, "SELECT count(*) FROM oms.orders WHERE state = 'on_hold'") == 0
    )  # SKUs matched the catalog
    again = callcentre.submit_orders(conn, orders)  # the operator presses submit twice
    assert again.accepted == 0 and count(conn, "SELECT count(*) FROM oms.orders") == 40


def test_callcentre_cli_submits_a_file(db_url, world, tmp_path, monkeypatch):
    conn, stack, _ = world(only=["wms"])
    path = tmp_path / "orders.json"
    path.write_text(json.dumps(generate_callcentre_orders(3, 5)), encoding="utf-8")
    monkeypatch.setenv("OMS_DATABASE_URL", db_url)
    result = CliRunner().invoke(cli.app, ["callcentre", "submit", str(path)])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["accepted"] == 5
    result = CliRunner().invoke(cli.app, ["callcentre", "submit", "--generate", "7", "--seed", "3"])
    out = json.loads(result.output)
    assert out["submitted"] == 7 and out["accepted"] == 2 and out["duplicates"] == 0  # 5 of them seen already


def test_wms_snapshot_applies_absolute_counts(world):
    conn, stack, settings = world(only=["wms"])
    sim = stack["wms"]
    assert (
        conn.execute(
            "SELECT on_hand FROM oms.stock WHERE location_code = 'WH-MSK-POD' AND sku = %s",
            (stack.catalog[0].sku,),
        ).fetchone()[0]
        == sim.on_hand["MSK1"][stack.catalog[0].sku]
    )
    sim.adjust("MSK1", stack.catalog[0].sku, 3)
    client = wms.WmsClient.from_endpoint(settings.endpoint("wms"))
    res = wms.sync_location(conn, client, "MSK1", "WH-MSK-POD")
    assert res.status == "applied" and res.adjusted[0][2] == 3
    assert wms.sync_location(conn, client, "MSK1", "WH-MSK-POD").adjusted == []  # nothing moved since


def test_wms_bad_page_is_read_again_then_quarantined(world):
    conn, stack, settings = world(only=["wms"])
    client = wms.WmsClient.from_endpoint(settings.endpoint("wms"))
    stack["wms"].faults.set([{"kind": "malformed", "count": 1, "share": 0.5}])
    snap = wms.read_snapshot(client, "SPB1", page_size=10)
    assert snap.bad == [] and len(snap.counts) == len(stack.catalog)  # the re-read got clean data
    stack["wms"].faults.set([{"kind": "malformed", "probability": 1.0, "share": 0.1}])
    stack["wms"].adjust("SPB1", stack.catalog[1].sku, 0)
    res = wms.sync_location(conn, client, "SPB1", "WH-SPB-SHU")
    assert res.status == "applied"
    assert count(conn, "SELECT count(*) FROM raw.quarantine WHERE source = 'wms'") > 0
    # a partial snapshot never zeroes SKUs it did not list
    zeroed = count(conn, "SELECT count(*) FROM oms.stock WHERE location_code = 'WH-SPB-SHU' AND on_hand = 0")
    assert zeroed <= sum(1 for q in stack["wms"].on_hand["SPB1"].values() if q == 0)


def test_settings_of_a_stack_names_every_system(make_stack):
    stack = make_stack(only=["ozon", "pos"])
    s = settings_of(stack)
    assert s.configured("ozon") and s.configured("pos") and not s.configured("cdek")
