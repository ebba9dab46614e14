"""Real-browser fixtures: a `streamlit run` of the app on loopback and Debian's headless Chromium.

The app connects as a login of the read-only role ``oms_dashboard`` (as ``oms up`` starts it), so what the
browser sees is what the role's grants allow; ``OMS_DATABASE_URL`` stays the owner's for health probes. Its
actions go to a real OMS API (``oms_ops.api``, in this process on a loopback port), as under ``oms up``.

Never `playwright install` (it downloads a browser, which fails here): Playwright drives /usr/bin/chromium.
Where chromium is absent on a developer's laptop the browser tests skip with the install hint; in CI
(CI=true) a missing chromium is a failure, since `.ci/run` installs it.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from oms_ops.api.server import ApiServer
from oms_ops.platform.netutil import free_port
from oms_ops.users import add_user
from tests.dashboards.conftest import DASHBOARD_PASSWORD, as_login, dashboard_login  # noqa: F401 (fixture)
from tests.paths import ROOT

ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]


def chromium_path() -> str | None:
    for candidate in (os.environ.get("OMS_CHROMIUM"), "/usr/bin/chromium", shutil.which("chromium")):
        if candidate and Path(candidate).exists():
            return candidate
    return None


@pytest.fixture(scope="session")
def browser():
    path = chromium_path()
    if path is None:
        message = (
            "Debian's chromium is not installed: `sudo apt-get install chromium` (never `playwright install`)"
        )
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=path, args=CHROMIUM_ARGS, headless=True)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def streamlit_app(tmp_path, db_url, clickhouse_url, dashboard_login):  # noqa: F811 (fixture imported above)
    """The dashboards served by a real `streamlit run` on a free loopback port, with one user per role, and
    the OMS API that runs their actions."""
    users = tmp_path / "users.yaml"
    add_user("admin", "admin", "admin-password", path=users)
    add_user("ops", "ops", "ops-password", path=users)
    add_user("manager", "manager", "manager-password", path=users)
    api = ApiServer(db_url, signing_key=secrets.token_urlsafe(32), users_path=users)
    port = free_port()
    env = dict(os.environ)
    env.update(
        OMS_DATABASE_URL=db_url,
        OMS_DASHBOARD_DATABASE_URL=as_login(db_url, dashboard_login, DASHBOARD_PASSWORD),
        OMS_CLICKHOUSE_URL=clickhouse_url,
        OMS_USERS_FILE=str(users),
        OMS_HOME=str(tmp_path / "home"),
        OMS_API_URL=api.url,
    )
    log = open(tmp_path / "streamlit.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "streamlit",
            "run",
            str(ROOT / "dashboards" / "app.py"),
            "--server.headless=true",
            "--server.address=127.0.0.1",
            f"--server.port={port}",
            "--browser.gatherUsageStats=false",
        ],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            assert proc.poll() is None, (tmp_path / "streamlit.log").read_text()
            try:
                if httpx.get(url + "/_stcore/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.3)
        else:
            pytest.fail("streamlit did not start: " + (tmp_path / "streamlit.log").read_text()[-2000:])
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        log.close()
        api.stop()


@pytest.fixture
def artifacts_dir(request) -> Path:
    path = ARTIFACTS / request.node.name
    path.mkdir(parents=True, exist_ok=True)
    return path
