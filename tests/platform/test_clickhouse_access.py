"""The embedded ClickHouse server takes credentials and keeps every user inside its data directory.

All against the session's server (tests/fixtures/clickhouse.py), whose admin, writer and reader have passwords
made for the session; each refusal must come back in ClickHouse's error shape (code header, ``Code: N.`` body,
401 for authentication, 403 for refused access).
"""

from __future__ import annotations

import base64
import http.client
import uuid
from urllib.parse import urlencode, urlsplit

import clickhouse_connect
import pytest
from clickhouse_connect.driver.exceptions import DatabaseError

from tests.fixtures.clickhouse import ADMIN, READER, WRITER, WRITER_DATABASE, clickhouse_client


@pytest.fixture(scope="module")
def server(clickhouse_server):
    if clickhouse_server is None:
        pytest.skip("checks the embedded server itself")
    return clickhouse_server


@pytest.fixture(scope="module")
def writer_db(server):
    admin = clickhouse_client(server.url_for(ADMIN))
    admin.command(f"CREATE DATABASE IF NOT EXISTS {WRITER_DATABASE}")
    admin.command(f"CREATE TABLE IF NOT EXISTS {WRITER_DATABASE}.t (x String) ENGINE = MergeTree ORDER BY x")
    admin.close()
    return WRITER_DATABASE


def _post(server, sql: bytes, *, headers: dict | None = None, query: dict | None = None):
    conn = http.client.HTTPConnection(server.host, server.port, timeout=30)
    try:
        conn.request("POST", "/?" + urlencode(query or {}), body=sql, headers=headers or {})
        resp = conn.getresponse()
        return resp, resp.read()
    finally:
        conn.close()


def _basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def _password(server, name: str) -> str:
    return urlsplit(server.url_for(name)).password


def test_anonymous_and_wrong_credentials_get_401_in_clickhouses_shape(server):
    for headers, query in [
        ({}, {}),
        (_basic(ADMIN, "wrong"), {}),
        (_basic("nobody", _password(server, ADMIN)), {}),
        ({"X-ClickHouse-User": ADMIN, "X-ClickHouse-Key": "wrong"}, {}),
        ({}, {"user": ADMIN, "password": "wrong"}),
        ({}, {"user": "default"}),
    ]:
        resp, body = _post(server, b"SELECT 1", headers=headers, query=query)
        assert resp.status == 401, (headers, query)
        assert resp.getheader("X-ClickHouse-Exception-Code") == "516"
        assert body.startswith(b"Code: 516. DB::Exception: ") and b"(AUTHENTICATION_FAILED)" in body
    # /ping needs no credentials, as on ClickHouse
    conn = http.client.HTTPConnection(server.host, server.port, timeout=10)
    conn.request("GET", "/ping")
    assert conn.getresponse().read() == b"Ok.\n"
    conn.close()


def test_every_way_clickhouse_takes_credentials(server):
    password = _password(server, ADMIN)
    for headers, query in [
        (_basic(ADMIN, password), {}),
        ({"X-ClickHouse-User": ADMIN, "X-ClickHouse-Key": password}, {}),
        ({}, {"user": ADMIN, "password": password}),
    ]:
        resp, body = _post(server, b"SELECT 42", headers=headers, query=query)
        assert (resp.status, body) == (200, b"42\n")
    with pytest.raises(DatabaseError, match="AUTHENTICATION_FAILED"):
        clickhouse_connect.get_client(host=server.host, port=server.port, username=ADMIN, password="wrong")


BLOCKED = [
    "SELECT * FROM file('/etc/passwd')",
    "select * from FILE('/etc/passwd', 'LineAsString')",
    "SELECT * FROM `fil\\x65`('/etc/passwd')",
    "SELECT * FROM \"file\" /* a comment */ ('/etc/passwd')",
    "SELECT $$ ' $$, file('/etc/hostname') -- '",
    "SELECT file('/etc/hostname')",
    "SELECT 1 INTO OUTFILE '/tmp/oms-outfile-test'",
    "select 1 into/**/OutFile '/tmp/oms-outfile-test'",
    "SELECT * FROM url('http://127.0.0.1:9/x', 'CSV', 'x String')",
    "SELECT * FROM postgresql('127.0.0.1:5432', 'oms', 'orders', 'postgres', 'x')",
    "SELECT * FROM mysql('127.0.0.1:3306', 'db', 't', 'u', 'p')",
    "SELECT * FROM remote('127.0.0.1', system.one)",
    "SELECT * FROM s3('http://127.0.0.1:9/b/k.csv')",
    "SELECT * FROM executable('id', 'TSV', 'x String')",
    "INSERT INTO FUNCTION file('/tmp/oms-insert-test', 'CSV', 'x String') VALUES ('x')",
    "CREATE TABLE escape (x String) ENGINE = File(CSV, '/tmp/oms-engine-test')",
    "CREATE DATABASE fsdb ENGINE = Filesystem('/')",
    "CREATE TABLE onto_disk (x Int8) ENGINE = MergeTree ORDER BY x "
    "SETTINGS disk = disk(type = 'local', path = '/tmp/oms-disk-test/')",
    "SELECT 1 SETTINGS additional_table_filters = {'t': 'x != 1'}",
    "SET format_template_row = '/etc/passwd'",
    "SYSTEM SHUTDOWN",
]


