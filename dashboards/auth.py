"""Login, first-run admin set-up and logout for the Streamlit app (presentation only; logic in oms_ops.users)."""

from __future__ import annotations

import time

import streamlit as st

from oms_ops.users import User, UserError, add_user, authenticate, needs_first_admin

MAX_FAILURES = 5
LOCKOUT_S = 30


def current_user() -> User | None:
    return st.session_state.get("user")


def _first_admin_form() -> None:
    st.title("Welcome to the OMS")
    st.info("No administrator exists yet. Create the first admin account.")
    with st.form("first_admin"):
        username = st.text_input("Admin username", value="admin")
        password = st.text_input("Password (8+ characters)", type="password")
        confirm = st.text_input("Repeat password", type="password")
        submitted = st.form_submit_button("Create admin")
    if submitted:
        if password != confirm:
            st.error("The passwords differ.")
            return
        try:
            user = add_user(username.strip(), "admin", password, display_name="Administrator")
        except UserError as exc:
            st.error(str(exc))
            return
        st.session_state["user"] = user
        st.rerun()


def _login_form() -> None:
    st.title("OMS — sign in")
    locked_until = st.session_state.get("locked_until", 0.0)
    if time.time() < locked_until:
        st.error(f"Too many failed attempts; try again in {int(locked_until - time.time()) + 1} s.")
        return
    with st.form("login"):
        username = st.text_input("Username")
        password = st.text_input("Password", type="password")
        submitted = st.form_submit_button("Sign in")
    if submitted:
        user = authenticate(username.strip(), password)
        if user is None:
            failures = st.session_state.get("failures", 0) + 1
            st.session_state["failures"] = failures
            if failures >= MAX_FAILURES:
                st.session_state["locked_until"] = time.time() + LOCKOUT_S
                st.session_state["failures"] = 0
            st.error("Unknown user or wrong password.")
            return
        st.session_state["failures"] = 0
        st.session_state["user"] = user
        st.rerun()


def require_login() -> User | None:
    """Returns the signed-in user, or draws the login (or first-admin) form and returns None."""
    user = current_user()
    if user is not None:
        return user
    if needs_first_admin():
        _first_admin_form()
    else:
        _login_form()
    return None


def sidebar_account(user: User) -> None:
    with st.sidebar:
        st.caption(f"Signed in as **{user.username}** ({user.role})")
        if st.button("Sign out", key="logout"):
            for key in ("user", "failures", "locked_until"):
                st.session_state.pop(key, None)
            st.rerun()
