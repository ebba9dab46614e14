"""Order lookup (every role): find an order by its number, the channel's order id, the customer's phone or a
tracking number and show its whole story — events, lines, shipments with tracking and print forms, returns.
Ops and admins can open a return or an exchange from here. Managers see customer data masked.

Print forms come from the read model: ``read_model.shipment_documents`` lists what is stored (no bytes); a
download fetches one document's bytes through ``read_model.document_bytes`` only when it is clicked. Labels
carry the customer's name, phone and address, which cannot be masked inside a PDF, so roles that see masked
data see which documents exist but cannot download them; they cannot search by phone either (a search that
finds an order for a phone number tells whose number it is).

The search box takes anything a browser can send: NUL and other control characters, lone surrogates and
invisible format characters are dropped before the search (Postgres refuses NUL in text; a lone surrogate
cannot be encoded), and the page says so instead of failing."""

from __future__ import annotations

import json
from collections.abc import Callable

import pandas as pd
import psycopg
import streamlit as st

from dashboards.changes_panel import render_changes
from dashboards.common import (
    ACTION_ROLES,
    READ_TTL_S,
    act,
    clean_text_input,
    fmt_ts,
    md,
    pg,
    require_database,
    require_role,
    run_action,
    show_flash,
)
from dashboards.masking import mask_row, mask_rows, mask_tree
from dashboards.notifications_panel import render_notifications
from dashboards.shipment_cancel_panel import render_shipment_cancel
from oms_ops import dashboard_queries as dq
from oms_ops import read_model
from oms_ops.queries import find_orders, order_timeline
from oms_ops.services import payments as payment_reads
from oms_ops.services import returns as return_actions
from oms_ops.services import supply as supply_reads

user = require_role("lookup")
URL = require_database()
MASKED = user.masked_pii
CAN_ACT = user.role in ACTION_ROLES

SEARCH_MODES = {
    "Order number": "order_number",
    "Channel order id": "external_id",
    "Phone": "phone",
    "Tracking number": "tracking_number",
}
if MASKED:
    del SEARCH_MODES["Phone"]


@st.cache_data(ttl=READ_TTL_S, show_spinner=False)
def _find(url: str, mode: str, text: str, channel: str | None) -> list[int]:
    def run(conn) -> list[int]:
        if mode == "external_id":
            ids = find_orders(conn, external_id=text, channel_code=channel)
            # the channel's human number (Ozon posting number …) is searched too
            return ids or find_orders(conn, order_number=text, channel_code=channel)
        return find_orders(conn, **{mode: text}, channel_code=channel)

    return pg(run, url)


@st.cache_data(ttl=READ_TTL_S, show_spinner=False)
def _timeline(url: str, order_id: int):
    return pg(order_timeline, url, order_id)


@st.cache_data(ttl=READ_TTL_S, show_spinner=False)
def _promises(url: str, order_id: int) -> list[dict]:
    return pg(supply_reads.order_promises, url, order_id)


@st.cache_data(ttl=READ_TTL_S, show_spinner=False)
def _payments(url: str, order_id: int) -> dict[str, list[dict]]:
    return pg(payment_reads.order_payments, url, order_id)


@st.cache_data(ttl=READ_TTL_S, show_spinner=False)
def _documents(url: str, shipment_ids: tuple[int, ...]) -> list[read_model.ShipmentDocument]:
    return pg(read_model.shipment_documents, url, list(shipment_ids))


def _document_download(url: str, shipment_id: int, kind: str) -> Callable[[], bytes]:
    """The bytes of one document, fetched when its download button is clicked. Streamlit runs this outside
    the script thread, so it opens its own short connection instead of using the page's pool."""

    def fetch() -> bytes:
        with psycopg.connect(
            url, autocommit=True, connect_timeout=5, application_name="oms-dashboards"
        ) as conn:
            return read_model.document_bytes(conn, shipment_id, kind) or b""

    return fetch


@st.cache_data(ttl=READ_TTL_S, show_spinner=False)
def _returnable(url: str, order_id: int) -> dict[int, int]:
    return pg(return_actions.returnable, url, order_id)


@st.cache_data(ttl=300, show_spinner=False)
def _reasons(url: str) -> list[dict]:
    return pg(dq.return_reasons, url)


@st.cache_data(ttl=300, show_spinner=False)
def _channels(url: str) -> list[str]:
    return pg(dq.active_channels, url)


def _table(rows: list[dict], *, drop: tuple[str, ...] = (), key: str | None = None) -> None:
    df = pd.DataFrame(rows)
    df = df.drop(columns=[c for c in drop if c in df.columns])
    for col in df.columns:  # JSON columns as text so the grid shows them
        if df[col].map(lambda v: isinstance(v, dict | list)).any():
            df[col] = df[col].map(
                lambda v: json.dumps(v, ensure_ascii=False, default=str) if v is not None else None
            )
    st.dataframe(df, hide_index=True, width="stretch", key=key)


