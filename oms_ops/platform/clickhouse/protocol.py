"""ClickHouse's HTTP protocol as clients see it: defaults, timeouts, URL parameters and errors.

Everything here is what a ClickHouse client can observe or relies on — which URL parameters are settings and which
belong to the transport, the error codes and names, the ``Code: N. DB::Exception: ...`` text — kept apart from how
the server produces it, so the rest of the package shares one definition of the wire contract.
"""

from __future__ import annotations

import re

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8123

#: Idle keep-alive connections are closed after this many seconds (ClickHouse's keep_alive_timeout is 30).
KEEP_ALIVE_TIMEOUT_S = 30
#: A request whose client sends or receives nothing for this long is abandoned (ClickHouse's send/receive timeout).
TRANSFER_TIMEOUT_S = 300

# URL parameters that belong to the HTTP protocol (or to features this server does not have) rather than to
# ClickHouse settings. They are consumed or ignored here and never applied to the engine, which would reject
# most of them as unknown settings.
TRANSPORT_PARAMS = frozenset(
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
HTTP_ONLY_SETTINGS = frozenset(
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
SETTING_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

# ClickHouse error codes used by the server's own errors.
ERR_SYNTAX = (62, "SYNTAX_ERROR")
ERR_NOT_IMPLEMENTED = (48, "NOT_IMPLEMENTED")
ERR_BAD_ARGUMENTS = (36, "BAD_ARGUMENTS")
ERR_READONLY = (164, "READONLY")
ERR_SESSION_NOT_FOUND = (372, "SESSION_NOT_FOUND")
ERR_SESSION_LOCKED = (373, "SESSION_IS_LOCKED")
ERR_UNKNOWN_FORMAT = (73, "UNKNOWN_FORMAT")
ERR_UNKNOWN_SETTING = (115, "UNKNOWN_SETTING")
ERR_CANNOT_DECOMPRESS = (271, "CANNOT_DECOMPRESS")
ERR_SHUTDOWN = (210, "NETWORK_ERROR")
ERR_STD = (1001, "STD_EXCEPTION")

# chdb raises RuntimeError with ClickHouse's message, or UnicodeDecodeError when that message quotes bytes
# that are not UTF-8 (e.g. a malformed binary insert).
ENGINE_ERRORS = (RuntimeError, UnicodeDecodeError)

_CODE_RE = re.compile(r"Code:\s*(\d+)")
_NAME_RE = re.compile(r"\(([A-Z][A-Z0-9_]+)\)(?:\s*\(version [^)]*\))?\s*$")


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
            return cls(ERR_STD[0], ERR_STD[1], text or type(exc).__name__)
        name_match = _NAME_RE.search(text)
        name = name_match.group(1) if name_match else "UNKNOWN_EXCEPTION"
        return cls(int(code_match.group(1)), name, text, formatted=text)

    def body(self, version: str) -> str:
        """The response body ClickHouse would send: message, error name and server version."""
        text = self._formatted or f"Code: {self.code}. DB::Exception: {self.message}. ({self.name})"
        if "(version " not in text:
            text = f"{text} (version {version} (chdb))"
        return text + "\n"


def truthy(value: str | None) -> bool:
    """ClickHouse's reading of a boolean URL parameter or environment flag (``1``, ``true``, ``yes``, ``on``)."""
    return value is not None and value.strip().lower() in ("1", "true", "yes", "on")
