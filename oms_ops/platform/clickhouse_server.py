"""Embedded ClickHouse server: one process that owns one chdb data directory and speaks ClickHouse's HTTP protocol.

Why this exists: the project's analytics default to the embedded ClickHouse engine (chdb) so that a fresh machine
needs no ClickHouse install. chdb allows one engine (one data path) per process, yet dbt-clickhouse, Dagster
assets, the dashboards and the tests all run in different processes and must see the same data. So exactly one
small process owns the data directory and serves ClickHouse's HTTP interface on 127.0.0.1; every client connects
to it exactly as it would to a real server (clickhouse-connect's HTTP client, dbt-clickhouse), and pointing
``OMS_CLICKHOUSE_URL`` at a real server or cluster is a configuration change, not a code change.

How it works (see docs/clickhouse.md for the user-facing page):

* stdlib ``ThreadingHTTPServer`` with HTTP/1.1 keep-alive: one thread per connection. chdb releases the GIL while
  it executes, so threads give real parallelism; measured, it was the simplest stack that met the throughput
  target (an ASGI stack adds a thread hop per chdb call and per chunk without buying anything here).
* chdb connection *handles* are cheap (~0.1 ms) and carry their own session state (``USE``, ``SET``, temporary
  tables) while sharing one engine. A request without ``session_id`` gets a fresh handle, so settings passed in
  its URL cannot leak into other requests; a request with ``session_id`` (clickhouse-connect and dbt-clickhouse
  always send one) uses that session's handle, serialized by a per-session lock, like ClickHouse's
  ``SESSION_IS_LOCKED``. There is no global lock: different handles run queries concurrently.
* Inserts with data (``INSERT ... FORMAT fmt`` + body, ``INSERT ... VALUES``) are streamed into chdb's streaming
  insert API (``send_insert``/``insert_append``) as the request body arrives — chunked or not, compressed or not —
  so a large insert is never buffered whole and never touches a spool file (measured faster than ``FROM INFILE``).
* Read-only queries in formats whose blocks concatenate into a valid stream (Native, TSV, CSV, RowBinary,
  JSONEachRow, ...) are streamed from chdb's ``send_query`` block by block with chunked transfer encoding; other
  formats (JSON, Arrow, Parquet, ``*WithNames``) are produced in one piece, because chdb encodes every streamed
  block as a complete document in those formats.
* Errors come back as HTTP 500 with ClickHouse's ``Code: N. DB::Exception: ...`` text and the
  ``X-ClickHouse-Exception-Code`` header; an error in the middle of a streamed result is written as ClickHouse
  (v25.11+) does, an ``__exception__`` block framed by the ``X-ClickHouse-Exception-Tag``.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import fcntl
import http.client
import ipaddress
import json
import logging
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import NamedTuple
from urllib.parse import parse_qsl, urlsplit

logger = logging.getLogger("oms_ops.platform.clickhouse_server")

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8123
LOCK_FILE_NAME = ".oms_clickhouse_server.lock"
DEFAULT_LOG_NAME = "oms_clickhouse_server.log"

#: Idle keep-alive connections are closed after this many seconds (ClickHouse's keep_alive_timeout is 30).
KEEP_ALIVE_TIMEOUT_S = 30
#: A request whose client sends or receives nothing for this long is abandoned (ClickHouse's send/receive timeout).
TRANSFER_TIMEOUT_S = 300
#: Sessions expire after this many idle seconds unless the request says otherwise (ClickHouse's default).
DEFAULT_SESSION_TIMEOUT_S = 60.0
MAX_SESSION_TIMEOUT_S = 3600.0
#: On SIGTERM, running requests get this long to finish before the process exits anyway.
SHUTDOWN_GRACE_S = 5.0
#: Bytes of request body inspected to find where an INSERT's statement ends and its data begins.
HEAD_BYTES = 64 * 1024
#: Request body read size; big reads keep the per-chunk Python overhead negligible.
READ_BYTES = 4 * 1024 * 1024
#: Small request chunks are coalesced up to this size before they are handed to chdb.
COALESCE_BYTES = 1024 * 1024

# URL parameters that belong to the HTTP protocol (or to features this server does not have) rather than to
# ClickHouse settings. They are consumed or ignored here and never applied to the engine, which would reject
# most of them as unknown settings.
_TRANSPORT_PARAMS = frozenset(
    {
        "query",
        "database",
        "default_format",
        "session_id",
        "session_timeout",
        "session_check",
        "query_id",
        "compress",
        "decompress",
        "wait_end_of_query",
        "buffer_size",
        "user",
        "password",
        "quota_key",
        "role",
        "client_protocol_version",
        "stacktrace",
        "query_kind",
    }
)
# Real ClickHouse settings that only steer the HTTP layer. They are honoured here (compression) or meaningless
# for an embedded engine (progress headers, cancel-on-close), so applying them would only cost a SET per request.
_HTTP_ONLY_SETTINGS = frozenset(
    {
        "enable_http_compression",
        "http_zlib_compression_level",
        "send_progress_in_http_headers",
        "http_headers_progress_interval_ms",
        "cancel_http_readonly_queries_on_client_close",
        "http_wait_end_of_query",
        "http_response_buffer_size",
        "add_http_cors_header",
    }
)
_SETTING_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

# Output formats whose per-block encodings concatenate into one valid stream (no global header or footer).
_STREAMABLE_FORMATS = frozenset(
    name.lower()
    for name in (
        "Native",
        "TabSeparated",
        "TSV",
        "TabSeparatedRaw",
        "TSVRaw",
        "CSV",
        "RowBinary",
        "JSONEachRow",
        "JSONLines",
        "NDJSON",
        "JSONCompactEachRow",
        "JSONStringsEachRow",
        "JSONCompactStringsEachRow",
        "LineAsString",
    )
)

# Statements chdb can stream (send_query rejects DESCRIBE, SHOW, EXISTS, ... which are small anyway).
_STREAMABLE_STARTS = frozenset({"SELECT", "WITH", ""})

# ClickHouse error codes used by the server's own errors.
_ERR_SYNTAX = (62, "SYNTAX_ERROR")
_ERR_NOT_IMPLEMENTED = (48, "NOT_IMPLEMENTED")
_ERR_BAD_ARGUMENTS = (36, "BAD_ARGUMENTS")
_ERR_READONLY = (164, "READONLY")
_ERR_SESSION_NOT_FOUND = (372, "SESSION_NOT_FOUND")
_ERR_SESSION_LOCKED = (373, "SESSION_IS_LOCKED")
#: how long a request waits for its session to be free before answering SESSION_IS_LOCKED
SESSION_LOCK_WAIT_S = 10.0
_ERR_UNKNOWN_FORMAT = (73, "UNKNOWN_FORMAT")
_ERR_SHUTDOWN = (210, "NETWORK_ERROR")
_ERR_STD = (1001, "STD_EXCEPTION")

# chdb raises RuntimeError with ClickHouse's message, or UnicodeDecodeError when that message quotes bytes
# that are not UTF-8 (e.g. a malformed binary insert).
_ENGINE_ERRORS = (RuntimeError, UnicodeDecodeError)

_CODE_RE = re.compile(r"Code:\s*(\d+)")
_NAME_RE = re.compile(r"\(([A-Z][A-Z0-9_]+)\)(?:\s*\(version [^)]*\))?\s*$")


# --------------------------------------------------------------------------------------------------------------
# Errors


class ClickHouseError(Exception):
    """An error reported to clients in ClickHouse's wire shape (code, name, ``Code: N. DB::Exception`` text)."""

    def __init__(self, code: int, name: str, message: str, *, formatted: str | None = None):
        super().__init__(message)
        self.code = code
        self.name = name
        self.message = message
        self._formatted = formatted

    @classmethod
    def of(cls, err: tuple[int, str], message: str) -> ClickHouseError:
        return cls(err[0], err[1], message)

    @classmethod
    def from_engine(cls, exc: BaseException) -> ClickHouseError:
        """Wrap a chdb exception, keeping the engine's own ``Code: N. DB::Exception: ...`` text verbatim."""
        if isinstance(exc, UnicodeDecodeError):
            # chdb failed to decode its own error message (it quotes the offending input bytes); recover it.
            text = bytes(exc.object).decode("utf-8", errors="replace").strip()
        else:
            text = str(exc).strip()
        start = text.find("Code: ")
        if start > 0:
            text = text[start:]
        code_match = _CODE_RE.search(text)
        if not code_match:
            return cls(_ERR_STD[0], _ERR_STD[1], text or type(exc).__name__)
        name_match = _NAME_RE.search(text)
        name = name_match.group(1) if name_match else "UNKNOWN_EXCEPTION"
        return cls(int(code_match.group(1)), name, text, formatted=text)

    def body(self, version: str) -> str:
        """The response body ClickHouse would send: message, error name and server version."""
        text = self._formatted or f"Code: {self.code}. DB::Exception: {self.message}. ({self.name})"
        if "(version " not in text:
            text = f"{text} (version {version} (chdb))"
        return text + "\n"


