"""Operations (ops, admin): live backlog and risk, exceptions with actions, stock, ATS, channel sync health.

Every operational figure on this page — backlog, orders at risk and its threshold, quarantine, available to
sell, parcels awaiting pickup, ingest and sync state — comes from the read model (``oms_ops.read_model``, the
dbt ``ops`` views), the same definitions the ATS pushers and the Dagster checks use. Live panels refresh
themselves with ``st.fragment(run_every=…)``; reads are cached with a short ttl; every action calls one
``oms_ops`` function (see docs/dashboards.md), clears the caches and reruns the whole page, so the headline
figures show its effect at once. An order is offered only the actions its state allows
(``services.orders.allowed_actions``).
"""

from __future__ import annotations

import json

import altair as alt
import pandas as pd
import streamlit as st

from dashboards.amendments_panel import amendments_panel
from dashboards.common import (
    LIVE_REFRESH_S,
    READ_TTL_S,
    SLOW_REFRESH_S,
    act,
    fmt_ts,
    live_caption,
    md,
    pg,
    require_database,
    require_role,
    run_action,
    show_flash,
)
from dashboards.courier_panel import courier_panel
from dashboards.mappings_panel import mappings_panel
from dashboards.masking import mask_rows, mask_tree
from dashboards.returns_panel import returns_panel
from dashboards.unfillable_panel import unfillable_panel
from oms_ops import dashboard_queries as dq
from oms_ops import read_model
from oms_ops.services import orders as order_actions

user = require_role("operations")
URL = require_database()
MASKED = user.masked_pii
#: order states top to bottom in the backlog chart (the order of an order's life)
STATE_ORDER = (
    "new",
    "on_hold",
    "backordered",
    "partially_allocated",
    "allocated",
    "picking",
    "packed",
    "partially_shipped",
    "awaiting_handover",
    "shipped",
    "ready_for_pickup",
    "not_delivered",
)


# -- cached reads (ttl) -------------------------------------------------------------------------------------------


@st.cache_data(ttl=READ_TTL_S, show_spinner=False)
def _backlog(url: str) -> list[dict]:
    return pg(read_model.backlog, url)


@st.cache_data(ttl=300, show_spinner=False)
def _at_risk_hours(url: str) -> float:
    return pg(read_model.at_risk_hours, url)


@st.cache_data(ttl=READ_TTL_S, show_spinner=False)
def _at_risk(url: str) -> list[dict]:
    return pg(read_model.orders_at_risk, url)


@st.cache_data(ttl=READ_TTL_S, show_spinner=False)
def _quarantine_summary(url: str) -> list[dict]:
    return pg(read_model.quarantine_summary, url)


@st.cache_data(ttl=READ_TTL_S, show_spinner=False)
def _outbox_counts(url: str) -> dict:
    return pg(dq.outbox_counts, url)


@st.cache_data(ttl=READ_TTL_S, show_spinner=False)
def _exception_orders(url: str) -> list[dict]:
    return pg(dq.exception_orders, url)


@st.cache_data(ttl=READ_TTL_S, show_spinner=False)
def _order_brief(url: str, number: str) -> dict | None:
    return pg(dq.order_brief, url, number)


@st.cache_data(ttl=READ_TTL_S, show_spinner=False)
def _quarantine(url: str) -> list[dict]:
    return pg(read_model.open_quarantine, url, limit=200)


@st.cache_data(ttl=READ_TTL_S, show_spinner=False)
def _outbox(url: str) -> list[dict]:
    return pg(dq.outbox_problems, url)


@st.cache_data(ttl=READ_TTL_S, show_spinner=False)
def _awaiting_pickup(url: str) -> list[dict]:
    return pg(read_model.shipments_awaiting_pickup, url)


@st.cache_data(ttl=60, show_spinner=False)
def _stock_by_location(url: str) -> list[dict]:
    return pg(dq.stock_by_location, url)


