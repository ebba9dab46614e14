"""Starting, watching and stopping the embedded ClickHouse server from another process.

The service manager (``oms up``), the test fixtures and the benchmarks call :func:`start_clickhouse_process`: it
launches ``python -m oms_ops.platform.clickhouse`` detached, in its own process group, and returns once the server
answers ``/ping``. :class:`ClickHouseProcess` stops it again (SIGTERM for a clean chdb shutdown, then SIGKILL).
The server takes credentials: the caller names its users (:class:`~.users.ClickHouseUser`), or one ``default``
admin with a random password is made up, and :attr:`ClickHouseProcess.url` carries the first user's credentials.
This module uses only the standard library, so the callers never load chdb.
"""

from __future__ import annotations

import contextlib
import http.client
import logging
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote, urlsplit

from oms_ops.platform.clickhouse.protocol import DEFAULT_HOST, DEFAULT_PORT
from oms_ops.platform.clickhouse.users import ClickHouseUser, write_users_file

logger = logging.getLogger(__name__)

DEFAULT_LOG_NAME = "oms_clickhouse_server.log"


def ping(url: str, timeout: float = 2.0) -> bool:
    """True when ``url`` answers ``/ping`` with ClickHouse's ``Ok.``. Uses http.client so proxies never apply."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(
        parts.hostname or DEFAULT_HOST, parts.port or DEFAULT_PORT, timeout=timeout
    )
    try:
        conn.request("GET", "/ping")
        response = conn.getresponse()
        return response.status == 200 and response.read().startswith(b"Ok.")
    except (OSError, http.client.HTTPException):
        return False
    finally:
        conn.close()


def wait_for_ping(url: str, timeout: float = 60.0) -> bool:
    """Block until ``url`` answers ``/ping``; returns True, or raises TimeoutError after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    delay = 0.02
    while True:
        if ping(url, timeout=min(2.0, max(0.1, deadline - time.monotonic()))):
            return True
        if time.monotonic() >= deadline:
            raise TimeoutError(f"ClickHouse server at {url} did not answer /ping within {timeout:g}s")
        time.sleep(delay)
        delay = min(delay * 2, 0.25)


