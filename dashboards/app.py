"""OMS dashboards: one Streamlit app; login first, then the pages the user's role may see (st.navigation).

Every run calls st.navigation — with nothing but the sign-in page before sign-in, and with nothing but the
one-line set-up message while no admin exists — so Streamlit never falls back to listing ``pages/`` by itself:
before sign-in the sidebar is empty and no page URL (``/health`` included) runs a page script.
"""

import streamlit as st

from dashboards.auth import current_user, login_page, sidebar_account
from dashboards.common import PAGE_ROLES
from oms_ops.users import missing_admin_message

st.set_page_config(page_title="OMS", page_icon=":material/inventory_2:", layout="wide")

PAGES = {
    # page: roles that see it (dashboards.common.PAGE_ROLES; every page checks them again)
    "operations": st.Page(
        "pages/operations.py", title="Operations", icon=":material/dashboard:", url_path="operations"
    ),
    "kpis": st.Page("pages/kpis.py", title="KPIs", icon=":material/monitoring:", url_path="kpis"),
    "lookup": st.Page("pages/lookup.py", title="Order lookup", icon=":material/search:", url_path="lookup"),
    "callcentre": st.Page(
        "pages/callcentre.py",
        title="Call-centre order",
        icon=":material/support_agent:",
        url_path="callcentre",
    ),
    "health": st.Page(
        "pages/health.py", title="Service health", icon=":material/monitor_heart:", url_path="health"
    ),
    "backtest": st.Page(
        "pages/backtest.py", title="Routing backtest", icon=":material/alt_route:", url_path="backtest"
    ),
    "api_keys": st.Page("pages/api_keys.py", title="API keys", icon=":material/key:", url_path="api-keys"),
}
# Section order puts each role's main page first: ops and admins land on Operations, managers on KPIs.
SECTIONS = {
    "Operations": ["operations"],
    "KPIs": ["kpis"],
    "Orders": ["lookup", "callcentre"],
    "Platform": ["health", "backtest", "api_keys"],
}


def _not_set_up() -> None:
    """The app refuses to start without an admin; the message names the fix (`oms users add`)."""
    st.title("OMS dashboards")
    st.error(PROBLEM, icon=":material/lock:")


PROBLEM = missing_admin_message()
if PROBLEM:
    st.navigation([st.Page(_not_set_up, title="OMS", url_path="setup")], position="hidden").run()
    st.stop()

user = current_user()
if user is None:
    st.navigation([st.Page(login_page, title="Sign in", url_path="login")], position="hidden").run()
    st.stop()
sidebar_account(user)
nav = st.navigation(
    {
        section: [PAGES[name] for name in names if user.role in PAGE_ROLES[name]]
        for section, names in SECTIONS.items()
        if any(user.role in PAGE_ROLES[name] for name in names)
    }
)
nav.run()
