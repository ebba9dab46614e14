"""ClickHouse HTTP sessions on chdb handles, and per-query database and settings the way ClickHouse applies them.

A chdb connection *handle* carries its own session state (``USE``, ``SET``, temporary tables) while sharing the
engine. A request without ``session_id`` runs on a fresh handle, so settings passed in its URL cannot leak into
other requests; a request with ``session_id`` runs on that session's handle. In ClickHouse, settings and
``database`` passed in the URL apply to that one query while ``SET``/``USE`` statements persist in the session;
:class:`RequestState` reproduces that on a long-lived handle by restoring what the previous request changed.
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from oms_ops.platform.clickhouse.protocol import (
    ENGINE_ERRORS,
    ERR_UNKNOWN_SETTING,
    SETTING_NAME_RE,
    ClickHouseError,
)
from oms_ops.platform.clickhouse.sql import first_keyword, quote_identifier, quote_literal

#: Sessions expire after this many idle seconds unless the request says otherwise (ClickHouse's default).
DEFAULT_SESSION_TIMEOUT_S = 60.0
MAX_SESSION_TIMEOUT_S = 3600.0
#: how long a request waits for its session to be free before answering SESSION_IS_LOCKED
SESSION_LOCK_WAIT_S = 10.0


@dataclass
class Session:
    """A ClickHouse HTTP session: a dedicated chdb handle plus the state needed to emulate per-query settings."""

    id: str
    handle: object
    lock: threading.Lock = field(default_factory=threading.Lock)
    timeout: float = DEFAULT_SESSION_TIMEOUT_S
    expires_at: float = 0.0
    # Database chosen by the session itself (USE); URL ``database`` only applies to one query, as in ClickHouse.
    base_database: str = "default"
    current_database: str = "default"
    # Settings currently applied because a request's URL carried them, and the session's own values to restore.
    url_settings: dict[str, str] = field(default_factory=dict)
    saved_settings: dict[str, tuple[str, bool]] = field(default_factory=dict)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.handle.close()


class RequestState:
    """The chdb handle one request runs on, with database and settings applied the way the URL asked.

    ``connect`` opens a fresh handle; it is only called for a request without a session.
    """

    def __init__(self, session: Session | None, connect: Callable[[], object]):
        self.session = session
        self.handle = session.handle if session else connect()

    def run(self, sql: str) -> None:
        try:
            self.handle.query(sql, "TabSeparated")
        except ENGINE_ERRORS as exc:
            raise ClickHouseError.from_engine(exc) from None

    def use_database(self, database: str | None) -> None:
        session = self.session
        if session is None:
            if database and database != "default":
                self.run(f"USE {quote_identifier(database)}")
            return
        wanted = database or session.base_database
        if wanted != session.current_database:
            self.run(f"USE {quote_identifier(wanted)}")
            session.current_database = wanted

    def apply_settings(self, settings: dict[str, str]) -> None:
        for name in settings:
            if not SETTING_NAME_RE.match(name):
                raise ClickHouseError.of(ERR_UNKNOWN_SETTING, f"Invalid setting name {name!r}")
        session = self.session
        if session is None:
            for name, value in settings.items():
                self.run(f"SET {name} = {quote_literal(value)}")
            return
        # Session: URL settings apply to one query only. Restore what the previous request set and this one does
        # not, then set what changed. A client that sends the same settings every time costs nothing extra.
        for name in [n for n in session.url_settings if n not in settings]:
            value, changed = session.saved_settings.pop(name, ("", False))
            self.run(f"SET {name} = {quote_literal(value) if changed else 'DEFAULT'}")
            del session.url_settings[name]
        new_names = [n for n in settings if n not in session.url_settings]
        if new_names:
            try:
                snapshot = self.handle.query(
                    "SELECT name, value, changed FROM system.settings WHERE has({names:Array(String)}, name)",
                    "JSONEachRow",
                    params={"names": "[" + ",".join(quote_literal(n) for n in new_names) + "]"},
                )
            except ENGINE_ERRORS as exc:
                raise ClickHouseError.from_engine(exc) from None
            for line in snapshot.bytes().splitlines():
                row = json.loads(line)
                session.saved_settings[row["name"]] = (row["value"], bool(row["changed"]))
        for name, value in settings.items():
            if session.url_settings.get(name) != value:
                self.run(f"SET {name} = {quote_literal(value)}")
                session.url_settings[name] = value

    def after_query(self, sql: str) -> None:
        """Keep the session's own database in sync when the query was a ``USE``."""
        session = self.session
        if session is not None and first_keyword(sql) == "USE":
            current = self.handle.query("SELECT currentDatabase()", "TabSeparated").bytes().decode().strip()
            session.base_database = session.current_database = current

    def close(self) -> None:
        if self.session is None:
            with contextlib.suppress(Exception):
                self.handle.close()
