"""The app: after sign-in, st.navigation offers the pages of the user's role and opens the role's main page."""

import pytest
from streamlit.testing.v1 import AppTest

from dashboards.common import PAGE_ROLES
from tests.dashboards.conftest import ADMIN, MANAGER, OPS
from tests.paths import DASHBOARDS


@pytest.mark.parametrize(("user", "title"), [(OPS, "Operations"), (ADMIN, "Operations"), (MANAGER, "KPIs")])
def test_each_role_lands_on_its_main_page(dash_url, monkeypatch, user, title):
    monkeypatch.delenv("OMS_CLICKHOUSE_URL", raising=False)
    at = AppTest.from_file(str(DASHBOARDS / "app.py"), default_timeout=30)
    at.session_state["user"] = user
    at.run()
    assert not at.exception
    assert at.title[0].value == title
    assert any(f"Signed in as **{user.username}**" in c.value for c in at.sidebar.caption)


def test_page_roles():
    assert {p for p, roles in PAGE_ROLES.items() if "manager" in roles} == {"kpis", "lookup", "health"}
    assert {p for p, roles in PAGE_ROLES.items() if "ops" in roles} == {
        "operations",
        "lookup",
        "callcentre",
        "health",
    }
    assert all("admin" in roles for roles in PAGE_ROLES.values())