@st.cache_data(ttl=60, show_spinner=False)
def _stock_rows(url: str, location: str | None) -> list[dict]:
    return pg(dq.stock_rows, url, location_code=location)


@st.cache_data(ttl=60, show_spinner=False)
def _locations(url: str) -> list[dict]:
    return pg(dq.active_locations, url)


@st.cache_data(ttl=60, show_spinner=False)
def _ats_by_channel(url: str) -> list[dict]:
    return pg(read_model.ats_by_channel, url)


@st.cache_data(ttl=60, show_spinner=False)
def _ingest(url: str) -> list[dict]:
    return pg(read_model.channel_ingest, url)


@st.cache_data(ttl=60, show_spinner=False)
def _sync_state(url: str) -> list[dict]:
    return pg(read_model.sync_state, url)


def _frame(rows: list[dict]) -> pd.DataFrame:
    return pd.DataFrame(rows)


# -- page -----------------------------------------------------------------------------------------------------------

st.title("Operations")


def _total(rows: list[dict], *, states: tuple[str, ...] | None = None, awaiting: bool | None = None) -> int:
    return sum(
        r["orders"]
        for r in rows
        if (states is None or r["order_status"] in states)
        and (awaiting is None or r["is_awaiting_shipment"] == awaiting)
    )


@st.fragment(run_every=LIVE_REFRESH_S)
def live_overview() -> None:
    rows = _backlog(URL)
    outbox = _outbox_counts(URL)
    cols = st.columns(6)
    cols[0].metric("Backlog (orders)", _total(rows, awaiting=True), help="Open orders not fully shipped yet")
    cols[1].metric("On hold", _total(rows, states=("on_hold",)))
    cols[2].metric("Backordered", _total(rows, states=("backordered", "partially_allocated")))
    cols[3].metric("Quarantined", sum(r["open_rows"] for r in _quarantine_summary(URL)))
    cols[4].metric("Outbox dead", outbox["dead"])
    cols[5].metric("Outbox failed", outbox["failed"])
    live_caption(LIVE_REFRESH_S)

    left, right = st.columns([5, 6])
    with left:
        st.subheader("Backlog by state and age")
        if not rows:
            st.info("No open orders.")
        else:
            df = _frame(rows)
            ages = [b for _, b in sorted({(r["age_bucket_rank"], r["age_bucket"]) for r in rows})]
            present = {r["order_status"] for r in rows}
            states = [s for s in STATE_ORDER if s in present] + sorted(present - set(STATE_ORDER))
            base = alt.Chart(df).encode(
                x=alt.X("age_bucket:N", title="Age since placed", sort=ages),
                y=alt.Y("order_status:N", title=None, sort=states),
            )
            heat = base.mark_rect().encode(
                color=alt.Color("orders:Q", scale=alt.Scale(scheme="orangered"), legend=None),
                tooltip=["order_status", "age_bucket", "orders", "open_units", "oldest_placed_at"],
            )
            st.altair_chart(heat + base.mark_text().encode(text="orders:Q"), width="stretch")
            st.caption(
                f"{_total(rows, awaiting=False)} more open order(s) are on their way to the customer "
                "(shipped, ready for pickup, not delivered)."
            )
    with right:
        hours = _at_risk_hours(URL)
        st.subheader(f"Orders at risk (deadline within {hours:g} h or passed)")
        risk = _at_risk(URL)
        if not risk:
            st.success("No order is at risk of missing its ship-by time or promise.")
        else:
            st.dataframe(
                _frame(risk).drop(columns=["order_id"]),
                hide_index=True,
                width="stretch",
                column_config={"hours_left": st.column_config.NumberColumn("hours left", format="%.1f")},
                key="at_risk_table",
            )


live_overview()

# -- exceptions and actions ---------------------------------------------------------------------------------------

st.header("Exceptions")


def _release(number: str, order_id: int) -> None:
    reason = (st.session_state.get("ops_reason") or "").strip() or "released by ops"

    def do() -> str:
        act("orders.release", order_ids=[order_id], reason=reason)
        return f"{number}: hold released, the order is new again and waits for allocation"

    run_action("flash_orders", do)


