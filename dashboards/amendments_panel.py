"""Amendments panel of the operations page (ops, admin): channels' later versions of accepted orders that the
OMS did not apply on its own — quantity, price or SKU changes, new lines, another delivery, anything after
shipment — each with its field-by-field diff (ours → theirs). Ops accept one (its diff is applied to the order
through ``oms_ops.changes``, all or nothing: a refusal names the line and limit and leaves it open) or reject it
(the order stays as it is). Both are ``amendments.*`` actions of the OMS API (``dashboards.common.act``): the
dashboards' login only reads ``oms.order_amendments``."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from dashboards.common import (
    READ_TTL_S,
    act,
    fmt_ts,
    md,
    pg,
    require_database,
    require_role,
    run_action,
    show_flash,
)
from dashboards.masking import mask_tree
from oms_ops.services import changes as svc
from oms_ops.users import User

FLASH = "flash_amendments"


@st.cache_data(ttl=READ_TTL_S, show_spinner=False)
def _open(url: str) -> list[dict]:
    return pg(svc.list_amendments, url, state="open")


@st.cache_data(ttl=READ_TTL_S, show_spinner=False)
def _recent(url: str) -> list[dict]:
    return [r for r in pg(svc.list_amendments, url, state=None, limit=50) if r["state"] != "open"]


def _decide(amendment_id: int, decision: str) -> None:
    note = (st.session_state.get(f"amend_note_{amendment_id}") or "").strip() or None

    def do() -> str:
        act(f"amendments.{decision}", amendment_id=amendment_id, note=note)
        return f"Amendment {amendment_id} {decision}ed" + (
            ": its changes are applied to the order" if decision == "accept" else ": the order stays as it is"
        )

    run_action(FLASH, do)


def _diff_rows(diff: list[dict], masked: bool) -> list[dict]:
    return [
        {
            "field": d["path"],
            "ours": mask_tree(d["ours"], masked, key=d["path"]),
            "theirs": mask_tree(d["theirs"], masked, key=d["path"]),
        }
        for d in diff
    ]


def amendments_panel() -> None:
    """Open amendments, newest first, with accept / reject for the selected one; recently decided below."""
    user = require_role("operations")
    url = require_database()
    _panel(url, user)


@st.fragment
def _panel(url: str, user: User) -> None:
    show_flash(FLASH)
    rows = _open(url)
    st.metric("Open amendments", len(rows))
    if not rows:
        st.success("No channel amendment waits for a decision.")
    else:
        st.dataframe(
            pd.DataFrame(
                [
                    {
                        "amendment": r["amendment_id"],
                        "order": r["order_number"],
                        "order state": r["order_state"],
                        "channel": r["channel_code"],
                        "channel order id": r["external_id"],
                        "changes": ", ".join(d["path"] for d in r["diff"]),
                        "why it waits": r["reason"],
                        "received": fmt_ts(r["created_at"]),
                    }
                    for r in rows
                ]
            ),
            hide_index=True,
            width="stretch",
            key="amendments_table",
        )
        by_id = {r["amendment_id"]: r for r in rows}
        aid = st.selectbox(
            "Amendment",
            list(by_id),
            format_func=lambda i: f"{i} · {by_id[i]['order_number']} · {by_id[i]['channel_code']}",
            key="amend_pick",
        )
        am = by_id[aid]
        st.markdown(
            f"**{md(am['order_number'])}** ({md(am['order_state'])}) from **{md(am['channel_code'])}** "
            f"order {md(am['external_id'])} · raw payload {md(am['raw_id'])} · {md(am['reason'])}"
        )
        st.dataframe(
            pd.DataFrame(_diff_rows(am["diff"], user.masked_pii)).astype(str),
            hide_index=True,
            width="stretch",
            key="amend_diff",
        )
        if am["applied"]:
            st.caption(
                "Applied automatically from the same version: " + ", ".join(d["path"] for d in am["applied"])
            )
        st.text_input("Note", key=f"amend_note_{aid}", max_chars=500)
        a, b = st.columns(2)
        a.button(
            "Accept: apply to the order", key=f"amend_accept_{aid}", on_click=_decide, args=(aid, "accept")
        )
        b.button("Reject: keep the order", key=f"amend_reject_{aid}", on_click=_decide, args=(aid, "reject"))
    recent = _recent(url)
    if recent:
        with st.expander(f"Recently decided ({len(recent)})"):
            st.dataframe(
                pd.DataFrame(
                    [
                        {
                            "amendment": r["amendment_id"],
                            "order": r["order_number"],
                            "channel": r["channel_code"],
                            "state": r["state"],
                            "by": r["resolved_by"],
                            "at": fmt_ts(r["resolved_at"]),
                            "note": r["note"],
                        }
                        for r in recent
                    ]
                ),
                hide_index=True,
                width="stretch",
                key="amendments_recent",
            )
