"""OMS dashboards: one Streamlit app; login first, then the pages the user's role may see (st.navigation)."""

import streamlit as st

from dashboards.auth import require_login, sidebar_account

st.set_page_config(page_title="OMS", page_icon=":material/inventory_2:", layout="wide")

PAGES = {
    # page: roles that see it
    "health": (
        st.Page(
            "pages/health.py", title="Service health", icon=":material/monitor_heart:", url_path="health"
        ),
        {"ops", "manager", "admin"},
    ),
}
SECTIONS = {"Platform": ["health"]}

user = require_login()
if user is None:
    st.stop()
sidebar_account(user)
nav = st.navigation(
    {
        section: [PAGES[name][0] for name in names if user.role in PAGES[name][1]]
        for section, names in SECTIONS.items()
        if any(user.role in PAGES[name][1] for name in names)
    }
)
nav.run()