# --------------------------------------------------------------------------------------------------------------
# SQL scanning: just enough lexing to find an INSERT's data and an explicit FORMAT clause.
#
# Text is scanned as latin-1 so that character offsets equal byte offsets in the request body, and binary data
# following an INSERT's FORMAT clause can be handed to chdb byte-exact.

_TOKEN_RE = re.compile(
    r"""
    (?P<skip>[^'"`/\#\-A-Za-z_$\x80-\xff()\[\]{}]+|/(?!\*)|-(?!-)|\#(?![ !]))   # blanks, numbers, operators
    |(?P<comment>--[^\n]*|\#[ !][^\n]*|/\*.*?(?:\*/|\Z))
    |(?P<quoted>'(?:[^'\\]+|\\.|'')*(?:'|\Z)|"(?:[^"\\]+|\\.|"")*(?:"|\Z)|`(?:[^`\\]+|\\.|``)*(?:`|\Z))
    |(?P<word>[A-Za-z_$\x80-\xff][A-Za-z0-9_$\x80-\xff]*)
    |(?P<open>[(\[{])
    |(?P<close>[)\]}])
    """,
    re.VERBOSE | re.DOTALL,
)


class _Token(NamedTuple):
    kind: str  # "word", "quoted", "open", "close"
    start: int
    end: int
    depth: int  # parenthesis/bracket depth the token sits at


def _tokens(text: str, start: int = 0) -> Iterator[_Token]:
    """Yield the significant ClickHouse tokens of ``text``: words, quoted strings/identifiers and brackets.

    Blanks, numbers, operators and comments are skipped in bulk by one regular expression, so even a
    multi-megabyte ``IN (...)`` list is scanned at C speed.
    """
    depth = 0
    for match in _TOKEN_RE.finditer(text, start):
        kind = match.lastgroup
        if kind == "skip" or kind == "comment":
            continue
        if kind == "open":
            yield _Token(kind, match.start(), match.end(), depth)
            depth += 1
        elif kind == "close":
            depth = max(0, depth - 1)
            yield _Token(kind, match.start(), match.end(), depth)
        else:
            yield _Token(kind, match.start(), match.end(), depth)


def _first_keyword(text: str) -> str:
    for tok in _tokens(text):
        return text[tok.start : tok.end].upper() if tok.kind == "word" else ""
    return ""


@dataclass(frozen=True)
class InsertData:
    """Where an ``INSERT`` statement ends and its inline data begins (offsets into the scanned text)."""

    statement_end: int
    format: str
    data_start: int


def find_insert_data(text: str, complete: bool = True) -> InsertData | None:
    """Locate the data of ``INSERT ... FORMAT fmt <data>`` or ``INSERT ... VALUES <data>``.

    Returns None for statements without inline data (``INSERT ... SELECT``, ``FROM INFILE``) and, unless
    ``complete``, when the text ends before the data could start (the caller reads more of the body and asks
    again). Data starts after the format name, its trailing blanks and at most one newline — ClickHouse's own
    rule, which keeps binary data intact.
    """
    toks = _tokens(text)
    first = next(toks, None)
    if first is None or first.kind != "word" or text[first.start : first.end].upper() != "INSERT":
        return None
    for tok in toks:
        if tok.kind != "word" or tok.depth:
            continue
        word = text[tok.start : tok.end].upper()
        if word in ("SELECT", "WITH", "INFILE"):
            return None
        if word == "VALUES":
            return InsertData(tok.start, "Values", tok.end)
        if word == "FORMAT":
            fmt_tok = next(toks, None)
            if fmt_tok is None or fmt_tok.kind != "word" or (fmt_tok.end >= len(text) and not complete):
                return None
            pos = fmt_tok.end
            while pos < len(text) and text[pos] in " \t\f":
                pos += 1
            if text.startswith("\r", pos):
                pos += 1
            if text.startswith("\n", pos):
                pos += 1
            return InsertData(tok.start, text[fmt_tok.start : fmt_tok.end], pos)
    return None


