"""Sign-in and sign-out of the Streamlit app (presentation only; the logic is in ``oms_ops.users``).

The app never creates an account: users come from ``oms users add`` (or ``oms demo``), and without an admin
the app shows :func:`oms_ops.users.missing_admin_message` and nothing else. Failed sign-ins are throttled on
the server per user name (``oms_ops.users.sign_in``), so a reload or a new browser session does not reset
the count. Signing in also opens a session with the OMS API (its token, not the password, is kept): every
action of the dashboards runs there. The signed-in user is re-read from the users file on every run: a user
removed, or whose password was changed, is signed out; a changed role applies at once.
"""

from __future__ import annotations

import math

import httpx
import streamlit as st

from dashboards.common import API_TOKEN_KEY, api_url
from oms_ops.users import LoginLocked, User, UserError, load_users, locked_for, lockout_file, sign_in

#: session keys this module owns (cleared on sign-out)
SESSION_KEYS = ("user", "auth_notice", "api_notice", API_TOKEN_KEY)


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
    problem = open_api_session(name, password)
    if problem:
        st.session_state["api_notice"] = problem
    st.rerun()


def open_api_session(username: str, password: str) -> str | None:
    """Get the user's token from the OMS API (``POST /v1/session``) with the password just typed, kept in
    the session for :func:`dashboards.common.act`; the password itself is not kept. Returns why actions
    will be unavailable, or None. Reading needs no token, so a missing API does not stop the sign-in."""
    st.session_state.pop(API_TOKEN_KEY, None)
    base = api_url()
    if base is None:
        return "Actions are unavailable: OMS_API_URL is not set (the OMS API runs them)."
    try:
        response = httpx.post(
            f"{base}/v1/session", json={"username": username, "password": password}, timeout=30
        )
        body = response.json()
    except (httpx.HTTPError, ValueError) as exc:
        return f"Actions are unavailable: the OMS API cannot be reached ({type(exc).__name__})."
    if response.status_code != 200 or not isinstance(body, dict) or not body.get("token"):
        detail = body.get("detail") if isinstance(body, dict) else None
        return f"Actions are unavailable: the OMS API refused the session ({detail or response.status_code})."
    st.session_state[API_TOKEN_KEY] = body["token"]
    return None


def sidebar_account(user: User) -> None:
    with st.sidebar:
        st.caption(f"Signed in as **{user.username}** ({user.role})")
        notice = st.session_state.get("api_notice")
        if notice:
            st.warning(notice, icon=":material/lock:")
        if st.button("Sign out", key="logout"):
            sign_out()
            st.rerun()
