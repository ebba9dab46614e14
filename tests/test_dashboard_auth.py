"""Dashboard login: no account is ever created by the app (no admin → a one-line refusal naming `oms users
add`), nothing but the sign-in form before sign-in, sign-in with roles, and failed sign-ins throttled on the
server per user name so that a new session (a reload) is still locked."""

import json

import pytest
import yaml
from streamlit.testing.v1 import AppTest
from typer.testing import CliRunner

from oms_ops import users
from oms_ops.cli import app as cli
from oms_ops.users import (
    LoginLocked,
    UserError,
    add_user,
    authenticate,
    ensure_demo_users,
    hash_password,
    load_users,
    locked_for,
    lockout_file,
    lockout_seconds,
    missing_admin_message,
    sign_in,
    verify_password,
)
from tests.paths import DASHBOARDS


@pytest.fixture
def users_path(tmp_path, monkeypatch):
    path = tmp_path / "users.yaml"
    monkeypatch.setenv("OMS_USERS_FILE", str(path))
    return path


def app() -> AppTest:
    return AppTest.from_file(str(DASHBOARDS / "app.py"), default_timeout=30)


def sign_in_form(at: AppTest, username: str, password: str) -> AppTest:
    at.text_input[0].set_value(username)
    at.text_input[1].set_value(password)
    at.button[0].click().run()
    assert not at.exception
    return at


def test_password_hashing_round_trip():
    h = hash_password("correct horse")
    assert h.startswith("scrypt$") and "correct horse" not in h
    assert verify_password("correct horse", h)
    assert not verify_password("wrong horse", h)
    assert not verify_password("bad \ud800 surrogate", h)
    with pytest.raises(UserError, match="password"):
        hash_password("short")
    with pytest.raises(UserError, match="password"):
        hash_password("lone \ud800 surrogate")


def test_user_file_errors_name_the_field(users_path):
    users_path.write_text("users:\n  - username: bob\n    role: boss\n    password_hash: scrypt$x\n")
    with pytest.raises(UserError, match=r"users\[0\]\.role"):
        load_users()


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (None, "No dashboard users yet"),
        ("ops-only", "No admin in"),
        ("users: [{username: bob, role: boss, password_hash: x}]", "cannot be read"),
    ],
)
def test_without_an_admin_the_app_refuses_to_start_naming_the_fix(users_path, content, expected):
    if content == "ops-only":
        add_user("olga", "ops", "ops-password")
    elif content is not None:
        users_path.write_text(content)
    at = app().run()
    assert not at.exception
    assert [e.value for e in at.error] == [missing_admin_message()]
    assert expected in at.error[0].value and "`oms users add <name> --role admin`" in at.error[0].value
    assert "\n" not in at.error[0].value
    assert not at.text_input and not at.button  # no set-up form, no sign-in form
    assert not at.sidebar.children
    if content is None:
        assert not users_path.exists()  # nothing was created


def test_oms_users_add_creates_the_first_admin_and_the_app_starts(users_path):
    res = CliRunner().invoke(cli, ["users", "add", "root", "--role", "admin", "--password", "s3cret-pass"])
    assert res.exit_code == 0, res.output
    assert authenticate("root", "s3cret-pass").role == "admin"
    at = app().run()
    assert not at.error
    sign_in_form(at, "root", "s3cret-pass")
    assert any("Signed in as **root**" in c.value for c in at.sidebar.caption)
    listed = CliRunner().invoke(cli, ["users", "list"])
    assert "root" in listed.output and "admin" in listed.output
    refused = CliRunner().invoke(
        cli, ["users", "add", "xavier", "--role", "boss", "--password", "s3cret-pass"]
    )
    assert refused.exit_code == 2 and "role" in refused.output


def test_the_demo_creates_its_logins_itself(users_path, monkeypatch):
    monkeypatch.delenv("OMS_CLICKHOUSE_URL", raising=False)
    created = ensure_demo_users()
    assert created["admin"][0] == "admin" and missing_admin_message() is None
    assert ensure_demo_users() == {}  # only once: existing users are never overwritten
    at = sign_in_form(app().run(), "manager", created["manager"][1])
    assert at.title[0].value == "KPIs"


def test_before_sign_in_only_the_login_form_is_offered(users_path):
    add_user("root", "admin", "admin-password")
    at = app().run()
    assert [t.value for t in at.title] == ["OMS — sign in"]
    assert not at.sidebar.children  # no page list, no account box
    # st.navigation knows no other page: a page's URL (/health) typed before sign-in has nothing to open
    with pytest.raises(ValueError, match=r"Known pages: \['Sign in'\]"):
        at.switch_page("pages/health.py")


