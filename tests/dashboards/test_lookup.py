"""Order lookup: find by number / channel id / phone / tracking number, see the timeline, shipments with
print forms and returns; open a return or an exchange (ops, admin); managers see customer data masked.

Print forms are rows of the real document table ``connectors.shipment_documents`` (migration 0005), stored as
the CDEK connector stores them; the page finds them through the read model."""

import hashlib

import pytest
import streamlit as st

from dashboards.common import clean_text_input
from oms_ops.fulfillment import hand_over, mark_delivered, record_carrier_booking
from oms_ops.returns import inspect_return, receive_return, request_return
from tests.core import factories as f
from tests.dashboards.conftest import ADMIN, MANAGER, OPS, frame, page, texts


def _number(conn, order_id):
    return conn.execute("SELECT order_number FROM oms.orders WHERE order_id = %s", (order_id,)).fetchone()[0]


def search(user, mode, text):
    at = page("lookup", user).run()
    at.selectbox(key="lookup_mode").select(mode).run()
    at.text_input(key="lookup_text").input(text).run()
    assert not at.exception
    return at


@pytest.fixture
def shipped(conn):
    f.world(conn)
    oid, sid = f.shipped_order(
        conn,
        [("SKU-1", 2), ("SKU-2", 1)],
        external_id="WEB-777",
        customer_phone="+7 915 123-45-12",
        customer_email="ivan@mail.ru",
    )
    record_carrier_booking(
        conn, sid, actor="test", carrier_shipment_id="uuid-1", tracking_number="1234567890"
    )
    hand_over(conn, [sid], actor="test")
    mark_delivered(conn, [sid], actor="test")  # only delivered units can be returned
    return oid, sid


def test_empty_search_shows_the_hint(dash_url):
    at = page("lookup", OPS).run()
    assert not at.exception
    assert "Type an order number" in texts(at)
    assert [s.label for s in at.selectbox][:2] == ["Search by", "Channel"]


@pytest.mark.parametrize(
    ("mode", "text"),
    [
        ("Order number", None),
        ("Channel order id", "WEB-777"),
        ("Phone", "8 (915) 123-45-12"),
        ("Tracking number", "1234567890"),
    ],
)
def test_every_search_mode_finds_the_order_and_its_timeline(dash_url, conn, shipped, mode, text):
    oid, _ = shipped
    number = _number(conn, oid)
    at = search(OPS, mode, text or number)
    out = texts(at)
    assert f"{number} — delivered" in out
    assert "Иван Петров" in out and "+7 915 123-45-12" in out  # ops see the customer
    events = frame(at, "change", "actor")
    assert "∅ → new" in events["change"].tolist()
    assert (
        len(events)
        == conn.execute("SELECT count(*) FROM oms.order_events WHERE order_id = %s", (oid,)).fetchone()[0]
    )
    shipments = frame(at, "shipment_number", "tracking_number")
    assert shipments["tracking_number"].tolist() == ["1234567890"]
    assert "No label or waybill stored" in out


def test_unknown_order_says_so(dash_url, conn):
    f.world(conn)
    at = search(OPS, "Order number", "ORD-99999999")
    assert any("No order found" in w.value for w in at.warning)


def test_manager_sees_masked_customer_data_and_no_actions(dash_url, conn, shipped):
    oid, _ = shipped
    at = search(MANAGER, "Order number", _number(conn, oid))
    out = texts(at)
    assert "И*** П***" in out and "+7 *** ***-**-12" in out and "i***@mail.ru" in out
    assert "Иван Петров" not in out and "123-45-12" not in out and "ivan@mail.ru" not in out
    assert "ул. Тверская" not in out
    assert "Customer data is masked for your role." in out
    assert not [b for b in at.button if b.key == "rma_submit"]


def test_ops_open_a_return(dash_url, conn, shipped):
    oid, _ = shipped
    line1, _line2 = f.line_ids(conn, oid)
    at = search(OPS, "Order number", _number(conn, oid))
    at.number_input(key=f"rma_qty_{line1}").set_value(1).run()
    at.selectbox(key=f"rma_reason_{line1}").select("defective").run()
    at.text_input(key="rma_note").input("screen cracked").run()
    at.button(key="rma_submit").click().run()
    assert not at.exception
    assert any("opened (refund, 1 unit(s))" in s.value for s in at.success)
    kind, state, note, qty, reason = conn.execute(
        """SELECT r.kind, r.state, r.note, rl.qty, rl.reason_code FROM oms.returns r
           JOIN oms.return_lines rl USING (return_id) WHERE r.order_id = %s""",
        (oid,),
    ).fetchone()
    assert (kind, state, note, qty, reason) == ("refund", "requested", "screen cracked", 1, "defective")
    assert frame(at, "rma_number", "kind")["state"].tolist() == ["requested"]


def test_return_without_quantities_is_refused(dash_url, conn, shipped):
    oid, _ = shipped
    at = search(OPS, "Order number", _number(conn, oid))
    at.button(key="rma_submit").click().run()
    assert any("no lines to return" in e.value for e in at.error)
    assert conn.execute("SELECT count(*) FROM oms.returns").fetchone()[0] == 0


