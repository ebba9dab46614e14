"""Change-the-order panel of the lookup page (ops, admin): a line's quantity, a line added or removed, the
delivery method or pickup point, the customer's contact — before the order ships.

Each button is one ``orders.*`` change action of the OMS API (``dashboards.common.act``; the API runs
``oms_ops.services.changes`` under the OMS's own login): all or nothing, recorded in the order's timeline
with the reason typed here. A refusal — the order shipped, a quantity above ``limits.max_line_quantity``, not
enough stock for an increase (with what is free per location) — is shown as the domain words it, and nothing
changed. An open channel amendment of the order is pointed out: it is decided on the operations page."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import streamlit as st

from dashboards.common import READ_TTL_S, act, md, pg, run_action, show_flash
from oms_ops.services import changes as svc
from oms_ops.services.changes import (
    CONTACT_CHANGE_STATES,
    CONTACT_FIELDS,
    DELIVERY_METHODS,
    LINE_CHANGE_STATES,
)

FLASH = "flash_changes"
_CONTACT_LABELS = {
    "customer_name": "Name",
    "customer_phone": "Phone",
    "customer_email": "E-mail",
    "region": "Region",
    "city": "City",
    "address": "Address",
}


def _reason() -> str:
    return (st.session_state.get("chg_reason") or "").strip() or "changed by ops"


def _run(do: Callable[[], Any], done: str) -> None:
    def wrapped() -> str:
        res = do()
        applied = "; ".join(res.get("applied") or []) if isinstance(res, dict) else ""
        return f"{done}: {applied}" if applied else f"{done}: nothing to change"

    run_action(FLASH, wrapped)


def _set_qty(order_id: int, line_no: int) -> None:
    qty = int(st.session_state.get(f"chg_qty_{order_id}_{line_no}") or 0)
    _run(
        lambda: act("orders.change_quantity", order_id=order_id, line_no=line_no, qty=qty, reason=_reason()),
        f"line {line_no}",
    )


def _remove(order_id: int, line_no: int) -> None:
    _run(
        lambda: act("orders.remove_line", order_id=order_id, line_no=line_no, reason=_reason()),
        f"line {line_no}",
    )


def _add(order_id: int) -> None:
    sku = (st.session_state.get("chg_add_sku") or "").strip()
    qty = int(st.session_state.get("chg_add_qty") or 0)
    if not sku:
        st.session_state[FLASH] = ("error", "Type the SKU of the line to add.")
        return
    _run(lambda: act("orders.add_line", order_id=order_id, sku=sku, qty=qty, reason=_reason()), "line added")


def _delivery(order_id: int) -> None:
    method = st.session_state.get("chg_method")
    pickup = (st.session_state.get("chg_pickup") or "").strip() or None
    _run(
        lambda: act(
            "orders.change_delivery",
            order_id=order_id,
            delivery_method=method,
            pickup_location_code=None if method == "courier" else pickup,
            reason=_reason(),
        ),
        "delivery",
    )


def _contact(order_id: int, current: dict) -> None:
    fields = {}
    for name in _CONTACT_LABELS:
        typed = (st.session_state.get(f"chg_contact_{name}") or "").strip()
        if typed and typed != (current.get(name) or ""):
            fields[name] = typed
    if not fields:
        st.session_state[FLASH] = ("info", "Nothing typed differs from the order's contact.")
        return
    _run(lambda: act("orders.change_contact", order_id=order_id, fields=fields, reason=_reason()), "contact")


@st.cache_data(ttl=READ_TTL_S, show_spinner=False)
def _open_amendments(url: str, order_id: int) -> int:
    return len(pg(svc.list_amendments, url, state="open", order_id=order_id))


def render_changes(url: str, order: dict, lines: list[dict], *, masked: bool) -> None:
    """The panel for one order (``order``: the ``oms.orders`` row unmasked, ``lines``: its lines)."""
    st.subheader("Change the order")
    show_flash(FLASH)
    state = order["state"]
    open_amendments = _open_amendments(url, order["order_id"])
    if open_amendments:
        st.info(
            f"The channel sent a later version of this order that waits for ops ({open_amendments} open "
            "amendment): Operations → Amendments."
        )
    if state not in CONTACT_CHANGE_STATES:
        st.caption(f"The order is {md(state)}: it can no longer be changed.")
        return
    oid = order["order_id"]
    with st.container(border=True):
        st.text_input("Reason (recorded in the timeline)", key="chg_reason", max_chars=500)
        if state in LINE_CHANGE_STATES:
            for ln in lines:
                wanted = ln["qty"] - ln["qty_cancelled"]
                if ln["state"] == "cancelled" or wanted <= 0:
                    continue
                a, b, c, d = st.columns([4, 2, 1, 1])
                a.markdown(
                    f"line {ln['line_no']} · **{md(ln['sku'])}** · {md(ln['state'])} · quantity {wanted}"
                )
                b.number_input(
                    "Quantity",
                    min_value=1,
                    value=wanted,
                    step=1,
                    key=f"chg_qty_{oid}_{ln['line_no']}",
                    label_visibility="collapsed",
                )
                c.button(
                    "Set", key=f"chg_set_{oid}_{ln['line_no']}", on_click=_set_qty, args=(oid, ln["line_no"])
                )
                d.button(
                    "Remove", key=f"chg_rm_{oid}_{ln['line_no']}", on_click=_remove, args=(oid, ln["line_no"])
                )
            a, b, c = st.columns([4, 2, 2])
            a.text_input("Add SKU", key="chg_add_sku", max_chars=64)
            b.number_input("Qty", min_value=1, value=1, step=1, key="chg_add_qty")
            c.button("Add line", key="chg_add", on_click=_add, args=(oid,))
            a, b, c = st.columns([3, 3, 2])
            a.selectbox(
                "Delivery",
                DELIVERY_METHODS,
                index=DELIVERY_METHODS.index(order["delivery_method"]),
                key="chg_method",
            )
            b.text_input(
                "Pickup point / store", value=order.get("pickup_location_code") or "", key="chg_pickup"
            )
            c.button("Change delivery (re-route)", key="chg_delivery", on_click=_delivery, args=(oid,))
        else:
            st.caption(f"The order is {md(state)}: picking started, only the contact can change.")
        if masked:
            st.caption("The contact is masked for your role.")
            return
        with st.expander("Contact and address"):
            cols = st.columns(2)
            for i, name in enumerate(n for n in CONTACT_FIELDS if n in _CONTACT_LABELS):
                cols[i % 2].text_input(
                    _CONTACT_LABELS[name],
                    value=order.get(name) or "",
                    key=f"chg_contact_{name}",
                    max_chars=1000,
                )
            st.button("Save contact", key="chg_contact", on_click=_contact, args=(oid, dict(order)))
