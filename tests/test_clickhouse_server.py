"""The embedded ClickHouse server speaks enough of ClickHouse's HTTP protocol for real clients, on a real engine.

Every test talks to a real chdb engine through real clients (clickhouse-connect, http.client, dbt); nothing is
mocked. Tests that need their own server process (restart, locking, port conflicts) start one in tmp_path; the
rest share the session server from tests/fixtures/clickhouse.py (or ``OMS_CLICKHOUSE_URL``).
"""

from __future__ import annotations

import base64
import datetime as dt
import http.client
import json
import os
import socket
import subprocess
import sys
import textwrap
import threading
import time
import uuid
import zlib
from decimal import Decimal
from urllib.parse import unquote, urlencode, urlsplit

import lz4.frame
import polars as pl
import pytest
from backports import zstd
from clickhouse_connect.driver.exceptions import DatabaseError

from oms_ops.platform.clickhouse.sql import find_insert_data, find_output_format
from oms_ops.platform.clickhouse.supervisor import ping, start_clickhouse_process, wait_for_ping
from tests.fixtures.clickhouse import CLICKHOUSE_URL_ENV, clickhouse_client

EMBEDDED = not os.environ.get(CLICKHOUSE_URL_ENV)
embedded_only = pytest.mark.skipif(not EMBEDDED, reason="checks the embedded server itself")

UTC = dt.UTC
ROWS = 100_000