@dataclass
class ClickHouseProcess:
    """A running server process started by :func:`start_clickhouse_process`. ``url`` carries the first
    user's credentials (``http://user:password@127.0.0.1:PORT``), ``base_url`` none."""

    url: str
    pid: int
    port: int
    host: str
    data_dir: Path
    log_path: Path
    base_url: str = ""
    users: tuple[ClickHouseUser, ...] = field(default=(), repr=False)
    _popen: subprocess.Popen | None = field(default=None, repr=False)

    def url_for(self, name: str) -> str:
        """The server's URL with the credentials of user ``name``."""
        user = next((u for u in self.users if u.name == name), None)
        if user is None:
            raise KeyError(f"no ClickHouse user {name!r} on this server")
        return credentials_url(self.base_url, user)

    def is_running(self) -> bool:
        if self._popen is not None:
            return self._popen.poll() is None
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        return True

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM (clean chdb shutdown), then SIGKILL the process group after ``timeout``; waits for exit."""
        if not self.is_running():
            self._reap(0)
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGTERM)
        if self._wait(timeout):
            return
        logger.warning("ClickHouse server pid %d ignored SIGTERM for %gs; killing it", self.pid, timeout)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)
        self._wait(10.0)

    def _wait(self, timeout: float) -> bool:
        if self._popen is not None:
            try:
                self._popen.wait(timeout)
                return True
            except subprocess.TimeoutExpired:
                return False
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.is_running():
                return True
            time.sleep(0.05)
        return False

    def _reap(self, timeout: float) -> None:
        if self._popen is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._popen.wait(timeout)


def credentials_url(base_url: str, user: ClickHouseUser) -> str:
    """``base_url`` (``http://host:port``) with ``user``'s name and password as its user-info."""
    scheme, rest = base_url.split("://", 1)
    return f"{scheme}://{quote(user.name, safe='')}:{quote(user.password, safe='')}@{rest}"


def _port_in_use(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return True
    return False


def _log_tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def start_clickhouse_process(
    data_dir: Path,
    *,
    host: str = DEFAULT_HOST,
    port: int | None = None,
    log_path: Path | None = None,
    wait_s: float = 60,
    watch_pid: int | None = None,
    users: Sequence[ClickHouseUser] | None = None,
) -> ClickHouseProcess:
    """Start the server for ``data_dir`` as a detached process (own process group) and wait until it answers.

    ``port=None`` lets the server bind a free port and report it back through a port file (no pick-then-bind
    race). An explicit port that is already taken raises RuntimeError naming it. The log goes to ``log_path``
    (default: ``<data_dir>/oms_clickhouse_server.log``). ``watch_pid`` (e.g. the test runner's pid) makes the
    server stop by itself once that process is gone; services started by the stack leave it unset.
    ``users``: who may connect (default: one ``default`` admin with a random password); they reach the server
    hashed, in a file only this user can read that is removed once the server runs.
    """
    data_dir = Path(data_dir).resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    if port is not None and _port_in_use(host, port):
        raise RuntimeError(
            f"cannot start the embedded ClickHouse server: port {port} on {host} is already in use "
            f"(stop whatever listens there, choose another port, or pass port=None to pick a free one)"
        )
    log_path = Path(log_path) if log_path else data_dir / DEFAULT_LOG_NAME
    log_path.parent.mkdir(parents=True, exist_ok=True)
    users = tuple(users) if users else (ClickHouseUser("default", secrets.token_urlsafe(24), "admin"),)
    port_dir = Path(tempfile.mkdtemp(prefix="oms-ch-port-"))  # mode 0700
    port_file = port_dir / "port"
    users_file = write_users_file(port_dir / "users.json", users)
    project_root = str(Path(__file__).resolve().parents[3])
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (project_root, env.get("PYTHONPATH")) if p)
    cmd = [
        sys.executable,
        "-m",
        "oms_ops.platform.clickhouse",
        "--data-dir",
        str(data_dir),
        "--host",
        host,
        "--port",
        str(port if port is not None else 0),
        "--port-file",
        str(port_file),
        "--users-file",
        str(users_file),
    ]
    if watch_pid is not None:
        cmd += ["--watch-pid", str(watch_pid)]
    with open(log_path, "ab") as log:
        popen = subprocess.Popen(  # noqa: S603 - fixed argv, no shell
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
    url_host = f"[{host}]" if ":" in host else host
    deadline = time.monotonic() + wait_s
    bound_port: int | None = port
    try:
        while True:
            if popen.poll() is not None:
                raise RuntimeError(
                    f"embedded ClickHouse server for {data_dir} exited with code {popen.returncode} during start; "
                    f"log {log_path}:\n{_log_tail(log_path)}"
                )
            if port_file.exists():
                bound_port = int(port_file.read_text())
            if bound_port and port_file.exists() and ping(f"http://{url_host}:{bound_port}", timeout=1.0):
                break
            if time.monotonic() >= deadline:
                raise RuntimeError(
                    f"embedded ClickHouse server for {data_dir} did not answer /ping within {wait_s:g}s; "
                    f"log {log_path}:\n{_log_tail(log_path)}"
                )
            time.sleep(0.05)
    except BaseException:
        if popen.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(popen.pid, signal.SIGKILL)
            popen.wait(10)
        raise
    finally:
        for path in (port_file, users_file):
            with contextlib.suppress(OSError):
                path.unlink()
        with contextlib.suppress(OSError):
            port_dir.rmdir()
    assert bound_port is not None
    base_url = f"http://{url_host}:{bound_port}"
    return ClickHouseProcess(
        url=credentials_url(base_url, users[0]),
        pid=popen.pid,
        port=bound_port,
        host=host,
        data_dir=data_dir,
        log_path=log_path,
        base_url=base_url,
        users=users,
        _popen=popen,
    )