@dataclass(frozen=True)
class OutputFormat:
    """An explicit top-level ``FORMAT name`` clause: canonical format name and the clause's span in the text."""

    name: str
    start: int
    end: int


def find_output_format(text: str, known_formats: dict[str, str]) -> OutputFormat | None:
    """Return the query's explicit top-level ``FORMAT name`` clause, if it has one.

    A name is only accepted when it is a known output format not followed by ``(``, so a column called
    ``format`` or the ``format(...)`` table function is not mistaken for a FORMAT clause.
    """
    found = None
    candidate: OutputFormat | None = None
    prev: _Token | None = None
    for tok in _tokens(text):
        if candidate is not None:
            if tok.kind != "open":
                found = candidate
            candidate = None
        if (
            tok.kind == "word"
            and prev is not None
            and prev.kind == "word"
            and prev.depth == 0
            and text[prev.start : prev.end].upper() == "FORMAT"
        ):
            canonical = known_formats.get(text[tok.start : tok.end].lower())
            if canonical:
                candidate = OutputFormat(canonical, prev.start, tok.end)
        prev = tok
    return candidate or found


def _write_varint(value: int, out: bytearray) -> None:
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return


def native_header_block(columns: list[tuple[str, str]]) -> bytes:
    """A zero-row Native block: column count, row count 0, then each name and type (zero rows carry no data)."""
    out = bytearray()
    _write_varint(len(columns), out)
    _write_varint(0, out)
    for name, type_name in columns:
        for text in (name, type_name):
            raw = text.encode("utf-8")
            _write_varint(len(raw), out)
            out += raw
    return bytes(out)


def _content_type(fmt: str) -> str:
    lowered = fmt.lower()
    if lowered.startswith(("tabseparated", "tsv")):
        return "text/tab-separated-values; charset=UTF-8"
    if lowered.startswith("csv"):
        return "text/csv; charset=UTF-8; header=absent"
    if lowered.startswith(("json", "ndjson")):
        return "application/json; charset=UTF-8"
    if lowered.startswith(("pretty", "vertical", "markdown", "values", "lineasstring", "xml", "template")):
        return "text/plain; charset=UTF-8"
    return "application/octet-stream"


# --------------------------------------------------------------------------------------------------------------
# HTTP compression (Content-Encoding of request bodies; Accept-Encoding + enable_http_compression for responses)


class _Decoder:
    """Incremental decoder for one Content-Encoding; copes with concatenated frames/members.

    clickhouse-connect compresses every insert block as its own lz4 or zstd frame, so a body is a sequence of
    frames and each frame's end must restart the decoder on the leftover bytes.
    """

    def __init__(self, encoding: str):
        self.encoding = encoding
        self._factory = self._make_factory(encoding)
        self._dec = self._factory() if self._factory else None

    @staticmethod
    def _make_factory(encoding: str) -> Callable[[], object] | None:
        if encoding in ("", "identity"):
            return None
        if encoding == "lz4":
            import lz4.frame

            return lz4.frame.LZ4FrameDecompressor
        if encoding == "zstd":
            zstd = _zstd_module()
            return zstd.ZstdDecompressor
        if encoding in ("gzip", "x-gzip"):
            return lambda: zlib.decompressobj(wbits=31)
        if encoding == "deflate":
            return lambda: zlib.decompressobj(wbits=15)
        if encoding == "br":
            try:
                import brotli
            except ImportError as exc:
                raise ClickHouseError.of(
                    _ERR_BAD_ARGUMENTS, "Content-Encoding br needs the brotli package"
                ) from exc
            return brotli.Decompressor
        raise ClickHouseError.of(_ERR_BAD_ARGUMENTS, f"Unknown Content-Encoding: {encoding}")

    def feed(self, data: bytes) -> bytes:
        if self._dec is None:
            return data
        out = []
        while data:
            dec = self._dec
            if self.encoding == "br":
                out.append(dec.process(data))
                break
            out.append(dec.decompress(data))
            if not getattr(dec, "eof", False):
                break
            data = dec.unused_data
            self._dec = self._factory()
        return b"".join(out)


def _zstd_module():
    if sys.version_info >= (3, 14):
        from compression import zstd
    else:
        from backports import zstd
    return zstd


class _Encoder:
    """Streaming response compressor producing a single frame/stream for the whole response."""

    def __init__(self, encoding: str):
        self.encoding = encoding
        if encoding == "lz4":
            import lz4.frame

            self._comp = lz4.frame.LZ4FrameCompressor()
            self._pending = self._comp.begin()
        elif encoding == "zstd":
            self._comp = _zstd_module().ZstdCompressor(level=1)
            self._pending = b""
        elif encoding == "gzip":
            self._comp = zlib.compressobj(1, wbits=31)
            self._pending = b""
        elif encoding == "deflate":
            self._comp = zlib.compressobj(1, wbits=15)
            self._pending = b""
        else:  # pragma: no cover - guarded by _choose_encoding
            raise ValueError(encoding)

    def compress(self, data) -> bytes:
        out = self._pending + self._comp.compress(data)
        self._pending = b""
        return out

    def flush(self) -> bytes:
        out = self._pending + self._comp.flush()
        self._pending = b""
        return out


def _response_encodings() -> list[str]:
    found = []
    with contextlib.suppress(ImportError):
        import lz4.frame  # noqa: F401

        found.append("lz4")
    with contextlib.suppress(ImportError):
        _zstd_module()
        found.append("zstd")
    return [*found, "gzip", "deflate"]


_RESPONSE_ENCODINGS = _response_encodings()


def _choose_encoding(accept_encoding: str) -> str | None:
    """Pick the cheapest encoding the client accepts; lz4 first because compression here only costs CPU."""
    offered = {part.split(";")[0].strip().lower() for part in accept_encoding.split(",")}
    for enc in _RESPONSE_ENCODINGS:
        if enc in offered:
            return enc
    return None


def _is_loopback(host: str) -> bool:
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    mapped = getattr(address, "ipv4_mapped", None)
    return (mapped or address).is_loopback


