"""The app: after sign-in, st.navigation offers the pages of the user's role and opens the role's main page;
before sign-in, and without an admin, it offers nothing else."""

import pytest
from streamlit.testing.v1 import AppTest

from dashboards.common import PAGE_ROLES
from oms_ops.users import save_users
from tests.dashboards.conftest import ADMIN, MANAGER, OPS
from tests.paths import DASHBOARDS


@pytest.fixture
def users_file(tmp_path, monkeypatch):
    """The users file holding the test users (the app re-reads the signed-in user from it on every run)."""
    path = tmp_path / "users.yaml"
    save_users({u.username: u for u in (OPS, MANAGER, ADMIN)}, path)
    monkeypatch.setenv("OMS_USERS_FILE", str(path))
    return path


@pytest.mark.parametrize(("user", "title"), [(OPS, "Operations"), (ADMIN, "Operations"), (MANAGER, "KPIs")])
def test_each_role_lands_on_its_main_page(dash_url, users_file, monkeypatch, user, title):
    monkeypatch.delenv("OMS_CLICKHOUSE_URL", raising=False)
    at = AppTest.from_file(str(DASHBOARDS / "app.py"), default_timeout=30)
    at.session_state["user"] = user
    at.run()
    assert not at.exception
    assert at.title[0].value == title
    assert any(f"Signed in as **{user.username}**" in c.value for c in at.sidebar.caption)


def test_a_user_unknown_to_the_users_file_is_not_let_in(users_file):
    at = AppTest.from_file(str(DASHBOARDS / "app.py"), default_timeout=30)
    at.session_state["user"] = OPS.__class__("mallory", "admin", "scrypt$forged")
    at.run()
    assert not at.exception
    assert "user" not in at.session_state
    assert [t.value for t in at.title] == ["OMS — sign in"]


def test_page_roles():
    assert {p for p, roles in PAGE_ROLES.items() if "manager" in roles} == {"kpis", "lookup", "health"}
    assert {p for p, roles in PAGE_ROLES.items() if "ops" in roles} == {
        "operations",
        "lookup",
        "callcentre",
        "health",
    }
    assert all("admin" in roles for roles in PAGE_ROLES.values())
