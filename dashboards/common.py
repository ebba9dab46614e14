"""What every dashboard page shares: which roles see which page, the signed-in user, cached connections
(Postgres pool, ClickHouse client), the actions (:func:`act`, through the OMS API) and small display helpers.

Connections: the app reads with ``OMS_DASHBOARD_DATABASE_URL`` (a login of the read-only role
``oms_dashboard``, migrations 0006 and 0016) and falls back to ``OMS_DATABASE_URL``. Actions go to the OMS
API at ``OMS_API_URL`` with the signed-in user's token (docs/api.md). ClickHouse: ``OMS_CLICKHOUSE_URL``,
database ``OMS_CH_DATABASE`` (default ``analytics``).
"""

from __future__ import annotations

import json
import os
import re
import unicodedata
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import httpx
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
    "backtest": frozenset({"admin"}),  # routing what-ifs read every order: admins only
    "api_keys": frozenset({"admin"}),  # who may reach the public API
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
    """Run ``fn(conn, *args, **kwargs)`` on a pooled connection. Reads only: the login may not write
    (migration 0016); every change goes through :func:`act`."""
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

#: session key of the signed-in user's API token (dashboards.auth obtains it at sign-in)
API_TOKEN_KEY = "api_token"
#: how long an action may take before the page gives up waiting (seconds)
ACTION_TIMEOUT_S = 120


class ActionFailed(OmsError):
    """An action the OMS API refused or could not run; the message is what the page shows."""

    def __init__(self, message: str, *, status: int | None = None, error: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.error = error


def api_url() -> str | None:
    """``OMS_API_URL``: the OMS API that runs the dashboards' actions (docs/api.md)."""
    return (os.environ.get("OMS_API_URL") or "").rstrip("/") or None


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def act(name: str, **args: Any) -> Any:
    """Run the OMS API's action ``name`` with ``args`` as the signed-in user and return its result.

    The dashboards' database login only reads: every change is an action of the API, which checks the
    user's token and role and the arguments and runs it under the OMS's own login. A refusal raises
    :class:`ActionFailed` (an ``OmsError``) with the domain's own message, so pages show it as before; an
    expired session also signs the user out, to sign in again."""
    base = api_url()
    if base is None:
        raise ActionFailed("Actions are unavailable: OMS_API_URL is not set (the OMS API runs them).")
    token = st.session_state.get(API_TOKEN_KEY)
    if not token:
        raise ActionFailed("Actions are unavailable: no API session — sign out and sign in again.")
    try:
        response = httpx.post(
            f"{base}/v1/actions/{name}",
            content=json.dumps(args, default=_json_default),
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
            timeout=ACTION_TIMEOUT_S,
        )
    except httpx.HTTPError as exc:
        raise ActionFailed(
            f"The OMS API cannot be reached ({type(exc).__name__}): try again shortly."
        ) from exc
    try:
        body = response.json()
    except ValueError:
        body = {}
    if response.status_code == 200 and isinstance(body, dict):
        return body.get("result")
    detail = str(body.get("detail") or response.reason_phrase) if isinstance(body, dict) else ""
    error = body.get("error") if isinstance(body, dict) else None
    if response.status_code == 401:
        st.session_state.pop(API_TOKEN_KEY, None)
        st.session_state.pop("user", None)
        st.session_state["auth_notice"] = f"Your session ended ({detail}): sign in again."
        raise ActionFailed(f"Not signed in to the OMS API: {detail}.", status=401, error=error)
    if response.status_code == 403:
        raise ActionFailed(f"Not allowed: {detail}.", status=403, error=error)
    if response.status_code == 400 and error == "invalid_arguments":
        raise ActionFailed(f"Invalid input: {detail}", status=400, error=error)
    raise ActionFailed(
        detail or f"the OMS API answered {response.status_code}", status=response.status_code, error=error
    )


def api_health_figures() -> list[dict[str, Any]]:
    """The Service health figures as the OMS API computes them on the OMS's own login (``GET
    /v1/health/figures``): the dashboards hold neither that login nor Dagster's storage URL. Raises
    :class:`ActionFailed` when there is no API, no session, or the API refuses."""
    base = api_url()
    token = st.session_state.get(API_TOKEN_KEY)
    if base is None or not token:
        raise ActionFailed("the OMS API is not available to this session")
    try:
        response = httpx.get(
            f"{base}/v1/health/figures", headers={"Authorization": f"Bearer {token}"}, timeout=30
        )
        body = response.json()
    except (httpx.HTTPError, ValueError) as exc:
        raise ActionFailed(f"The OMS API cannot be reached ({type(exc).__name__})") from exc
    if response.status_code != 200 or not isinstance(body, dict):
        detail = body.get("detail") if isinstance(body, dict) else None
        raise ActionFailed(str(detail or f"the OMS API answered {response.status_code}"))
    return list(body.get("figures") or [])


def run_action(flash_key: str, fn: Callable[[], str]) -> None:
    """Run an action (an :func:`act` call wrapped by the page) and keep its outcome for the next render:
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