def _truthy(value: str | None) -> bool:
    return value is not None and value.strip().lower() in ("1", "true", "yes", "on")


# --------------------------------------------------------------------------------------------------------------
# Engine and sessions


class Engine:
    """Owns the chdb engine for one data directory: the anchor handle, the format catalogue and the sessions."""

    def __init__(self, data_dir: Path):
        from chdb import _chdb

        self._chdb = _chdb
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
            raise ClickHouseError.of(_ERR_SHUTDOWN, "Server is shutting down")
        return self._chdb.connect(self.path)

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
                raise ClickHouseError.of(_ERR_SHUTDOWN, "Server is shutting down")
            session = self._sessions.get(session_id)
            if session is None:
                if must_exist:
                    raise ClickHouseError.of(_ERR_SESSION_NOT_FOUND, f"Session {session_id} not found")
                session = Session(session_id, self.connect())
                self._sessions[session_id] = session
            # a client (dbt) may send its next query before the previous response's final bytes were
            # written and the lock released: keep the session from being reaped and wait a moment
            session.expires_at = float("inf")
        if not session.lock.acquire(timeout=SESSION_LOCK_WAIT_S):
            with self._sessions_lock:
                session.expires_at = time.monotonic() + session.timeout
            raise ClickHouseError.of(
                _ERR_SESSION_LOCKED, f"Session {session_id} is locked by a concurrent client"
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


def _quote_identifier(name: str) -> str:
    return "`" + name.replace("\\", "\\\\").replace("`", "\\`") + "`"


def _quote_literal(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


class _RequestState:
    """The chdb handle one request runs on, with database and settings applied the way the URL asked."""

    def __init__(self, engine: Engine, session: Session | None):
        self.engine = engine
        self.session = session
        self.handle = session.handle if session else engine.connect()

    def run(self, sql: str) -> None:
        try:
            self.handle.query(sql, "TabSeparated")
        except _ENGINE_ERRORS as exc:
            raise ClickHouseError.from_engine(exc) from None

    def use_database(self, database: str | None) -> None:
        session = self.session
        if session is None:
            if database and database != "default":
                self.run(f"USE {_quote_identifier(database)}")
            return
        wanted = database or session.base_database
        if wanted != session.current_database:
            self.run(f"USE {_quote_identifier(wanted)}")
            session.current_database = wanted

    def apply_settings(self, settings: dict[str, str]) -> None:
        for name in settings:
            if not _SETTING_NAME_RE.match(name):
                raise ClickHouseError(115, "UNKNOWN_SETTING", f"Invalid setting name {name!r}")
        session = self.session
        if session is None:
            for name, value in settings.items():
                self.run(f"SET {name} = {_quote_literal(value)}")
            return
        # Session: URL settings apply to one query only. Restore what the previous request set and this one does
        # not, then set what changed. A client that sends the same settings every time costs nothing extra.
        for name in [n for n in session.url_settings if n not in settings]:
            value, changed = session.saved_settings.pop(name, ("", False))
            self.run(f"SET {name} = {_quote_literal(value) if changed else 'DEFAULT'}")
            del session.url_settings[name]
        new_names = [n for n in settings if n not in session.url_settings]
        if new_names:
            try:
                snapshot = self.handle.query(
                    "SELECT name, value, changed FROM system.settings WHERE has({names:Array(String)}, name)",
                    "JSONEachRow",
                    params={"names": "[" + ",".join(_quote_literal(n) for n in new_names) + "]"},
                )
            except _ENGINE_ERRORS as exc:
                raise ClickHouseError.from_engine(exc) from None
            for line in snapshot.bytes().splitlines():
                row = json.loads(line)
                session.saved_settings[row["name"]] = (row["value"], bool(row["changed"]))
        for name, value in settings.items():
            if session.url_settings.get(name) != value:
                self.run(f"SET {name} = {_quote_literal(value)}")
                session.url_settings[name] = value

    def after_query(self, sql: str) -> None:
        """Keep the session's own database in sync when the query was a ``USE``."""
        session = self.session
        if session is not None and _first_keyword(sql) == "USE":
            current = self.handle.query("SELECT currentDatabase()", "TabSeparated").bytes().decode().strip()
            session.base_database = session.current_database = current

    def close(self) -> None:
        if self.session is None:
            with contextlib.suppress(Exception):
                self.handle.close()


# --------------------------------------------------------------------------------------------------------------
# Request bodies


class _BodyReader:
    """Reads a request body (Content-Length or chunked) in large pieces, decoding its Content-Encoding."""

    def __init__(self, rfile, headers, decoder: _Decoder):
        self._rfile = rfile
        self._decoder = decoder
        te = (headers.get("Transfer-Encoding") or "").lower()
        self._chunked = "chunked" in te
        length = headers.get("Content-Length")
        self._remaining = int(length) if (length and not self._chunked) else 0
        self._chunk_left = 0
        self.eof = not self._chunked and self._remaining == 0

    def _raw(self) -> bytes:
        if self.eof:
            return b""
        if not self._chunked:
            data = self._rfile.read(min(self._remaining, READ_BYTES))
            if not data:
                raise ConnectionError("client closed the connection mid-body")
            self._remaining -= len(data)
            self.eof = self._remaining == 0
            return data
        if self._chunk_left == 0:
            line = self._rfile.readline(65537)
            if not line:
                raise ConnectionError("client closed the connection mid-body")
            size = int(line.split(b";", 1)[0].strip() or b"0", 16)
            if size == 0:
                while True:  # trailers, then the blank line ending the body
                    trailer = self._rfile.readline(65537)
                    if trailer in (b"\r\n", b"\n", b""):
                        break
                self.eof = True
                return b""
            self._chunk_left = size
        data = self._rfile.read(min(self._chunk_left, READ_BYTES))
        if not data:
            raise ConnectionError("client closed the connection mid-body")
        self._chunk_left -= len(data)
        if self._chunk_left == 0:
            self._rfile.readline(3)  # CRLF after the chunk data
        return data

    def read(self) -> bytes:
        """Next piece of decoded body; b'' only at the end of the body."""
        while not self.eof:
            raw = self._raw()
            try:
                out = self._decoder.feed(raw)
            except Exception as exc:  # noqa: BLE001 - each codec raises its own error type
                raise ClickHouseError(
                    271, "CANNOT_DECOMPRESS", f"Cannot decode {self._decoder.encoding} request body: {exc}"
                ) from None
            if out:
                return out
        return b""

    def read_all(self) -> bytes:
        parts = []
        while True:
            part = self.read()
            if not part:
                return b"".join(parts)
            parts.append(part)

    def drain(self) -> None:
        """Consume the rest of the body so the connection can be reused (or fail trying, then close)."""
        while not self.eof:
            self._raw()


# --------------------------------------------------------------------------------------------------------------
# HTTP server


class ClickHouseHTTPServer(ThreadingHTTPServer):
    """Threaded HTTP server that tracks connections so shutdown can drain requests and close chdb cleanly."""

    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], engine: Engine, *, compress_loopback: bool = False):
        self.engine = engine
        # Responses to a client on this host are not compressed unless asked for here: client and server share
        # the CPUs, the bytes never cross a network, and compressing cost ~25% of scan throughput on 2 cores.
        # Identity is always an acceptable Content-Encoding, and clients decode whatever the header says.
        self.compress_loopback = compress_loopback
        self.display_name = socket.gethostname()
        self.closing = False
        self._conns: dict[socket.socket, bool] = {}  # socket -> busy with a request
        self._conns_cond = threading.Condition()
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, _Handler)

    def track(self, sock: socket.socket, busy: bool | None) -> None:
        with self._conns_cond:
            if busy is None:
                self._conns.pop(sock, None)
            else:
                self._conns[sock] = busy
            self._conns_cond.notify_all()

    def drain(self, grace_s: float) -> int:
        """Stop accepting work: drop idle keep-alive connections and wait for running requests to finish.

        Returns how many requests are still running when the grace period is over."""
        self.closing = True
        deadline = time.monotonic() + grace_s
        with self._conns_cond:
            while True:
                for sock, busy in list(self._conns.items()):
                    if not busy:
                        with contextlib.suppress(OSError):
                            sock.shutdown(socket.SHUT_RDWR)
                running = sum(self._conns.values())
                if not running or time.monotonic() >= deadline:
                    return running
                self._conns_cond.wait(0.1)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "oms-clickhouse-server"
    sys_version = ""
    timeout = KEEP_ALIVE_TIMEOUT_S
    server: ClickHouseHTTPServer

    # -- plumbing ------------------------------------------------------------------------------------------

    def setup(self) -> None:
        super().setup()
        self.loopback_peer = _is_loopback(self.client_address[0])
        # Small responses are written as header + body; without NODELAY Nagle and delayed ACKs add ~40 ms.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.server.track(self.connection, False)

    def finish(self) -> None:
        self.server.track(self.connection, None)
        with contextlib.suppress(OSError):
            super().finish()

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - signature fixed by the base class
        logger.debug("%s - %s", self.address_string(), format % args)

    def do_GET(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def _dispatch(self) -> None:
        if self.server.closing:
            self._send_error(ClickHouseError.of(_ERR_SHUTDOWN, "Server is shutting down"), close=True)
            return
        self.server.track(self.connection, True)
        self.connection.settimeout(TRANSFER_TIMEOUT_S)
        try:
            url = urlsplit(self.path)
            path = url.path.rstrip("/") or "/"
            if path == "/" and self.command == "GET" and not url.query:
                self._send_simple(200, b"Ok.\n")  # ClickHouse answers a bare GET / like /ping
                return
            if path in ("/", "/query"):
                self._handle_query(url.query)
                return
            if self.headers.get("Content-Length", "0") != "0" or self.headers.get("Transfer-Encoding"):
                self.close_connection = True  # a body nobody reads must not be parsed as the next request
            if path in ("/ping", "/replicas_status"):
                self._send_simple(200, b"Ok.\n")
            else:
                self._send_simple(
                    404, f"There is no handle {url.path}\n\nUse / or /ping for health checks.\n".encode()
                )
        finally:
            self.connection.settimeout(KEEP_ALIVE_TIMEOUT_S)
            self.server.track(self.connection, False)

    def _base_headers(self, query_id: str) -> list[tuple[str, str]]:
        return [
            ("X-ClickHouse-Server-Display-Name", self.server.display_name),
            ("X-ClickHouse-Query-Id", query_id),
            ("X-ClickHouse-Timezone", self.server.engine.timezone),
            ("Keep-Alive", f"timeout={KEEP_ALIVE_TIMEOUT_S}"),
        ]

    def _write_head(self, status: int, headers: list[tuple[str, str]]) -> None:
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        self.end_headers()

    def _send_simple(self, status: int, body: bytes, content_type: str = "text/html; charset=UTF-8") -> None:
        self._write_head(status, [("Content-Type", content_type), ("Content-Length", str(len(body)))])
        self.wfile.write(body)

    def _send_error(self, err: ClickHouseError, *, query_id: str = "", close: bool = False) -> None:
        logger.info("query %s failed: %s", query_id, err.message)
        body = err.body(self.server.engine.version).encode("utf-8", errors="replace")
        headers = [
            *self._base_headers(query_id or str(uuid.uuid4())),
            ("Content-Type", "text/plain; charset=UTF-8"),
            ("X-ClickHouse-Exception-Code", str(err.code)),
            ("Content-Length", str(len(body))),
        ]
        if close:
            headers.append(("Connection", "close"))
        self._write_head(500, headers)
        self.wfile.write(body)

    # -- the query endpoint ----------------------------------------------------------------------------------

    def _handle_query(self, raw_query: str) -> None:
        params = dict(parse_qsl(raw_query, keep_blank_values=True))
        query_id = params.get("query_id") or str(uuid.uuid4())
        reader = None
        try:
            reader = _BodyReader(
                self.rfile, self.headers, _Decoder((self.headers.get("Content-Encoding") or "").lower())
            )
            content_type = (self.headers.get("Content-Type") or "").lower()
            if content_type.startswith("multipart/form-data"):
                params.update(_parse_multipart(reader.read_all(), content_type))
            elif content_type.startswith("application/x-www-form-urlencoded") and "query" not in params:
                params.update(parse_qsl(reader.read_all().decode("utf-8"), keep_blank_values=True))
            self._execute(params, query_id, reader)
        except ClickHouseError as err:
            self._fail(err, query_id, reader)
        except (ConnectionError, TimeoutError, OSError) as exc:
            logger.debug("connection dropped during query %s: %s", query_id, exc)
            self.close_connection = True
        except Exception as exc:  # noqa: BLE001 - anything else is reported to the client, never kills the thread
            logger.exception("internal error in query %s", query_id)
            self._fail(
                ClickHouseError(_ERR_STD[0], _ERR_STD[1], f"{type(exc).__name__}: {exc}"), query_id, reader
            )

    def _fail(self, err: ClickHouseError, query_id: str, reader: _BodyReader | None) -> None:
        close = False
        if reader is not None:
            try:
                reader.drain()
            except (ConnectionError, OSError, ValueError):
                close = True
        with contextlib.suppress(OSError):
            self._send_error(err, query_id=query_id, close=close)

    def _execute(self, params: dict[str, str], query_id: str, reader: _BodyReader) -> None:
        engine = self.server.engine
        if _truthy(params.get("compress")) or _truthy(params.get("decompress")):
            raise ClickHouseError.of(
                _ERR_NOT_IMPLEMENTED,
                "ClickHouse native HTTP compression (compress/decompress=1) is not supported",
            )
        database = params.get("database") or self.headers.get("X-ClickHouse-Database") or None
        default_format = (
            params.get("default_format") or self.headers.get("X-ClickHouse-Format") or "TabSeparated"
        )
        bind = {k[6:]: v for k, v in params.items() if k.startswith("param_")}
        settings = {
            k: v
            for k, v in params.items()
            if k not in _TRANSPORT_PARAMS and k not in _HTTP_ONLY_SETTINGS and not k.startswith("param_")
        }
        encoding = None
        compression = params.get("enable_http_compression")
        wanted = _truthy(compression) if compression is not None else engine.http_compression_default
        if wanted and (self.server.compress_loopback or not self.loopback_peer):
            encoding = _choose_encoding(self.headers.get("Accept-Encoding") or "")

        # The statement: the `query` parameter, then the body (ClickHouse joins them with a newline).
        prefix = params.get("query", "")
        head = bytearray(prefix.encode("utf-8") + b"\n") if prefix else bytearray()
        body_start = len(head)
        while len(head) - body_start < HEAD_BYTES and not reader.eof:
            head += reader.read()
        insert = None
        scan = head.decode("latin-1")
        if _first_keyword(scan) == "INSERT":
            insert = find_insert_data(scan, complete=reader.eof)
            while insert is None and not reader.eof:  # statement longer than the head: grow it geometrically
                target = 2 * len(head)
                while len(head) < target and not reader.eof:
                    head += reader.read()
                scan = head.decode("latin-1")
                insert = find_insert_data(scan, complete=reader.eof)
        if insert is None and not reader.eof:
            head += reader.read_all()
        if not head.strip():
            raise ClickHouseError.of(_ERR_SYNTAX, "Empty query")
        if logger.isEnabledFor(logging.DEBUG):
            shown = scan[: insert.data_start] if insert else bytes(head[:2000]).decode("utf-8", "replace")
            logger.debug(
                "query %s session=%s settings=%s: %s", query_id, params.get("session_id"), settings, shown
            )

        session = None
        session_id = params.get("session_id")
        if session_id:
            try:
                timeout = float(params.get("session_timeout") or DEFAULT_SESSION_TIMEOUT_S)
            except ValueError:
                raise ClickHouseError.of(_ERR_BAD_ARGUMENTS, "Invalid session timeout") from None
            if not 0 < timeout <= MAX_SESSION_TIMEOUT_S:
                raise ClickHouseError.of(
                    _ERR_BAD_ARGUMENTS, f"Session timeout must be in (0, {MAX_SESSION_TIMEOUT_S:g}] seconds"
                )
            session = engine.acquire_session(session_id, timeout, _truthy(params.get("session_check")))
        state = _RequestState(engine, session)
        try:
            state.use_database(database)
            state.apply_settings(settings)
            base = self._base_headers(query_id)
            if insert is not None:
                statement = bytes(head[: insert.statement_end]).decode("utf-8")
                self._run_insert(state, statement, insert, bytes(head[insert.data_start :]), reader, base)
            else:
                sql = bytes(head).decode("utf-8", errors="replace")
                self._run_query(state, sql, default_format, bind, encoding, base)
                state.after_query(sql)
        finally:
            state.close()
            if session is not None:
                engine.release_session(session)

    def _run_insert(
        self,
        state: _RequestState,
        statement: str,
        insert: InsertData,
        first: bytes,
        reader: _BodyReader,
        base_headers: list[tuple[str, str]],
    ) -> None:
        """Stream the body into chdb's streaming insert, coalescing small pieces to amortize the per-call cost."""
        fmt = self.server.engine.input_formats.get(insert.format.lower())
        if fmt is None:
            raise ClickHouseError.of(_ERR_UNKNOWN_FORMAT, f"Unknown input format {insert.format}")
        handle = state.handle
        started = time.perf_counter_ns()
        try:
            inserter = handle.send_insert(statement, fmt)
        except _ENGINE_ERRORS as exc:
            raise ClickHouseError.from_engine(exc) from None
        try:
            pending = bytearray(first)
            while True:
                piece = reader.read()
                if not piece:
                    break
                if not pending and len(piece) >= COALESCE_BYTES:
                    handle.insert_append(inserter, piece)
                    continue
                pending += piece
                if len(pending) >= COALESCE_BYTES:
                    handle.insert_append(inserter, bytes(pending))
                    pending.clear()
            if pending:
                handle.insert_append(inserter, bytes(pending))
            result = handle.insert_done(inserter)
        except _ENGINE_ERRORS as exc:
            with contextlib.suppress(Exception):
                handle.insert_cancel(inserter)
            raise ClickHouseError.from_engine(exc) from None
        except BaseException:
            with contextlib.suppress(Exception):
                handle.insert_cancel(inserter)
            raise
        summary = {
            "read_rows": "0",
            "read_bytes": "0",
            "written_rows": str(result.rows_written()),
            "written_bytes": str(result.bytes_written()),
            "total_rows_to_read": "0",
            "result_rows": str(result.rows_written()),
            "result_bytes": str(result.bytes_written()),
            "elapsed_ns": str(time.perf_counter_ns() - started),
        }
        self._write_head(
            200,
            [
                *base_headers,
                ("Content-Type", "text/plain; charset=UTF-8"),
                ("X-ClickHouse-Summary", json.dumps(summary, separators=(",", ":"))),
                ("Content-Length", "0"),
            ],
        )

    def _run_query(
        self,
        state: _RequestState,
        sql: str,
        default_format: str,
        bind: dict[str, str],
        encoding: str | None,
        base_headers: list[tuple[str, str]],
    ) -> None:
        engine = self.server.engine
        handle = state.handle
        query_class, statements = engine.classify(handle, sql)
        if statements > 1:
            raise ClickHouseError.of(_ERR_SYNTAX, "Multi-statements are not allowed")
        if self.command == "GET" and query_class in (1, 2):
            raise ClickHouseError.of(
                _ERR_READONLY,
                "Cannot execute query in readonly mode. For queries over HTTP, method GET implies readonly. "
                "You should use method POST for modifying queries",
            )
        clause = find_output_format(sql, engine.output_formats)
        if clause is not None:
            fmt = clause.name
        else:
            fmt = engine.output_formats.get(default_format.lower())
            if fmt is None:
                raise ClickHouseError.of(_ERR_UNKNOWN_FORMAT, f"Unknown output format {default_format}")
        produces_result = query_class == 0
        # chdb streams only SELECT-shaped queries ("Streaming query is not supported" for DESCRIBE, SHOW, ...).
        if (
            produces_result
            and fmt.lower() in _STREAMABLE_FORMATS
            and _first_keyword(sql) in _STREAMABLE_STARTS
        ):
            empty_body: Callable[[], bytes] = lambda: b""  # noqa: E731
            if fmt == "Native":
                empty_body = lambda: _empty_native_result(state.handle, sql, clause, bind)  # noqa: E731
            self._stream_query(state, sql, fmt, bind, encoding, base_headers, empty_body)
            return
        started = time.perf_counter_ns()
        try:
            result = handle.query(sql, fmt, params=bind)
        except _ENGINE_ERRORS as exc:
            raise ClickHouseError.from_engine(exc) from None
        body = result.get_memview().view() if result.size() else b""
        headers = [*base_headers, ("X-ClickHouse-Summary", _summary(result, started))]
        if produces_result or len(body):
            headers += [("Content-Type", _content_type(fmt)), ("X-ClickHouse-Format", fmt)]
        else:
            headers.append(("Content-Type", "text/plain; charset=UTF-8"))
        if encoding and len(body):
            enc = _Encoder(encoding)
            body = enc.compress(body) + enc.flush()
            headers.append(("Content-Encoding", encoding))
        headers.append(("Content-Length", str(len(body))))
        self._write_head(200, headers)
        if len(body):
            self.wfile.write(body)
        del result

    def _stream_query(
        self,
        state: _RequestState,
        sql: str,
        fmt: str,
        bind: dict[str, str],
        encoding: str | None,
        base_headers: list[tuple[str, str]],
        empty_body: Callable[[], bytes],
    ) -> None:
        """Send a result block by block. Errors before the first block are a normal 500; later ones are
        written in-band the way ClickHouse does, framed by the response's exception tag."""
        handle = state.handle
        started = time.perf_counter_ns()
        try:
            stream = handle.send_query(sql, fmt, params=bind)
        except _ENGINE_ERRORS as exc:
            raise ClickHouseError.from_engine(exc) from None
        finished = False
        try:
            try:
                block = _fetch(handle, stream)
            except _ENGINE_ERRORS as exc:
                finished = True
                raise ClickHouseError.from_engine(exc) from None
            tag = secrets.token_hex(8)
            summary = {"read_rows": "0", "read_bytes": "0", "written_rows": "0", "written_bytes": "0"}
            summary["elapsed_ns"] = str(time.perf_counter_ns() - started)
            headers = [
                *base_headers,
                ("Content-Type", _content_type(fmt)),
                ("X-ClickHouse-Format", fmt),
                ("X-ClickHouse-Summary", json.dumps(summary, separators=(",", ":"))),
                ("X-ClickHouse-Exception-Tag", tag),
            ]
            if block is None:
                finished = True
                body = empty_body()
                if encoding and body:
                    enc = _Encoder(encoding)
                    body = enc.compress(body) + enc.flush()
                    headers.append(("Content-Encoding", encoding))
                headers.append(("Content-Length", str(len(body))))
                self._write_head(200, headers)
                self.wfile.write(body)
                return
            enc = _Encoder(encoding) if encoding else None
            if enc:
                headers.append(("Content-Encoding", encoding))
            headers.append(("Transfer-Encoding", "chunked"))
            self._write_head(200, headers)
            write = self.wfile.write
            while block is not None:
                data = block.get_memview().view()
                if enc:
                    data = enc.compress(data)
                if len(data):
                    write(b"%x\r\n" % len(data))
                    write(data)
                    write(b"\r\n")
                del data, block
                try:
                    block = _fetch(handle, stream)
                except _ENGINE_ERRORS as exc:
                    finished = True
                    message = ClickHouseError.from_engine(exc).body(self.server.engine.version).rstrip("\n")
                    raw = message.encode("utf-8", errors="replace")
                    trailer = b"__exception__\r\n%s\r\n%s\n%d %s\r\n__exception__\r\n" % (
                        tag.encode(),
                        raw,
                        len(raw),
                        tag.encode(),
                    )
                    data = enc.compress(trailer) if enc else trailer
                    write(b"%x\r\n" % len(data) + data + b"\r\n")
                    block = None
            finished = True
            tail = enc.flush() if enc else b""
            if tail:
                write(b"%x\r\n" % len(tail) + tail + b"\r\n")
            write(b"0\r\n\r\n")
        finally:
            if not finished:
                # The client went away (or we failed) mid-stream: stop the query so the handle is reusable.
                with contextlib.suppress(Exception):
                    handle.streaming_cancel_query(stream)
                self.close_connection = True


def _empty_native_result(handle, sql: str, clause: OutputFormat | None, bind: dict[str, str]) -> bytes:
    """Column names and types for a result without rows, as ClickHouse sends them.

    chdb emits zero bytes for an empty Native result, which would leave clients without column names (an empty
    DataFrame with no columns). ``DESCRIBE (query)`` analyses the query without running it again.
    """
    inner = sql if clause is None else sql[: clause.start] + sql[clause.end :]
    inner = inner.strip().rstrip(";")
    try:
        described = handle.query(f"DESCRIBE ({inner}\n)", "JSONCompactEachRow", params=bind)
        columns = [tuple(json.loads(line)[:2]) for line in described.bytes().splitlines() if line.strip()]
    except Exception:  # noqa: BLE001 - best effort; an empty body is still a valid (if nameless) result
        logger.debug("could not describe empty result", exc_info=True)
        return b""
    return native_header_block(columns)


def _fetch(handle, stream):
    """Next non-empty result block of a streaming query, or None at its end."""
    result = handle.streaming_fetch_result(stream)
    if result is None or result.rows_read() == 0:
        return None
    return result


def _summary(result, started_ns: int) -> str:
    try:
        summary = {
            "read_rows": str(result.storage_rows_read()),
            "read_bytes": str(result.storage_bytes_read()),
            "written_rows": str(result.rows_written()),
            "written_bytes": str(result.bytes_written()),
            "total_rows_to_read": str(result.storage_rows_read()),
            "result_rows": str(result.rows_read()),
            "result_bytes": str(result.bytes_read()),
            "elapsed_ns": str(time.perf_counter_ns() - started_ns),
        }
    except Exception:  # noqa: BLE001 - statistics are best effort
        summary = {"elapsed_ns": str(time.perf_counter_ns() - started_ns)}
    return json.dumps(summary, separators=(",", ":"))


def _parse_multipart(body: bytes, content_type: str) -> dict[str, str]:
    """Form fields of a multipart/form-data body (clickhouse-connect sends query and params this way when they
    are too long for the URL). External-data file parts are not supported and are rejected."""
    match = re.search(r'boundary="?([^";]+)"?', content_type)
    if not match:
        raise ClickHouseError.of(_ERR_BAD_ARGUMENTS, "multipart/form-data without a boundary")
    delimiter = b"--" + match.group(1).encode()
    fields: dict[str, str] = {}
    for part in body.split(delimiter)[1:]:
        if part.startswith(b"--"):
            break
        part = part[2:] if part.startswith(b"\r\n") else part
        head, _, value = part.partition(b"\r\n\r\n")
        if value.endswith(b"\r\n"):
            value = value[:-2]
        disposition = next(
            (
                line
                for line in head.decode("utf-8").split("\r\n")
                if line.lower().startswith("content-disposition")
            ),
            "",
        )
        name_match = re.search(r'\bname="([^"]*)"', disposition)
        if not name_match:
            continue
        if "filename=" in disposition:
            raise ClickHouseError.of(
                _ERR_NOT_IMPLEMENTED, "External data is not supported by the embedded server"
            )
        fields[name_match.group(1)] = value.decode("utf-8")
    return fields


# --------------------------------------------------------------------------------------------------------------
# Running the server


class _DataDirLock:
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


def serve(
    data_dir: Path,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    *,
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
    host too (by default only remote clients get compressed responses).
    """
    data_dir = Path(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    lock = _DataDirLock(data_dir)
    lock.acquire()
    engine = None
    server = None
    clean = True
    try:
        engine = Engine(data_dir)
        server = ClickHouseHTTPServer((host, port), engine, compress_loopback=compress_loopback)
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
                if watch_pid is not None and not _pid_alive(watch_pid):
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m oms_ops.platform.clickhouse_server",
        description="Serve a chdb data directory over ClickHouse's HTTP interface.",
    )
    parser.add_argument(
        "--data-dir", required=True, type=Path, help="chdb data directory (owned by this process)"
    )
    parser.add_argument("--host", default=DEFAULT_HOST, help="address to listen on (default 127.0.0.1)")
    parser.add_argument(
        "--port", type=int, default=DEFAULT_PORT, help="port (default 8123; 0 picks a free one)"
    )
    parser.add_argument("--port-file", type=Path, help="write the bound port here once listening")
    parser.add_argument("--watch-pid", type=int, help="stop when the process with this pid exits")
    parser.add_argument(
        "--compress-loopback",
        action="store_true",
        default=_truthy(os.environ.get("OMS_CLICKHOUSE_COMPRESS_LOOPBACK")),
        help="compress responses to clients on 127.0.0.1 as well (env OMS_CLICKHOUSE_COMPRESS_LOOPBACK=1)",
    )
    parser.add_argument("--log-level", default=os.environ.get("OMS_CLICKHOUSE_LOG_LEVEL", "INFO"))
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        clean = serve(
            args.data_dir,
            args.host,
            args.port,
            port_file=args.port_file,
            watch_pid=args.watch_pid,
            compress_loopback=args.compress_loopback,
        )
    except RuntimeError as exc:
        logger.error("%s", exc)
        return 1
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            logger.error("port %s on %s is already in use", args.port, args.host)
            return 1
        raise
    if not clean:
        # Threads are still inside chdb; interpreter teardown would run the engine's destructors under them.
        logging.shutdown()
        os._exit(0)
    return 0


# --------------------------------------------------------------------------------------------------------------
# Launcher API (used by the service manager and the tests)


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
    """A running server process started by :func:`start_clickhouse_process`."""

    url: str
    pid: int
    port: int
    host: str
    data_dir: Path
    log_path: Path
    _popen: subprocess.Popen | None = field(default=None, repr=False)

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


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


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
) -> ClickHouseProcess:
    """Start the server for ``data_dir`` as a detached process (own process group) and wait until it answers.

    ``port=None`` lets the server bind a free port and report it back through a port file (no pick-then-bind
    race). An explicit port that is already taken raises RuntimeError naming it. The log goes to ``log_path``
    (default: ``<data_dir>/oms_clickhouse_server.log``). ``watch_pid`` (e.g. the test runner's pid) makes the
    server stop by itself once that process is gone; services started by the stack leave it unset.
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
    port_dir = Path(tempfile.mkdtemp(prefix="oms-ch-port-"))
    port_file = port_dir / "port"
    project_root = str(Path(__file__).resolve().parents[2])
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (project_root, env.get("PYTHONPATH")) if p)
    cmd = [
        sys.executable,
        "-m",
        "oms_ops.platform.clickhouse_server",
        "--data-dir",
        str(data_dir),
        "--host",
        host,
        "--port",
        str(port if port is not None else 0),
        "--port-file",
        str(port_file),
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
        with contextlib.suppress(OSError):
            port_file.unlink()
        with contextlib.suppress(OSError):
            port_dir.rmdir()
    assert bound_port is not None
    return ClickHouseProcess(
        url=f"http://{url_host}:{bound_port}",
        pid=popen.pid,
        port=bound_port,
        host=host,
        data_dir=data_dir,
        log_path=log_path,
        _popen=popen,
    )


if __name__ == "__main__":
    sys.exit(main())
