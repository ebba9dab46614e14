"""Incoming supply and promise dates against Postgres: FIFO promises across supplies, partial coverage,
pre-orders and their release date, arrival allocating in promise order, idempotent imports, quarantined bad
rows (CSV and 1C), transfers as supply at their destination, and the unfillable sweep leaving promised
orders alone."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pydantic
import pytest

from oms_ops import supply
from oms_ops.allocation import allocate_batch
from oms_ops.errors import ValidationFailed
from oms_ops.services import supply as svc
from oms_ops.unfillable import sweep
from tests.core.test_alloc_support import (
    NOW,
    active_reservations,
    order_state,
    place,
    receive,
    sample_config,
    seed_reference,
    stock,
    violations,
)

SKUS = {"KETTLE": 1500, "MUG": 400, "TEA": 250}
TODAY = date(2025, 11, 26)  # NOW in Moscow
MSK, SPB = "WH-MSK-POD", "WH-SPB-SHU"


@pytest.fixture
def cfg(conn):
    config = sample_config()
    seed_reference(conn, config, SKUS)
    return config


def at(minutes: int) -> datetime:
    return datetime(2025, 11, 26, 5, 0, tzinfo=UTC) + timedelta(minutes=minutes)


def po(ext, location, day, lines, **kw) -> dict:
    return {
        "external_id": ext,
        "location_code": location,
        "expected_date": day,
        "lines": [{"sku": s, "qty": q} for s, q in lines.items()],
        **kw,
    }


def backordered(conn, cfg, *orders) -> list[int]:
    """Place the orders ((lines, placed minute, extra fields)) and run the allocator: they wait."""
    ids = [place(conn, lines, placed_at=at(m), **kw) for lines, m, kw in orders]
    res = allocate_batch(conn, config=cfg, now=NOW)
    assert sorted(res.backordered) == sorted(ids), res
    return ids


def promises(conn, order_id) -> list[tuple]:
    return [
        (p["sku"], p["qty"], p["promised_date"], p["supply"], p["covered_by"])
        for p in supply.order_promises(conn, order_id)
    ]


def quarantined(conn, source) -> list[tuple[str | None, str]]:
    return conn.execute(
        "SELECT external_id, reason FROM raw.quarantine WHERE source = %s ORDER BY quarantine_id", (source,)
    ).fetchall()


def test_fifo_promises_across_two_supplies_first_covering_supply_wins(conn, cfg):
    a, b, c, d = backordered(
        conn,
        cfg,
        ([("KETTLE", 3)], 0, {}),
        ([("KETTLE", 2)], 10, {}),
        ([("KETTLE", 4)], 20, {}),
        ([("KETTLE", 1)], 30, {}),
    )
    supply.upsert_supplies(
        conn,
        [po("PO-1", MSK, "2025-11-28", {"KETTLE": 4}), po("PO-2", SPB, "2025-12-01", {"KETTLE": 5})],
        source="manual",
    )
    res = supply.recompute_promises(conn, cfg, now=NOW)

    # a takes 3 of PO-1; b does not fit the 1 left and takes PO-2 (3 left); c (4) fits neither; d (1) fits
    # what is left of PO-1 — a line that cannot be covered does not block a later one that can
    assert promises(conn, a) == [("KETTLE", 3, date(2025, 11, 28), "PO-1", "supply")]
    assert promises(conn, b) == [("KETTLE", 2, date(2025, 12, 1), "PO-2", "supply")]
    assert promises(conn, c) == [("KETTLE", 4, None, None, None)]
    assert "no expected supply" in supply.order_promises(conn, c)[0]["reason"]
    assert promises(conn, d) == [("KETTLE", 1, date(2025, 11, 28), "PO-1", "supply")]
    assert (res.promised, res.unpromised, res.changed) == (3, 1, 3)
    # each new promise is an order event on the line; recomputing without a change adds none
    ev = conn.execute(
        """SELECT from_state, to_state, reason, data->>'promised_date', data->>'supply' FROM oms.order_events
           WHERE order_id = %s AND entity = 'order_line' AND reason LIKE 'promise%%'""",
        (a,),
    ).fetchall()
    assert ev == [("backordered", "backordered", ev[0][2], "2025-11-28", "PO-1")] and "PO-1" in ev[0][2]
    assert supply.recompute_promises(conn, cfg, now=NOW).changed == 0
    listed = {s["external_id"]: s for s in supply.list_supplies(conn)}
    assert listed["PO-1"]["lines"] == [{"sku": "KETTLE", "qty": 4, "qty_received": 0, "promised": 4}]
    assert listed["PO-2"]["lines"][0]["promised"] == 2
    # the worked example of docs/allocation.md goes on: PO-1 arrives, a then d are allocated, c still waits
    _, arrival = svc.receive(conn, cfg, "PO-1", actor="ops", now=NOW)
    assert arrival.allocated == [a, d] and order_state(conn, c)[0] == "backordered"
    assert [r[1] for r in active_reservations(conn)] == [MSK, MSK]
    assert violations(conn) == []


def test_overdue_supply_promises_today_and_a_cancelled_one_withdraws_its_promises(conn, cfg):
    (a,) = backordered(conn, cfg, ([("MUG", 2)], 0, {}))
    supply.upsert_supplies(conn, [po("PO-LATE", MSK, "2025-11-20", {"MUG": 5})], source="manual")
    supply.recompute_promises(conn, cfg, now=NOW)
    (p,) = supply.order_promises(conn, a)
    assert p["promised_date"] == TODAY and "overdue" in p["reason"]

    svc.cancel(conn, cfg, "PO-LATE", actor="ops")
    assert promises(conn, a) == [("MUG", 2, None, None, None)]
    reasons = [
        r[0]
        for r in conn.execute(
            "SELECT reason FROM oms.order_events WHERE order_id = %s AND reason LIKE 'promise%%' ORDER BY event_id",
            (a,),
        )
    ]
    assert reasons[0].startswith("promise: 2025-11-26") and reasons[1].startswith("promise withdrawn")


def test_preorder_waits_for_release_with_a_promise_then_is_allocated(conn, cfg):
    supply.set_preorder(conn, "TEA", date(2025, 12, 10))
    receive(conn, MSK, {"TEA": 10})
    e = place(conn, [("TEA", 2)], placed_at=at(0))
    f = place(conn, [("TEA", 9)], placed_at=at(5))
    res = allocate_batch(conn, config=cfg, now=NOW)
    # accepted and waiting, nothing reserved although 10 are on hand
    assert sorted(res.backordered) == [e, f] and stock(conn)[(MSK, "TEA")] == (10, 0)
    supply.upsert_supplies(conn, [po("PO-TEA", MSK, "2025-11-28", {"TEA": 20})], source="manual")
    supply.recompute_promises(conn, cfg, now=NOW)
    # e waits only for the release (stock on hand); f needs more than is left and takes the PO, whose
    # earlier date is moved to the release date
    assert promises(conn, e) == [("TEA", 2, date(2025, 12, 10), None, "stock")]
    assert promises(conn, f) == [("TEA", 9, date(2025, 12, 10), "PO-TEA", "supply")]
    assert all(p["preorder"] for p in supply.order_promises(conn, f))

    released = datetime(2025, 12, 10, 6, 0, tzinfo=UTC)
    res = allocate_batch(conn, config=cfg, now=released)
    assert res.allocated == [e] and order_state(conn, f)[0] == "backordered"
    supply.recompute_promises(conn, cfg, now=released)
    # from the release date on, f is an ordinary backorder still waiting for PO-TEA
    assert promises(conn, e) == [] and promises(conn, f) == [
        ("TEA", 9, date(2025, 12, 10), "PO-TEA", "supply")
    ]
    assert supply.order_promises(conn, f)[0]["preorder"] is False
    assert violations(conn) == []


def test_arrival_allocates_promised_orders_in_promise_order(conn, cfg):
    a, b = backordered(conn, cfg, ([("KETTLE", 2)], 0, {}), ([("KETTLE", 2)], 10, {}))
    supply.upsert_supplies(conn, [po("PO-7", MSK, "2025-11-28", {"KETTLE": 3})], source="manual")
    c = place(conn, [("KETTLE", 1)], placed_at=at(20))
    allocate_batch(conn, config=cfg, now=NOW)
    supply.recompute_promises(conn, cfg, now=NOW)
    assert [promises(conn, o)[0][3] for o in (a, b, c)] == ["PO-7", None, "PO-7"]

    rec, arrival = svc.receive(conn, cfg, "PO-7", actor="ops", now=NOW)

    assert rec.applied and rec.state == "received" and rec.received == {"KETTLE": 3}
    assert arrival.promised_orders == [a, c] and arrival.allocated == [a, c]
    assert order_state(conn, a)[0] == order_state(conn, c)[0] == "allocated"
    assert order_state(conn, b)[0] == "backordered" and promises(conn, b) == [("KETTLE", 2, None, None, None)]
    # a was served before c: its reservation came first
    held = conn.execute("SELECT order_id FROM oms.reservations ORDER BY reservation_id").fetchall()
    assert [r[0] for r in held] == [a, c]
    assert stock(conn)[(MSK, "KETTLE")] == (3, 3)
    ledger = conn.execute(
        "SELECT kind, on_hand_delta, reference FROM oms.inventory_ledger WHERE kind = 'receipt'"
    ).fetchall()
    assert ledger == [("receipt", 3, "supply:manual:PO-7")]
    # the same receipt again changes nothing; a closed supply receives nothing more
    again, none = svc.receive(conn, cfg, "PO-7", actor="ops", now=NOW)
    assert not again.applied and none is None and stock(conn)[(MSK, "KETTLE")] == (3, 3)
    with pytest.raises(ValidationFailed, match="received"):
        svc.receive(conn, cfg, "PO-7", {"KETTLE": 1}, reference="another", actor="ops")
    assert violations(conn) == []


def test_partial_receipt_and_every_problem_named(conn, cfg):
    supply.upsert_supplies(conn, [po("PO-8", MSK, "2025-11-28", {"KETTLE": 5, "MUG": 2})], source="manual")
    with pytest.raises(ValidationFailed) as exc:
        svc.receive(conn, cfg, "PO-8", {"KETTLE": 6, "TEA": 1, "MUG": 0}, actor="ops")
    assert len(exc.value.problems) == 3 and stock(conn) == {}
    rec, _ = svc.receive(conn, cfg, "PO-8", {"KETTLE": 2}, reference="RCPT-1", actor="ops", now=NOW)
    assert rec.state == "partially_received"
    (s,) = supply.list_supplies(conn)
    assert s["state"] == "partially_received" and s["lines"][0]["qty_received"] == 2


def test_wms_supplies_are_not_received_by_hand(conn, cfg):
    supply.upsert_supplies(conn, [po("IN-1", MSK, "2025-11-28", {"KETTLE": 5})], source="wms")
    with pytest.raises(ValidationFailed, match="twice"):
        svc.receive(conn, cfg, "IN-1", actor="ops")


def test_csv_import_is_idempotent_and_updates_what_changed(conn, cfg, tmp_path):
    (a,) = backordered(conn, cfg, ([("MUG", 2)], 0, {}))
    path = tmp_path / "po.csv"
    path.write_text(
        "external_id,kind,location_code,from_location_code,supplier,expected_date,sku,qty\n"
        "PO-100,purchase_order,WH-MSK-POD,,ООО Чайник,2025-12-02,MUG,10\n"
        "PO-100,purchase_order,WH-MSK-POD,,ООО Чайник,2025-12-02,KETTLE,4\n",
        encoding="utf-8",
    )
    first = svc.import_file(conn, cfg, path, now=NOW)
    assert first.result.inserted == ["PO-100"] and first.promises.promised == 1
    second = svc.import_file(conn, cfg, path, now=NOW)
    assert (second.result.inserted, second.result.updated, second.result.unchanged) == ([], [], ["PO-100"])
    assert second.promises.changed == 0
    assert conn.execute("SELECT count(*) FROM oms.supply_lines").fetchone()[0] == 2

    path.write_text(path.read_text(encoding="utf-8").replace("2025-12-02", "05.12.2025"), encoding="utf-8")
    third = svc.import_file(conn, cfg, path, now=NOW)
    assert third.result.updated == ["PO-100"] and third.promises.changed == 1
    assert promises(conn, a) == [("MUG", 2, date(2025, 12, 5), "PO-100", "supply")]


def test_bad_csv_rows_are_quarantined_one_by_one_and_the_rest_imported(conn, cfg, tmp_path):
    path = tmp_path / "po.csv"
    path.write_text(
        "external_id;location_code;expected_date;sku;qty;kind\n"
        "PO-1;WH-MSK-POD;2025-12-02;MUG;10;\n"
        "PO-1;WH-MSK-POD;2025-12-02;KETTLE;abc;\n"  # 3: qty
        "PO-1;WH-MSK-POD;2025-12-09;TEA;3;\n"  # 4: another date than PO-1's first row
        "PO-2;WH-NOWHERE;2025-12-02;MUG;1;\n"  # 5: unknown location (the whole document)
        "PO-3;WH-MSK-POD;someday;MUG;1;\n"  # 6: date
        "PO-4;WH-MSK-POD;2025-12-03;NO-SUCH;1;\n"  # 7: unknown sku (the line by itself)
        "PO-4;WH-MSK-POD;2025-12-03;MUG;2;\n"
        "PO-5;WH-MSK-POD;2025-12-03;MUG;1;boat\n",  # 9: kind
        encoding="utf-8",
    )
    rep = svc.import_file(conn, cfg, path, now=NOW)
    assert rep.result.inserted == ["PO-1", "PO-4"] and len(rep.result.quarantined) == 6
    bad = quarantined(conn, "supply:csv")
    reasons = " | ".join(r for _, r in bad)
    for needle in ("po.csv:3: qty", "po.csv:4: expected_date differ", "unknown location 'WH-NOWHERE'",
                   "po.csv:6: expected_date", "PO-4: unknown SKU NO-SUCH", "po.csv:9: kind"):  # fmt: skip
        assert needle in reasons, (needle, reasons)
    assert [s["lines"] for s in supply.list_supplies(conn)] == [
        [{"sku": "MUG", "qty": 10, "qty_received": 0, "promised": 0}],
        [{"sku": "MUG", "qty": 2, "qty_received": 0, "promised": 0}],
    ]
    with pytest.raises(ValidationFailed, match="missing column"):
        (tmp_path / "x.csv").write_text("external_id,sku\nA,B\n", encoding="utf-8")
        svc.import_file(conn, cfg, tmp_path / "x.csv")


CML = """<?xml version="1.0" encoding="UTF-8"?>
<КоммерческаяИнформация ВерсияСхемы="2.08" ДатаФормирования="2025-11-26T09:00:00">
  <Документ>
    <Ид>9f1c-po-0042</Ид><Номер>ПО-42</Номер><Дата>2025-11-25</Дата>
    <ХозОперация>Заказ товара</ХозОперация><Роль>Покупатель</Роль><Валюта>RUB</Валюта><Курс>1</Курс>
    <Контрагенты><Контрагент><Ид>s1</Ид><Наименование>ООО «Чайный двор»</Наименование><Роль>Продавец</Роль></Контрагент></Контрагенты>
    <Товары>
      <Товар><Ид>t1</Ид><Артикул>MUG</Артикул><Наименование>Кружка</Наименование><Количество>12.000</Количество></Товар>
      <Товар><Ид>t2</Ид><Артикул>KETTLE</Артикул><Количество>много</Количество></Товар>
    </Товары>
    <ЗначенияРеквизитов>
      <ЗначениеРеквизита><Наименование>Склад</Наименование><Значение>WH-MSK-POD</Значение></ЗначениеРеквизита>
      <ЗначениеРеквизита><Наименование>Дата поступления</Наименование><Значение>03.12.2025</Значение></ЗначениеРеквизита>
    </ЗначенияРеквизитов>
  </Документ>
  <Документ>
    <Ид>9f1c-tr-0007</Ид><Номер>ПМ-7</Номер><ХозОперация>Заказ товара</ХозОперация><Роль>Покупатель</Роль>
    <Товары><Товар><Артикул>KETTLE</Артикул><Количество>2</Количество></Товар></Товары>
    <ЗначенияРеквизитов>
      <ЗначениеРеквизита><Наименование>Вид операции</Наименование><Значение>Перемещение товаров</Значение></ЗначениеРеквизита>
      <ЗначениеРеквизита><Наименование>Склад</Наименование><Значение>WH-MSK-POD</Значение></ЗначениеРеквизита>
      <ЗначениеРеквизита><Наименование>Склад отправитель</Наименование><Значение>WH-SPB-SHU</Значение></ЗначениеРеквизита>
      <ЗначениеРеквизита><Наименование>Дата поступления</Наименование><Значение>2025-11-29</Значение></ЗначениеРеквизита>
    </ЗначенияРеквизитов>
  </Документ>
  <Документ>
    <Ид>order-1</Ид><ХозОперация>Заказ товара</ХозОперация><Роль>Продавец</Роль>
  </Документ>
  <Документ>
    <Ид>9f1c-po-0043</Ид><ХозОперация>Заказ товара</ХозОперация><Роль>Покупатель</Роль>
    <Товары><Товар><Артикул>MUG</Артикул><Количество>1</Количество></Товар></Товары>
  </Документ>
