"""Returns panel of the operations page (ops, admin): the returns in flight and the ops actions on them.

Returns reach this list when they are requested (lookup page, marketplaces). Where the WMS reports the parcel,
the ``returns`` pipeline receives and inspects it by itself; this panel is for everything else — a parcel
handed in at a store, a location without WMS, a receipt the connector quarantined — and for refunding.
Stages: requested → in transit (announced to the warehouse) → received → inspected → (refunded: closed).

Every action is a ``returns.*`` action of the OMS API (``dashboards.common.act``; the API calls the
``oms_ops.services.returns`` function under the OMS's own login, the dashboards' login only reads), shows its
outcome and clears the caches, like the other panels.
Its tables go through ``dashboards.masking`` like every other page (a no-op for the roles that open it today:
return notes are the customer's words).
"""

from __future__ import annotations

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
from oms_ops.services import returns as svc
from oms_ops.users import User

FLASH = "flash_returns"
DISPOSITION_LABELS = {"restock": "Resellable: restock", "write_off": "Damaged: write off"}


@st.cache_data(ttl=READ_TTL_S, show_spinner=False)
def _in_flight(url: str) -> list[dict]:
    return pg(svc.in_flight, url)


@st.cache_data(ttl=READ_TTL_S, show_spinner=False)
def _lines(url: str, return_id: int) -> list[dict]:
    return pg(svc.lines_of, url, return_id)


@st.cache_data(ttl=60, show_spinner=False)
def _locations(url: str) -> list[str]:
    return pg(svc.receiving_locations, url)


# -- actions ---------------------------------------------------------------------------------------------------


def _receive(url: str, user: User, ret: dict, line_ids: list[int]) -> None:
    location = st.session_state.get(f"ret_location_{ret['return_id']}")
    received = {lid: int(st.session_state.get(f"ret_recv_{lid}", 0)) for lid in line_ids}

    def do() -> str:
        if not location:
            raise ValueError("Choose where the parcel arrived.")
        done = act("returns.receive", return_id=ret["return_id"], location_code=location, received=received)
        if not done["received"]:
            return f"{ret['rma_number']} was already received at {location}"
        return (
            f"{ret['rma_number']}: received at {location} ({sum(received.values())} unit(s)); inspect it next"
        )

    run_action(FLASH, do)


def _inspect(url: str, user: User, ret: dict, line_ids: list[int]) -> None:
    dispositions = {lid: st.session_state.get(f"ret_disp_{lid}") for lid in line_ids}

    def do() -> str:
        res = act("returns.inspect", return_id=ret["return_id"], dispositions=dispositions)
        written_off = sum(1 for d in dispositions.values() if d == "write_off")
        return (
            f"{ret['rma_number']}: inspected — {res['units_restocked']} unit(s) back in stock at "
            f"{ret['location_code']}, {written_off} line(s) written off"
        )

    run_action(FLASH, do)


def _refund(url: str, user: User, ret: dict) -> None:
    def do() -> str:
        res = act("returns.refund", return_ids=[ret["return_id"]])
        refund_id = res["refunds"].get(str(ret["return_id"]))
        if refund_id is None:
            return f"{ret['rma_number']}: closed without a refund (nothing was received)"
        return f"{ret['rma_number']}: refund #{refund_id} requested and the return closed"

    run_action(FLASH, do)


def _cancel(url: str, user: User, ret: dict) -> None:
    reason = (st.session_state.get(f"ret_cancel_reason_{ret['return_id']}") or "").strip()
    if not reason:
        st.session_state[FLASH] = ("error", "Give a reason to cancel the return.")
        return

    def do() -> str:
        act("returns.cancel", return_id=ret["return_id"], reason=reason)
        return f"{ret['rma_number']}: cancelled; its units can be returned again"

    run_action(FLASH, do)


# -- panel -----------------------------------------------------------------------------------------------------


