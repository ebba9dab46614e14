"""The lookup page's change panel and the operations page's amendments tab: the buttons change the order
through the OMS API (the dashboards' login only reads), a refusal is shown and changes nothing."""

from __future__ import annotations

from decimal import Decimal

from oms_ops.amendments import process_versions
from oms_ops.business_config import load_business_config
from oms_ops.orders import NormalizedOrder
from tests.core import factories as f
from tests.dashboards.conftest import OPS, frame, page, texts


def _number(conn, order_id):
    return conn.execute("SELECT order_number FROM oms.orders WHERE order_id = %s", (order_id,)).fetchone()[0]


def _lookup(conn, oid):
    at = page("lookup", OPS).run()
    at.selectbox(key="lookup_mode").select("Order number").run()
    at.text_input(key="lookup_text").input(_number(conn, oid)).run()
    assert not at.exception
    return at


def test_ops_lower_a_quantity_from_the_lookup_page(dash_url, conn):
    f.world(conn)
    oid = f.allocated_order(conn, [("SKU-1", 3)])
    at = _lookup(conn, oid)
    at.text_input(key="chg_reason").input("customer wants one").run()
    at.number_input(key=f"chg_qty_{oid}_1").set_value(1).run()
    at.button(key=f"chg_set_{oid}_1").click().run()
    assert not at.exception
    assert any("quantity 3 → 1" in s.value for s in at.success), texts(at)
    assert f.stock_row(conn, "WH-MSK", "SKU-1") == (10, 1)
    actor, reason = conn.execute(
        """SELECT actor, reason FROM oms.order_events WHERE order_id = %s AND data->>'change' = 'quantity'""",
        (oid,),
    ).fetchone()
    assert actor == "dashboard:olga" and "customer wants one" in reason


def test_a_refused_change_is_shown_and_changes_nothing(dash_url, conn):
    f.world(conn)
    oid = f.allocated_order(conn, [("SKU-1", 2), ("SKU-2", 1)])
    at = _lookup(conn, oid)
    at.number_input(key=f"chg_qty_{oid}_1").set_value(20_000).run()
    at.button(key=f"chg_set_{oid}_1").click().run()
    assert any("limits.max_line_quantity" in e.value and "line 1 (SKU-1)" in e.value for e in at.error), (
        texts(at)
    )
    assert f.stock_row(conn, "WH-MSK", "SKU-1") == (10, 2)


def test_amendments_tab_lists_the_diff_and_reject_keeps_the_order(dash_url, conn):
    f.world(conn)
    oid = f.order(conn, [("SKU-1", 2)], external_id="WEB-42")
    held = conn.execute("SELECT placed_at FROM oms.orders WHERE order_id = %s", (oid,)).fetchone()[0]
    later = NormalizedOrder.model_validate(f.order_dict([("SKU-1", 5)], external_id="WEB-42", placed_at=held))
    res = process_versions(
        conn, "webstore", {"WEB-42": (later, None)}, config=load_business_config(), actor="test"
    )
    assert len(res.amendments) == 1
    aid = res.amendments[0]
    at = page("operations", OPS).run()
    assert not at.exception
    table = frame(at, "amendment", "changes")
    assert table["amendment"].tolist() == [aid] and "lines[1].qty" in table["changes"].iloc[0]
    diff = frame(at, "field", "ours", "theirs")
    assert diff.to_dict("records") == [{"field": "lines[1].qty", "ours": "2", "theirs": "5"}]
    at.text_input(key=f"amend_note_{aid}").input("customer did not ask for it").run()
    at.button(key=f"amend_reject_{aid}").click().run()
    assert not at.exception
    assert conn.execute(
        "SELECT state, resolved_by, note FROM oms.order_amendments WHERE amendment_id = %s", (aid,)
    ).fetchone() == ("rejected", "dashboard:olga", "customer did not ask for it")
    assert conn.execute(
        "SELECT qty, unit_price FROM oms.order_lines WHERE order_id = %s", (oid,)
    ).fetchone() == (
        2,
        Decimal("100.00"),
    )
