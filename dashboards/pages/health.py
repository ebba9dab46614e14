"""Service health: are Postgres and ClickHouse up — and does the work keep up with them?

A server that answers says little while runs fail before any step or the marts are twenty minutes old, so
under the service probes the page shows the figures of ``oms_ops.services.health`` (worker heartbeat and lag,
the oldest unallocated order, ATS pushes per channel, failed and queued Dagster runs, mart freshness), each
with its verdict, and never says all is well while one of them is not.

Every role may open the page, but only admins (``INFRASTRUCTURE_ROLES``) see where the stores are: their
URLs (credentials removed even then) and the raw errors; others get the same verdicts with hosts, ports, user
and database names scrubbed from every text, since the page is an inventory of targets otherwise.
"""

import pandas as pd
import streamlit as st

from dashboards.common import (
    INFRASTRUCTURE_ROLES,
    ActionFailed,
    analytics_database,
    api_health_figures,
    api_url,
    clickhouse_url,
    dagster_database_url,
    database_url,
    hide_credentials,
    monitoring_database_url,
    require_role,
    scrub_endpoints,
    url_without_credentials,
)
from oms_ops.platform.health import clickhouse_health, postgres_health
from oms_ops.services import health

#: verdict → (alert, icon)
ALERTS = {
    health.OK: (st.success, ":material/check_circle:"),
    health.WARN: (st.warning, ":material/warning:"),
    health.BAD: (st.error, ":material/error:"),
}
#: the thresholds the verdicts come from, shown under the figures: (figure, warn above, bad above)
THRESHOLDS = (
    ("Worker heartbeat age", health.WORKER_BEAT_WARN_S, health.WORKER_BEAT_BAD_S),
    ("Worker lag", health.WORKER_LAG_WARN_S, health.WORKER_LAG_BAD_S),
    ("Oldest unallocated order", health.UNALLOCATED_WARN_S, health.UNALLOCATED_BAD_S),
    ("Last ATS push, values waiting", health.ATS_PUSH_WARN_S, health.ATS_PUSH_BAD_S),
    ("Oldest queued Dagster run", health.QUEUED_RUN_WARN_S, health.QUEUED_RUN_BAD_S),
    ("KPI marts behind the system of record", health.MART_STALE_WARN_S, health.MART_STALE_BAD_S),
)


user = require_role("health")
SHOW_ENDPOINTS = user.role in INFRASTRUCTURE_ROLES


def _say(text: str) -> str:
    """Text for this user: as it is for admins, without hosts, ports and names for everyone else."""
    return hide_credentials(text) if SHOW_ENDPOINTS else scrub_endpoints(text)


@st.cache_data(ttl=10, show_spinner=False)
def _probe(database_url: str | None, clickhouse_url: str | None):
    return postgres_health(database_url), clickhouse_health(clickhouse_url)


@st.cache_data(ttl=10, show_spinner=False)
def _figures(
    database_url: str, clickhouse_url: str | None, analytics: str, dagster_url: str | None
) -> list[health.Figure]:
    return health.system_health(
        database_url,
        clickhouse_url=clickhouse_url,
        analytics_database=analytics,
        dagster_database_url=dagster_url,
    )


st.title("Service health")


def _thresholds() -> None:
    rows = [
        {"figure": name, "warn": f"> {health.age_text(w)}", "bad": f"> {health.age_text(b)}"}
        for name, w, b in THRESHOLDS
    ]
    rows.append(
        {
            "figure": f"Dagster runs failed in the last {health.age_text(health.FAILED_RUNS_WINDOW_S)}, not retried",
            "warn": f"≥ {health.FAILED_RUNS_WARN}",
            "bad": f"≥ {health.FAILED_RUNS_BAD}",
        }
    )
    with st.expander("Thresholds"):
        st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch", key="health_thresholds")


@st.fragment(run_every=15)
def health_panel() -> None:
    ch_url = clickhouse_url()
    pg_url = database_url()
    pg, ch = _probe(pg_url, ch_url)
    cols = st.columns(2)
    for col, h, url in zip(cols, (pg, ch), (pg_url, ch_url), strict=True):
        with col:
            st.subheader(h.name)
            if h.up:
                st.success(f"{h.name} is up", icon=":material/check_circle:")
                st.metric("Latency", f"{h.latency_ms:.1f} ms")
                where = f" · {url_without_credentials(url)}" if SHOW_ENDPOINTS else ""
                st.caption(f"version {h.version}{where}")
            else:
                st.error(_say(f"{h.name} is down: {h.error}"), icon=":material/error:")
    if pg.up and pg.detail.get("migrations_pending"):
        st.warning(
            "Pending migrations: " + ", ".join(pg.detail["migrations_pending"]) + " — run `oms migrate`."
        )

    st.subheader("Is the work keeping up?")
    if api_url() is not None:
        # computed by the OMS API on the OMS's own login: the dashboards hold neither it nor Dagster's
        try:
            figures = [health.Figure(**f) for f in api_health_figures()]
        except ActionFailed as exc:
            st.error(_say(f"Health figures unavailable: {exc}"))
            return
    else:
        url = monitoring_database_url()
        if not url:
            st.error("No database configured: set OMS_DATABASE_URL.")
            return
        figures = _figures(url, ch_url, analytics_database(), dagster_database_url())
    verdict = health.worst(figures)
    problems = [f for f in figures if f.verdict != health.OK]
    if verdict == health.OK:
        st.success("Every figure is within its thresholds.", icon=":material/check_circle:")
    else:
        alert, icon = ALERTS[verdict]
        alert(
            _say(
                f"{len(problems)} of {len(figures)} figures need attention: "
                + ", ".join(f"{f.label} ({f.verdict})" for f in problems)
            ),
            icon=icon,
        )
    for f in figures:
        alert, icon = ALERTS[f.verdict]
        alert(_say(f"{f.label} — {f.verdict}: {f.summary}"), icon=icon)
    _thresholds()


health_panel()
