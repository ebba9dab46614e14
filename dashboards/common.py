"""What every dashboard page shares: which roles see which page, the signed-in user, cached connections
(Postgres pool, ClickHouse client) and small display helpers.

Connections: the app uses ``OMS_DASHBOARD_DATABASE_URL`` (a login of the least-privilege role
``oms_dashboard``, migration 0006) and falls back to ``OMS_DATABASE_URL``. ClickHouse: ``OMS_CLICKHOUSE_URL``,
database ``OMS_CH_DATABASE`` (default ``analytics``).
"""

from __future__ import annotations

import os
import re
import unicodedata
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import psycopg
import streamlit as st
from psycopg_pool import ConnectionPool
from streamlit.errors import StreamlitAPIException

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
#: roles that see where the stores are (hosts, ports, database names) and the raw errors naming them.
INFRASTRUCTURE_ROLES = frozenset({"admin"})

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
        _to_sign_in()
        st.warning("Please sign in first.")
        st.stop()
    if user.role not in PAGE_ROLES[page]:
        st.error(f"The {user.role} role cannot open this page.")
        st.stop()
    return user


def _to_sign_in() -> None:
    """Send a visitor who reached a page script without app.py to app.py's sign-in page.

    Until app.py first calls st.navigation in a server process, Streamlit still runs in its pages-directory
    mode, because ``dashboards/pages/`` exists: a first request for ``/health`` runs ``pages/health.py`` by
    itself, with every page listed in the sidebar. Switching to app.py ends that mode for the process (its
    st.navigation offers only the sign-in page). Under app.py's navigation app.py is no page to switch to:
    then app.py itself is running this page and shows the sign-in form anyway."""
    try:
        st.switch_page("app.py")
    except StreamlitAPIException:
        pass


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


def url_without_credentials(url: str | None) -> str:
    """A store's URL for display: user name, password and query (libpq's ``?password=…``) removed —
    ``postgresql://oms:secret@db:5432/oms?sslmode=require`` → ``postgresql://***@db:5432/oms``. Text that is
    not a URL (a libpq ``key=value`` string) is not shown at all."""
    if not url:
        return "—"
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return "(set)"
    if not parts.scheme or not parts.netloc:
        return "(set)"
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = ("***@" if "@" in parts.netloc else "") + host + (f":{port}" if port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


_ENDPOINT_PATTERNS = (
    (re.compile(r"\b[a-z][a-z0-9+.-]*://[^\s'\"<>]+", re.IGNORECASE), "<url>"),
    (
        re.compile(r"\b(host|hostaddr|user|password|port|dbname)\s*=\s*('[^']*'|\"[^\"]*\"|[^\s,)]+)", re.I),
        r"\1=<hidden>",
    ),
    (
        re.compile(r'\b(server at|host name|host|user|role|database)\s+"[^"]*"', re.IGNORECASE),
        r'\1 "<hidden>"',
    ),
    (re.compile(r"\b(?:\d{1,3}\.){3}\d{1,3}(?::\d+)?"), "<host>"),
    (re.compile(r"\[[0-9a-f:]*:[0-9a-f:]*\](?::\d+)?", re.IGNORECASE), "<host>"),
    (re.compile(r"\blocalhost(?::\d+)?", re.IGNORECASE), "<host>"),
    (re.compile(r"\bport\s+\d+", re.IGNORECASE), "port <hidden>"),
)


_URL_CREDENTIALS = re.compile(r"\b([a-z][a-z0-9+.-]*://)[^/@\s'\"<>]+@", re.IGNORECASE)
_PASSWORD_PARAM = re.compile(r"\b(password|passwd|pwd)\s*=\s*('[^']*'|\"[^\"]*\"|[^\s&,)]+)", re.IGNORECASE)


def hide_credentials(text: str) -> str:
    """Any text (an error, a URL) with the user name and password of every URL in it and every
    ``password=…`` parameter replaced by ``***`` — what even admins see."""
    return _PASSWORD_PARAM.sub(r"\1=***", _URL_CREDENTIALS.sub(r"\1***@", text))


def scrub_endpoints(text: str) -> str:
    """An error text without what locates or opens a store — URLs, hosts, ports, user and database names —
    for roles below admin (``INFRASTRUCTURE_ROLES``), who need to know *that* a store is down, not where it
    is: ``connection to server at "10.0.0.5", port 5432 failed`` → ``… at "<hidden>", port <hidden> failed``."""
    for pattern, replacement in _ENDPOINT_PATTERNS:
        text = pattern.sub(replacement, text)
    return text


#: characters a search box drops: control characters (NUL …), lone surrogates, unassigned code points and
#: invisible format characters (zero-width spaces pasted along with a number)
_DROPPED_CATEGORIES = frozenset({"Cc", "Cs", "Co", "Cn", "Cf"})


def clean_text_input(text: str, *, max_len: int = 200) -> tuple[str, int]:
    """Typed text made safe to search with: NUL and other control characters, lone surrogates and invisible
    format characters removed (Postgres refuses NUL in text, and a lone surrogate cannot be encoded to
    UTF-8), surrounding spaces stripped, cut at ``max_len``. Returns the text and how many characters
    were dropped."""
    kept = "".join(c for c in text if unicodedata.category(c) not in _DROPPED_CATEGORIES)
    dropped = len(text) - len(kept)
    kept = kept.strip()
    if len(kept) > max_len:
        dropped += len(kept) - max_len
        kept = kept[:max_len]
    return kept, dropped


def live_caption(every_s: int) -> None:
    st.caption(f"Live: read at {fmt_ts(datetime.now(UTC))}, refreshed every {every_s} s")
