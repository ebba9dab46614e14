"""The 1C exchange end to end over loopback against real Postgres: the simulated 1C polls the OMS API's
/1c_exchange (checkauth → init → query → success) and sends changed orders back (file → import)."""

from __future__ import annotations

from decimal import Decimal

import httpx

from oms_ops.onec import commerceml as cml
from oms_ops.orders import accept_orders, cancel_orders
from oms_ops.payments import PaymentReport, record_payments
from tests.core import factories as f


def _order_number(conn, order_id: int) -> str:
    return conn.execute("SELECT order_number FROM oms.orders WHERE order_id = %s", (order_id,)).fetchone()[0]


def _docs(xml: bytes) -> dict[str, cml.Document]:
    read = cml.read_documents(cml.parse(xml))
    assert all(r.document is not None for r in read), [r.problems for r in read]
    return {r.document.id: r.document for r in read}


def test_full_cycle_with_the_simulator(world, onec, sim_stack):
    conn = world
    paid = f.order(conn, [("SKU-1", 2)])
    pending = f.order(conn, [("SKU-2", 1)], payment_status="pending")
    n_paid, n_pending = _order_number(conn, paid), _order_number(conn, pending)

    sim_stack.advance(200)  # on its clock 1C runs a session: checkauth → init → query → success
    assert onec.sessions == 1 and onec.confirmed == 1 and onec.last_error is None
    assert {n_paid, n_pending} <= set(onec.documents)
    assert onec.documents[n_paid]["requisites"]["Заказ оплачен"] == "true"
    assert onec.documents[n_pending]["requisites"]["Заказ оплачен"] == "false"
    batch = conn.execute("SELECT state, documents FROM oms.onec_export_batches").fetchall()
    assert batch == [("confirmed", 2)]

    assert onec.run_session()["received"] == 0  # confirmed: not sent again

    # the accountant marks the pending order paid in 1C; 1C sends it back (file + import)
    sent = onec.send_changes([(n_pending, "paid")])
    assert sent["answers"][-1].startswith("success") and "1 applied" in sent["answers"][-1]
    payments = conn.execute(
        "SELECT provider, provider_payment_id, amount, state FROM oms.payments WHERE order_id = %s",
        (pending,),
    ).fetchall()
    assert payments == [("1c", n_pending, Decimal("100.00"), "paid")]
    assert (
        conn.execute("SELECT payment_status FROM oms.orders WHERE order_id = %s", (pending,)).fetchone()[0]
        == "paid"
    )

    # replay-safe: 1C sends the same change again (another file, the same content) — recorded once
    again = onec.send_changes([(n_pending, "paid")])
    assert "0 applied" in again["answers"][-1]
    assert (
        conn.execute("SELECT count(*) FROM oms.payments WHERE order_id = %s", (pending,)).fetchone()[0] == 1
    )

    # the change is an export of its own: the order (now paid) goes to 1C once more; a 1C payment is not echoed
    out = onec.run_session()
    assert (
        n_pending in out["documents"] and onec.documents[n_pending]["requisites"]["Заказ оплачен"] == "true"
    )
    assert not [d for d in out["documents"] if d.startswith("PAY-")]


def test_an_unconfirmed_query_is_sent_again_and_a_confirmed_one_is_not(world, onec):
    conn = world
    numbers = {_order_number(conn, f.order(conn)) for _ in range(3)}
    first = onec.run_session(confirm=False)  # 1C died before `success`
    assert set(first["documents"]) == numbers and not first["confirmed"]
    second = onec.run_session()
    assert set(second["documents"]) == numbers and second["confirmed"]
    assert onec.run_session()["received"] == 0
    states = [r[0] for r in conn.execute("SELECT state FROM oms.onec_export_batches ORDER BY batch_id")]
    assert states == ["superseded", "confirmed", "confirmed"]