@pytest.mark.parametrize("user", [ADMIN, WRITER, READER])
def test_nobody_reaches_files_urls_or_other_servers(server, user):
    password = _password(server, user)
    for sql in BLOCKED:
        resp, body = _post(server, sql.encode(), headers=_basic(user, password))
        assert resp.status in (403, 500), (user, sql, body)
        assert b"Code: " in body, body
        assert resp.getheader("X-ClickHouse-Exception-Code") in ("497", "164"), (user, sql, body)
    # a URL setting cannot turn on what the statement may not
    resp, body = _post(
        server,
        b"SELECT 1",
        headers=_basic(user, password),
        query={"input_format_values_interpret_expressions": "1"},
    )
    assert resp.getheader("X-ClickHouse-Exception-Code") == "497", body


def test_expressions_in_values_data_are_not_evaluated(server, writer_db):
    """Values data could call file() where no statement check looks: chdb is told not to evaluate it."""
    client = clickhouse_client(server.url_for(ADMIN))
    try:
        for sql in (
            "INSERT INTO writer_db.t VALUES (file('/etc/hostname'))",
            "SELECT * FROM format(Values, 'x String', '(file(''/etc/hostname''))')",
        ):
            with pytest.raises(DatabaseError, match="Interpreting expressions is disabled|ACCESS_DENIED"):
                client.command(sql)
    finally:
        client.close()


def test_the_reader_only_reads(server, writer_db):
    reader = clickhouse_client(server.url_for(READER), database=writer_db)
    try:
        assert reader.command("SELECT count() FROM t") >= 0
        for sql in (
            "INSERT INTO t VALUES ('x')",
            "DROP TABLE t",
            "CREATE TABLE t2 (x Int8) ENGINE = Log",
            "TRUNCATE TABLE t",
            "CREATE DATABASE reader_made",
            "SET readonly = 0",
        ):
            with pytest.raises(DatabaseError) as refused:
                reader.command(sql)
            assert "164" in str(refused.value) or "READONLY" in str(refused.value), sql
        with pytest.raises(DatabaseError, match="READONLY"):
            reader.insert("t", [("x",)], column_names=["x"])
    finally:
        reader.close()


def test_the_writer_writes_only_into_its_databases(server, writer_db):
    other = f"test_{uuid.uuid4().hex}"
    admin = clickhouse_client(server.url_for(ADMIN))
    admin.command(f"CREATE DATABASE {other}")
    writer = clickhouse_client(server.url_for(WRITER), database=writer_db)
    try:
        writer.command("CREATE TABLE IF NOT EXISTS w (x Int8) ENGINE = MergeTree ORDER BY x")
        writer.insert("w", [(1,)], column_names=["x"])
        writer.command("INSERT INTO writer_db.t VALUES ('w')")
        assert writer.command("SELECT count() FROM writer_db.t") >= 1  # and reads
        with pytest.raises(DatabaseError, match="Code: 62"):
            writer.command("SELEC 1")  # chdb's own error for what does not parse
        for sql in (
            f"CREATE TABLE {other}.w (x Int8) ENGINE = Log",
            f"DROP DATABASE {other}",
            "CREATE DATABASE writer_made",
            f"RENAME TABLE {writer_db}.w TO {other}.w",
            "CREATE USER intruder IDENTIFIED WITH plaintext_password BY 'x'",
        ):
            with pytest.raises(DatabaseError, match="ACCESS_DENIED"):
                writer.command(sql)
    finally:
        writer.close()
        admin.command(f"DROP DATABASE IF EXISTS {other}")
        admin.close()


def test_sessions_belong_to_their_user(server, writer_db):
    """The reader sending the admin's session id gets a session of its own, not the admin's handle."""
    session = uuid.uuid4().hex
    admin_pw, reader_pw = _password(server, ADMIN), _password(server, READER)
    resp, _ = _post(server, b"CREATE TEMPORARY TABLE mine (x Int8)", headers=_basic(ADMIN, admin_pw),
                    query={"session_id": session})  # fmt: skip
    assert resp.status == 200
    resp, body = _post(server, b"SELECT count() FROM mine", headers=_basic(READER, reader_pw),
                       query={"session_id": session})  # fmt: skip
    assert resp.getheader("X-ClickHouse-Exception-Code") == "60", body  # UNKNOWN_TABLE: not the admin's
