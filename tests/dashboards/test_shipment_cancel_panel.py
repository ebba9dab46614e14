"""The lookup page's cancel-a-shipment panel: offered for parcels not yet handed over, the button cancels
through the OMS API (the dashboards' login only reads); managers see no button."""

from __future__ import annotations

import streamlit as st

from oms_ops import fulfillment as ff
from tests.core import factories as f
from tests.dashboards.conftest import MANAGER, OPS, page, texts


def _lookup(conn, oid, user=OPS):
    number = conn.execute("SELECT order_number FROM oms.orders WHERE order_id = %s", (oid,)).fetchone()[0]
    at = page("lookup", user).run()
    at.selectbox(key="lookup_mode").select("Order number").run()
    at.text_input(key="lookup_text").input(number).run()
    assert not at.exception
    return at


def test_ops_cancel_a_parcel_from_the_lookup_page(dash_url, conn):
    f.world(conn)
    oid, sid = f.shipped_order(conn, [("SKU-1", 2)])
    at = _lookup(conn, oid)
    assert at.selectbox(key=f"shc_loc_{sid}").value == "WH-MSK"  # its own location first
    at.text_input(key=f"shc_reason_{sid}").input("customer moved").run()
    at.button(key=f"shc_cancel_{sid}").click().run()
    assert not at.exception
    assert any("back at WH-MSK and reserved again" in s.value for s in at.success), texts(at)
    assert f.stock_row(conn, "WH-MSK", "SKU-1") == (10, 2)
    actor, reason = conn.execute(
        """SELECT actor, reason FROM oms.order_events WHERE entity = 'shipment' AND entity_id = %s
           AND to_state = 'cancelled'""",
        (sid,),
    ).fetchone()
    assert actor == "dashboard:olga" and "customer moved" in reason
    assert not [b for b in at.button if b.key == f"shc_cancel_{sid}"]  # cancelled: no longer offered


def test_handed_over_parcels_and_managers_get_no_button(dash_url, conn):
    f.world(conn)
    oid, sid = f.shipped_order(conn, [("SKU-1", 1)])
    assert [b for b in _lookup(conn, oid, MANAGER).button if b.key == f"shc_cancel_{sid}"] == []
    ff.hand_over(conn, [sid], actor="cdek")
    st.cache_data.clear()  # changed outside the app: as if the read ttl had run out
    assert [b for b in _lookup(conn, oid).button if b.key == f"shc_cancel_{sid}"] == []
