"""Service health: are Postgres and ClickHouse up, how fast do they answer, is the schema current."""

import os

import streamlit as st

from dashboards.common import database_url
from oms_ops.platform.health import clickhouse_health, postgres_health


@st.cache_data(ttl=10, show_spinner=False)
def _probe(database_url: str | None, clickhouse_url: str | None):
    return postgres_health(database_url), clickhouse_health(clickhouse_url)


st.title("Service health")


@st.fragment(run_every=15)
def health_panel() -> None:
    pg, ch = _probe(database_url(), os.environ.get("OMS_CLICKHOUSE_URL"))
    cols = st.columns(2)
    for col, h in zip(cols, (pg, ch), strict=True):
        with col:
            st.subheader(h.name)
            if h.up:
                st.success(f"{h.name} is up", icon=":material/check_circle:")
                st.metric("Latency", f"{h.latency_ms:.1f} ms")
                st.caption(f"version {h.version} · {h.url}")
            else:
                st.error(f"{h.name} is down: {h.error}", icon=":material/error:")
    if pg.up and pg.detail.get("migrations_pending"):
        st.warning(
            "Pending migrations: " + ", ".join(pg.detail["migrations_pending"]) + " — run `oms migrate`."
        )


health_panel()