def _cancel(number: str, order_id: int) -> None:
    reason = (st.session_state.get("ops_reason") or "").strip()
    if not reason:
        st.session_state["flash_orders"] = ("error", "Give a reason to cancel.")
        return

    def do() -> str:
        res = act("orders.cancel", order_ids=[order_id], reason=reason)
        if res["cancelled"]:
            return f"{number}: cancelled, reservations released" + (
                " and refund requested" if res["refunds"] else ""
            )
        return f"{number}: unshipped remainder cancelled"

    run_action("flash_orders", do)


def _reroute(number: str, order_id: int) -> None:
    exclude = st.session_state.get("ops_exclude") or []
    reason = (st.session_state.get("ops_reason") or "").strip() or "rerouted by ops"

    def do() -> str:
        outcome = act("orders.reroute", order_id=order_id, reason=reason, exclude_locations=list(exclude))[
            "outcome"
        ]
        if outcome is None:
            return f"{number}: nothing to reroute"
        where = f" at {', '.join(outcome['locations'])}" if outcome["locations"] else ""
        return f"{number}: rerouted → {outcome['outcome']}{where} ({outcome['reason']})"

    run_action("flash_orders", do)


@st.fragment
def exception_orders_panel() -> None:
    show_flash("flash_orders")
    rows = _exception_orders(URL)
    if rows:
        st.dataframe(
            _frame(mask_rows(rows, MASKED)).drop(columns=["order_id"]),
            hide_index=True,
            width="stretch",
            key="exception_orders_table",
        )
    else:
        st.success("No order is on hold or backordered.")
    numbers = [r["order_number"] for r in rows]
    c1, c2 = st.columns([3, 2])
    picked = c1.selectbox("Order", [""] + numbers, key="ops_pick", help="An order from the list above")
    typed = c2.text_input("…or any order number", key="ops_number", placeholder="ORD-00000001")
    number = (typed or picked or "").strip()
    if not number:
        return
    brief = _order_brief(URL, number)
    if brief is None:
        st.warning(f"No order {number}.")
        return
    b = mask_rows([brief], MASKED)[0]
    st.markdown(
        f"**{md(b['order_number'])}** · {md(b['channel_code'])} · state **{md(b['state'])}** · "
        f"placed {fmt_ts(b['placed_at'])} · {md(b['customer_name'])} {md(b['customer_phone'])}"
        + (f" · reserved at {md(b['reserved_at'])}" if b["reserved_at"] else "")
        + (f" · hold: {md(b['hold_reason'])}" if b["hold_reason"] else "")
    )
    # only the actions the order's state allows are offered (a cancelled order has none)
    allowed = order_actions.allowed_actions(brief["state"])
    if not allowed:
        st.info(f"No action applies to an order in state {brief['state']}.")
        return
    st.text_input("Reason (recorded in the order's events)", key="ops_reason")
    if order_actions.REROUTE in allowed:
        locations = [loc["location_code"] for loc in _locations(URL)]
        st.multiselect("Reroute: avoid these locations", locations, key="ops_exclude")
    args = (brief["order_number"], brief["order_id"])
    a, c, r = st.columns(3)
    if order_actions.RELEASE in allowed:
        a.button("Release hold", key="ops_release", on_click=_release, args=args)
    if order_actions.CANCEL in allowed:
        shipped_part = brief["state"] in order_actions.REMAINDER_CANCELLABLE_STATES
        c.button(
            "Cancel the remainder" if shipped_part else "Cancel order",
            key="ops_cancel",
            help="Cancels what has not shipped; the order becomes shipped" if shipped_part else None,
            on_click=_cancel,
            args=args,
        )
    if order_actions.REROUTE in allowed:
        r.button("Reroute", key="ops_reroute", on_click=_reroute, args=args)