def test_documents_round_trip_with_sums_vat_and_flags_to_the_kopeck(world, one_c):
    conn = world
    f.product(conn, "SKU-9")
    order = f.order_dict(shipping_amount=Decimal("299.99"))
    order["lines"] = [
        {"sku": "SKU-1", "qty": 2, "unit_price": Decimal("100.00")},
        {"sku": "SKU-9", "qty": 1, "unit_price": Decimal("333.33")},
    ]
    oid = next(iter(accept_orders(conn, [order], actor="test").ids.values()))
    cancelled = f.order(conn, payment_status="pending")
    cancel_orders(conn, [cancelled], reason="customer", actor="test")
    pay = f.order(conn, payment_status="pending")
    record_payments(
        conn,
        [PaymentReport("yookassa", "pay-777", "paid", Decimal("200.00"), order_id=pay, method="bank_card")],
    )
    assert one_c.call("init").text == "zip=no\nfile_limit=1000000\n"
    r = one_c.call("query")
    assert r.headers["content-type"].startswith("application/xml")
    assert r.content.startswith(b'<?xml version="1.0" encoding="UTF-8"?>')
    root = cml.parse(r.content)
    assert root.get("ВерсияСхемы") == "2.08"
    docs = _docs(r.content)

    d = docs[_order_number(conn, oid)]
    assert d.operation == "Заказ товара" and d.role == "Продавец" and d.currency == "RUB"
    assert d.amount == Decimal("833.32")  # 2 × 100.00 + 333.33 + delivery 299.99
    assert [(i.article, i.qty, i.unit_price, i.amount, i.vat_rate) for i in d.items] == [
        ("SKU-1", 2, Decimal("100.00"), Decimal("200.00"), 20),
        ("SKU-9", 1, Decimal("333.33"), Decimal("333.33"), 20),
        ("DELIVERY", 1, Decimal("299.99"), Decimal("299.99"), 20),
    ]
    # VAT included at 20 %: 33.33 + 55.56 + 50.00, and the document states the sum of its lines
    assert [i.vat for i in d.items] == [Decimal("33.33"), Decimal("55.56"), Decimal("50.00")]
    assert d.stated_vat == Decimal("138.89")
    assert d.requisites["Отменен"] == "false" and d.requisites["Заказ оплачен"] == "true"
    assert d.parties[0].name == "Иван Петров" and "+7" not in d.parties[0].id  # no phone in the document

    c = docs[_order_number(conn, cancelled)]
    assert c.requisites["Отменен"] == "true" and c.requisites["Заказ оплачен"] == "false"
    assert c.requisites["Статус заказа"] == "Отменен"

    payment_id = conn.execute("SELECT payment_id FROM oms.payments").fetchone()[0]
    p = docs[f"PAY-{payment_id}"]
    assert p.operation == "Выплата безналичных денег" and p.amount == Decimal("200.00")
    assert p.requisites["Номер заказа"] == _order_number(conn, pay)
    assert docs[_order_number(conn, pay)].requisites["Дата оплаты"] != ""

    # what we write, our reader reads back the same
    again = _docs(cml.build(list(docs.values()), generated_at=d.at))
    assert {k: (v.amount, v.vat, v.requisites, v.items) for k, v in again.items()} == {
        k: (v.amount, v.vat, v.requisites, v.items) for k, v in docs.items()
    }


def test_wrong_password_or_cookie_is_a_failure_and_exports_nothing(world, url, password):
    f.order(world)
    with httpx.Client(timeout=30) as c:
        wrong = c.get(url, params={"type": "sale", "mode": "checkauth"}, auth=("1c", password + "x"))
        assert wrong.text.startswith("failure\n") and "wrong login or password" in wrong.text
        nobody = c.get(url, params={"type": "sale", "mode": "checkauth"})
        assert nobody.text.startswith("failure\n")
        no_cookie = c.get(url, params={"type": "sale", "mode": "query"})
        assert no_cookie.text.startswith("failure\n") and "checkauth" in no_cookie.text
        c.cookies.set("OMS_1C", "forged")
        forged = c.get(url, params={"type": "sale", "mode": "query"})
        assert forged.text.startswith("failure\n")
        assert c.get(url, params={"type": "sale", "mode": "success"}).text.startswith("failure\n")
    assert world.execute("SELECT count(*) FROM oms.onec_export_batches").fetchone()[0] == 0