def test_wrong_password_is_refused_and_right_one_accepted(users_path):
    add_user("olga", "ops", "ops-password")
    add_user("root", "admin", "admin-password")
    at = sign_in_form(app().run(), "olga", "nope-nope")
    assert any("wrong password" in e.value for e in at.error)
    assert "user" not in at.session_state
    sign_in_form(at, " Olga ", "ops-password")  # names are trimmed and case-insensitive
    assert at.session_state["user"].role == "ops"
    assert not json.loads(lockout_file().read_text())  # a success clears the name's failures


def test_failed_sign_ins_lock_the_name_on_the_server_even_for_a_new_session(users_path):
    add_user("olga", "ops", "ops-password")
    add_user("root", "admin", "admin-password")
    at = app().run()
    for _ in range(users.MAX_FAILURES):
        sign_in_form(at, "olga", "guess-guess")
    assert any("try again in 30 s" in w.value for w in at.warning)
    # a reload is a new Streamlit session: still locked, and the right password is not even checked
    fresh = sign_in_form(app().run(), "olga", "ops-password")
    assert "user" not in fresh.session_state
    assert any("Too many failed sign-ins" in e.value for e in fresh.error)
    # the record is per name: another user signs in; it holds no typed name, only hashes
    assert sign_in_form(app().run(), "root", "admin-password").session_state["user"].role == "admin"
    assert "olga" not in lockout_file().read_text()
    assert lockout_file().stat().st_mode & 0o077 == 0


def test_lockout_backs_off_exponentially_and_success_resets_it(users_path):
    add_user("olga", "ops", "ops-password")
    t = 1_000_000.0
    for i in range(users.MAX_FAILURES):
        assert sign_in("olga", "wrong-wrong", now=t + i) is None
    t += users.MAX_FAILURES - 1
    assert locked_for("olga", now=t) == pytest.approx(30)
    with pytest.raises(LoginLocked):
        sign_in("olga", "ops-password", now=t + 29)
    assert sign_in("olga", "wrong-wrong", now=t + 31) is None  # the 6th failure: 60 s
    assert locked_for("olga", now=t + 31) == pytest.approx(60)
    assert sign_in("olga", "wrong-wrong", now=t + 92) is None  # the 7th: 120 s
    assert locked_for("olga", now=t + 92) == pytest.approx(120)
    assert [lockout_seconds(n) for n in (4, 5, 6, 7, 50)] == [0, 30, 60, 120, users.LOCKOUT_MAX_S]
    assert sign_in("olga", "ops-password", now=t + 213).username == "olga"
    assert locked_for("olga", now=t + 213) == 0
    assert sign_in("olga", "wrong-wrong", now=t + 214) is None and locked_for("olga", now=t + 214) == 0


def test_unknown_names_are_throttled_alike_and_a_new_password_unlocks(users_path):
    add_user("olga", "ops", "ops-password")
    for _ in range(users.MAX_FAILURES):
        assert sign_in("nobody", "whatever-x") is None
        assert sign_in("olga", "whatever-x") is None
    assert locked_for("nobody") > 0 and locked_for("olga") > 0  # existence is not revealed by the lockout
    add_user("olga", "ops", "new-password")  # an admin resets the password: the lockout is lifted
    assert locked_for("olga") == 0 and sign_in("olga", "new-password").username == "olga"


def test_a_damaged_lockout_record_is_started_afresh(users_path):
    add_user("olga", "ops", "ops-password")
    lockout_file().write_text("{not json")
    assert sign_in("olga", "ops-password").username == "olga"


def test_a_removed_or_changed_user_is_signed_out(users_path, monkeypatch):
    monkeypatch.delenv("OMS_CLICKHOUSE_URL", raising=False)
    add_user("root", "admin", "admin-password")
    add_user("olga", "ops", "ops-password")
    signed_in = sign_in_form(app().run(), "olga", "ops-password").session_state["user"]
    assert signed_in.role == "ops"

    def rerun() -> AppTest:  # the next run of app.py in that browser session
        at = app()
        at.session_state["user"] = signed_in
        return at.run()

    data = yaml.safe_load(users_path.read_text())
    next(u for u in data["users"] if u["username"] == "olga")["role"] = "manager"
    users_path.write_text(yaml.safe_dump(data))  # a new role in the file applies at once
    at = rerun()
    assert at.session_state["user"].role == "manager" and at.title[0].value == "KPIs"
    add_user("olga", "manager", "changed-password")  # password set anew: the session ends
    at = rerun()
    assert "user" not in at.session_state
    assert any("sign in again" in i.value for i in at.info)
    signed_in = sign_in_form(at, "olga", "changed-password").session_state["user"]
    data = yaml.safe_load(users_path.read_text())
    data["users"] = [u for u in data["users"] if u["username"] != "olga"]
    users_path.write_text(yaml.safe_dump(data))  # removed: signed out
    assert "user" not in rerun().session_state