st.title("Order lookup")
c1, c2, c3 = st.columns([2, 4, 2])
mode_label = c1.selectbox("Search by", list(SEARCH_MODES), key="lookup_mode")
typed = c2.text_input(
    "Search",
    key="lookup_text",
    max_chars=200,
    placeholder="ORD-00000001, tracking number …" if MASKED else "ORD-00000001, +7 915 …, tracking number …",
)
channel = c3.selectbox("Channel", ["any", *_channels(URL)], key="lookup_channel")
text, dropped = clean_text_input(typed or "")
if dropped:
    st.caption(f"{dropped} control or invisible character(s) removed from the search text.")

if not text:
    st.caption(
        "Type an order number, the channel's order id or a tracking number."
        if MASKED
        else "Type an order number, the channel's order id, the customer's phone or a tracking number."
    )
    st.stop()

try:
    ids = _find(URL, SEARCH_MODES[mode_label], text, None if channel == "any" else channel)
except (psycopg.DataError, ValueError) as exc:  # text the database cannot take: say so, never crash the page
    st.error(f"This search text cannot be searched for: {str(exc).strip().splitlines()[0][:200]}")
    st.stop()
if not ids:
    st.warning(f"No order found for {mode_label.lower()} “{md(text)}”.")
    st.stop()

timelines = {oid: _timeline(URL, oid) for oid in ids}
if len(ids) > 1:
    order_id = st.selectbox(
        f"{len(ids)} orders found",
        ids,
        format_func=lambda i: (
            f"{timelines[i].order['order_number']} · {timelines[i].order['channel_code']} · "
            f"{timelines[i].order['state']} · placed {fmt_ts(timelines[i].order['placed_at'])}"
        ),
        key="lookup_pick",
    )
else:
    order_id = ids[0]
tl = timelines[order_id]
order = mask_row(tl.order, MASKED)

st.header(f"{order['order_number']} — {order['state']}")
st.markdown(
    f"**Channel** {md(order['channel_code'])} · **Total** {md(order['total_amount'])} {md(order['currency'])} · "
    f"**Payment** {md(order['payment_method'])} / {md(order['payment_status'])} · "
    f"**Delivery** {md(order['delivery_method'])}"
    + (f" at {md(order['pickup_location_code'])}" if order["pickup_location_code"] else "")
    + f" · **Placed** {fmt_ts(order['placed_at'])} · **Promised** {fmt_ts(order['promised_at'])}  \n"
    f"**Customer** {md(order['customer_name'])} · {md(order['customer_phone'])} · {md(order['customer_email'])}  \n"
    f"**Address** {md(' '.join(str(v) for v in (order['region'], order['city'], order['address']) if v))}  \n"
    f"**Channel order id** {md(order['external_id'])}"
    + (f" ({md(order['channel_order_number'])})" if order.get("channel_order_number") else "")
    + (f" · **Hold** {md(order['hold_reason'])}" if order["hold_reason"] else "")
    + (f" · **Cancelled** {md(order['cancel_reason'])}" if order.get("cancel_reason") else "")
)
if MASKED:
    st.caption("Customer data is masked for your role.")

st.subheader("Lines")
_table(mask_rows(tl.lines, MASKED), drop=("order_id", "updated_at"), key="lines_table")
promised = _promises(URL, order_id)
if promised:
    st.caption(
        "Promise dates of the waiting lines: the first expected supply that covers each line, first come first "
        "served (no channel's API takes the date: it is kept in the timeline)"
    )
    _table(
        [
            {
                "line": p["line_no"],
                "sku": p["sku"],
                "qty": p["qty"],
                "promised": p["promised_date"].isoformat() if p["promised_date"] else "no date",
                "waits for": p["supply"] or ("stock on hand" if p["covered_by"] == "stock" else "—"),
                "at": p["location_code"],
                "pre-order": p["preorder"],
                "why": p["reason"],
            }
            for p in promised
        ],
        key="promises_table",
    )

paid = _payments(URL, order_id)
if any(paid.values()):
    st.subheader("Payments")
    if paid["links"]:
        st.caption("Payment links the OMS asked the payment provider for (the customer pays on the link)")
        _table(paid["links"], key="payment_links_table")
    if paid["payments"]:
        _table(paid["payments"], key="payments_table")
    if paid["refunds"]:
        st.caption("Refunds (failure_reason: the provider's words when it refused)")
        _table(paid["refunds"], key="refunds_table")
    links = paid["links"]
    if (
        CAN_ACT
        and links
        and order["payment_status"] in ("pending", "failed")
        and links[-1]["status"] in ("canceled", "failed", "skipped")
    ):

        def _new_link() -> str:
            return f"payment link {act('payments.new_link', order_id=order_id)['link_id']} requested"

        st.button(
            "New payment link",
            key="new_payment_link",
            on_click=run_action,
            args=("payment_link_flash", _new_link),
        )
    show_flash("payment_link_flash")

