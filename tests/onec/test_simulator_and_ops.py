"""The simulated 1C's faults and saved state, return documents, 1C as the stock master, and `oms onec`."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

from typer.testing import CliRunner

from oms_ops import fulfillment as ff
from oms_ops import returns
from oms_ops.onec_cli import onec_app
from simulators import start_simulators
from simulators.faults import FaultRule
from tests.core import factories as f
from tests.onec.test_exchange import _docs, _order_number


def test_a_1c_that_dies_before_confirming_gets_the_batch_again(world, onec):
    number = _order_number(world, f.order(world))
    onec.faults.add(FaultRule(kind="server_error", count=1, method="ONEC", path="1c:success"))
    assert onec.run_session()["confirmed"] is False and onec.unconfirmed == 1
    assert number in onec.run_session()["documents"]
    assert onec.run_session()["received"] == 0


def test_a_corrupted_or_duplicated_file_from_1c_changes_nothing_twice(world, onec):
    oid = f.order(world, payment_status="pending")
    number = _order_number(world, oid)
    onec.run_session()
    onec.faults.add(FaultRule(kind="malformed", count=1, method="ONEC", path="1c:import"))
    broken = onec.send_changes([(number, "paid")])
    assert broken["answers"][-1].startswith("failure\n")
    assert world.execute("SELECT count(*) FROM oms.payments").fetchone()[0] == 0
    onec.faults.add(FaultRule(kind="duplicate", count=1, method="ONEC", path="1c:import"))
    twice = onec.send_changes([(number, "paid")])
    assert twice["answers"][-3].startswith("success\n") and "already imported" in twice["answers"][-1]
    assert world.execute("SELECT count(*) FROM oms.payments WHERE provider = '1c'").fetchone()[0] == 1


def test_the_simulated_1c_keeps_its_documents_across_a_restart(world, url, password, tmp_path):
    number = _order_number(world, f.order(world))
    opts = {"onec": {"exchange_url": url, "password": password, "change_share": 0.0}}
    kw = dict(only=["onec"], manual=True, state_dir=tmp_path / "sim", persist=True, options=opts)
    with start_simulators(**kw) as stack:
        stack["onec"].run_session()
    with start_simulators(**kw) as stack:
        sim = stack["onec"]
        assert number in sim.documents and sim.sessions == 1 and sim.confirmed == 1
        assert sim.run_session()["received"] == 0  # the site remembers the confirmation too


def test_a_received_return_is_a_return_document(world, one_c):
    conn = world
    oid, sid = f.shipped_order(conn, [("SKU-1", 3)])
    ff.hand_over(conn, [sid], actor="t")
    ff.mark_delivered(conn, [sid], actor="t")
    line = f.line_ids(conn, oid)[0]
    rma = returns.request_return(conn, oid, [returns.ReturnLineRequest(line, 2, "defective")], actor="t")
    returns.receive_return(conn, rma.return_id, location_code="WH-MSK", actor="t")
    docs = _docs(one_c.call("query").content)
    d = docs[rma.rma_number]
    assert d.operation == "Возврат товара" and d.amount == Decimal("200.00")
    assert [(i.article, i.qty) for i in d.items] == [("SKU-1", 2)] and d.vat == Decimal("33.33")
    assert d.requisites["Номер заказа"] == _order_number(conn, oid)
    assert docs[_order_number(conn, oid)].requisites["Статус заказа"] == "Доставлен"


def test_stock_comes_from_offers_only_when_1c_is_the_stock_master(db_url, home, tmp_path, monkeypatch, world):
    import secrets as _secrets

    from oms_ops.api.server import ApiServer
    from tests.onec.conftest import OneC

    monkeypatch.setenv("OMS_ONEC_STOCK_MASTER", "true")
    monkeypatch.setenv("OMS_ONEC_PASSWORD", "set-by-the-admin")
    with ApiServer(db_url, signing_key=_secrets.token_urlsafe(32), users_path=tmp_path / "u.yaml") as api:
        c = OneC(api.url + "/1c_exchange")
        assert c.checkauth("1c", "set-by-the-admin", kind="catalog")[0] == "success"
        offers = (
            '<?xml version="1.0" encoding="UTF-8"?><КоммерческаяИнформация ВерсияСхемы="2.10"><ПакетПредложений>'
            "<Предложения><Предложение><Ид>x</Ид><Артикул>SKU-3</Артикул>"
            '<Склад ИдСклада="WH-SPB" КоличествоНаСкладе="4"/></Предложение></Предложения>'
            "</ПакетПредложений></КоммерческаяИнформация>"
        ).encode()
        answer = c.upload("offers.xml", offers, kind="catalog")
        c.client.close()
    assert answer.startswith("success\n"), answer
    on_hand = world.execute("SELECT on_hand FROM oms.stock WHERE location_code = 'WH-SPB' AND sku = 'SKU-3'")
    assert on_hand.fetchone()[0] == 4


def test_oms_onec_status_and_resend(world, onec, db_url, monkeypatch):
    monkeypatch.setenv("OMS_DATABASE_URL", db_url)
    f.order(world)
    onec.run_session(confirm=False)
    runner = CliRunner()
    res = runner.invoke(onec_app, ["status"])
    assert res.exit_code == 0, res.output
    assert '"state": "sent"' in res.output and '"pending_batch": {' in res.output
    res = runner.invoke(onec_app, ["resend", "--since", "2000-01-01"])
    assert res.exit_code == 0 and "resend 1" in res.output, res.output
    assert runner.invoke(onec_app, ["resend", "--since", "2999-01-01"]).exit_code == 1
    assert runner.invoke(onec_app, ["resend", "--since", "yesterday"]).exit_code == 2


def test_a_long_history_goes_to_1c_in_batches_of_at_most_batch_orders(
    db_url, home, tmp_path, monkeypatch, world
):
    import secrets as _secrets

    from oms_ops.api.server import ApiServer
    from oms_ops.services import onec as svc
    from tests.onec.conftest import OneC

    monkeypatch.setenv("OMS_ONEC_BATCH_ORDERS", "2")
    numbers = [_order_number(world, f.order(world)) for _ in range(5)]
    with ApiServer(db_url, signing_key=_secrets.token_urlsafe(32), users_path=tmp_path / "u.yaml") as api:
        c = OneC(api.url + "/1c_exchange")
        password = (home / "secrets" / "onec-exchange").read_text().strip()
        assert c.checkauth("1c", password)[0] == "success"

        def take() -> list[str]:
            got = sorted(_docs(c.call("query").content))
            assert c.call("success").text.startswith("success")
            return got

        assert [take(), take(), take(), take()] == [numbers[:2], numbers[2:4], numbers[4:], []]
        # a resend of the whole history also comes in batches, and is done only when all of it went
        svc.request_resend(world, datetime(2000, 1, 1, tzinfo=UTC), actor="test")
        assert [take(), take(), take(), take()] == [numbers[:2], numbers[2:4], numbers[4:], []]
        c.client.close()


def test_the_generated_credential_is_shown_by_oms_status_secrets(password, home):
    from oms_ops.cli import app

    res = CliRunner().invoke(app, ["status", "--secrets"], env={"OMS_HOME": str(home)})
    assert "onec-exchange" in res.output and password in res.output, res.output
