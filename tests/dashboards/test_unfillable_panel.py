"""Unfillable panel of the operations page: parked orders are listed with their auto-cancel date and cleared
through the OMS API's ``unfillable.clear`` action (the dashboards' own login only reads)."""

from __future__ import annotations

from datetime import timedelta

from streamlit.testing.v1 import AppTest

import dashboards.unfillable_panel  # noqa: F401 - imported here so the script below finds it
from oms_ops import unfillable
from oms_ops.allocation import allocate_batch
from tests.core.test_alloc_support import NOW, place, sample_config, seed_reference
from tests.dashboards.conftest import MANAGER, OPS, frame, signed_in, texts

SCRIPT = "from dashboards.unfillable_panel import unfillable_panel\nunfillable_panel()\n"


def panel(user) -> AppTest:
    return signed_in(AppTest.from_string(SCRIPT, default_timeout=30), user)


def test_a_parked_order_is_listed_and_cleared_from_the_panel(dash_url, conn):
    cfg = sample_config()
    seed_reference(conn, cfg, {"KETTLE": 1500})
    oid = place(conn, [("KETTLE", 2)], region="Татарстан")  # nothing in stock anywhere
    assert allocate_batch(conn, [oid], config=cfg, now=NOW).backordered == [oid]
    assert unfillable.sweep(conn, cfg, now=NOW + timedelta(days=3)).parked == [oid]

    at = panel(OPS).run()
    assert not at.exception, at.exception
    assert "Parked: 1" in texts(at)
    table = frame(at, "order_id", "status", "auto_cancel_at")
    assert table["order_id"].tolist() == [oid] and table["status"].tolist() == ["parked"]

    at.selectbox(key="unfillable_pick").select(oid).run()
    at.text_input(key="unfillable_clear_reason").input("supplier delivery on Friday").run()
    at.button(key="unfillable_clear").click().run()
    assert not at.exception, at.exception
    assert any("keeps waiting as a backorder" in s.value for s in at.success), texts(at)
    [row] = unfillable.parked(conn)
    assert (row["status"], row["cleared_by"], row["clear_reason"]) == (
        "cleared",
        "dashboard:olga",
        "supplier delivery on Friday",
    )
    assert "Parked: 0" in texts(at)


def test_the_manager_cannot_open_it(dash_url):
    at = panel(MANAGER).run()
    assert not at.exception
    assert not at.button
