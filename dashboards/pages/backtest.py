"""Routing backtest (admins): replay a past period's orders against a draft business configuration and see,
beside what the live allocator decided, what would have changed — split rate, parcels, carrier cost,
distance, promise misses, unfillable orders and each location's load.

The draft is pasted, uploaded or the current configuration file; it is validated by the same loader as the
live file, so every problem is listed with its field path before anything runs. The backtest only reads
(one read-only transaction, ``oms_ops.services.backtest``): nothing here changes the system.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pandas as pd
import streamlit as st

from dashboards.common import pg, require_database, require_role
from oms_ops.business_config import BusinessConfigError
from oms_ops.services.backtest import BacktestError, load_draft, parse_draft, run_backtest

SOURCES = ("Current configuration file", "Paste YAML", "Upload a YAML file")
RESULT_KEY = "bt_report"

user = require_role("backtest")
URL = require_database()

st.title("Routing backtest")
st.caption(
    "Replays the orders of a past period against a draft configuration, on the stock each location had when "
    "each order arrived, and compares with what really happened. Read-only: nothing is written."
)

try:
    live = load_draft(None)
except BusinessConfigError as exc:  # the live file itself is broken: say so, the page can still take a draft
    live = None
    st.warning(f"The current configuration file does not load: {exc}")

today = datetime.now(UTC).date()
with st.form("backtest"):
    a, b, c = st.columns([1, 1, 2])
    start = a.date_input("From", value=today - timedelta(days=30), key="bt_from")
    end = b.date_input("To (included)", value=today - timedelta(days=1), key="bt_to")
    channels = c.multiselect(
        "Channels (none = all)", [ch.code for ch in live.channels] if live else [], key="bt_channels"
    )
    source = st.radio("Draft configuration", SOURCES, key="bt_source", horizontal=True)
    text = st.text_area("Draft YAML (when pasting)", key="bt_yaml", height=240)
    upload = st.file_uploader("Draft YAML file (when uploading)", type=["yaml", "yml"], key="bt_upload")
    run = st.form_submit_button("Run backtest", type="primary")

if run:
    st.session_state.pop(RESULT_KEY, None)
    try:
        if source == SOURCES[1]:
            if not text.strip():
                raise BacktestError("draft: paste the YAML of the draft configuration")
            draft = parse_draft(text, source="pasted draft")
        elif source == SOURCES[2]:
            if upload is None:
                raise BacktestError("draft: choose a YAML file to upload")
            draft = parse_draft(upload.getvalue().decode("utf-8", errors="replace"), source=upload.name)
        else:
            draft = load_draft(None)
        with st.spinner("Replaying the period…"):
            report = pg(run_backtest, URL, draft, start=start, end=end, channels=channels or None)
    except BusinessConfigError as exc:
        st.error("The draft configuration is invalid:\n\n" + "\n".join(f"- `{p}`" for p in exc.problems))
    except BacktestError as exc:
        st.error(str(exc))
    else:
        st.session_state[RESULT_KEY] = report.as_dict()

result = st.session_state.get(RESULT_KEY)
if result is None:
    st.info("Pick a period and a draft, then run the backtest.")
    st.stop()

figures = {f["figure"]: f for f in result["figures"]}
st.subheader(f"{result['from'][:10]} … {result['to'][:10]}: {figures['orders']['backtest']} orders replayed")
st.caption(
    f"Draft {result['config_fingerprint']} against the live decisions (configuration "
    f"{', '.join(result['live_fingerprints']) or '—'}); read-only transaction: "
    f"{'yes' if result['read_only'] else 'NO'}; {result['timings_s']}"
)
m = st.columns(4)
for col, key in zip(m, ("changed_plans", "split_rate", "carrier_cost_rub", "unfillable"), strict=True):
    f = figures[key]
    col.metric(
        f["label"],
        f"{f['backtest']:,}",
        delta=f"{f['change']:+,}" if key != "changed_plans" else None,
        delta_color="inverse",
    )

st.dataframe(
    pd.DataFrame(result["figures"])[["label", "unit", "real", "backtest", "change"]],
    hide_index=True,
    width="stretch",
)

st.subheader("Load per location")
load = pd.DataFrame(result["locations"])
if load.empty:
    st.info("No shipments on either side in this period.")
else:
    chart = load.rename(columns={"real_shipments": "real", "backtest_shipments": "backtest"})
    st.bar_chart(chart, x="location", y=["real", "backtest"], stack=False, y_label="shipments")
    st.dataframe(load, hide_index=True, width="stretch")

if result["changed_examples"]:
    st.subheader("Orders whose plan changes (first ones)")
    st.dataframe(pd.DataFrame(result["changed_examples"]), hide_index=True, width="stretch")
