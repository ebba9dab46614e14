"""Returns panel of the operations page: a real return is received, inspected and refunded through the panel,
by the OMS API's actions (the dashboards' own login only reads: migration 0016)."""

from __future__ import annotations

from decimal import Decimal

from streamlit.testing.v1 import AppTest

import dashboards.returns_panel  # noqa: F401 - imported here so the script below finds it
from oms_ops import fulfillment as ff
from oms_ops.services import returns as svc
from tests.core import factories as f
from tests.dashboards.conftest import MANAGER, OPS, frame, signed_in, texts

SCRIPT = "from dashboards.returns_panel import returns_panel\nreturns_panel()\n"


def panel(user) -> AppTest:
    return signed_in(AppTest.from_string(SCRIPT, default_timeout=30), user)


def _requested_return(conn) -> tuple[int, object, list[int]]:
    """A delivered order (2 × SKU-1, 1 × SKU-2 from WH-SPB) and an RMA for all of it, as the lookup page opens it."""
    f.world(conn)
    oid, sid = f.shipped_order(conn, [("SKU-1", 2), ("SKU-2", 1)], location="WH-SPB")
    ff.hand_over(conn, [sid], actor="test")
    ff.mark_delivered(conn, [sid], actor="test")
    l1, l2 = f.line_ids(conn, oid)
    rma = svc.request_return(conn, oid, [(l1, 2, "changed_mind"), (l2, 1, "defective")], actor="cs")
    rl = dict(conn.execute("SELECT line_id, return_line_id FROM oms.return_lines").fetchall())
    return oid, rma, [rl[l1], rl[l2]]


def test_empty_and_refused(dash_url):
    at = panel(OPS).run()
    assert not at.exception
    assert "No return in flight." in texts(at) and "Returns requested: 0" in texts(at)
    refused = panel(MANAGER).run()
    assert "The manager role cannot open this page." in texts(refused) and not refused.button


def test_receive_inspect_and_refund_a_return(dash_url, conn):
    oid, rma, (rl1, rl2) = _requested_return(conn)
    at = panel(OPS).run()
    assert not at.exception
    table = frame(at, "rma_number", "stage")
    assert table["rma_number"].tolist() == [rma.rma_number] and table["stage"].tolist() == ["requested"]
    # preset to where the order shipped from (the announced location); one SKU-1 unit is missing from the parcel
    assert at.selectbox(key=f"ret_location_{rma.return_id}").value == "WH-SPB"
    at.number_input(key=f"ret_recv_{rl1}").set_value(1).run()
    at.button(key="ret_receive").click().run()
    assert not at.exception, at.exception
    assert any("received at WH-SPB" in s.value for s in at.success), texts(at)
    assert conn.execute("SELECT state, location_code FROM oms.returns").fetchone() == ("received", "WH-SPB")
    assert conn.execute("SELECT qty_received FROM oms.return_lines ORDER BY return_line_id").fetchall() == [
        (1,),
        (1,),
    ]
    actor = conn.execute(
        "SELECT actor FROM oms.order_events WHERE entity = 'return' AND to_state = 'received'"
    ).fetchone()[0]
    assert actor == "dashboard:olga"

    before = {s: f.stock_row(conn, "WH-SPB", s)[0] for s in ("SKU-1", "SKU-2")}
    at.radio(key=f"ret_disp_{rl1}").set_value("restock")
    at.radio(key=f"ret_disp_{rl2}").set_value("write_off").run()
    at.button(key="ret_inspect").click().run()
    assert not at.exception, at.exception
    assert any("1 unit(s) back in stock at WH-SPB, 1 line(s) written off" in s.value for s in at.success)
    assert conn.execute("SELECT disposition FROM oms.return_lines ORDER BY return_line_id").fetchall() == [
        ("restock",),
        ("write_off",),
    ]
    assert f.stock_row(conn, "WH-SPB", "SKU-1")[0] == before["SKU-1"] + 1
    assert f.stock_row(conn, "WH-SPB", "SKU-2")[0] == before["SKU-2"]

    at.button(key="ret_refund").click().run()
    assert not at.exception, at.exception
    assert any("requested and the return closed" in s.value for s in at.success)
    assert conn.execute("SELECT state FROM oms.returns").fetchone()[0] == "closed"
    assert conn.execute("SELECT amount, order_id FROM oms.refunds").fetchone() == (Decimal("200.00"), oid)
    assert conn.execute("SELECT count(*) FROM oms.outbox WHERE effect = 'payment.refund'").fetchone()[0] == 1
    assert "No return in flight." in texts(at)


def test_a_refused_action_shows_the_domain_error_and_changes_nothing(dash_url, conn):
    _, rma, _ = _requested_return(conn)
    at = panel(OPS).run()
    at.button(key="ret_cancel").click().run()  # no reason given
    assert any("Give a reason" in e.value for e in at.error)
    assert conn.execute("SELECT state FROM oms.returns").fetchone()[0] == "requested"
    # meanwhile the customer withdrew it elsewhere: receiving from the stale view is refused
    svc.cancel_return(conn, rma.return_id, reason="withdrawn by phone", actor="cs")
    at.button(key="ret_receive").click().run()
    assert not at.exception
    assert any("cancelled -> received" in e.value for e in at.error), texts(at)
    assert conn.execute("SELECT state, location_code FROM oms.returns").fetchone() == ("cancelled", None)
    assert "No return in flight." in texts(at)


def test_cancel_from_the_panel(dash_url, conn):
    _, rma, _ = _requested_return(conn)
    at = panel(OPS).run()
    at.text_input(key=f"ret_cancel_reason_{rma.return_id}").input("customer kept it").run()
    at.button(key="ret_cancel").click().run()
    assert not at.exception
    assert conn.execute("SELECT state FROM oms.returns").fetchone()[0] == "cancelled"
    assert "No return in flight." in texts(at)
