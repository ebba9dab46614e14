"""What every dashboard page shares: which roles see which page, the signed-in user, cached connections
(Postgres pool, ClickHouse client) and small display helpers.

Connections: the app uses ``OMS_DASHBOARD_DATABASE_URL`` (a login of the least-privilege role
``oms_dashboard``, migration 0006) and falls back to ``OMS_DATABASE_URL``. ClickHouse: ``OMS_CLICKHOUSE_URL``,
database ``OMS_CH_DATABASE`` (default ``analytics``).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, TypeVar

import psycopg
import streamlit as st
from psycopg_pool import ConnectionPool

from oms_ops.errors import OmsError
from oms_ops.services.health import libpq_url
from oms_ops.users import User

T = TypeVar("T")

#: page → roles that see it (app.py builds the navigation from this; each page checks it again).
PAGE_ROLES: dict[str, frozenset[str]] = {
    "operations": frozenset({"ops", "admin"}),
    "lookup": frozenset({"ops", "manager", "admin"}),
    "callcentre": frozenset({"ops", "admin"}),
    "kpis": frozenset({"manager", "admin"}),
    "health": frozenset({"ops", "manager", "admin"}),
}
#: roles that may change orders (actions on the lookup page).
ACTION_ROLES = frozenset({"ops", "admin"})

#: refresh periods of the live panels and cache lifetimes (seconds)
LIVE_REFRESH_S = 30
SLOW_REFRESH_S = 120
READ_TTL_S = 15
KPI_TTL_S = 300


# -- user and roles ------------------------------------------------------------------------------------------


def require_role(page: str) -> User:
    """The signed-in user if their role may see ``page``; otherwise explains and stops the script."""
    user = st.session_state.get("user")
    if not isinstance(user, User):
        st.warning("Please sign in first.")
        st.stop()
    if user.role not in PAGE_ROLES[page]:
        st.error(f"The {user.role} role cannot open this page.")
        st.stop()
    return user


def actor(user: User) -> str:
    """Who did it, as recorded in order events: ``dashboard:<username>``."""
    return f"dashboard:{user.username}"


# -- Postgres ---------------------------------------------------------------------------------------------------


def database_url() -> str | None:
    return os.environ.get("OMS_DASHBOARD_DATABASE_URL") or os.environ.get("OMS_DATABASE_URL")


def _close_pool(pool: ConnectionPool) -> None:
    pool.close()


@st.cache_resource(show_spinner=False, on_release=_close_pool)
def _pool(url: str) -> ConnectionPool:
    return ConnectionPool(
        url,
        min_size=1,
        max_size=4,
        kwargs={"autocommit": True, "connect_timeout": 5, "application_name": "oms-dashboards"},
        check=ConnectionPool.check_connection,
        max_idle=300,
        name="oms-dashboards",
        open=True,
    )


@contextmanager
def connection(url: str) -> Iterator[psycopg.Connection]:
    """An autocommit connection from the app's pool (returned to it afterwards)."""
    with _pool(url).connection(timeout=10) as conn:
        yield conn


def pg(fn: Callable[..., T], url: str, *args: Any, **kwargs: Any) -> T:
    """Run ``fn(conn, *args, **kwargs)`` on a pooled connection (reads and actions alike)."""
    with connection(url) as conn:
        return fn(conn, *args, **kwargs)


def monitoring_database_url() -> str | None:
    """The URL the Service health page reads the health figures with: ``OMS_DATABASE_URL`` when set (the
    figures read connectors' bookkeeping, which the least-privilege role is not granted), else the
    dashboards' own login (figures it cannot read say so)."""
    return os.environ.get("OMS_DATABASE_URL") or database_url()


def dagster_database_url() -> str | None:
    """The Dagster instance's storage as a libpq URL: ``OMS_DAGSTER_DATABASE_URL``, else the
    ``OMS_DAGSTER_STORAGE_URL`` `oms up` gives its processes (the ``postgresql+psycopg2://`` URL of
    dagster.yaml); None when neither is set."""
    url = os.environ.get("OMS_DAGSTER_DATABASE_URL") or os.environ.get("OMS_DAGSTER_STORAGE_URL")
    return libpq_url(url) if url else None


def require_database() -> str:
    url = database_url()
    if not url:
        st.error("No database configured: set OMS_DASHBOARD_DATABASE_URL (or OMS_DATABASE_URL).")
        st.stop()
    return url


# -- ClickHouse -------------------------------------------------------------------------------------------------


def clickhouse_url() -> str | None:
    return os.environ.get("OMS_CLICKHOUSE_URL")


def analytics_database() -> str:
    return os.environ.get("OMS_CH_DATABASE") or "analytics"


def _close_client(client: Any) -> None:
    client.close()


@st.cache_resource(show_spinner=False, on_release=_close_client)
def clickhouse_client(url: str, database: str) -> Any:
    """One HTTP client for the app; without a session id so concurrent users never share a locked session."""
    import clickhouse_connect

    return clickhouse_connect.get_client(
        dsn=url, database=database, autogenerate_session_id=False, connect_timeout=5, send_receive_timeout=60
    )


# -- actions ----------------------------------------------------------------------------------------------------


def run_action(flash_key: str, fn: Callable[[], str]) -> None:
    """Run an action (an ``oms_ops`` call wrapped by the page) and keep its outcome for the next render:
    success text, or the domain error's message. Caches are cleared and the whole page is rerun, so every
    panel shows the new state: the action buttons live in fragments, and a click in a fragment would
    otherwise rerun only that fragment, leaving the headline figures as they were until their own refresh.
    (Called from a button's callback, ``st.rerun`` turns the interaction into a full-page rerun.)"""
    try:
        message = fn()
    except (OmsError, ValueError) as exc:
        st.session_state[flash_key] = ("error", str(exc))
    except psycopg.Error as exc:
        st.session_state[flash_key] = ("error", f"database error: {str(exc).strip().splitlines()[0]}")
    else:
        st.session_state[flash_key] = ("success", message)
    st.cache_data.clear()
    st.rerun(scope="app")


def show_flash(flash_key: str) -> None:
    """Show (once) the outcome of the last action of this panel."""
    flash = st.session_state.pop(flash_key, None)
    if flash is None:
        return
    kind, text = flash
    (st.success if kind == "success" else st.error)(text)


# -- display ----------------------------------------------------------------------------------------------------

_MD_SPECIAL = str.maketrans({c: "\\" + c for c in "\\`*_[]<>#|~$"})


def md(value: object) -> str:
    """Text safe to put inside st.markdown (masked "+7 *** ***-**-12" must not turn into emphasis)."""
    return "—" if value is None or value == "" else str(value).translate(_MD_SPECIAL)


def fmt_ts(value: datetime | None) -> str:
    if value is None:
        return "—"
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def live_caption(every_s: int) -> None:
    st.caption(f"Live: read at {fmt_ts(datetime.now(UTC))}, refreshed every {every_s} s")
