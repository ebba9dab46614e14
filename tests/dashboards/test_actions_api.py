"""How the dashboards act: sign-in opens a session with the OMS API, every action goes there with the user's
token, and without an API (or with a session the API no longer accepts) an action is one line of error and
changes nothing — the dashboards' own login could not write it anyway (migration 0016)."""

from __future__ import annotations

from streamlit.testing.v1 import AppTest

from dashboards.common import API_TOKEN_KEY
from oms_ops.orders import hold_orders
from oms_ops.users import add_user
from tests.core import factories as f
from tests.dashboards.conftest import OPS, page
from tests.paths import DASHBOARDS


def _held(conn) -> tuple[int, str]:
    f.world(conn)
    oid = f.order(conn)
    hold_orders(conn, [oid], reason="fraud check", actor="test")
    return oid, conn.execute("SELECT order_number FROM oms.orders WHERE order_id = %s", (oid,)).fetchone()[0]


def _release(at: AppTest, number: str) -> AppTest:
    at.selectbox(key="ops_pick").select(number).run()
    return at.button(key="ops_release").click().run()


def test_without_an_api_an_action_is_one_line_of_error_and_changes_nothing(dash_url, conn, monkeypatch):
    oid, number = _held(conn)
    monkeypatch.delenv("OMS_API_URL")
    at = _release(page("operations", OPS).run(), number)
    assert not at.exception
    assert [e.value for e in at.error] == [
        "Actions are unavailable: OMS_API_URL is not set (the OMS API runs them)."
    ]
    assert f.order_state(conn, oid) == "on_hold"


def test_a_session_the_api_refuses_signs_the_user_out_and_changes_nothing(dash_url, conn):
    oid, number = _held(conn)
    at = page("operations", OPS).run()
    at.session_state[API_TOKEN_KEY] = "v1.forged.token"
    at = _release(at, number)
    assert not at.exception
    # app.py shows the sign-in form with this notice on the next run
    assert at.session_state["auth_notice"] == "Your session ended (malformed token): sign in again."
    assert "user" not in at.session_state and API_TOKEN_KEY not in at.session_state
    assert f.order_state(conn, oid) == "on_hold"


def test_signing_in_opens_an_api_session_and_keeps_no_password(dash_url, tmp_path, monkeypatch):
    users = tmp_path / "users.yaml"
    add_user("olga", "ops", "ops-password", path=users)
    add_user("root", "admin", "admin-password", path=users)
    monkeypatch.setenv("OMS_USERS_FILE", str(users))
    monkeypatch.delenv("OMS_CLICKHOUSE_URL", raising=False)
    at = AppTest.from_file(str(DASHBOARDS / "app.py"), default_timeout=30).run()
    at.text_input[0].input("olga")
    at.text_input[1].input("ops-password")
    at.button[0].click().run()
    assert not at.exception
    assert at.session_state["user"].username == "olga"
    assert at.session_state[API_TOKEN_KEY].startswith("v1.")
    assert "ops-password" not in repr({k: at.session_state[k] for k in at.session_state})
    assert not at.sidebar.warning  # actions are available


def test_signing_in_without_an_api_says_actions_are_unavailable(dash_url, tmp_path, monkeypatch):
    users = tmp_path / "users.yaml"
    add_user("root", "admin", "admin-password", path=users)
    monkeypatch.setenv("OMS_USERS_FILE", str(users))
    monkeypatch.delenv("OMS_CLICKHOUSE_URL", raising=False)
    monkeypatch.delenv("OMS_API_URL")
    at = AppTest.from_file(str(DASHBOARDS / "app.py"), default_timeout=30).run()
    at.text_input[0].input("root")
    at.text_input[1].input("admin-password")
    at.button[0].click().run()
    assert not at.exception
    assert at.session_state["user"].username == "root"  # reading still works
    assert API_TOKEN_KEY not in at.session_state
    assert any("OMS_API_URL is not set" in w.value for w in at.sidebar.warning)
