"""KPIs (manager, admin) from the ClickHouse marts: fulfilment time p50/p90, on-time, pick accuracy, return
rates (by channel, location, SKU, reason), channel mix and perfect-order rate; filters by dates, channel and
location; Altair charts; CSV downloads; the data's freshness next to the numbers.

Every rate, its name and its definition come from the KPI glossary the marts are built with (dbt seed
``kpi_glossary`` → ``dim_kpi``, docs/kpi-glossary.md): the page re-computes each rate from the sums of the
numerator and denominator columns the glossary names, so any filter combination stays exact and the page
cannot drift from the mart's formula."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import altair as alt
import pandas as pd
import streamlit as st

from dashboards.common import (
    KPI_TTL_S,
    analytics_database,
    clickhouse_client,
    clickhouse_url,
    fmt_ts,
    require_role,
)
from oms_ops import dashboard_queries as dq

require_role("kpis")

st.title("KPIs")
CH_URL = clickhouse_url()
DB = analytics_database()
if not CH_URL:
    st.error("No ClickHouse configured: set OMS_CLICKHOUSE_URL.")
    st.stop()


def _client():
    return clickhouse_client(CH_URL, DB)


@st.cache_data(ttl=KPI_TTL_S, show_spinner=False)
def _status(url: str, db: str) -> tuple[set[str], dict[str, datetime | None]]:
    try:
        client = _client()
    except Exception as exc:
        if "UNKNOWN_DATABASE" in str(exc):  # dbt has not created the analytics database yet
            return set(), {}
        raise
    tables = dq.kpi_tables(client)
    return tables, dq.kpi_freshness(client, tables)


@st.cache_data(ttl=KPI_TTL_S, show_spinner=False)
def _dimension_values(url: str, db: str) -> dict[str, Any]:
    return dq.kpi_dimension_values(_client())


@st.cache_data(ttl=KPI_TTL_S, show_spinner=False)
def _rates(url: str, db: str) -> list[dq.KpiRate]:
    return dq.kpi_rates(_client())


@st.cache_data(ttl=KPI_TTL_S, show_spinner=False)
def _query(url: str, db: str, name: str, f: dq.KpiFilter, *args: Any) -> Any:
    return getattr(dq, name)(_client(), f, *args)


try:
    tables, freshness = _status(CH_URL, DB)
except Exception as exc:  # noqa: BLE001 - any client/server error: say so, never crash the page
    st.error(f"ClickHouse cannot be read ({DB}): {str(exc).strip().splitlines()[0][:300]}")
    st.stop()


def freshness_caption() -> str:
    parts = [f"{t}: {fmt_ts(v)}" for t, v in sorted(freshness.items())]
    return "Data as of (newest change loaded) — " + (" · ".join(parts) if parts else "no mart built yet")


if "agg_kpi_daily" not in tables or freshness.get("agg_kpi_daily") is None:
    st.info(f"No KPI data yet: the marts in the ClickHouse database `{DB}` have not been built or are empty.")
    st.caption(freshness_caption())
    st.stop()
if "dim_kpi" not in tables:
    st.info(f"No KPI definitions yet: the KPI glossary `dim_kpi` in `{DB}` has not been built.")
    st.caption(freshness_caption())
    st.stop()
RATES = _rates(CH_URL, DB)
RATE_BY_COLUMN = {r.column: r for r in RATES}

# -- filters --------------------------------------------------------------------------------------------------------
values = _dimension_values(CH_URL, DB)
# the period ends on the last business date with data (a demo data set may end in the past)
end_default = values["last_day"] or datetime.now(UTC).date()
c1, c2, c3 = st.columns([2, 3, 3])
period = c1.date_input(
    "Placed between", value=(end_default - timedelta(days=29), end_default), key="kpi_period"
)
channels = c2.multiselect("Channels", values["channel"], key="kpi_channels", placeholder="all channels")
locations = c3.multiselect("Locations", values["location"], key="kpi_locations", placeholder="all locations")
if not isinstance(period, tuple | list) or len(period) != 2:
    st.caption("Pick the end date of the period.")
    st.stop()
start, end = period
f = dq.KpiFilter(start=start, end=end, channels=tuple(channels), locations=tuple(locations))

cells = _query(CH_URL, DB, "kpi_rows", f)
totals = dq.rollup(cells, RATES)[0] if cells else {}
if not totals or not totals.get("orders_placed"):
    st.info("No orders in this period for these filters.")
    st.caption(freshness_caption())
    st.stop()


def pct(value: Any) -> str:
    return "—" if value is None or pd.isna(value) else f"{float(value):.1f} %"


#: the headline rates (agg_kpi_daily columns); names and definitions from the glossary
HEADLINE = (
    "on_time_shipment_pct",
    "on_time_delivery_pct",
    "pick_accuracy_pct",
    "return_rate_units_pct",
    "return_rate_orders_pct",
    "perfect_order_rate_pct",
)
headline = [RATE_BY_COLUMN[c] for c in HEADLINE if c in RATE_BY_COLUMN]
m = st.columns(1 + len(headline))
m[0].metric("Orders placed", f"{int(totals['orders_placed']):,}".replace(",", " "))
for col, rate in zip(m[1:], headline, strict=True):
    col.metric(rate.name, pct(totals[rate.column]), help=rate.help or None)
st.caption(freshness_caption() + " · dates are the orders' placed dates (sales cohort), reporting time zone")
with st.expander("Definitions (KPI glossary)"):
    st.dataframe(
        pd.DataFrame(
            [
                {"KPI": r.name, "numerator": r.numerator, "denominator": r.denominator, "column": r.column}
                for r in RATES
            ]
        ),
        hide_index=True,
        width="stretch",
        key="kpi_glossary_table",
    )


def frame(rows: list[dict]) -> pd.DataFrame:
    df = pd.DataFrame(rows)
    for col in df.columns:  # Decimal → float for charts and CSV
        if df[col].dtype == object and df[col].map(lambda v: v.__class__.__name__ == "Decimal").any():
            df[col] = df[col].astype(float)
    return df


def long(df: pd.DataFrame, x: str, cols: dict[str, str]) -> pd.DataFrame:
    out = df[[x, *cols]].rename(columns=cols).melt(id_vars=[x], var_name="series", value_name="value")
    return out.dropna(subset=["value"])


def line_chart(df: pd.DataFrame, y_title: str, *, percent: bool = False) -> alt.Chart:
    y = alt.Y("value:Q", title=y_title, scale=alt.Scale(domain=[0, 100]) if percent else alt.Undefined)
    return (
        alt.Chart(df)
        .mark_line(point=True)
        .encode(
            x=alt.X("date_day:T", title="placed date"),
            y=y,
            color=alt.Color("series:N", title=None),
            tooltip=["date_day:T", "series:N", alt.Tooltip("value:Q", format=".1f")],
        )
    )


def csv(df: pd.DataFrame) -> bytes:
    return df.to_csv(index=False).encode("utf-8")


daily = frame(dq.rollup(cells, RATES, ["date_day"]))

# -- fulfilment time ----------------------------------------------------------------------------------------------
st.subheader("Fulfilment time (placed → shipped), hours")
if "fct_orders" in tables:
    trend = frame(_query(CH_URL, DB, "fulfillment_time_trend", f))
    if trend.empty:
        st.caption("No shipped order in this period.")
    else:
        st.altair_chart(
            line_chart(
                long(trend, "date_day", {"fulfillment_hours_p50": "p50", "fulfillment_hours_p90": "p90"}),
                "hours",
            ),
            width="stretch",
        )
else:
    st.caption("fct_orders is not built yet.")

# -- on time, pick accuracy, perfect orders --------------------------------------------------------------------
left, right = st.columns(2)
with left:
    st.subheader("On time, %")
    st.altair_chart(
        line_chart(
            long(
                daily,
                "date_day",
                {"on_time_shipment_pct": "shipment (ship-by)", "on_time_delivery_pct": "delivery (promise)"},
            ),
            "%",
            percent=True,
        ),
        width="stretch",
    )
with right:
    st.subheader("Pick accuracy and perfect orders, %")
    st.altair_chart(
        line_chart(
            long(
                daily,
                "date_day",
                {"pick_accuracy_pct": "pick accuracy", "perfect_order_rate_pct": "perfect orders"},
            ),
            "%",
            percent=True,
        ),
        width="stretch",
    )

# -- channel mix and return rates by channel / location ----------------------------------------------------------
by_channel = frame(dq.rollup(cells, RATES, ["channel_code"])).rename(columns={"channel_code": "channel"})
by_location = frame(dq.rollup(cells, RATES, ["location_code"])).rename(columns={"location_code": "location"})
left, right = st.columns(2)
with left:
    st.subheader("Channel mix (orders)")
    st.altair_chart(
        alt.Chart(by_channel)
        .mark_arc(innerRadius=50)
        .encode(
            theta="orders_placed:Q",
            color=alt.Color("channel:N", title="channel"),
            tooltip=[
                "channel",
                "orders_placed",
                alt.Tooltip("share_of_orders_pct:Q", format=".1f"),
                "revenue",
            ],
        ),
        width="stretch",
    )
with right:
    st.subheader("Return rate by channel, % of units sold")
    st.altair_chart(
        alt.Chart(by_channel.dropna(subset=["return_rate_units_pct"]))
        .mark_bar()
        .encode(
            x=alt.X("return_rate_units_pct:Q", title="% units returned"),
            y=alt.Y("channel:N", sort="-x", title=None),
            tooltip=[
                "channel",
                "units_returned",
                "units_sold",
                alt.Tooltip("return_rate_units_pct:Q", format=".2f"),
            ],
        ),
        width="stretch",
    )
st.subheader("By location")
st.dataframe(by_location, hide_index=True, width="stretch", key="kpi_by_location")

left, right = st.columns(2)
with left:
    st.subheader("Return rate by SKU")
    if "fct_order_lines" in tables:
        by_sku = frame(_query(CH_URL, DB, "return_rate_by_sku", f))
        if by_sku.empty:
            st.caption("No returns in this period.")
        else:
            st.dataframe(by_sku, hide_index=True, width="stretch", key="kpi_by_sku")
    else:
        st.caption("fct_order_lines is not built yet.")
with right:
    st.subheader("Returns by reason")
    if "fct_returns" in tables:
        by_reason = frame(_query(CH_URL, DB, "returns_by_reason", f))
        if by_reason.empty:
            st.caption("No returns in this period.")
        else:
            st.altair_chart(
                alt.Chart(by_reason)
                .mark_bar()
                .encode(
                    x=alt.X("units_returned:Q", title="units returned"),
                    y=alt.Y("reason:N", sort="-x", title=None),
                    color=alt.Color("is_seller_fault:N", title="seller's fault"),
                    tooltip=["reason_code", "units_returned", alt.Tooltip("share_pct:Q", format=".1f")],
                ),
                width="stretch",
            )
    else:
        st.caption("fct_returns is not built yet.")

# -- downloads ------------------------------------------------------------------------------------------------------
st.subheader("Download")
name = f"{start:%Y%m%d}-{end:%Y%m%d}"
d1, d2, d3 = st.columns(3)
d1.download_button(
    "Daily KPIs (CSV)", csv(daily), f"kpi-daily-{name}.csv", "text/csv", key="dl_daily", on_click="ignore"
)
d2.download_button(
    "By channel (CSV)",
    csv(by_channel),
    f"kpi-by-channel-{name}.csv",
    "text/csv",
    key="dl_channel",
    on_click="ignore",
)
d3.download_button(
    "By location (CSV)",
    csv(by_location),
    f"kpi-by-location-{name}.csv",
    "text/csv",
    key="dl_location",
    on_click="ignore",
)
st.caption(f"Period {start} – {end} · " + freshness_caption())