def _auth(url: str) -> dict[str, str]:
    """Basic-auth header for credentials in the URL (a real server from OMS_CLICKHOUSE_URL may want them)."""
    parts = urlsplit(url)
    if not parts.username:
        return {}
    token = base64.b64encode(f"{unquote(parts.username)}:{unquote(parts.password or '')}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def _connection(url: str) -> http.client.HTTPConnection:
    parts = urlsplit(url)
    connection = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    return connection(parts.hostname, parts.port, timeout=60)


def _http(url: str, method: str, path: str, body: bytes | None = None, headers: dict | None = None):
    """One raw HTTP request, for what clickhouse-connect hides (status, headers, wire format)."""
    conn = _connection(url)
    conn.request(method, path, body=body, headers={**_auth(url), **(headers or {})})
    resp = conn.getresponse()
    data = resp.read()
    conn.close()
    return resp, data


def _expected_row(i: int) -> tuple:
    return (
        i,
        Decimal(i) / 100,
        dt.datetime(2024, 1, 1, tzinfo=UTC) + dt.timedelta(milliseconds=i * 1001),
        None if i % 3 == 0 else f"note {i}",
        f"SKU-{i % 50}",
        [i % 7, i % 11] if i % 5 else [],
    )


def test_round_trip_of_typed_columns(ch_client):
    ch_client.command(
        """
        CREATE TABLE order_lines (
            id UInt64,
            amount Decimal(18, 2),
            ts DateTime64(3, 'UTC'),
            note Nullable(String),
            sku LowCardinality(String),
            tags Array(UInt16)
        ) ENGINE = MergeTree ORDER BY id
        """
    )
    rows = [_expected_row(i) for i in range(ROWS)]
    # clickhouse-connect streams this as a chunked, lz4-compressed INSERT ... FORMAT Native body.
    summary = ch_client.insert("order_lines", rows)
    assert summary.written_rows == ROWS

    result = ch_client.query("SELECT * FROM order_lines ORDER BY id")
    assert result.column_names == ("id", "amount", "ts", "note", "sku", "tags")
    got = result.result_rows
    assert len(got) == ROWS
    for i in (0, 1, 2, 3, 4, 5, 999, ROWS - 1):
        row = got[i]
        expected = _expected_row(i)
        ts = row[2] if row[2].tzinfo else row[2].replace(tzinfo=UTC)
        assert (row[0], row[1], ts, row[3], row[4], row[5]) == expected
    assert ch_client.command("SELECT sum(amount) FROM order_lines") == sum(
        Decimal(i) / 100 for i in range(ROWS)
    )
    assert ch_client.command("SELECT countIf(note IS NULL) FROM order_lines") == len(range(0, ROWS, 3))
    assert ch_client.command("SELECT uniqExact(sku) FROM order_lines") == 50


def test_bound_parameters_are_bound_by_the_server(ch_client):
    ch_client.command("CREATE TABLE t (id UInt32, name String) ENGINE = MergeTree ORDER BY id")
    ch_client.insert("t", [(i, f"name'{i}") for i in range(100)])
    result = ch_client.query(
        "SELECT count(), max(id) FROM t WHERE id < {limit:UInt32} AND name != {skip:String}",
        parameters={"limit": 10, "skip": "name'3"},
    )
    assert result.result_rows == [(9, 9)]
    rows = ch_client.query(
        "SELECT id FROM t WHERE has({ids:Array(UInt32)}, id) ORDER BY id", parameters={"ids": [5, 7, 500]}
    ).result_rows
    assert rows == [(5,), (7,)]


def test_query_errors_raise_database_error_with_clickhouse_code(ch_client):
    with pytest.raises(DatabaseError) as unknown_table:
        ch_client.query("SELECT * FROM no_such_table")
    assert unknown_table.value.code == 60
    assert "UNKNOWN_TABLE" in str(unknown_table.value)

    with pytest.raises(DatabaseError) as syntax:
        ch_client.command("SELEC 1")
    assert syntax.value.code == 62

    # the client keeps working after errors
    assert ch_client.command("SELECT 1 + 1") == 2


def test_error_wire_format(clickhouse_url):
    resp, body = _http(clickhouse_url, "POST", "/", b"SELECT * FROM system.no_such_table")
    if EMBEDDED:
        assert resp.status == 500
    else:
        assert resp.status >= 400
    assert resp.getheader("X-ClickHouse-Exception-Code") == "60"
    assert body.startswith(b"Code: 60. DB::Exception:")
    assert b"(UNKNOWN_TABLE)" in body


def test_ping_and_response_headers(clickhouse_url):
    assert ping(clickhouse_url)
    assert wait_for_ping(clickhouse_url, timeout=5)
    resp, body = _http(clickhouse_url, "GET", "/ping")
    assert (resp.status, body) == (200, b"Ok.\n")

    query = urlencode({"query": "SELECT 1 AS x", "default_format": "JSONEachRow", "query_id": "q-42"})
    resp, body = _http(clickhouse_url, "GET", f"/?{query}")
    assert resp.status == 200
    assert json.loads(body) == {"x": 1}
    assert resp.getheader("X-ClickHouse-Format") == "JSONEachRow"
    assert resp.getheader("X-ClickHouse-Query-Id") == "q-42"
    assert resp.getheader("X-ClickHouse-Timezone")
    assert resp.getheader("X-ClickHouse-Server-Display-Name")
    assert "elapsed_ns" in json.loads(resp.getheader("X-ClickHouse-Summary"))


def test_get_is_read_only(clickhouse_url, ch_database):
    query = urlencode({"query": "CREATE TABLE t (x UInt8) ENGINE = Memory", "database": ch_database})
    resp, body = _http(clickhouse_url, "GET", f"/?{query}")
    assert resp.status >= 400
    assert resp.getheader("X-ClickHouse-Exception-Code") == "164"


def test_query_param_and_body_are_joined_and_raw_chunked_insert_works(clickhouse_url, ch_database):
    """The statement may sit in the URL with the data in a chunked body, as curl-style clients send it."""
    create = urlencode({"database": ch_database})
    resp, _ = _http(
        clickhouse_url, "POST", f"/?{create}", b"CREATE TABLE kv (k UInt32, v String) ENGINE = Log"
    )
    assert resp.status == 200

    def chunks():
        yield b"1,one\n2,tw"
        yield b"o\n3,three\n"
        yield b'4,"four, quoted"\n'

    auth = _auth(clickhouse_url)
    conn = _connection(clickhouse_url)
    params = urlencode({"database": ch_database, "query": "INSERT INTO kv FORMAT CSV"})
    conn.request("POST", f"/?{params}", body=chunks(), headers=auth, encode_chunked=True)
    resp = conn.getresponse()
    resp.read()
    assert resp.status == 200
    assert json.loads(resp.getheader("X-ClickHouse-Summary"))["written_rows"] == "4"

    # same keep-alive connection: VALUES data in the body, after the statement
    conn.request(
        "POST",
        f"/?{urlencode({'database': ch_database})}",
        body=b"INSERT INTO kv VALUES (5, 'five')",
        headers=auth,
    )
    resp = conn.getresponse()
    resp.read()
    assert resp.status == 200

    conn.request(
        "POST",
        f"/?{urlencode({'database': ch_database})}",
        body=b"SELECT k, v FROM kv ORDER BY k",
        headers=auth,
    )
    resp = conn.getresponse()
    assert resp.read() == b"1\tone\n2\ttwo\n3\tthree\n4\tfour, quoted\n5\tfive\n"
    assert resp.getheader("X-ClickHouse-Format") == "TabSeparated"
    conn.close()


def test_form_encoded_query_and_parameters(clickhouse_url, ch_database):
    """Long parameter sets travel as multipart/form-data fields instead of URL parameters."""
    client = clickhouse_client(clickhouse_url, database=ch_database, form_encode_query_params=True)
    try:
        ids = list(range(5000))
        got = client.query(
            "SELECT count(), sum(number) FROM numbers(10000) WHERE has({ids:Array(UInt64)}, number)",
            parameters={"ids": ids},
        ).result_rows
        assert got == [(5000, sum(ids))]
    finally:
        client.close()


@pytest.fixture(scope="module")
def compressing_url(tmp_path_factory, clickhouse_url):
    """A server that compresses responses even for loopback clients (by default it only does so for remote
    ones), so these tests exercise the compressed response path."""
    if not EMBEDDED:
        yield clickhouse_url
        return
    mp = pytest.MonkeyPatch()
    mp.setenv("OMS_CLICKHOUSE_COMPRESS_LOOPBACK", "1")
    try:
        server = start_clickhouse_process(tmp_path_factory.mktemp("ch-compress"), watch_pid=os.getpid())
    finally:
        mp.undo()
    try:
        yield server.url
    finally:
        server.stop()


@pytest.mark.parametrize("compress", [False, True, "lz4", "zstd", "gzip"])
def test_compressed_inserts_and_responses(compressing_url, compress):
    client = clickhouse_client(compressing_url, compress=compress)
    database = f"test_{uuid.uuid4().hex}"
    try:
        client.command(f"CREATE DATABASE `{database}`")
        client.database = database
        client.command("CREATE TABLE c (id UInt32, s String) ENGINE = MergeTree ORDER BY id")
        client.insert("c", [(i, "x" * (i % 17)) for i in range(20_000)])
        assert client.query("SELECT count(), sum(length(s)) FROM c").result_rows == [
            (20_000, sum(i % 17 for i in range(20_000)))
        ]
        rows = client.query("SELECT * FROM c ORDER BY id").result_rows
        assert len(rows) == 20_000 and rows[16] == (16, "x" * 16)
        assert len(client.query_arrow("SELECT * FROM c")) == 20_000
    finally:
        client.database = None
        client.command(f"DROP DATABASE IF EXISTS `{database}`")
        client.close()


@embedded_only
def test_loopback_responses_are_not_compressed_by_default(clickhouse_url):
    resp, body = _http(
        clickhouse_url, "POST", "/", b"SELECT number FROM numbers(10)", {"Accept-Encoding": "lz4"}
    )
    assert resp.status == 200 and resp.getheader("Content-Encoding") is None
    assert body == b"".join(b"%d\n" % i for i in range(10))


@pytest.mark.parametrize("encoding", ["lz4", "zstd", "gzip", "deflate"])
def test_response_content_encoding(compressing_url, encoding):
    decode = {
        "lz4": lz4.frame.decompress,
        "zstd": zstd.decompress,
        "gzip": lambda b: zlib.decompress(b, wbits=31),
        "deflate": zlib.decompress,
    }[encoding]
    for sql in (
        "SELECT number FROM numbers(100000)",
        "SELECT number FROM numbers(100000) FORMAT JSONCompact",
    ):
        resp, body = _http(
            compressing_url,
            "POST",
            "/?enable_http_compression=1",
            sql.encode(),
            {"Accept-Encoding": encoding},
        )
        assert resp.status == 200
        assert resp.getheader("Content-Encoding") == encoding
        text = decode(body)
        assert text.startswith(b"0\n1\n") or b'"data"' in text


def test_arrow_and_polars_paths(ch_client):
    ch_client.command(
        "CREATE TABLE p (id UInt32, sku LowCardinality(String), qty Nullable(Int32)) ENGINE = Memory"
    )
    ch_client.insert("p", [(i, f"S{i % 3}", None if i % 4 == 0 else i) for i in range(1000)])
    table = ch_client.query_arrow("SELECT * FROM p ORDER BY id")
    frame = pl.from_arrow(table)
    assert frame.shape == (1000, 3)
    assert frame["qty"].null_count() == 250
    assert frame.group_by("sku").len().sort("sku")["len"].to_list() == [334, 333, 333]
    df = ch_client.query_df("SELECT sku, sum(qty) AS total FROM p GROUP BY sku ORDER BY sku")
    assert list(df["sku"]) == ["S0", "S1", "S2"]
    # an empty result still carries its columns
    assert ch_client.query("SELECT id, sku FROM p WHERE id > 10000").column_names == ("id", "sku")


def test_large_streamed_result_and_mid_stream_error(ch_client):
    total = 3_000_000
    sums = [0]
    with ch_client.query_column_block_stream(
        "SELECT number FROM numbers({n:UInt64})", parameters={"n": total}
    ) as stream:
        for block in stream:
            sums[0] += sum(block[0])
    assert sums[0] == total * (total - 1) // 2

    with pytest.raises(DatabaseError) as failure:
        _ = ch_client.query(
            "SELECT throwIf(number = 2500000, 'boom at the end') FROM numbers(3000000)"
        ).result_rows
    assert "boom at the end" in str(failure.value)
    assert ch_client.command("SELECT 42") == 42


def test_session_state_persists_and_url_settings_do_not(clickhouse_url, ch_database):
    session = uuid.uuid4().hex

    def run(sql: str, **params: str) -> bytes:
        query = urlencode({"session_id": session, "database": ch_database, **params})
        resp, body = _http(clickhouse_url, "POST", f"/?{query}", sql.encode())
        assert resp.status == 200, body
        return body

    run("CREATE TEMPORARY TABLE tmp (x UInt8)")
    run("INSERT INTO tmp VALUES (1), (2)")
    assert run("SELECT sum(x) FROM tmp") == b"3\n"
    run("SET max_block_size = 1234")
    assert run("SELECT getSetting('max_block_size')") == b"1234\n"
    # a URL setting applies to its own query only, then the session's value comes back
    assert run("SELECT getSetting('max_block_size')", max_block_size="99") == b"99\n"
    assert run("SELECT getSetting('max_block_size')") == b"1234\n"
    assert run("SELECT currentDatabase()") == ch_database.encode() + b"\n"


def test_concurrent_clients_get_correct_results(clickhouse_url, ch_database):
    setup = clickhouse_client(clickhouse_url, database=ch_database)
    setup.command("CREATE TABLE shared (id UInt64, v Float64) ENGINE = MergeTree ORDER BY id")
    setup.insert("shared", [(i, i * 0.5) for i in range(50_000)])
    setup.close()
    errors: list[BaseException] = []
    barrier = threading.Barrier(8)

    def worker(n: int) -> None:
        client = clickhouse_client(clickhouse_url, database=ch_database)
        try:
            barrier.wait(timeout=60)
            table = f"own_{n}"
            client.command(f"CREATE TABLE {table} (id UInt32, who UInt8) ENGINE = MergeTree ORDER BY id")
            for round_ in range(5):
                client.insert(table, [(i, n) for i in range(round_ * 1000, (round_ + 1) * 1000)])
                count = client.command(
                    "SELECT count() FROM {t:Identifier} WHERE who = {n:UInt8}",
                    parameters={"t": table, "n": n},
                )
                assert count == (round_ + 1) * 1000
                lo = n * 1000
                got = client.query(
                    "SELECT count(), sum(v) FROM shared WHERE id >= {lo:UInt64} AND id < {hi:UInt64}",
                    parameters={"lo": lo, "hi": lo + 1000},
                ).result_rows
                assert got == [(1000, sum(i * 0.5 for i in range(lo, lo + 1000)))]
                assert len(client.query("SELECT * FROM shared").result_rows) == 50_000
        except BaseException as exc:  # noqa: BLE001 - surfaced by the main thread
            errors.append(exc)
        finally:
            client.close()

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not any(t.is_alive() for t in threads)
    assert not errors, errors


@embedded_only
def test_data_survives_restart_and_directory_is_owned_by_one_process(tmp_path):
    data_dir = tmp_path / "ch"
    server = start_clickhouse_process(data_dir)
    try:
        client = clickhouse_client(server.url)
        client.command("CREATE DATABASE shop")
        client.command(
            "CREATE TABLE shop.orders (id UInt32, total Decimal(12, 2)) ENGINE = MergeTree ORDER BY id"
        )
        client.insert("shop.orders", [(i, Decimal(i)) for i in range(1000)])
        client.close()
        with pytest.raises(RuntimeError, match="already served by another process"):
            start_clickhouse_process(data_dir, wait_s=30)
    finally:
        server.stop()
    assert not server.is_running()
    assert not ping(server.url, timeout=0.5)

    again = start_clickhouse_process(data_dir)
    try:
        client = clickhouse_client(again.url)
        assert client.query("SELECT count(), sum(total) FROM shop.orders").result_rows == [
            (1000, Decimal(499500))
        ]
        client.close()
    finally:
        again.stop()


@embedded_only
def test_server_stops_when_the_watched_process_is_gone(tmp_path):
    watched = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    server = start_clickhouse_process(tmp_path / "ch", watch_pid=watched.pid)
    try:
        assert ping(server.url)
        watched.kill()
        watched.wait()
        deadline = time.monotonic() + 60
        while server.is_running() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not server.is_running()
    finally:
        server.stop()
        watched.kill()


@embedded_only
def test_explicit_port_in_use_is_a_clear_error(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(RuntimeError, match=f"port {port} .*already in use"):
            start_clickhouse_process(tmp_path / "ch", port=port, wait_s=30)


def test_sql_scanning_finds_insert_data_and_format_clauses():
    text = "INSERT INTO t (a, `format`) SETTINGS x = 'FORMAT CSV' FORMAT Native\n\x00\x01"
    found = find_insert_data(text)
    assert found is not None and found.format == "Native" and text[found.data_start :] == "\x00\x01"
    assert text[: found.statement_end].rstrip().endswith("'FORMAT CSV'")
    assert find_insert_data("INSERT INTO t SELECT * FROM s FORMAT Native") is None
    values = find_insert_data("insert into t values (1, 'VALUES')")
    assert values is not None and values.format == "Values"
    assert find_insert_data("INSERT INTO t FORMAT CSV", complete=False) is None

    formats = {"json": "JSON", "native": "Native", "csv": "CSV"}
    clause = find_output_format("SELECT format, 'FORMAT CSV' FROM t /* FORMAT CSV */ FORMAT JSON", formats)
    assert clause is not None and clause.name == "JSON"
    assert find_output_format("SELECT * FROM format(CSV, 'a')", formats) is None
    assert find_output_format("SELECT format FROM t", formats) is None


def test_dbt_clickhouse_builds_tests_and_increments(clickhouse_url, tmp_path, monkeypatch):
    """A throwaway dbt project (table + incremental model + not_null test) runs unchanged against the server."""
    from dbt.cli.main import dbtRunner

    parts = urlsplit(clickhouse_url)
    schema = f"dbt_compat_{uuid.uuid4().hex[:8]}"
    project = tmp_path / "proj"
    (project / "models").mkdir(parents=True)
    (project / "dbt_project.yml").write_text(
        "name: compat\nversion: '1.0'\nconfig-version: 2\nprofile: compat\nmodel-paths: ['models']\n"
    )
    (project / "profiles.yml").write_text(
        textwrap.dedent(
            f"""
            compat:
              target: ch
              outputs:
                ch:
                  type: clickhouse
                  driver: http
                  host: {parts.hostname}
                  port: {parts.port}
                  user: {parts.username or "default"}
                  password: "{parts.password or ""}"
                  secure: {str(parts.scheme == "https").lower()}
                  schema: {schema}
                  threads: 2
            """
        )
    )
    (project / "models" / "orders.sql").write_text(
        "{{ config(materialized='table', order_by='id') }}\n"
        "SELECT number AS id, toDecimal64(number * 1.5, 2) AS amount FROM numbers({{ var('n', 10) }})\n"
    )
    (project / "models" / "orders_inc.sql").write_text(
        "{{ config(materialized='incremental', unique_key='id', order_by='id') }}\n"
        "SELECT id, amount, '{{ var('run', 'first') }}' AS run FROM {{ ref('orders') }}\n"
        "{% if is_incremental() %} WHERE id > (SELECT max(id) FROM {{ this }}) {% endif %}\n"
    )
    (project / "models" / "schema.yml").write_text(
        "version: 2\nmodels:\n  - name: orders_inc\n    columns:\n      - name: id\n"
        "        data_tests: [not_null, unique]\n"
    )
    monkeypatch.setenv("DBT_TARGET_PATH", str(tmp_path / "target"))
    monkeypatch.setenv("DBT_LOG_PATH", str(tmp_path / "logs"))
    monkeypatch.setenv("DBT_SEND_ANONYMOUS_USAGE_STATS", "false")

    def dbt(*args: str):
        res = dbtRunner().invoke([*args, "--project-dir", str(project), "--profiles-dir", str(project)])
        assert res.success, res.exception or [r.message for r in getattr(res.result, "results", [])]
        return res

    client = clickhouse_client(clickhouse_url)
    try:
        dbt("debug")
        dbt("build")
        db = {"db": schema}
        assert client.command("SELECT count() FROM {db:Identifier}.orders_inc", parameters=db) == 10
        dbt("build", "--vars", "{n: 15, run: second}")
        # incremental: the first run's rows are kept as they were, only the five new ids were added
        counts = client.query(
            "SELECT run, count(), uniqExact(id), min(id), max(id) FROM {db:Identifier}.orders_inc GROUP BY run ORDER BY run",
            parameters=db,
        ).result_rows
        assert counts == [("first", 10, 10, 0, 9), ("second", 5, 5, 10, 14)]
    finally:
        client.command(f"DROP DATABASE IF EXISTS {schema}")
        client.close()