st.subheader("Timeline")
events = [
    {
        "at": fmt_ts(e["created_at"]),
        "entity": f"{e['entity']} {e['entity_id']}",
        "change": f"{e['from_state'] or '∅'} → {e['to_state']}",
        "actor": e["actor"],
        "reason": mask_tree(e["reason"], MASKED, key="reason"),
        "data": mask_tree(e["data"], MASKED),
    }
    for e in tl.events
]
_table(events, key="events_table")

st.subheader("Shipments")
if not tl.shipments:
    st.caption("No shipment yet.")
else:
    _table(mask_rows(tl.shipments, MASKED), drop=("order_id",), key="shipments_table")
    if tl.tracking:
        st.caption("Carrier tracking")
        _table(mask_rows(tl.tracking, MASKED), drop=("received_at",), key="tracking_table")
    docs = _documents(URL, tuple(s["shipment_id"] for s in tl.shipments))
    if not docs:
        st.caption("No label or waybill stored for these shipments.")
    elif MASKED:
        st.caption(
            "Stored print forms: "
            + ", ".join(f"{md(d.kind)} of {md(d.shipment_number)}" for d in docs)
            + " (they show the customer's data: ops and admins download them)."
        )
    else:
        cols = st.columns(min(4, len(docs)))
        for i, doc in enumerate(docs):
            cols[i % len(cols)].download_button(
                f"{doc.kind.title()} · {doc.shipment_number}",
                data=_document_download(URL, doc.shipment_id, doc.kind),
                file_name=doc.file_name,
                mime=doc.content_type,
                on_click="ignore",
                icon=":material/download:",
                help=f"{doc.size_bytes / 1024:.0f} kB, stored {fmt_ts(doc.created_at)}",
                key=f"doc_{doc.shipment_id}_{doc.kind}",
            )

st.subheader("Returns")
if tl.returns:
    _table(mask_rows(tl.returns, MASKED), drop=("order_id",), key="returns_table")
else:
    st.caption("No return.")

render_notifications(URL, order_id, masked=MASKED, can_act=CAN_ACT)  # SMS / e-mail told to the customer

if not CAN_ACT:
    st.stop()

render_changes(URL, tl.order, tl.lines, masked=MASKED)  # quantities, lines, delivery, contact
render_shipment_cancel(URL, tl.shipments)  # parcels not yet handed over

# -- actions: return / exchange --------------------------------------------------------------------------------

FLASH = "flash_lookup"
lines_by_id = {ln["line_id"]: ln for ln in tl.lines}


def _request_return(order_id: int, line_ids: list[int]) -> None:
    kind = st.session_state.get("rma_kind", "refund")
    reqs = [
        {
            "line_id": lid,
            "qty": int(st.session_state.get(f"rma_qty_{lid}") or 0),
            "reason_code": st.session_state.get(f"rma_reason_{lid}"),
        }
        for lid in line_ids
        if int(st.session_state.get(f"rma_qty_{lid}") or 0) > 0
    ]
    note = (st.session_state.get("rma_note") or "").strip() or None

    def do() -> str:
        res = act("returns.request", order_id=order_id, lines=reqs, kind=kind, note=note)
        return f"{res['rma_number']} opened ({kind}, {sum(r['qty'] for r in reqs)} unit(s))"

    run_action(FLASH, do)


def _exchange(return_id: int, rma: str) -> None:
    def do() -> str:
        res = act("returns.exchange", return_id=return_id)
        return f"{rma}: replacement order {res['order_number']} created"

    run_action(FLASH, do)


st.subheader("Return or exchange")
show_flash(FLASH)
available = {lid: q for lid, q in _returnable(URL, order_id).items() if q > 0}
if not available:
    st.caption(
        "Nothing of this order can be returned (nothing shipped yet, or everything is already claimed)."
    )
else:
    reasons = {r["reason_code"]: r["description"] for r in _reasons(URL)}
    with st.container(border=True):
        st.radio("Kind", ["refund", "exchange"], horizontal=True, key="rma_kind")
        for lid, q in available.items():
            ln = lines_by_id[lid]
            a, b, c = st.columns([3, 1, 2])
            a.markdown(
                f"line {ln['line_no']} · **{md(ln['sku'])}** {md(ln.get('name') or '')} · returnable {q}"
            )
            b.number_input("Qty", min_value=0, max_value=q, value=0, step=1, key=f"rma_qty_{lid}")
            c.selectbox("Reason", list(reasons), format_func=lambda r: reasons[r], key=f"rma_reason_{lid}")
        st.text_input("Note", key="rma_note")
        st.button("Open return", key="rma_submit", on_click=_request_return, args=(order_id, list(available)))

inspected = [r for r in tl.returns if r["kind"] == "exchange" and r["state"] == "inspected"]
for r in inspected:
    st.button(
        f"Create the replacement order for {r['rma_number']}",
        key=f"exchange_{r['return_id']}",
        on_click=_exchange,
        args=(r["return_id"], r["rma_number"]),
    )
