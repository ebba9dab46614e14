"""Dashboard AppTests: each test gets a fresh migrated database, and the app connects to it as a login of the
least-privilege role ``oms_dashboard`` (migration 0006) — so every action test also proves the role's grants
suffice. Page scripts are run directly with ``session_state["user"]`` set, as after sign-in."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

import psycopg
import pytest
import streamlit as st
from psycopg import sql
from streamlit.testing.v1 import AppTest

from oms_ops.users import User
from tests.paths import DASHBOARDS

DASHBOARD_LOGIN = "oms_dashboard_test"
DASHBOARD_PASSWORD = "dashboard-test-password"

OPS = User("olga", "ops", "scrypt$unused", "Olga")
MANAGER = User("maria", "manager", "scrypt$unused", "Maria")
ADMIN = User("root", "admin", "scrypt$unused", "Root")


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
def dash_url(db_url, dashboard_login, monkeypatch) -> str:
    """The URL the app uses (least-privilege login); OMS_DATABASE_URL stays the owner's for health probes."""
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
        at.session_state["user"] = user
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
