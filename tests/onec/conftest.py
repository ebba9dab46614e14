"""1C exchange fixtures: the OMS API on loopback (its /1c_exchange with the password generated into a test
OMS_HOME) and the simulated 1C polling it, on a manual clock."""

from __future__ import annotations

import secrets

import httpx
import pytest

from oms_ops.api.server import ApiServer
from oms_ops.platform import credentials
from simulators import start_simulators
from tests.core import factories as f


@pytest.fixture
def home(tmp_path, monkeypatch):
    home = tmp_path / "home"
    monkeypatch.setenv("OMS_HOME", str(home))
    monkeypatch.setenv("OMS_ONEC_SETTLE_S", "0")
    monkeypatch.setenv("OMS_ONEC_MAX_FILE_BYTES", "65536")
    monkeypatch.delenv("OMS_ONEC_PASSWORD", raising=False)
    return home


@pytest.fixture
def world(conn):
    f.world(conn)
    return conn


@pytest.fixture
def api(db_url, home, tmp_path):
    with ApiServer(
        db_url, signing_key=secrets.token_urlsafe(32), users_path=tmp_path / "users.yaml"
    ) as server:
        yield server


@pytest.fixture
def url(api):
    return api.url + "/1c_exchange"


@pytest.fixture
def password(api, home):
    """The credential the API generated at its start (what `oms status --secrets` shows)."""
    assert (home / "secrets" / credentials.ONEC_EXCHANGE).stat().st_mode & 0o777 == 0o600
    return credentials.secret(home, credentials.ONEC_EXCHANGE)


@pytest.fixture
def sim_stack(url, password, tmp_path):
    with start_simulators(
        only=["onec"], manual=True, state_dir=tmp_path / "sim",
        options={"onec": {"exchange_url": url, "password": password, "change_share": 0.0}},
    ) as stack:  # fmt: skip
        yield stack


@pytest.fixture
def onec(sim_stack):
    return sim_stack["onec"]


class OneC:
    """A bare 1C client for the protocol tests: sign in, then call modes with the cookie."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.client = httpx.Client(timeout=30)

    def checkauth(self, login: str, password: str, kind: str = "sale") -> list[str]:
        r = self.client.get(self.url, params={"type": kind, "mode": "checkauth"}, auth=(login, password))
        lines = r.text.split("\n")
        if lines[0] == "success":
            self.client.cookies.set(lines[1], lines[2])
        return lines

    def call(self, mode: str, kind: str = "sale", **params) -> httpx.Response:
        return self.client.get(self.url, params={"type": kind, "mode": mode, **params})

    def upload(self, filename: str, body: bytes, kind: str = "sale") -> str:
        r = self.client.post(
            self.url, params={"type": kind, "mode": "file", "filename": filename}, content=body
        )
        if not r.text.startswith("success"):
            return r.text
        return self.call("import", kind, filename=filename).text


@pytest.fixture
def one_c(url, password):
    c = OneC(url)
    assert c.checkauth("1c", password)[0] == "success"
    yield c
    c.client.close()
