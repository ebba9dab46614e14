"""Cancel-a-shipment panel of the lookup page (ops, admin): a parcel not yet handed over (created,
label_printed) can be called back. Each button is the OMS API's ``shipments.cancel`` action
(``dashboards.common.act``; the API runs ``oms_ops.services.shipment_cancel`` under the OMS's own login):
the units go back on the chosen location's shelf and are reserved for their lines again, or — "stock
untouched" — stay where they are not counted and the lines wait for the allocator. A carrier booking is
cancelled afterwards by the outbox (its outcome, a refusal included, shows in the timeline and on the
Operations page). A refusal (handed over meanwhile, no reason) is shown as the domain words it; nothing
changed."""

from __future__ import annotations

import streamlit as st

from dashboards.common import act, md, pg, run_action, show_flash
from oms_ops import dashboard_queries as dq
from oms_ops.services.shipment_cancel import CANCELLABLE_SHIPMENT_STATES

FLASH = "flash_shipment_cancel"
#: the choice that leaves stock untouched
KEEP_STOCK = "— stock untouched (lines wait for the allocator)"


@st.cache_data(ttl=300, show_spinner=False)
def _locations(url: str) -> list[str]:
    return [r["location_code"] for r in pg(dq.active_locations, url)]


def _cancel(shipment_id: int, number: str) -> None:
    where = st.session_state.get(f"shc_loc_{shipment_id}")
    reason = (st.session_state.get(f"shc_reason_{shipment_id}") or "").strip()
    if not reason:
        st.session_state[FLASH] = ("error", f"Type why {number} is cancelled (it goes into the timeline).")
        return
    location = None if where in (None, KEEP_STOCK) else where

    def do() -> str:
        res = act("shipments.cancel", shipment_id=shipment_id, location_code=location, reason=reason)
        units = sum(u["qty"] for u in res["units"])
        stock = (
            f"{units} unit(s) back at {res['location_code']} and reserved again"
            if res["location_code"]
            else f"stock untouched, {units} unit(s) wait for the allocator"
        )
        carrier = "; the carrier booking is being cancelled" if res["carrier_cancel"] else ""
        return f"{number} cancelled: {stock}; order {res['order_number']} is {res['order_state']}{carrier}"

    run_action(FLASH, do)


def render_shipment_cancel(url: str, shipments: list[dict]) -> None:
    """One row per shipment of the order that has not been handed over (``shipments``: its ``oms.shipments``
    rows)."""
    show_flash(FLASH)  # also after the last open parcel was cancelled
    open_ = [s for s in shipments if s["state"] in CANCELLABLE_SHIPMENT_STATES]
    if not open_:
        return
    st.subheader("Cancel a shipment")
    locations = _locations(url)
    for s in open_:
        sid, number = s["shipment_id"], s["shipment_number"]
        here = [s["location_code"]] if s["location_code"] in locations else []
        options = [*here, KEEP_STOCK, *(loc for loc in locations if loc not in here)]
        with st.container(border=True):
            st.markdown(
                f"**{md(number)}** · {md(s['state'])} · from {md(s['location_code'])} with {md(s['carrier_code'])}"
            )
            a, b, c = st.columns([3, 4, 2])
            a.selectbox("Put the units back at", options, key=f"shc_loc_{sid}")
            b.text_input("Reason (recorded in the timeline)", key=f"shc_reason_{sid}", max_chars=500)
            c.button(f"Cancel {number}", key=f"shc_cancel_{sid}", on_click=_cancel, args=(sid, number))