def returns_panel() -> None:
    """Returns in flight, by stage, with receive / inspect / refund / cancel for the selected one."""
    user = require_role("operations")
    url = require_database()
    _panel(url, user)


@st.fragment
def _panel(url: str, user: User) -> None:
    show_flash(FLASH)
    rows = _in_flight(url)
    counts = {stage: sum(1 for r in rows if r["stage"] == stage) for stage in svc.STAGES}
    for col, stage in zip(st.columns(len(svc.STAGES)), svc.STAGES, strict=True):
        col.metric(f"Returns {stage}", counts[stage])
    if not rows:
        st.success("No return in flight.")
        return
    st.dataframe(
        pd.DataFrame(mask_rows(rows, user.masked_pii)).drop(columns=["return_id", "state"]),
        hide_index=True,
        width="stretch",
        column_config={"value": st.column_config.NumberColumn("value", format="%.2f")},
        key="returns_table",
    )
    by_id = {r["return_id"]: r for r in rows}
    rid = st.selectbox(
        "Return",
        list(by_id),
        format_func=lambda i: f"{by_id[i]['rma_number']} · {by_id[i]['order_number']} · {by_id[i]['stage']}",
        key="ret_pick",
    )
    ret = by_id[rid]
    lines = _lines(url, rid)
    where = f" · at {md(ret['location_code'])}" if ret["location_code"] else ""
    st.markdown(
        f"**{md(ret['rma_number'])}** · order {md(ret['order_number'])} · {md(ret['kind'])} · "
        f"stage **{md(ret['stage'])}**{where}"
    )
    st.dataframe(
        pd.DataFrame(mask_rows(lines, user.masked_pii)).drop(columns=["return_line_id"]),
        hide_index=True,
        width="stretch",
    )
    if ret["state"] == "requested":
        _receive_form(url, user, ret, lines)
    elif ret["state"] == "received":
        _inspect_form(url, user, ret, lines)
    elif ret["kind"] == "refund":
        st.button(
            "Refund and close", key="ret_refund", on_click=_refund, args=(url, user, ret), type="primary"
        )
    else:
        st.info("An exchange is closed with its replacement order (lookup page).")


def _receive_form(url: str, user: User, ret: dict, lines: list[dict]) -> None:
    st.subheader("Receive the parcel")
    locations = _locations(url)
    expected = ret["location_code"]
    st.selectbox(
        "Arrived at",
        locations,
        index=locations.index(expected) if expected in locations else None,
        key=f"ret_location_{ret['return_id']}",
        help="Preset: the location the return was announced to",
    )
    for line in lines:
        st.number_input(
            f"{line['sku']}: units in the parcel (requested {line['qty']})",
            min_value=0,
            max_value=int(line["qty"]),
            value=int(line["qty"]),
            step=1,
            key=f"ret_recv_{line['return_line_id']}",
        )
    ids = [line["return_line_id"] for line in lines]
    a, b = st.columns([1, 2])
    a.button("Receive", key="ret_receive", on_click=_receive, args=(url, user, ret, ids), type="primary")
    with b:
        st.text_input("Reason to cancel the return instead", key=f"ret_cancel_reason_{ret['return_id']}")
        st.button("Cancel return", key="ret_cancel", on_click=_cancel, args=(url, user, ret))


def _inspect_form(url: str, user: User, ret: dict, lines: list[dict]) -> None:
    st.subheader(f"Inspect (received at {ret['location_code']})")
    received = [line for line in lines if line["qty_received"] > 0]
    for line in received:
        st.radio(
            f"{line['sku']}: {line['qty_received']} unit(s)",
            list(DISPOSITION_LABELS),
            format_func=DISPOSITION_LABELS.__getitem__,
            horizontal=True,
            key=f"ret_disp_{line['return_line_id']}",
        )
    ids = [line["return_line_id"] for line in received]
    st.button("Inspect", key="ret_inspect", on_click=_inspect, args=(url, user, ret, ids), type="primary")