def _replay(qid: int, original: object) -> None:
    text = st.session_state.get(f"q_payload_{qid}", "")
    try:
        fixed = json.loads(text)
    except json.JSONDecodeError as exc:
        st.session_state["flash_quarantine"] = ("error", f"Not valid JSON: {exc}")
        return

    def do() -> str:
        if fixed == original:
            res = act("quarantine.replay", quarantine_ids=[qid])
        elif not isinstance(fixed, dict):
            raise ValueError("the fixed payload must be a JSON object")
        else:
            res = act("quarantine.replay_fixed", quarantine_id=qid, payload=fixed)
        if res["rejected"]:
            raise ValueError("still rejected: " + "; ".join(r["reason"] for r in res["rejected"]))
        if res["ids"]:
            return f"Quarantine #{qid} replayed: order accepted" + (" (on hold)" if res["on_hold"] else "")
        return f"Quarantine #{qid} replayed: the order already existed (duplicate)"

    run_action("flash_quarantine", do)


def _discard(qid: int) -> None:
    run_action(
        "flash_quarantine",
        lambda: (
            f"Quarantine #{qid} discarded"
            if act("quarantine.discard", quarantine_ids=[qid])["discarded"]
            else f"Quarantine #{qid} was no longer open"
        ),
    )


@st.fragment
def quarantine_panel() -> None:
    show_flash("flash_quarantine")
    rows = _quarantine(URL)
    if not rows:
        st.success("The quarantine is empty.")
        return
    table = [{k: v for k, v in r.items() if k != "payload"} for r in rows]
    st.dataframe(_frame(table), hide_index=True, width="stretch", key="quarantine_table")
    by_id = {r["quarantine_id"]: r for r in rows}
    qid = st.selectbox(
        "Quarantined input",
        list(by_id),
        format_func=lambda i: f"#{i} · {by_id[i]['source']} · {by_id[i]['external_id'] or '—'}",
        key="q_pick",
    )
    row = by_id[qid]
    st.error(row["reason"], icon=":material/block:")
    payload = mask_tree(row["payload"], MASKED)
    st.text_area(
        "Payload (fix it, then replay)",
        value=json.dumps(payload, ensure_ascii=False, indent=2, default=str),
        height=260,
        key=f"q_payload_{qid}",
        disabled=MASKED,
    )
    a, b = st.columns(2)
    a.button("Replay", key="q_replay", on_click=_replay, args=(qid, row["payload"]), disabled=MASKED)
    b.button("Discard", key="q_discard", on_click=_discard, args=(qid,))


def _retry(ids: list[int]) -> None:
    run_action(
        "flash_outbox", lambda: f"Retrying {len(act('outbox.retry', outbox_ids=ids)['retried'])} effect(s)"
    )


@st.fragment
def outbox_panel() -> None:
    show_flash("flash_outbox")
    rows = _outbox(URL)
    if not rows:
        st.success("Every outbox effect is delivered or on its way.")
        return
    st.dataframe(_frame(rows), hide_index=True, width="stretch", key="outbox_table")
    ids = st.multiselect(
        "Effects to retry",
        [r["outbox_id"] for r in rows],
        format_func=lambda i: next(
            f"#{i} · {r['effect']} · {r['state']}" for r in rows if r["outbox_id"] == i
        ),
        key="outbox_pick",
    )
    st.button("Retry", key="outbox_retry", disabled=not ids, on_click=_retry, args=(list(ids),))


@st.fragment
def pickup_panel() -> None:
    st.subheader("Parcels waiting for carrier pickup")
    rows = _awaiting_pickup(URL)
    if not rows:
        st.caption("No parcel is waiting for a carrier.")
        return
    missing = sum(not r["has_label"] for r in rows)
    if missing:
        st.warning(f"{missing} parcel(s) wait without a stored carrier label.")
    st.dataframe(
        _frame(rows).drop(columns=["shipment_id"]),
        hide_index=True,
        width="stretch",
        column_config={"hours_waiting": st.column_config.NumberColumn("hours waiting", format="%.1f")},
        key="awaiting_pickup_table",
    )


