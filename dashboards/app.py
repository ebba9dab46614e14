"""OMS dashboards: one Streamlit app, pages chosen with st.navigation."""

import streamlit as st

st.set_page_config(page_title="OMS", page_icon="📦", layout="wide")

health = st.Page("pages/health.py", title="Service health", icon="🩺", url_path="health")

nav = st.navigation({"Platform": [health]})
nav.run()
