"""Sign-in and sign-out of the Streamlit app (presentation only; the logic is in ``oms_ops.users``).

The app never creates an account: users come from ``oms users add`` (or ``oms demo``), and without an admin
the app shows :func:`oms_ops.users.missing_admin_message` and nothing else. Failed sign-ins are throttled on
the server per user name (``oms_ops.users.sign_in``), so a reload or a new browser session does not reset
the count. The signed-in user is re-read from the users file on every run: a user removed, or whose password
was changed, is signed out; a changed role applies at once.
"""

from __future__ import annotations

import math

import streamlit as st

from oms_ops.users import LoginLocked, User, UserError, load_users, locked_for, lockout_file, sign_in

#: session keys this module owns (cleared on sign-out)
SESSION_KEYS = ("user", "auth_notice")


def current_user() -> User | None:
    """The signed-in user as the users file has them now, or None."""
    user = st.session_state.get("user")
    if not isinstance(user, User):
        return None
    try:
        fresh = load_users().get(user.username)
    except UserError:
        fresh = None
    if fresh is None or fresh.password_hash != user.password_hash:
        sign_out()
        st.session_state["auth_notice"] = "Your account was changed or removed: sign in again."
        return None
    if fresh != user:
        st.session_state["user"] = fresh
    return fresh


def sign_out() -> None:
    for key in SESSION_KEYS:
        st.session_state.pop(key, None)


def _wait_text(seconds: float) -> str:
    return f"Too many failed sign-ins for this user name: try again in {math.ceil(seconds)} s."


def login_page() -> None:
    """The only page before sign-in (app.py gives st.navigation nothing else)."""
    st.title("OMS — sign in")
    notice = st.session_state.pop("auth_notice", None)
    if notice:
        st.info(notice)
    with st.form("login"):
        username = st.text_input("Username", max_chars=64)
        password = st.text_input("Password", type="password", max_chars=256)
        submitted = st.form_submit_button("Sign in")
    if not submitted:
        return
    name = username.strip().lower()
    try:
        user = sign_in(name, password)
    except LoginLocked as exc:
        st.error(_wait_text(exc.retry_after_s))
        return
    except OSError as exc:  # the failed-sign-in record cannot be kept: refuse rather than sign in unthrottled
        st.error(f"Sign-in is unavailable: {lockout_file()} cannot be written ({exc.strerror or exc}).")
        return
    if user is None:
        st.error("Unknown user or wrong password.")
        wait = locked_for(name)
        if wait > 0:
            st.warning(_wait_text(wait))
        return
    st.session_state["user"] = user
    st.rerun()


def sidebar_account(user: User) -> None:
    with st.sidebar:
        st.caption(f"Signed in as **{user.username}** ({user.role})")
        if st.button("Sign out", key="logout"):
            sign_out()
            st.rerun()
