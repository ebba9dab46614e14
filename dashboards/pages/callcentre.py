"""Call-centre order entry (ops, admin): an operator types an order taken on the phone; the OMS API's
``orders.take`` action enters it through the same ``accept_orders`` as every channel (channel ``callcentre``),
so it is validated, quarantined if invalid, held if a SKU is unknown, and then allocated like any other
order."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from decimal import Decimal

import streamlit as st

from dashboards.common import READ_TTL_S, act, pg, require_database, require_role
from oms_ops import dashboard_queries as dq
from oms_ops.errors import OmsError

CHANNEL = "callcentre"
MAX_LINES = 5

user = require_role("callcentre")
URL = require_database()


@st.cache_data(ttl=300, show_spinner=False)
def _products(url: str) -> list[dict]:
    return pg(dq.products, url)


@st.cache_data(ttl=300, show_spinner=False)
def _pickup_locations(url: str) -> list[dict]:
    return pg(dq.active_locations, url, kinds=["store", "pickup_point"])


@st.cache_data(ttl=READ_TTL_S, show_spinner=False)
def _order_number(url: str, order_id: int) -> str:
    return pg(dq.order_number, url, order_id)


def _external_id() -> str:
    """One id per form: submitting the same form twice (double click, retry) is a duplicate, not a 2nd order."""
    if "cc_external_id" not in st.session_state:
        st.session_state["cc_external_id"] = f"CC-{datetime.now(UTC):%Y%m%d}-{uuid.uuid4().hex[:8].upper()}"
    return st.session_state["cc_external_id"]


st.title("Call-centre order")
products = {p["sku"]: p for p in _products(URL)}
pickups = {p["location_code"]: p for p in _pickup_locations(URL)}
if not products:
    st.info("The catalog is empty: import products first.")
    st.stop()

outcome = st.session_state.pop("cc_outcome", None)
if outcome:
    kind, message = outcome
    {"success": st.success, "warning": st.warning, "error": st.error}[kind](message)

external_id = _external_id()
with st.form("callcentre_order"):
    st.caption(f"Order id in the call-centre channel: {external_id}")
    a, b, c = st.columns(3)
    name = a.text_input("Customer name", key="cc_name")
    phone = b.text_input("Phone", key="cc_phone", placeholder="+7 915 123-45-67")
    email = c.text_input("E-mail", key="cc_email")
    d, e = st.columns([1, 2])
    method = d.selectbox(
        "Delivery",
        ["courier", "pickup_point", "store_pickup"],
        key="cc_delivery",
        format_func={
            "courier": "Courier",
            "pickup_point": "Pickup point",
            "store_pickup": "Store pickup",
        }.get,
    )
    pickup = e.selectbox(
        "Pickup location (pickup point / store)",
        ["", *pickups],
        format_func=lambda code: f"{code} · {pickups[code]['name']}" if code else "—",
        key="cc_pickup",
    )
    f, g, h = st.columns([1, 1, 2])
    region = f.text_input("Region", key="cc_region", value="Москва")
    city = g.text_input("City", key="cc_city", value="Москва")
    address = h.text_input("Address", key="cc_address")
    payment = st.radio(
        "Payment",
        ["cod", "prepaid"],
        horizontal=True,
        key="cc_payment",
        format_func={"cod": "Cash on delivery", "prepaid": "Prepaid (link sent)"}.get,
    )
    st.markdown("**Items**")
    for i in range(MAX_LINES):
        s, q = st.columns([4, 1])
        s.selectbox(
            f"SKU {i + 1}",
            ["", *products],
            format_func=lambda sku: (
                f"{sku} · {products[sku]['name']} · {products[sku]['price']} ₽" if sku else "—"
            ),
            key=f"cc_sku_{i}",
        )
        q.number_input(f"Qty {i + 1}", min_value=1, max_value=999, value=1, step=1, key=f"cc_qty_{i}")
    submitted = st.form_submit_button("Create order", type="primary")

if submitted:
    lines = [
        {
            "sku": st.session_state[f"cc_sku_{i}"],
            "qty": int(st.session_state[f"cc_qty_{i}"]),
            "unit_price": Decimal(products[st.session_state[f"cc_sku_{i}"]]["price"]),
        }
        for i in range(MAX_LINES)
        if st.session_state.get(f"cc_sku_{i}")
    ]
    problems = []
    if not name.strip():
        problems.append("the customer's name")
    if not phone.strip():
        problems.append("a phone number")
    if not lines:
        problems.append("at least one item")
    if method == "courier" and not address.strip():
        problems.append("a delivery address")
    if method != "courier" and not pickup:
        problems.append("a pickup location")
    if problems:
        st.error("Missing: " + ", ".join(problems) + ".")
        st.stop()
    order = {
        "channel_code": CHANNEL,
        "external_id": external_id,
        "placed_at": datetime.now(UTC),
        "delivery_method": method,
        "pickup_location_code": pickup or None,
        "customer_name": name.strip(),
        "customer_phone": phone.strip(),
        "customer_email": email.strip() or None,
        "region": region.strip() or None,
        "city": city.strip() or None,
        "address": address.strip() or None,
        "payment_method": payment,
        "payment_status": "pending",
        "lines": lines,
    }
    try:
        res = act("orders.take", order=order)
    except OmsError as exc:  # shown to the operator; the form keeps its input
        st.error(f"The order could not be saved: {exc}")
        st.stop()
    if res["ids"]:
        number = _order_number(URL, res["ids"][0]["order_id"])
        held = " It is on hold (unknown SKU)." if res["on_hold"] else ""
        st.session_state["cc_outcome"] = (
            "warning" if held else "success",
            f"Order {number} created ({external_id}).{held} Find it in Order lookup.",
        )
        st.session_state["cc_last_order"] = number
    elif res["duplicates"]:
        st.session_state["cc_outcome"] = ("warning", f"{external_id} was already submitted: no second order.")
    else:
        reasons = "; ".join(r["reason"] for r in res["rejected"])
        st.session_state["cc_outcome"] = ("error", f"Rejected and kept in the quarantine: {reasons}")
    if res["ids"] or res["duplicates"]:
        for key in [
            k
            for k in st.session_state
            if str(k).startswith("cc_") and k not in ("cc_outcome", "cc_last_order")
        ]:
            del st.session_state[key]
    st.cache_data.clear()
    st.rerun()
