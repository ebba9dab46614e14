"""Dashboard login: first-run admin set-up, sign-in with roles, wrong passwords refused."""

import pytest
from streamlit.testing.v1 import AppTest

from oms_ops.users import UserError, add_user, authenticate, hash_password, load_users, verify_password
from tests.paths import DASHBOARDS


@pytest.fixture
def users_path(tmp_path, monkeypatch):
    path = tmp_path / "users.yaml"
    monkeypatch.setenv("OMS_USERS_FILE", str(path))
    return path


def test_password_hashing_round_trip():
    h = hash_password("correct horse")
    assert h.startswith("scrypt$") and "correct horse" not in h
    assert verify_password("correct horse", h)
    assert not verify_password("wrong horse", h)
    with pytest.raises(UserError, match="password"):
        hash_password("short")


def test_user_file_errors_name_the_field(users_path):
    users_path.write_text("users:\n  - username: bob\n    role: boss\n    password_hash: scrypt$x\n")
    with pytest.raises(UserError, match=r"users\[0\]\.role"):
        load_users()


def test_first_run_creates_admin_and_signs_in(users_path):
    at = AppTest.from_file(str(DASHBOARDS / "app.py"), default_timeout=30).run()
    assert not at.exception
    assert "No administrator exists yet" in at.info[0].value
    at.text_input[0].set_value("admin")
    at.text_input[1].set_value("s3cret-pass")
    at.text_input[2].set_value("s3cret-pass")
    at.button[0].click().run()
    assert not at.exception
    assert authenticate("admin", "s3cret-pass").role == "admin"
    assert any("Signed in as **admin**" in c.value for c in at.sidebar.caption)


def test_wrong_password_is_refused_and_right_one_accepted(users_path):
    add_user("olga", "ops", "ops-password")
    add_user("root", "admin", "admin-password")
    at = AppTest.from_file(str(DASHBOARDS / "app.py"), default_timeout=30).run()
    at.text_input[0].set_value("olga")
    at.text_input[1].set_value("nope-nope")
    at.button[0].click().run()
    assert any("wrong password" in e.value for e in at.error)
    assert "user" not in at.session_state
    at.text_input[0].set_value("olga")
    at.text_input[1].set_value("ops-password")
    at.button[0].click().run()
    assert not at.exception
    assert at.session_state["user"].role == "ops"
