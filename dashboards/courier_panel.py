"""Courier panel of the operations page (ops, admin): the own courier's parcels and its route sheet.

CDEK reports by itself when it takes a parcel and when it delivers it; the own courier (every carrier without
an API, e.g. ``own_courier`` in Moscow) has nobody to report, so its parcels would stay ``created`` for ever.
Here ops record both events: **Hand over** when the courier takes parcels (the shipment is handed over — the
order has *shipped*, as the KPIs count it) and **Delivered** when the courier brings them where they go (the
customer's door → delivered; a store for pickup → ready for pickup there). The route sheet is the courier's
paper for a location and day (``services.shipping.courier_route_sheet``, a PDF). In the demo the always-on
worker plays the courier (``services.shipping.advance_own_courier``); a courier app would call the same two
use cases.

Both actions are ``shipping.*`` actions of the OMS API (``dashboards.common.act``: the API calls the
``oms_ops.services.shipping`` function under the OMS's own login); the route sheet only reads, with the
dashboards' read-only login. Each shows its outcome and clears the caches, like the other panels.
"""

from __future__ import annotations

from datetime import date, datetime
from zoneinfo import ZoneInfo

import pandas as pd
import streamlit as st

from dashboards.common import (
    READ_TTL_S,
    act,
    md,
    pg,
    require_database,
    require_role,
    run_action,
    show_flash,
)
from dashboards.masking import mask_rows
from oms_ops import dashboard_queries as dq
from oms_ops import read_model
from oms_ops.services import shipping
from oms_ops.users import User

FLASH = "flash_courier"
#: the day of a route sheet is a business day (the locations' reporting zone)
BUSINESS_TZ = ZoneInfo("Europe/Moscow")
STAGE_LABELS = {"awaiting_handover": "waiting for the courier", "out_for_delivery": "out for delivery"}


@st.cache_data(ttl=READ_TTL_S, show_spinner=False)
def _shipments(url: str) -> list[dict]:
    return pg(read_model.own_courier_shipments, url)


@st.cache_data(ttl=60, show_spinner=False)
def _locations(url: str) -> list[str]:
    return [r["location_code"] for r in pg(dq.active_locations, url, kinds=["warehouse", "store"])]


# -- actions ---------------------------------------------------------------------------------------------------


def _labeller(rows: dict[int, dict]):
    """``format_func`` of a parcel picker (a parcel that left the list since it was picked shows its id)."""

    def label(shipment_id: int) -> str:
        row = rows.get(shipment_id)
        if row is None:
            return f"shipment {shipment_id}"
        return f"{row['shipment_number']} · {row['order_number']} · {row['city'] or '—'}"

    return label


def _hand_over(url: str, user: User, ids: list[int]) -> None:
    st.session_state.pop("courier_handover_pick", None)  # the picked parcels leave this list

    def do() -> str:
        if not ids:
            raise ValueError("Choose the parcels the courier takes.")
        moved = act("shipping.hand_over", shipment_ids=ids)["moved"]
        return f"{len(moved)} parcel(s) handed to the courier: shipped" if moved else "Already handed over."

    run_action(FLASH, do)


def _delivered(url: str, user: User, ids: list[int]) -> None:
    st.session_state.pop("courier_delivered_pick", None)

    def do() -> str:
        if not ids:
            raise ValueError("Choose the parcels the courier delivered.")
        done = act("shipping.courier_delivered", shipment_ids=ids)
        parts = []
        if done["delivered"]:
            parts.append(f"{len(done['delivered'])} delivered to the customer")
        if done["at_store"]:
            parts.append(f"{len(done['at_store'])} at the store, ready for pickup")
        return "; ".join(parts)

    run_action(FLASH, do)


# -- panel -----------------------------------------------------------------------------------------------------


def courier_panel() -> None:
    """Own-courier parcels waiting for the courier / out for delivery, with Hand over and Delivered, and the
    route sheet (PDF) of a location and day."""
    user = require_role("operations")
    url = require_database()
    _panel(url, user)


@st.fragment
def _panel(url: str, user: User) -> None:
    show_flash(FLASH)
    rows = _shipments(url)
    waiting = [r for r in rows if r["stage"] == "awaiting_handover"]
    carrying = [r for r in rows if r["stage"] == "out_for_delivery"]
    a, b = st.columns(2)
    a.metric("Waiting for the courier", len(waiting), help="Own-courier parcels packed and not taken yet")
    b.metric("Out for delivery", len(carrying), help="Handed to the courier (shipped), not delivered yet")
    if rows:
        table = [{**r, "stage": STAGE_LABELS[r["stage"]]} for r in mask_rows(rows, user.masked_pii)]
        st.dataframe(
            pd.DataFrame(table).drop(columns=["shipment_id"]),
            hide_index=True,
            width="stretch",
            column_config={
                "hours_in_stage": st.column_config.NumberColumn("hours in stage", format="%.1f"),
                "cash_to_collect": st.column_config.NumberColumn("cash to collect", format="%.2f"),
            },
            key="courier_table",
        )
    else:
        st.success("No own-courier parcel is waiting or out for delivery.")
    left, right = st.columns(2)
    with left:
        to_take = {r["shipment_id"]: r for r in waiting}
        pick = st.multiselect(
            "Parcels the courier takes",
            list(to_take),
            format_func=_labeller(to_take),
            key="courier_handover_pick",
        )
        st.button(
            "Hand over",
            key="courier_handover",
            disabled=not pick,
            on_click=_hand_over,
            args=(url, user, list(pick)),
            type="primary",
            help="The courier took them: the parcels are shipped",
        )
    with right:
        taken = {r["shipment_id"]: r for r in carrying}
        done = st.multiselect(
            "Parcels the courier delivered",
            list(taken),
            format_func=_labeller(taken),
            key="courier_delivered_pick",
        )
        st.button(
            "Delivered",
            key="courier_delivered",
            disabled=not done,
            on_click=_delivered,
            args=(url, user, list(done)),
            help="To the customer's door (delivered) or, for store pickup, to the store (ready for pickup)",
        )
    _route_sheet(url, user, rows)


def _route_sheet(url: str, user: User, rows: list[dict]) -> None:
    st.subheader("Route sheet")
    locations = _locations(url)
    busy = [r["location_code"] for r in rows if r["location_code"] in locations]
    c1, c2 = st.columns(2)
    location = c1.selectbox(
        "Dispatched from",
        locations,
        index=locations.index(busy[0]) if busy else (0 if locations else None),
        key="courier_sheet_location",
    )
    day = c2.date_input("Day", value=datetime.now(BUSINESS_TZ).date(), key="courier_sheet_day")
    if not location or not isinstance(day, date):
        return
    st.caption(
        f"Parcels of {md(location)} handed to the courier on {day:%d.%m.%Y} and those still waiting for it: "
        "recipient, phone, address, cash to collect and a column to sign."
    )
    st.download_button(
        "Download route sheet (PDF)",
        data=lambda: pg(shipping.courier_route_sheet, url, location_code=location, day=day),
        file_name=f"route-{location}-{day:%Y-%m-%d}.pdf",
        mime="application/pdf",
        key="courier_sheet_download",
        disabled=user.masked_pii,  # names, phones and addresses of every recipient
        help="Customer data: not for roles that see it masked" if user.masked_pii else None,
    )
