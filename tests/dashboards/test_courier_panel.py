"""Courier panel of the operations page: own-courier parcels are handed over and delivered through the panel, by
the OMS API's actions (the dashboards' own login only reads: migration 0016)."""

from __future__ import annotations

from streamlit.testing.v1 import AppTest

import dashboards.courier_panel  # noqa: F401 - imported here so the script below finds it
from oms_ops.services import shipping
from tests.core import factories as f
from tests.dashboards.conftest import MANAGER, OPS, frame, signed_in, texts

SCRIPT = "from dashboards.courier_panel import courier_panel\ncourier_panel()\n"


def panel(user) -> AppTest:
    return signed_in(AppTest.from_string(SCRIPT, default_timeout=30), user)


def _parcels(conn) -> dict[str, int]:
    """Two own-courier parcels (to a door, to a store for pickup) and a CDEK one the panel must not list."""
    f.world(conn)
    _, door = f.shipped_order(conn, [("SKU-1", 1)], carrier="own_courier")
    _, store = f.shipped_order(
        conn,
        [("SKU-2", 1)],
        carrier="own_courier",
        delivery_method="store_pickup",
        pickup_location_code="ST-MSK-1",
    )
    _, cdek = f.shipped_order(conn, [("SKU-3", 1)], carrier="cdek")
    return {"door": door, "store": store, "cdek": cdek}


def _states(conn) -> dict[int, str]:
    return dict(conn.execute("SELECT shipment_id, state FROM oms.shipments").fetchall())


def test_hand_over_and_deliver_from_the_panel(dash_url, conn):
    ids = _parcels(conn)
    at = panel(OPS).run()
    assert not at.exception, at.exception
    assert "Waiting for the courier: 2" in texts(at) and "Out for delivery: 0" in texts(at)
    table = frame(at, "shipment_number", "stage")
    assert len(table) == 2 and set(table["stage"]) == {"waiting for the courier"}
    assert at.get("download_button"), "the route sheet can be downloaded"

    at.multiselect(key="courier_handover_pick").set_value([ids["door"], ids["store"]]).run()
    at.button(key="courier_handover").click().run()
    assert not at.exception, at.exception
    assert any("2 parcel(s) handed to the courier" in s.value for s in at.success), texts(at)
    assert {_states(conn)[i] for i in (ids["door"], ids["store"])} == {"handed_over"}
    assert _states(conn)[ids["cdek"]] == "created"
    assert "Out for delivery: 2" in texts(at)
    actor = conn.execute(
        "SELECT DISTINCT actor FROM oms.order_events WHERE entity = 'shipment' AND to_state = 'handed_over'"
    ).fetchall()
    assert actor == [("dashboard:olga",)]

    at.multiselect(key="courier_delivered_pick").set_value([ids["door"], ids["store"]]).run()
    at.button(key="courier_delivered").click().run()
    assert not at.exception, at.exception
    assert any(
        "1 delivered to the customer; 1 at the store, ready for pickup" in s.value for s in at.success
    ), texts(at)
    states = _states(conn)
    assert (states[ids["door"]], states[ids["store"]]) == ("delivered", "ready_for_pickup")
    assert "No own-courier parcel is waiting or out for delivery." in texts(at)


def test_a_parcel_delivered_elsewhere_meanwhile_is_refused_with_the_reason(dash_url, conn):
    ids = _parcels(conn)
    at = panel(OPS).run()
    at.multiselect(key="courier_handover_pick").set_value([ids["door"]]).run()
    # meanwhile the demo courier took it and delivered it
    shipping.hand_over(conn, [ids["door"]], actor="courier:demo")
    shipping.courier_delivered(conn, [ids["door"]], actor="courier:demo")
    at.button(key="courier_handover").click().run()
    assert not at.exception
    assert any("delivered -> handed_over" in e.value for e in at.error), texts(at)
    assert _states(conn)[ids["door"]] == "delivered"


def test_refused_for_managers(dash_url):
    at = panel(MANAGER).run()
    assert "The manager role cannot open this page." in texts(at) and not at.button
