"""The HTTP server: ClickHouse's ``/``, ``/query`` and ``/ping`` endpoints on chdb, one thread per connection.

* stdlib ``ThreadingHTTPServer`` with HTTP/1.1 keep-alive. chdb releases the GIL while it executes, so threads
  give real parallelism; measured, it was the simplest stack that met the throughput target (an ASGI stack adds a
  thread hop per chdb call and per chunk without buying anything here).
* Inserts with data (``INSERT ... FORMAT fmt`` + body, ``INSERT ... VALUES``) are streamed into chdb's streaming
  insert API (``send_insert``/``insert_append``) as the request body arrives — chunked or not, compressed or not —
  so a large insert is never buffered whole and never touches a spool file (measured faster than ``FROM INFILE``).
* Read-only queries in formats whose blocks concatenate into a valid stream (Native, TSV, CSV, RowBinary,
  JSONEachRow, ...) are streamed from chdb's ``send_query`` block by block with chunked transfer encoding; other
  formats (JSON, Arrow, Parquet, ``*WithNames``) are produced in one piece, because chdb encodes every streamed
  block as a complete document in those formats.
* Errors come back as HTTP 500 with ClickHouse's ``Code: N. DB::Exception: ...`` text and the
  ``X-ClickHouse-Exception-Code`` header (401 for failed authentication, 403 for refused access, as ClickHouse
  answers them); an error in the middle of a streamed result is written as ClickHouse (v25.11+) does, an
  ``__exception__`` block framed by the ``X-ClickHouse-Exception-Tag``.
* Every query needs credentials, and what each user may run is checked before chdb sees it (:mod:`.access`).
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import logging
import secrets
import socket
import threading
import time
import uuid
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, urlsplit

from oms_ops.platform.clickhouse.access import AccessControl
from oms_ops.platform.clickhouse.engine import Engine
from oms_ops.platform.clickhouse.formats import (
    STREAMABLE_FORMATS,
    content_type_for,
    native_header_block,
    parse_multipart,
)
from oms_ops.platform.clickhouse.protocol import (
    ENGINE_ERRORS,
    ERR_BAD_ARGUMENTS,
    ERR_NOT_IMPLEMENTED,
    ERR_READONLY,
    ERR_SHUTDOWN,
    ERR_STD,
    ERR_SYNTAX,
    ERR_UNKNOWN_FORMAT,
    HTTP_ONLY_SETTINGS,
    KEEP_ALIVE_TIMEOUT_S,
    TRANSFER_TIMEOUT_S,
    TRANSPORT_PARAMS,
    ClickHouseError,
    truthy,
)
from oms_ops.platform.clickhouse.sessions import (
    DEFAULT_SESSION_TIMEOUT_S,
    MAX_SESSION_TIMEOUT_S,
    RequestState,
)
from oms_ops.platform.clickhouse.sql import (
    InsertData,
    OutputFormat,
    find_insert_data,
    find_output_format,
    first_keyword,
)
from oms_ops.platform.clickhouse.transfer import BodyReader, Decoder, Encoder, choose_encoding
from oms_ops.platform.clickhouse.users import StoredUser

logger = logging.getLogger(__name__)

#: Bytes of request body inspected to find where an INSERT's statement ends and its data begins.
HEAD_BYTES = 64 * 1024
#: Small request chunks are coalesced up to this size before they are handed to chdb.
COALESCE_BYTES = 1024 * 1024

# Statements chdb can stream (send_query rejects DESCRIBE, SHOW, EXISTS, ... which are small anyway).
_STREAMABLE_STARTS = frozenset({"SELECT", "WITH", ""})
#: HTTP status of an error by its ClickHouse code, where ClickHouse's HTTP handler answers other than 500
_HTTP_STATUS = {516: 401, 497: 403, 164: 403}


def _is_loopback(host: str) -> bool:
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    mapped = getattr(address, "ipv4_mapped", None)
    return (mapped or address).is_loopback


class ClickHouseHTTPServer(ThreadingHTTPServer):
    """Threaded HTTP server that tracks connections so shutdown can drain requests and close chdb cleanly."""

    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(
        self,
        address: tuple[str, int],
        engine: Engine,
        access: AccessControl,
        *,
        compress_loopback: bool = False,
    ):
        self.engine = engine
        self.access = access
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
            self._send_error(ClickHouseError.of(ERR_SHUTDOWN, "Server is shutting down"), close=True)
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
        self._write_head(_HTTP_STATUS.get(err.code, 500), headers)
        self.wfile.write(body)

    # -- the query endpoint ----------------------------------------------------------------------------------

    def _handle_query(self, raw_query: str) -> None:
        params = dict(parse_qsl(raw_query, keep_blank_values=True))
        query_id = params.get("query_id") or str(uuid.uuid4())
        try:
            user = self.server.access.authenticate(self.headers, params)
        except ClickHouseError as err:
            # the body of a request nobody vouched for is not read: the connection is closed instead
            self.close_connection = True
            with contextlib.suppress(OSError):
                self._send_error(err, query_id=query_id, close=True)
            return
        reader = None
        try:
            reader = BodyReader(
                self.rfile, self.headers, Decoder((self.headers.get("Content-Encoding") or "").lower())
            )
            content_type = (self.headers.get("Content-Type") or "").lower()
            if content_type.startswith("multipart/form-data"):
                params.update(parse_multipart(reader.read_all(), content_type))
            elif content_type.startswith("application/x-www-form-urlencoded") and "query" not in params:
                params.update(parse_qsl(reader.read_all().decode("utf-8"), keep_blank_values=True))
            self._execute(params, query_id, reader, user)
        except ClickHouseError as err:
            self._fail(err, query_id, reader)
        except (ConnectionError, TimeoutError, OSError) as exc:
            logger.debug("connection dropped during query %s: %s", query_id, exc)
            self.close_connection = True
        except Exception as exc:  # noqa: BLE001 - anything else is reported to the client, never kills the thread
            logger.exception("internal error in query %s", query_id)
            self._fail(
                ClickHouseError(ERR_STD[0], ERR_STD[1], f"{type(exc).__name__}: {exc}"), query_id, reader
            )

    def _fail(self, err: ClickHouseError, query_id: str, reader: BodyReader | None) -> None:
        close = False
        if reader is not None:
            try:
                reader.drain()
            except (ConnectionError, OSError, ValueError):
                close = True
        with contextlib.suppress(OSError):
            self._send_error(err, query_id=query_id, close=close)

    def _execute(self, params: dict[str, str], query_id: str, reader: BodyReader, user: StoredUser) -> None:
        engine = self.server.engine
        access = self.server.access
        readonly = user.role == "reader"
        if truthy(params.get("compress")) or truthy(params.get("decompress")):
            raise ClickHouseError.of(
                ERR_NOT_IMPLEMENTED,
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
            if k not in TRANSPORT_PARAMS and k not in HTTP_ONLY_SETTINGS and not k.startswith("param_")
        }
        access.check_settings(user, settings)
        encoding = None
        compression = params.get("enable_http_compression")
        wanted = truthy(compression) if compression is not None else engine.http_compression_default
        if wanted and (self.server.compress_loopback or not self.loopback_peer):
            encoding = choose_encoding(self.headers.get("Accept-Encoding") or "")

        # The statement: the `query` parameter, then the body (ClickHouse joins them with a newline).
        prefix = params.get("query", "")
        head = bytearray(prefix.encode("utf-8") + b"\n") if prefix else bytearray()
        body_start = len(head)
        while len(head) - body_start < HEAD_BYTES and not reader.eof:
            head += reader.read()
        insert = None
        scan = head.decode("latin-1")
        if first_keyword(scan) == "INSERT":
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
            raise ClickHouseError.of(ERR_SYNTAX, "Empty query")
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
                raise ClickHouseError.of(ERR_BAD_ARGUMENTS, "Invalid session timeout") from None
            if not 0 < timeout <= MAX_SESSION_TIMEOUT_S:
                raise ClickHouseError.of(
                    ERR_BAD_ARGUMENTS, f"Session timeout must be in (0, {MAX_SESSION_TIMEOUT_S:g}] seconds"
                )
            session = engine.acquire_session(
                session_id, timeout, truthy(params.get("session_check")), user=user.name, readonly=readonly
            )
        state = RequestState(session, lambda: engine.connect(readonly=readonly))
        try:
            state.use_database(database)
            state.apply_settings(settings)
            base = self._base_headers(query_id)
            if insert is not None:
                statement = bytes(head[: insert.statement_end]).decode("utf-8")
                self._authorize(state, user, f"{statement.rstrip()} FORMAT {insert.format}", insert=True)
                self._run_insert(state, statement, insert, bytes(head[insert.data_start :]), reader, base)
            else:
                sql = bytes(head).decode("utf-8", errors="replace")
                self._authorize(state, user, sql)
                self._run_query(state, sql, default_format, bind, encoding, base)
                state.after_query(sql)
        finally:
            state.close()
            if session is not None:
                engine.release_session(session)

    def _authorize(self, state: RequestState, user: StoredUser, sql: str, *, insert: bool = False) -> None:
        """Refuse what ``user`` may not run (:mod:`.access`), judged by chdb's parser on the request's handle
        (its settings and current database applied), before anything runs."""
        handle = state.handle
        access = self.server.access
        canonical = lambda text: Engine.canonical(handle, text)  # noqa: E731
        access.check_statement(user, sql, canonical)
        access.check_role(
            user, sql, lambda text, db: Engine.writes(handle, text, db), canonical, insert=insert
        )

    def _run_insert(
        self,
        state: RequestState,
        statement: str,
        insert: InsertData,
        first: bytes,
        reader: BodyReader,
        base_headers: list[tuple[str, str]],
    ) -> None:
        """Stream the body into chdb's streaming insert, coalescing small pieces to amortize the per-call cost."""
        fmt = self.server.engine.input_formats.get(insert.format.lower())
        if fmt is None:
            raise ClickHouseError.of(ERR_UNKNOWN_FORMAT, f"Unknown input format {insert.format}")
        handle = state.handle
        started = time.perf_counter_ns()
        try:
            inserter = handle.send_insert(statement, fmt)
        except ENGINE_ERRORS as exc:
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
        except ENGINE_ERRORS as exc:
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
        state: RequestState,
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
            raise ClickHouseError.of(ERR_SYNTAX, "Multi-statements are not allowed")
        if self.command == "GET" and query_class in (1, 2):
            raise ClickHouseError.of(
                ERR_READONLY,
                "Cannot execute query in readonly mode. For queries over HTTP, method GET implies readonly. "
                "You should use method POST for modifying queries",
            )
        clause = find_output_format(sql, engine.output_formats)
        if clause is not None:
            fmt = clause.name
        else:
            fmt = engine.output_formats.get(default_format.lower())
            if fmt is None:
                raise ClickHouseError.of(ERR_UNKNOWN_FORMAT, f"Unknown output format {default_format}")
        produces_result = query_class == 0
        # chdb streams only SELECT-shaped queries ("Streaming query is not supported" for DESCRIBE, SHOW, ...).
        if produces_result and fmt.lower() in STREAMABLE_FORMATS and first_keyword(sql) in _STREAMABLE_STARTS:
            empty_body: Callable[[], bytes] = lambda: b""  # noqa: E731
            if fmt == "Native":
                empty_body = lambda: _empty_native_result(state.handle, sql, clause, bind)  # noqa: E731
            self._stream_query(state, sql, fmt, bind, encoding, base_headers, empty_body)
            return
        started = time.perf_counter_ns()
        try:
            result = handle.query(sql, fmt, params=bind)
        except ENGINE_ERRORS as exc:
            raise ClickHouseError.from_engine(exc) from None
        body = result.get_memview().view() if result.size() else b""
        headers = [*base_headers, ("X-ClickHouse-Summary", _summary(result, started))]
        if produces_result or len(body):
            headers += [("Content-Type", content_type_for(fmt)), ("X-ClickHouse-Format", fmt)]
        else:
            headers.append(("Content-Type", "text/plain; charset=UTF-8"))
        if encoding and len(body):
            enc = Encoder(encoding)
            body = enc.compress(body) + enc.flush()
            headers.append(("Content-Encoding", encoding))
        headers.append(("Content-Length", str(len(body))))
        self._write_head(200, headers)
        if len(body):
            self.wfile.write(body)
        del result

    def _stream_query(
        self,
        state: RequestState,
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
        except ENGINE_ERRORS as exc:
            raise ClickHouseError.from_engine(exc) from None
        finished = False
        try:
            try:
                block = _fetch(handle, stream)
            except ENGINE_ERRORS as exc:
                finished = True
                raise ClickHouseError.from_engine(exc) from None
            tag = secrets.token_hex(8)
            summary = {"read_rows": "0", "read_bytes": "0", "written_rows": "0", "written_bytes": "0"}
            summary["elapsed_ns"] = str(time.perf_counter_ns() - started)
            headers = [
                *base_headers,
                ("Content-Type", content_type_for(fmt)),
                ("X-ClickHouse-Format", fmt),
                ("X-ClickHouse-Summary", json.dumps(summary, separators=(",", ":"))),
                ("X-ClickHouse-Exception-Tag", tag),
            ]
            if block is None:
                finished = True
                body = empty_body()
                if encoding and body:
                    enc = Encoder(encoding)
                    body = enc.compress(body) + enc.flush()
                    headers.append(("Content-Encoding", encoding))
                headers.append(("Content-Length", str(len(body))))
                self._write_head(200, headers)
                self.wfile.write(body)
                return
            enc = Encoder(encoding) if encoding else None
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
                except ENGINE_ERRORS as exc:
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
