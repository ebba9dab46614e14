"""The chdb engine for one data directory: its anchor handle, format catalogue and the registry of sessions.

chdb allows one engine (one data path) per process. The engine stays up through an anchor handle for the life of
the server; request and session handles are opened on it and closed again. Sessions are looked up by id, locked
for one request at a time (ClickHouse's ``SESSION_IS_LOCKED``) and reaped once idle past their timeout.

Only the serving process imports this module (through :mod:`.lifecycle`), so loading chdb — which pulls in
numpy and pyarrow — never burdens the processes that merely start, ping or stop a server.
"""

from __future__ import annotations

import contextlib
import re
import threading
import time
from pathlib import Path
from urllib.parse import urlencode

from chdb import _chdb

from oms_ops.platform.clickhouse.access import HANDLE_SETTINGS, READER_SETTINGS
from oms_ops.platform.clickhouse.protocol import (
    ENGINE_ERRORS,
    ERR_SESSION_LOCKED,
    ERR_SESSION_NOT_FOUND,
    ERR_SHUTDOWN,
    ClickHouseError,
)
from oms_ops.platform.clickhouse.sessions import SESSION_LOCK_WAIT_S, Session
from oms_ops.platform.clickhouse.sql import quote_literal


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
        # what this chdb can reach outside its data directory with: the access checks refuse all but a few
        self.table_functions = self._names("SELECT name FROM system.table_functions")
        self.engines = self._names(
            "SELECT name FROM system.table_engines UNION ALL SELECT name FROM system.database_engines"
        )
        self._sessions: dict[str, Session] = {}
        self._sessions_lock = threading.Lock()
        self._closed = False

    def _names(self, sql: str) -> list[str]:
        return self._anchor.query(sql, "TabSeparated").bytes().decode().split()

    def connect(self, *, readonly: bool = False):
        """A new chdb handle on the shared engine, with its own settings/current-database state.

        chdb applies connection-string parameters to the handle: every handle refuses to evaluate
        expressions in Values data, and a reader's handle is ``readonly=2`` (it cannot write, nor change
        ``readonly``), so chdb itself enforces what :mod:`.access` checks."""
        if self._closed:  # connecting after close would quietly start a second engine instance
            raise ClickHouseError.of(ERR_SHUTDOWN, "Server is shutting down")
        return _chdb.connect(f"{self.path}?{urlencode(READER_SETTINGS if readonly else HANDLE_SETTINGS)}")

    def classify(self, handle, sql: str) -> tuple[int, int]:
        """(query class, statement count) from chdb's parser; class 4 (UNKNOWN) when the SQL does not parse."""
        try:
            info = handle.classify_query(sql)
        except Exception:  # noqa: BLE001 - an unparseable query is reported by execution, not here
            return 4, 1
        return int(info["query_class"]), int(info["statement_count"])

    @staticmethod
    def writes(handle, sql: str, database: str) -> tuple[int, bool]:
        """(query class, whether ``sql`` writes only into ``database``) from chdb's parser; unqualified names
        resolve through the handle's current database."""
        try:
            info = handle.classify_query(sql, database)
        except Exception:  # noqa: BLE001 - unparseable: class UNKNOWN, which writes nothing
            return 4, False
        return int(info["query_class"]), bool(info["writes_only_target_database"])

    @staticmethod
    def canonical(handle, sql: str) -> str:
        """``sql`` as chdb's formatter writes it (comments dropped, escapes decoded, keywords upper-case);
        a statement chdb cannot parse raises its error, without the formatter call around it."""
        try:
            result = handle.query(f"SELECT formatQuerySingleLine({quote_literal(sql)})", "TSVRaw")
        except ENGINE_ERRORS as exc:
            err = ClickHouseError.from_engine(exc)
            message = re.sub(
                r":? In scope SELECT formatQuerySingleLine\(.*\)\.?", "", err.message, flags=re.S
            )
            raise ClickHouseError(err.code, err.name, message, formatted=message) from None
        return result.bytes().decode("utf-8", errors="replace")

    # -- sessions ------------------------------------------------------------------------------------------

    def acquire_session(
        self, session_id: str, timeout: float, must_exist: bool, *, user: str = "", readonly: bool = False
    ) -> Session:
        """Return the session locked for this request, creating it unless ``session_check`` demands it exists.
        Sessions belong to a user: the same id sent by another user is another session."""
        key = f"{user}\x00{session_id}" if user else session_id
        with self._sessions_lock:
            if self._closed:
                raise ClickHouseError.of(ERR_SHUTDOWN, "Server is shutting down")
            session = self._sessions.get(key)
            if session is None:
                if must_exist:
                    raise ClickHouseError.of(ERR_SESSION_NOT_FOUND, f"Session {session_id} not found")
                session = Session(key, self.connect(readonly=readonly))
                self._sessions[key] = session
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
