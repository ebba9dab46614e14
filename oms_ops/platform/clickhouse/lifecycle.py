"""The server process's life: own the data directory, serve until told to stop, then close chdb cleanly.

chdb itself only guards one process, so an exclusive lock on the data directory makes a second server on it fail
fast instead of corrupting data. Shutdown (SIGTERM/SIGINT, or the watched parent process going away) stops
accepting work, gives running requests a grace period and closes chdb only when no query still runs on it.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import signal
import threading
from pathlib import Path

from oms_ops.platform.clickhouse.access import AccessControl
from oms_ops.platform.clickhouse.engine import Engine
from oms_ops.platform.clickhouse.protocol import DEFAULT_HOST, DEFAULT_PORT
from oms_ops.platform.clickhouse.server import ClickHouseHTTPServer
from oms_ops.platform.clickhouse.users import StoredUser

logger = logging.getLogger(__name__)

LOCK_FILE_NAME = ".oms_clickhouse_server.lock"
#: On SIGTERM, running requests get this long to finish before the process exits anyway.
SHUTDOWN_GRACE_S = 5.0


class DataDirLock:
    """An exclusive lock on the data directory: a second server on the same directory fails fast and clearly
    instead of corrupting data (chdb itself only guards one process, not two)."""

    def __init__(self, data_dir: Path):
        self.path = data_dir / LOCK_FILE_NAME
        self._fd: int | None = None

    def acquire(self) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            raise RuntimeError(
                f"data directory {self.path.parent} is already served by another process"
            ) from exc
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(self._fd, fcntl.LOCK_UN)
                os.close(self._fd)
            self._fd = None


def pid_alive(pid: int) -> bool:
    """True while a process with ``pid`` exists (one owned by another user counts as alive)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def serve(
    data_dir: Path,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    *,
    users: dict[str, StoredUser],
    port_file: Path | None = None,
    watch_pid: int | None = None,
    compress_loopback: bool = False,
    install_signal_handlers: bool = True,
) -> bool:
    """Serve ``data_dir`` on ``host:port`` until SIGTERM/SIGINT (or ``server.shutdown()``), then close chdb.

    Returns False when queries were still running after the shutdown grace period, so chdb could not be closed
    cleanly; the caller should then end the process without running interpreter teardown (``os._exit``).

    With ``watch_pid`` the server also stops when that process is gone, so a test run that is killed hard
    does not leave an orphaned server behind. ``compress_loopback`` compresses responses to clients on this
    host too (by default only remote clients get compressed responses). ``users``: who may connect, and
    with which role (:mod:`.users`, :mod:`.access`).
    """
    data_dir = Path(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    lock = DataDirLock(data_dir)
    lock.acquire()
    engine = None
    server = None
    clean = True
    try:
        engine = Engine(data_dir)
        access = AccessControl(users, table_functions=engine.table_functions, engines=engine.engines)
        server = ClickHouseHTTPServer((host, port), engine, access, compress_loopback=compress_loopback)
        bound_port = server.server_address[1]
        logger.info(
            "ClickHouse %s (chdb) serving %s on http://%s:%d", engine.version, engine.path, host, bound_port
        )
        if port_file is not None:
            tmp = Path(f"{port_file}.tmp")
            tmp.write_text(str(bound_port))
            tmp.replace(port_file)

        stop = threading.Event()

        def request_stop(signum=None, _frame=None) -> None:
            if not stop.is_set():
                logger.info("received signal %s, shutting down", signum)
                stop.set()
                threading.Thread(target=server.shutdown, name="ch-shutdown", daemon=True).start()

        if install_signal_handlers:
            signal.signal(signal.SIGTERM, request_stop)
            signal.signal(signal.SIGINT, request_stop)

        def housekeeping() -> None:
            ticks = 0
            while not stop.wait(1.0):
                ticks += 1
                if watch_pid is not None and not pid_alive(watch_pid):
                    logger.info("watched process %d is gone", watch_pid)
                    request_stop("watched process exit")
                if ticks % 5 == 0:
                    with contextlib.suppress(Exception):
                        engine.reap_sessions()

        threading.Thread(target=housekeeping, name="ch-housekeeping", daemon=True).start()
        server.serve_forever(poll_interval=0.25)
        stop.set()
    finally:
        running = 0
        if server is not None:
            server.server_close()
            running = server.drain(grace_s=SHUTDOWN_GRACE_S)
        if engine is not None:
            clean = engine.close() and not running
        if clean:
            lock.release()
        else:  # the lock goes with the process, so no second server opens the directory under a running query
            logger.warning(
                "queries still running after %gs; stopping without waiting for them", SHUTDOWN_GRACE_S
            )
        logger.info("stopped")
    return clean
