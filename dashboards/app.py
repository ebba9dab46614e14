"""OMS dashboards: one Streamlit app; login first, then the pages the user's role may see (st.navigation)."""

import streamlit as st

from dashboards.auth import require_login, sidebar_account
from dashboards.common import PAGE_ROLES

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
}
# Section order puts each role's main page first: ops and admins land on Operations, managers on KPIs.
SECTIONS = {
    "Operations": ["operations"],
    "KPIs": ["kpis"],
    "Orders": ["lookup", "callcentre"],
    "Platform": ["health"],
}

user = require_login()
if user is None:
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