</КоммерческаяИнформация>
"""


def test_1c_purchase_orders_import_with_bad_lines_quarantined(conn, cfg, tmp_path):
    path = tmp_path / "orders.xml"
    path.write_text(CML, encoding="utf-8")
    rep = svc.import_file(conn, cfg, path, now=NOW)
    assert sorted(rep.result.inserted) == ["9f1c-po-0042", "9f1c-tr-0007"]
    got = {s["external_id"]: s for s in supply.list_supplies(conn)}
    po42, tr7 = got["9f1c-po-0042"], got["9f1c-tr-0007"]
    assert (po42["source"], po42["kind"], po42["supplier"], po42["expected_date"]) == (
        "1c",
        "purchase_order",
        "ООО «Чайный двор»",
        date(2025, 12, 3),
    )
    assert [(ln["sku"], ln["qty"]) for ln in po42["lines"]] == [("MUG", 12)]
    assert (tr7["kind"], tr7["from_location_code"], tr7["location_code"]) == ("transfer", SPB, MSK)
    # the sales order (Роль Продавец) is not a supply; the bad goods line and the document without a
    # warehouse and date are kept with the reason
    bad = quarantined(conn, "supply:1c")
    assert [e for e, _ in bad] == ["9f1c-po-0042", "9f1c-po-0043"]
    assert "Количество" in bad[0][1] and "Склад" in bad[1][1] and "Дата поступления" in bad[1][1]
    assert svc.import_file(conn, cfg, path, now=NOW).result.unchanged == sorted(rep.result.inserted)


def test_transfer_counts_as_supply_at_its_destination_only(conn, cfg):
    # a marketplace order assigned to the Podolsk warehouse can only be served from there
    (a,) = backordered(conn, cfg, ([("KETTLE", 2)], 0, {"channel": "ozon", "fulfilment": MSK}))
    supply.upsert_supplies(
        conn,
        [
            po("PO-SPB", SPB, "2025-11-27", {"KETTLE": 10}),
            po("TR-1", MSK, "2025-11-30", {"KETTLE": 2}, kind="transfer", from_location_code=SPB),
        ],
        source="manual",
    )
    supply.recompute_promises(conn, cfg, now=NOW)
    assert promises(conn, a) == [("KETTLE", 2, date(2025, 11, 30), "TR-1", "supply")]
    with pytest.raises(pydantic.ValidationError, match="transfer needs from_location_code"):
        supply.SupplyIn.model_validate(po("TR-2", MSK, "2025-11-30", {"KETTLE": 1}, kind="transfer"))


def test_fully_promised_orders_are_not_parked_as_unfillable(conn, cfg):
    # courier orders to Kazan the sample's cascade cannot fill now ('exhausted': they wait for stock)
    a = place(conn, [("KETTLE", 2)], region="Татарстан", placed_at=at(0))
    b = place(conn, [("MUG", 2)], region="Татарстан", placed_at=at(1))
    res = allocate_batch(conn, config=cfg, now=NOW)
    assert {o.unfillable for o in res.outcomes} == {"exhausted"}
    supply.upsert_supplies(conn, [po("PO-9", "WH-KZN", "2025-12-01", {"KETTLE": 2})], source="manual")
    supply.recompute_promises(conn, cfg, now=NOW)
    assert promises(conn, a)[0][3] == "PO-9"
    res = sweep(conn, cfg, now=NOW + timedelta(days=10))
    # a waits for PO-9 with a date; b has no promise and is parked as before
    assert res.parked == [b]


def test_the_cli_imports_lists_promises_and_receives(conn, cfg, db_url, monkeypatch, tmp_path):
    from typer.testing import CliRunner

    from oms_ops.cli import app

    (a,) = backordered(conn, cfg, ([("MUG", 2)], 0, {}))
    number = conn.execute("SELECT order_number FROM oms.orders WHERE order_id = %s", (a,)).fetchone()[0]
    path = tmp_path / "po.csv"
    path.write_text(
        "external_id,location_code,expected_date,sku,qty\nPO-CLI,WH-MSK-POD,2030-01-15,MUG,5\n"
        "PO-CLI,WH-MSK-POD,2030-01-15,KETTLE,zero\n",
        encoding="utf-8",
    )
    monkeypatch.setenv("OMS_DATABASE_URL", db_url)
    runner = CliRunner()
    out = runner.invoke(app, ["supply", "import", str(path)])
    assert out.exit_code == 0 and '"inserted": ["PO-CLI"]' in out.output and "quarantined" in out.output
    out = runner.invoke(app, ["supply", "list"])
    assert out.exit_code == 0 and "PO-CLI" in out.output and "MUG 0/5 (promised 2)" in out.output
    out = runner.invoke(app, ["supply", "promise", number])
    assert out.exit_code == 0 and "2030-01-15" in out.output and "PO-CLI" in out.output
    out = runner.invoke(app, ["supply", "receive", "PO-CLI", "--line", "MUG=5"])
    assert out.exit_code == 0 and '"state": "received"' in out.output, out.output
    assert order_state(conn, a)[0] == "allocated"
    out = runner.invoke(app, ["supply", "receive", "PO-CLI", "--line", "MUG=1", "--reference", "R2"])
    assert out.exit_code == 1 and "received" in out.output
    out = runner.invoke(app, ["supply", "preorder", "TEA", "--release-date", "2030-02-01"])
    assert out.exit_code == 0 and "pre-order until 2030-02-01" in out.output


def test_the_dashboards_login_only_reads_supply(conn, cfg):
    import psycopg

    supply.upsert_supplies(conn, [po("PO-R", MSK, "2025-12-01", {"MUG": 1})], source="manual")
    with conn.transaction():
        conn.execute("SET LOCAL ROLE oms_dashboard")
        assert conn.execute("SELECT count(*) FROM oms.supplies").fetchone()[0] == 1
        conn.execute("SELECT count(*) FROM oms.supply_lines, oms.line_promises").fetchone()
    with pytest.raises(psycopg.errors.InsufficientPrivilege), conn.transaction():
        conn.execute("SET LOCAL ROLE oms_dashboard")
        conn.execute("UPDATE oms.supplies SET expected_date = expected_date + 1")


@pytest.mark.parametrize("name", ["supply.csv", "supply-1c.xml"])
def test_the_sample_files_parse_without_a_rejected_row(name):
    from tests.paths import ROOT

    fmt, parsed = svc.parse_file(ROOT / "config" / "samples" / name)
    assert parsed.rejected == [] and parsed.documents
    assert all(supply.SupplyIn.model_validate(d) for d in parsed.documents)


def test_overpromised_supply_is_reported_until_promises_are_computed_again(conn, cfg):
    backordered(conn, cfg, ([("KETTLE", 3)], 0, {}))
    supply.upsert_supplies(conn, [po("PO-O", MSK, "2025-11-28", {"KETTLE": 3})], source="manual")
    supply.recompute_promises(conn, cfg, now=NOW)
    assert supply.overpromised(conn) == []
    # the supplier cuts the order to 2: the 3 promised units no longer fit until the next computation
    supply.upsert_supplies(conn, [po("PO-O", MSK, "2025-11-28", {"KETTLE": 2})], source="manual")
    (bad,) = supply.overpromised(conn)
    assert (bad["external_id"], bad["promised"], bad["outstanding"]) == ("PO-O", 3, 2)
    supply.recompute_promises(conn, cfg, now=NOW)
    assert supply.overpromised(conn) == []
