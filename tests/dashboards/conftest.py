"""Dashboard AppTests: each test gets a fresh migrated database; the app reads it as a login of the read-only
role ``oms_dashboard`` (migrations 0006 and 0016) and runs its actions through a real OMS API server
(``oms_ops.api``, on a loopback port, on the owner's login) — so every action test also proves that the
actions need no write grant of the dashboards. Page scripts are run directly with ``session_state["user"]``
and the user's API token set, as after sign-in."""

from __future__ import annotations

import re
import secrets
from urllib.parse import urlsplit

import psycopg
import pytest
import streamlit as st
from psycopg import sql
from streamlit.testing.v1 import AppTest

from dashboards.common import API_TOKEN_KEY
from oms_ops.api.app import issue_token
from oms_ops.api.server import ApiServer
from oms_ops.users import User, save_users
from tests.paths import DASHBOARDS

DASHBOARD_LOGIN = "oms_dashboard_test"
DASHBOARD_PASSWORD = "dashboard-test-password"

OPS = User("olga", "ops", "scrypt$unused", "Olga")
MANAGER = User("maria", "manager", "scrypt$unused", "Maria")
ADMIN = User("root", "admin", "scrypt$unused", "Root")
#: the test API's token signing key (made per test run; the OMS keeps its own in $OMS_HOME/secrets)
API_SIGNING_KEY = secrets.token_urlsafe(32)


@pytest.fixture(scope="session")
def dashboard_login(pg_admin_url, pg_template_url) -> str:
    """A LOGIN role that is a member of oms_dashboard (cluster-wide, created once per session)."""
    with psycopg.connect(pg_admin_url, autocommit=True) as admin:
        exists = admin.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (DASHBOARD_LOGIN,)).fetchone()
        if not exists:
            admin.execute(
                sql.SQL("CREATE ROLE {} LOGIN PASSWORD {} IN ROLE oms_dashboard").format(
                    sql.Identifier(DASHBOARD_LOGIN), sql.Literal(DASHBOARD_PASSWORD)
                )
            )
    return DASHBOARD_LOGIN


def as_login(url: str, user: str, password: str) -> str:
    parts = urlsplit(url)
    netloc = f"{user}:{password}@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
    return parts._replace(netloc=netloc).geturl()


@pytest.fixture
def api_server(db_url, tmp_path, monkeypatch):
    """The OMS API on the test database (owner's login), its URL in ``OMS_API_URL``; it knows the three test
    users through ``OMS_USERS_FILE`` (a test may point that variable at its own file)."""
    users = tmp_path / "api-users.yaml"
    save_users({u.username: u for u in (OPS, MANAGER, ADMIN)}, users)
    monkeypatch.setenv("OMS_USERS_FILE", str(users))
    with ApiServer(db_url, signing_key=API_SIGNING_KEY) as server:
        monkeypatch.setenv("OMS_API_URL", server.url)
        yield server


@pytest.fixture
def dash_url(db_url, dashboard_login, api_server, monkeypatch) -> str:
    """The URL the app reads with (read-only login); OMS_DATABASE_URL stays the owner's for health probes;
    actions go to ``api_server``."""
    url = as_login(db_url, dashboard_login, DASHBOARD_PASSWORD)
    monkeypatch.setenv("OMS_DATABASE_URL", db_url)
    monkeypatch.setenv("OMS_DASHBOARD_DATABASE_URL", url)
    yield url
    st.cache_data.clear()
    st.cache_resource.clear()  # closes the pools (on_release) before the database is dropped


def page(name: str, user: User | None) -> AppTest:
    """An AppTest of ``dashboards/pages/<name>.py`` as ``user`` (not run yet)."""
    at = AppTest.from_file(str(DASHBOARDS / "pages" / f"{name}.py"), default_timeout=30)
    if user is not None:
        signed_in(at, user)
    return at


def signed_in(at: AppTest, user: User) -> AppTest:
    """``at`` as after ``user`` signed in: the user and their token of the test API in the session."""
    at.session_state["user"] = user
    at.session_state[API_TOKEN_KEY] = issue_token(user, API_SIGNING_KEY)[0]
    return at


def texts(at: AppTest) -> str:
    """Everything the page wrote as text (markdown, captions, alerts, metrics), for `in` checks."""
    parts = [e.value for e in at.markdown] + [e.value for e in at.caption]
    for kind in (at.success, at.info, at.warning, at.error):
        parts += [e.value for e in kind]
    parts += [f"{m.label}: {m.value}" for m in at.metric]
    parts += [e.value for e in at.title] + [e.value for e in at.header] + [e.value for e in at.subheader]
    # markdown escapes (dashboards.common.md) removed: "И\\*\\*\\*" reads as the user sees it, "И***"
    return re.sub(r"\\(.)", r"\1", "\n".join(str(p) for p in parts))


def frame(at: AppTest, *columns: str):
    """The first st.dataframe whose columns include all of ``columns`` (read-only grids carry no key)."""
    for df in at.dataframe:
        value = df.value
        if all(c in value.columns for c in columns):
            return value
    raise AssertionError(
        f"no dataframe with columns {columns}: {[list(d.value.columns) for d in at.dataframe]}"
    )
