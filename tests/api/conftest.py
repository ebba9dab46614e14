"""API fixtures: a real OMS API server (``oms_ops.api``) on a loopback port, writing to the test's fresh
database with the owner's login, and a users file with one real user per role."""

from __future__ import annotations

import secrets

import httpx
import pytest

from oms_ops.api.server import ApiServer
from oms_ops.users import add_user

#: user → (role, password) in the test users file
USERS = {
    "ada": ("admin", "admin-password"),
    "olga": ("ops", "ops-password"),
    "maria": ("manager", "manager-pw"),
}


@pytest.fixture
def users_path(tmp_path):
    path = tmp_path / "users.yaml"
    for name, (role, password) in USERS.items():
        add_user(name, role, password, path=path)
    return path


@pytest.fixture
def signing_key() -> str:
    return secrets.token_urlsafe(32)


@pytest.fixture
def api(db_url, users_path, signing_key):
    with ApiServer(db_url, signing_key=signing_key, users_path=users_path) as server:
        yield server


@pytest.fixture
def client(api):
    with httpx.Client(base_url=api.url, timeout=60) as c:
        yield c


def sign_in(client: httpx.Client, username: str) -> str:
    """The token of a test user (signed in with their password)."""
    res = client.post("/v1/session", json={"username": username, "password": USERS[username][1]})
    assert res.status_code == 200, res.text
    return res.json()["token"]


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}