(
    tab_orders,
    tab_unfillable,
    tab_quarantine,
    tab_outbox,
    tab_courier,
    tab_returns,
    tab_mappings,
    tab_amendments,
) = st.tabs(
    [
        "On hold / backordered",
        "Unfillable",
        "Quarantine",
        "Carrier & outbox errors",
        "Courier",
        "Returns",
        "Channel mappings",
        "Amendments",
    ]
)
with tab_orders:
    exception_orders_panel()
with tab_unfillable:
    unfillable_panel()
with tab_quarantine:
    quarantine_panel()
with tab_outbox:
    outbox_panel()
    st.caption("Carrier bookings re-created after the carrier lost them, or given up")
    st.dataframe(
        _frame(pg(read_model.carrier_booking_issues, URL)),
        hide_index=True,
        width="stretch",
        key="carrier_issues_table",
    )
    pickup_panel()
with tab_courier:
    courier_panel()
with tab_returns:
    returns_panel()
with tab_mappings:
    mappings_panel()
with tab_amendments:
    amendments_panel()

# -- stock, reservations, ATS -------------------------------------------------------------------------------------

st.header("Stock and reservations")


@st.fragment(run_every=SLOW_REFRESH_S)
def stock_panel() -> None:
    live_caption(SLOW_REFRESH_S)
    by_loc = _stock_by_location(URL)
    if not by_loc:
        st.info("No locations yet.")
        return
    st.dataframe(_frame(by_loc), hide_index=True, width="stretch", key="stock_by_location_table")
    loc = st.selectbox("Stock of location", [r["location_code"] for r in by_loc], key="stock_location")
    rows = _stock_rows(URL, loc)
    if rows:
        st.dataframe(_frame(rows).drop(columns=["location_code"]), hide_index=True, width="stretch")
    else:
        st.info(f"No stock at {loc}.")

    st.subheader("Available to sell per channel")
    ats = _ats_by_channel(URL)
    if not ats:
        st.info("No stock in any channel's pool yet.")
        return
    pivot = _frame(ats).pivot_table(
        index="sku", columns="channel_code", values="ats", aggfunc="sum", fill_value=0
    )
    st.caption(
        "ATS = Σ over the channel's pool of max(0, on hand − reserved − safety stock); pools and safety "
        "stock from the synced business configuration — what the ATS pushers send, before channel mappings"
    )
    st.dataframe(pivot, width="stretch", key="ats_table")


stock_panel()

# -- channel sync health --------------------------------------------------------------------------------------------

st.header("Channel sync health")


def _as_text(value: object) -> str | None:
    return None if value is None else json.dumps(value, ensure_ascii=False, default=str)


@st.fragment(run_every=SLOW_REFRESH_S)
def sync_panel() -> None:
    live_caption(SLOW_REFRESH_S)
    ingest = _ingest(URL)
    if ingest:
        st.dataframe(_frame(ingest), hide_index=True, width="stretch", key="ingest_table")
    else:
        st.info("No channels configured yet.")
    st.subheader("Feeds: last success, last error, cursor")
    feeds = _sync_state(URL)
    if not feeds:
        st.caption("No feed has run yet and no cursor is stored.")
        return
    failing = [f["feed"] for f in feeds if f["is_failing"]]
    if failing:
        st.error("Failing since their last success: " + ", ".join(failing), icon=":material/sync_problem:")
    table = [{**f, "cursor_value": _as_text(f["cursor_value"])} for f in feeds]
    st.dataframe(
        _frame(table),
        hide_index=True,
        width="stretch",
        column_order=[
            "feed",
            "is_failing",
            "success_age_seconds",
            "cursor_name",
            "cursor_value",
            "last_error",
            "last_fetched",
            "last_success_at",
            "last_error_at",
            "cursor_updated_at",
            "total_fetched",
            "cursors",
        ],
        column_config={
            "success_age_seconds": st.column_config.NumberColumn("success age (s)", format="%.0f")
        },
        key="sync_state_table",
    )


sync_panel()
