"""Unfillable panel of the operations page (ops, admin): orders the routing cascade gave up on.

An order no routing rule could fill is parked by the worker's ``unfillable_sweep`` (oms_ops/unfillable.py)
with an auto-cancel date; when the date comes the sweep cancels it (refund for a paid order, the channel and
the customer told). Here ops see what is parked, why (the allocation decision's reason: every rule tried) and
when it will be cancelled, and **Clear** an order they can still fill (stock on the way, a manual
arrangement): it keeps waiting as a backorder with no auto-cancel.

Clear is the ``unfillable.clear`` action of the OMS API (``dashboards.common.act``); the list only reads, with
the dashboards' read-only login.
"""

from __future__ import annotations

import pandas as pd
import streamlit as st

from dashboards.common import READ_TTL_S, act, pg, require_database, require_role, run_action, show_flash
from oms_ops.services import unfillable
from oms_ops.users import User

FLASH = "flash_unfillable"
VERDICTS = {"no_route": "no location can ever serve it", "exhausted": "no rule could fill it in time"}


@st.cache_data(ttl=READ_TTL_S, show_spinner=False)
def _parked(url: str, include_closed: bool) -> list[dict]:
    return pg(unfillable.parked, url, include_closed=include_closed, limit=500)


def _clear(url: str, user: User, order_id: int | None) -> None:  # noqa: ARG001 - the API knows the user
    reason = (st.session_state.get("unfillable_clear_reason") or "").strip()

    def do() -> str:
        if order_id is None:
            raise ValueError("Choose the order to keep.")
        if not reason:
            raise ValueError("Say why the order may keep waiting.")
        act("unfillable.clear", order_id=order_id, reason=reason)
        return f"Order {order_id} keeps waiting as a backorder; it will not be cancelled automatically"

    run_action(FLASH, do)


def unfillable_panel() -> None:
    """Parked orders with their auto-cancel date, and Clear for the selected one."""
    user = require_role("operations")
    url = require_database()
    _panel(url, user)


@st.fragment
def _panel(url: str, user: User) -> None:
    show_flash(FLASH)
    closed = st.toggle("Show cleared, cancelled and served ones too", key="unfillable_all")
    rows = _parked(url, closed)
    parked = [r for r in rows if r["status"] == "parked"]
    soon = min((r["auto_cancel_at"] for r in parked if r["auto_cancel_at"]), default=None)
    a, b = st.columns(2)
    a.metric("Parked", len(parked), help="Waiting for an automatic cancellation unless cleared")
    b.metric("Next auto-cancel", f"{soon:%d.%m %H:%M}" if soon else "—")
    if not rows:
        st.success("No order is parked as unfillable.")
        return
    table = [{**r, "verdict": VERDICTS.get(r["verdict"], r["verdict"])} for r in rows]
    st.dataframe(pd.DataFrame(table), hide_index=True, width="stretch", key="unfillable_table")
    labels = {r["order_id"]: f"{r['order_number'] or r['order_id']} · {r['channel_code']}" for r in parked}
    pick = st.selectbox(
        "Order to keep waiting",
        list(labels),
        format_func=lambda oid: labels.get(oid, str(oid)),
        index=None,
        key="unfillable_pick",
    )
    st.text_input("Why it may keep waiting", max_chars=500, key="unfillable_clear_reason")
    st.button(
        "Clear",
        key="unfillable_clear",
        disabled=pick is None,
        on_click=_clear,
        args=(url, user, pick),
        type="primary",
        help="It stays a backorder, served when stock comes, and is never cancelled automatically",
    )
