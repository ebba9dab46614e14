"""The chdb engine for one data directory: its anchor handle, format catalogue and the registry of sessions.

chdb allows one engine (one data path) per process. The engine stays up through an anchor handle for the life of
the server; request and session handles are opened on it and closed again. Sessions are looked up by id, locked
for one request at a time (ClickHouse's ``SESSION_IS_LOCKED``) and reaped once idle past their timeout.

Only the serving process imports this module (through :mod:`.lifecycle`), so loading chdb — which pulls in
numpy and pyarrow — never burdens the processes that merely start, ping or stop a server.
"""

from __future__ import annotations

import contextlib
import threading
import time
from pathlib import Path

from chdb import _chdb

from oms_ops.platform.clickhouse.protocol import (
    ERR_SESSION_LOCKED,
    ERR_SESSION_NOT_FOUND,
    ERR_SHUTDOWN,
    ClickHouseError,
)
from oms_ops.platform.clickhouse.sessions import SESSION_LOCK_WAIT_S, Session


class Engine:
    """Owns the chdb engine for one data directory: the anchor handle, the format catalogue and the sessions."""

    def __init__(self, data_dir: Path):
        self.path = str(Path(data_dir).resolve())
        # The anchor handle keeps the engine up for the life of the server; request handles come and go.
        self._anchor = _chdb.connect(self.path)
        row = self._anchor.query("SELECT version(), timezone()", "TabSeparated").bytes().decode().strip()
        self.version, self.timezone = row.split("\t")
        self.output_formats: dict[str, str] = {}
        self.input_formats: dict[str, str] = {}
        listing = self._anchor.query("SELECT name, is_input, is_output FROM system.formats", "TabSeparated")
        for line in listing.bytes().decode().splitlines():
            name, is_input, is_output = line.split("\t")
            if is_output == "1":
                self.output_formats[name.lower()] = name
            if is_input == "1":
                self.input_formats[name.lower()] = name
        # ClickHouse compresses responses when this setting is on and the client sends Accept-Encoding. chdb
        # reports it on by default, so clients (which only send it when it is off) rely on the server default.
        setting = self._anchor.query("SELECT getSetting('enable_http_compression')", "TabSeparated")
        self.http_compression_default = setting.bytes().strip() in (b"1", b"true")
        self._sessions: dict[str, Session] = {}
        self._sessions_lock = threading.Lock()
        self._closed = False

    def connect(self):
        """A new chdb handle on the shared engine, with its own settings/current-database state."""
        if self._closed:  # connecting after close would quietly start a second engine instance
            raise ClickHouseError.of(ERR_SHUTDOWN, "Server is shutting down")
        return _chdb.connect(self.path)

    def classify(self, handle, sql: str) -> tuple[int, int]:
        """(query class, statement count) from chdb's parser; class 4 (UNKNOWN) when the SQL does not parse."""
        try:
            info = handle.classify_query(sql)
        except Exception:  # noqa: BLE001 - an unparseable query is reported by execution, not here
            return 4, 1
        return int(info["query_class"]), int(info["statement_count"])

    # -- sessions ------------------------------------------------------------------------------------------

    def acquire_session(self, session_id: str, timeout: float, must_exist: bool) -> Session:
        """Return the session locked for this request, creating it unless ``session_check`` demands it exists."""
        with self._sessions_lock:
            if self._closed:
                raise ClickHouseError.of(ERR_SHUTDOWN, "Server is shutting down")
            session = self._sessions.get(session_id)
            if session is None:
                if must_exist:
                    raise ClickHouseError.of(ERR_SESSION_NOT_FOUND, f"Session {session_id} not found")
                session = Session(session_id, self.connect())
                self._sessions[session_id] = session
            # a client (dbt) may send its next query before the previous response's final bytes were
            # written and the lock released: keep the session from being reaped and wait a moment
            session.expires_at = float("inf")
        if not session.lock.acquire(timeout=SESSION_LOCK_WAIT_S):
            with self._sessions_lock:
                session.expires_at = time.monotonic() + session.timeout
            raise ClickHouseError.of(
                ERR_SESSION_LOCKED, f"Session {session_id} is locked by a concurrent client"
            )
        session.timeout = timeout
        return session

    def release_session(self, session: Session) -> None:
        session.expires_at = time.monotonic() + session.timeout
        session.lock.release()

    def reap_sessions(self) -> None:
        """Close sessions idle past their timeout; a session in use is never reaped."""
        now = time.monotonic()
        expired = []
        with self._sessions_lock:
            for sid, session in list(self._sessions.items()):
                if session.expires_at <= now and session.lock.acquire(blocking=False):
                    del self._sessions[sid]
                    expired.append(session)
        for session in expired:
            session.close()
            session.lock.release()

    def close(self) -> bool:
        """Close every idle handle; True when all of chdb could be closed (no query still running)."""
        with self._sessions_lock:
            self._closed = True
            sessions, self._sessions = list(self._sessions.values()), {}
        clean = True
        for session in sessions:
            if session.lock.acquire(blocking=False):
                session.close()
            else:
                clean = False  # a query still runs on it; closing under it could crash the engine
        if clean:
            with contextlib.suppress(Exception):
                self._anchor.close()
        return clean