def test_hostile_files_fail_naming_the_problem_and_apply_nothing(world, one_c):
    conn = world
    oid = f.order(conn, payment_status="pending")
    number = _order_number(conn, oid)
    doc = (
        f'<КоммерческаяИнформация ВерсияСхемы="2.08"><Документ><Ид>{number}</Ид><Номер>{number}</Номер><Дата>2025-11-26</Дата>'
        "<ХозОперация>Заказ товара</ХозОперация><Сумма>200.00</Сумма><ЗначенияРеквизитов><ЗначениеРеквизита>"
        "<Наименование>Заказ оплачен</Наименование><Значение>true</Значение></ЗначениеРеквизита>"
        "</ЗначенияРеквизитов></Документ></КоммерческаяИнформация>"
    )
    bombs = {
        "doctype.xml": (
            '<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;">]>'
            + doc.replace("200.00", "&lol2;")
        ).encode(),
        "huge.xml": b'<?xml version="1.0" encoding="UTF-8"?>'
        + doc.encode()[:-26]
        + b"<x/>" * 20000
        + b"</\xd0\x9a>",
        "malformed.xml": doc[: len(doc) // 2].encode(),
        "encoding.xml": b'<?xml version="1.0" encoding="UTF-8"?>' + doc.encode("cp1251"),
        "latin.xml": b'<?xml version="1.0" encoding="ISO-8859-1"?><a/>',
        "root.xml": b"<orders/>",
    }
    expected = {
        "doctype.xml": "DOCTYPE or ENTITY declaration is refused",
        "huge.xml": "larger than the limit",
        "malformed.xml": "not well-formed XML",
        "encoding.xml": "not valid utf-8",
        "latin.xml": "encoding 'iso-8859-1' is not accepted",
        "root.xml": "not КоммерческаяИнформация",
    }
    for name, body in bombs.items():
        answer = one_c.upload(name, body)
        assert answer.startswith("failure\n") and expected[name] in answer, (name, answer)
    # a file sent in parts that each fit but together do not is dropped at the part that overflows
    parts = [one_c.client.post(one_c.url, params={"type": "sale", "mode": "file", "filename": "parts.xml"},
                               content=b"<a>" + b" " * 40000).text for _ in range(2)]  # fmt: skip
    assert (
        parts[0].startswith("success\n")
        and parts[1].startswith("failure\n")
        and "larger than the limit" in parts[1]
    )
    assert one_c.call("import", filename="parts.xml").text.startswith("failure\nparts.xml: no such file")
    assert conn.execute("SELECT count(*) FROM oms.payments").fetchone()[0] == 0
    assert (
        conn.execute("SELECT payment_status FROM oms.orders WHERE order_id = %s", (oid,)).fetchone()[0]
        == "pending"
    )
    assert conn.execute("SELECT count(*) FROM oms.onec_uploads").fetchone()[0] == 0
    # a bad document among good ones is quarantined by itself; the good one applies
    mixed = doc.replace(
        "</КоммерческаяИнформация>",
        "<Документ><Номер>NOPE-1</Номер><Дата>x</Дата></Документ></КоммерческаяИнформация>",
    )
    answer = one_c.upload("mixed.xml", mixed.encode())
    assert answer.startswith("success\n") and "1 applied" in answer and "1 refused" in answer
    reasons = [r[0] for r in conn.execute("SELECT reason FROM raw.quarantine WHERE source = '1c'")]
    assert len(reasons) == 1 and "Дата is not a date" in reasons[0]
    assert (
        conn.execute("SELECT payment_status FROM oms.orders WHERE order_id = %s", (oid,)).fetchone()[0]
        == "paid"
    )
    # an unknown file name shape and a mode without a session are refused too
    assert one_c.call("import", filename="../etc/passwd").text.startswith("failure\n")


def test_a_cancel_from_1c_of_a_shipped_order_is_refused_and_kept_for_ops(world, onec):
    conn = world
    shipped, _ = f.shipped_order(conn)
    open_order = f.allocated_order(conn, [("SKU-2", 1)])
    n_shipped, n_open = _order_number(conn, shipped), _order_number(conn, open_order)
    onec.run_session()
    sent = onec.send_changes([(n_shipped, "cancelled"), (n_open, "cancelled")])
    answer = sent["answers"][-1]
    assert answer.startswith("success\n") and "1 applied" in answer and "1 refused" in answer
    assert f.order_state(conn, shipped) == "shipped"
    assert f.order_state(conn, open_order) == "cancelled"
    (reason,) = conn.execute(
        "SELECT reason FROM raw.quarantine WHERE source = '1c' AND state = 'open'"
    ).fetchone()
    assert n_shipped in reason and "cannot be cancelled from 1C" in reason
    result = conn.execute("SELECT result FROM oms.onec_imports WHERE state = 'applied'").fetchone()[0]
    assert result["refused"][0]["document"] == n_shipped


def test_resend_since_exports_again_what_was_confirmed(world, onec):
    from datetime import UTC, datetime, timedelta

    from oms_ops.services import onec as svc

    conn = world
    number = _order_number(conn, f.order(conn))
    onec.run_session()
    assert onec.run_session()["received"] == 0
    svc.request_resend(conn, datetime.now(UTC) - timedelta(hours=1), actor="test")
    assert number in onec.run_session()["documents"]
    assert onec.run_session()["received"] == 0  # the resend is done once its batch is confirmed
    st = svc.status(conn)
    assert st["pending_batch"] is None and st["resends"] == [] and st["batches"][0]["state"] == "confirmed"


def test_catalogue_upload_upserts_products_and_prices_but_not_stock_by_default(world, one_c):
    conn = world
    assert one_c.checkauth("1c", one_c_password(one_c), kind="catalog")[0] == "success"
    import_xml = (
        '<?xml version="1.0" encoding="windows-1251"?><КоммерческаяИнформация ВерсияСхемы="2.08"><Каталог>'
        "<Товары><Товар><Ид>a1</Ид><Артикул>SKU-1</Артикул><Наименование>Чайник новый</Наименование></Товар>"
        "<Товар><Ид>b2</Ид><Артикул>NEW-1</Артикул><Наименование>Кружка</Наименование></Товар>"
        "<Товар><Ид>c3</Ид></Товар></Товары></Каталог></КоммерческаяИнформация>"
    ).encode("cp1251")
    answer = one_c.upload("import.xml", import_xml, kind="catalog")
    assert answer.startswith("success\n") and "2 applied" in answer and "1 refused" in answer, answer
    offers = (
        '<?xml version="1.0" encoding="UTF-8"?><КоммерческаяИнформация ВерсияСхемы="2.08"><ПакетПредложений>'
        "<Предложения><Предложение><Ид>b2</Ид><Цены><Цена><ЦенаЗаЕдиницу>349.90</ЦенаЗаЕдиницу></Цена></Цены>"
        '<Количество>5</Количество><Склад ИдСклада="WH-MSK" КоличествоНаСкладе="5"/></Предложение>'
        "</Предложения></ПакетПредложений></КоммерческаяИнформация>"
    ).encode()
    answer = one_c.upload("offers.xml", offers, kind="catalog")
    assert answer.startswith("success\n") and "1 applied" in answer, answer
    rows = dict(
        conn.execute(
            "SELECT sku, name || ' ' || price FROM oms.products WHERE sku IN ('SKU-1', 'NEW-1')"
        ).fetchall()
    )
    assert rows == {"SKU-1": "Чайник новый 100.00", "NEW-1": "Кружка 349.90"}
    assert conn.execute("SELECT count(*) FROM oms.stock WHERE sku = 'NEW-1'").fetchone()[0] == 0
    result = conn.execute("SELECT result FROM oms.onec_imports WHERE filename = 'offers.xml'").fetchone()[0]
    assert "WMS is the stock master" in result["noted"][0]["stock"]
    assert "already imported" in one_c.upload("offers.xml", offers, kind="catalog")  # the same file: no-op


def one_c_password(one_c) -> str:
    from oms_ops.platform import credentials
    from oms_ops.platform.settings import load_settings

    return credentials.secret(load_settings().home, credentials.ONEC_EXCHANGE)