def test_exchange_request_then_replacement_order(dash_url, conn, shipped):
    oid, _ = shipped
    line1, _ = f.line_ids(conn, oid)
    at = search(ADMIN, "Order number", _number(conn, oid))
    at.radio(key="rma_kind").set_value("exchange").run()
    at.number_input(key=f"rma_qty_{line1}").set_value(1).run()
    at.selectbox(key=f"rma_reason_{line1}").select("size_fit").run()
    at.button(key="rma_submit").click().run()
    assert any("opened (exchange" in s.value for s in at.success)
    return_id = conn.execute("SELECT return_id FROM oms.returns WHERE order_id = %s", (oid,)).fetchone()[0]
    receive_return(conn, return_id, location_code="WH-MSK", actor="test")
    inspect_return(conn, return_id, "restock", actor="test")
    st.cache_data.clear()  # changed outside the app: as if the read ttl had run out
    at = search(ADMIN, "Order number", _number(conn, oid))
    at.button(key=f"exchange_{return_id}").click().run()
    assert not at.exception
    assert any("replacement order" in s.value for s in at.success)
    parent, state = conn.execute(
        "SELECT parent_order_id, state FROM oms.orders WHERE parent_order_id = %s", (oid,)
    ).fetchone()
    assert parent == oid and state == "new"


def store_document(conn, shipment_id: int, kind: str, pdf: bytes) -> None:
    """A print form as the CDEK connector stores it (oms_ops.connectors.cdek._store_document's row)."""
    conn.execute(
        """INSERT INTO connectors.shipment_documents (shipment_id, kind, carrier_code, print_uuid, content,
                                                     sha256, size_bytes)
           VALUES (%s, %s, 'cdek', %s, %s, %s, %s)""",
        (shipment_id, kind, f"print-{kind}-{shipment_id}", pdf, hashlib.sha256(pdf).hexdigest(), len(pdf)),
    )


def test_stored_label_and_waybill_are_offered_for_download(dash_url, conn, shipped):
    oid, sid = shipped
    store_document(conn, sid, "label", b"%PDF-1.4 label")
    store_document(conn, sid, "waybill", b"%PDF-1.4 waybill")
    number = conn.execute(
        "SELECT shipment_number FROM oms.shipments WHERE shipment_id = %s", (sid,)
    ).fetchone()[0]
    at = search(OPS, "Order number", _number(conn, oid))
    assert [b.label for b in at.download_button] == [f"Label · {number}", f"Waybill · {number}"]
    assert "No label or waybill stored" not in texts(at)


def test_manager_sees_which_documents_exist_but_cannot_download_them(dash_url, conn, shipped):
    oid, sid = shipped
    store_document(conn, sid, "label", b"%PDF-1.4 label with the customer's address")
    at = search(MANAGER, "Order number", _number(conn, oid))
    assert not at.download_button
    assert "Stored print forms: label of SHP-" in texts(at)


def test_returns_section_lists_existing_rmas(dash_url, conn, shipped):
    oid, _ = shipped
    line1, _ = f.line_ids(conn, oid)
    rma = request_return(conn, oid, [(line1, 1, "wrong_item")], actor="test").rma_number
    at = search(MANAGER, "Order number", _number(conn, oid))
    assert frame(at, "rma_number", "kind")["rma_number"].tolist() == [rma]


@pytest.mark.parametrize("typed", ["\x00", "ORD\x00-1", "\ufffd", "\x1b[31m\u200b", "x" * 500])
def test_control_characters_never_break_the_page(dash_url, conn, typed):
    """(A lone surrogate cannot reach the page: the browser's protobuf encoding turns it into U+FFFD.)"""
    f.world(conn)
    at = page("lookup", OPS).run()
    at.text_input(key="lookup_text").input(typed).run()
    assert not at.exception
    out = texts(at)
    assert "No order found" in out or "Type an order number" in out
    if any(c in typed for c in "\x00\x1b"):
        assert "control or invisible character(s) removed" in out


def test_typed_text_is_cleaned_of_control_characters_and_lone_surrogates():
    assert clean_text_input(" ORD\x00-1\u200b\ud800\x7f ") == ("ORD-1", 4)
    assert clean_text_input("+7 915 123-45-12") == ("+7 915 123-45-12", 0)
    assert clean_text_input("x" * 300) == ("x" * 200, 100)


def test_nul_in_the_search_still_finds_the_order(dash_url, conn, shipped):
    oid, _ = shipped
    number = _number(conn, oid)
    at = search(OPS, "Order number", number[:4] + "\x00" + number[4:])
    assert f"{number} — delivered" in texts(at)


def test_managers_cannot_search_by_phone(dash_url, conn, shipped):
    at = page("lookup", MANAGER).run()
    assert "Phone" not in at.selectbox(key="lookup_mode").options
    assert "Phone" in page("lookup", OPS).run().selectbox(key="lookup_mode").options
