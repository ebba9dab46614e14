"""Credentials of the embedded servers: generated once into OMS_HOME (0600 files in a 0700 directory), required
by the embedded Postgres on every connection, and shown by ``oms status --secrets``.

The refusals are checked on the session's Postgres (tests/fixtures/postgres.py), which is protected exactly as
the stack's is and also listens on a Unix socket; the migration of a cluster from before passwords gets one
cluster of its own.
"""

from __future__ import annotations

import json
import stat

import psycopg
import pytest
from psycopg import errors
from typer.testing import CliRunner

from oms_ops.platform import credentials, stack
from oms_ops.platform.postgres import EmbeddedPostgres
from oms_ops.platform.settings import load_settings
from oms_ops.services.clients import SECRETS


def _mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture(scope="module")
def server(pg_server):
    if pg_server is None:
        pytest.skip("checks the embedded server itself")
    return pg_server


def _refused(conninfo: str) -> str:
    with pytest.raises(psycopg.OperationalError) as refused:
        psycopg.connect(conninfo, connect_timeout=10).close()
    return str(refused.value)


def test_no_connection_without_the_password_over_tcp_or_the_socket(server):
    port = server.running_port()
    rules = [line.split() for line in server.hba_path.read_text().splitlines() if not line.startswith("#")]
    assert {rule[0] for rule in rules} == {"local", "host"}
    assert all(rule[-1] == "scram-sha-256" for rule in rules) and server.hba_protected()
    tcp = f"host=127.0.0.1 port={port} dbname=postgres user=postgres"
    sock = f"host={server.socket_dir} port={port} dbname=postgres user=postgres"
    for target in (tcp, sock):
        assert "no password supplied" in _refused(target)
        assert "password authentication failed" in _refused(f"{target} password=wrong")
        with psycopg.connect(f"{target} password={server.password}") as conn:
            assert conn.execute("SELECT current_user").fetchone() == ("postgres",)


def test_the_dashboards_login_cannot_run_programs_or_make_roles(pg_admin_url, db_url):
    password = credentials.new_password()
    with psycopg.connect(pg_admin_url, autocommit=True) as admin:
        stack.ensure_dashboard_login(admin, password)
        stack.ensure_dashboard_login(admin, password)  # again at the next start: the password is set again
        stored = admin.execute(
            "SELECT rolpassword FROM pg_authid WHERE rolname = %s", (stack.DASHBOARD_LOGIN,)
        ).fetchone()[0]
    assert stored.startswith("SCRAM-SHA-256$") and password not in stored
    url = credentials.with_credentials(db_url, stack.DASHBOARD_LOGIN, password)
    assert "password authentication failed" in _refused(
        credentials.with_credentials(db_url, stack.DASHBOARD_LOGIN, "x")
    )
    with psycopg.connect(url, autocommit=True) as dash:
        assert dash.execute("SELECT count(*) FROM oms.orders").fetchone() == (0,)
        for statement in (
            "COPY (SELECT 1) TO PROGRAM 'id'",
            "CREATE ROLE intruder LOGIN SUPERUSER",
            "ALTER ROLE postgres PASSWORD 'x'",
            "SELECT pg_read_file('/etc/passwd')",
        ):
            with pytest.raises(errors.InsufficientPrivilege):
                dash.execute(statement)


def test_a_cluster_from_before_passwords_is_migrated_at_its_next_start(tmp_path):
    """A cluster whose pg_hba.conf trusted every local connection gets the password and loses trust."""
    old = EmbeddedPostgres(tmp_path / "pg", fast_unsafe=True)
    old.init()
    old.hba_path.write_text(
        "local all all trust\nhost all all 127.0.0.1/32 trust\nhost all all ::1/128 trust\n"
    )
    server = EmbeddedPostgres(tmp_path / "pg", fast_unsafe=True, password="the-new-password")
    try:
        url = server.start(("oms",))
        assert server.hba_protected()
        port = server.running_port()
        assert "no password supplied" in _refused(f"host=127.0.0.1 port={port} dbname=oms user=postgres")
        with psycopg.connect(url) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
    finally:
        server.stop()


def test_secrets_are_generated_once_private_and_shown_by_status(tmp_path):
    from oms_ops.cli import app

    home = tmp_path / "home"
    first = credentials.secret(home, credentials.POSTGRES_OWNER)
    assert credentials.secret(home, credentials.POSTGRES_OWNER) == first  # reused, not regenerated
    sims = credentials.simulator_credentials(home, SECRETS)
    assert sims == credentials.simulator_credentials(home, SECRETS)  # reused
    assert {system: set(fields) for system, fields in sims.items()} == {
        system: set(fields) for system, fields in SECRETS.items() if fields
    }
    assert sims["shopify"]["webhook_secret"] != "sim-shopify-webhook-secret"
    secrets_dir = home / credentials.SECRETS_DIR
    (secrets_dir / credentials.POSTGRES_DASHBOARD).write_text("loose")
    (secrets_dir / credentials.POSTGRES_DASHBOARD).chmod(0o644)
    assert credentials.secret(home, credentials.POSTGRES_DASHBOARD) == "loose"  # kept, but tightened
    assert _mode(secrets_dir) == 0o700
    assert {p.name: _mode(p) for p in secrets_dir.iterdir()} == {
        credentials.POSTGRES_OWNER: 0o600,
        credentials.POSTGRES_DASHBOARD: 0o600,
        credentials.SIMULATORS: 0o600,
    }

    settings = load_settings({"OMS_HOME": str(home)})
    state = stack.StackState(
        database_url=f"postgresql://postgres:{first}@127.0.0.1:5999/oms",
        clickhouse_url="http://oms:ch-secret@127.0.0.1:5998",
    )
    stack._write_state(settings, state)
    assert _mode(settings.run_dir / "stack.json") == 0o600 and _mode(settings.run_dir) == 0o700
    res = CliRunner().invoke(app, ["status", "--secrets"], env={"OMS_HOME": str(home)})
    assert res.exit_code == 3, res.output  # nothing recorded runs
    assert first in res.output and "ch-secret" in res.output and "loose" in res.output
    assert json.dumps(sims["shopify"], separators=(",", ":"))[1:-1] in res.output


def test_the_stacks_clickhouse_writer_databases_are_the_analytics_ones(monkeypatch):
    """The platform names the analytics databases without importing the analytics: they must agree."""
    from oms_ops.analytics.dbt import ANALYTICS_DATABASE_ENV, DEFAULT_ANALYTICS_DATABASE, RAW_DATABASE_ENV
    from oms_ops.analytics.replication import DEFAULT_RAW_DATABASE

    assert stack.CLICKHOUSE_DATABASES == {
        ANALYTICS_DATABASE_ENV: DEFAULT_ANALYTICS_DATABASE,
        RAW_DATABASE_ENV: DEFAULT_RAW_DATABASE,
    }
    assert stack.clickhouse_writer_databases({"OMS_CH_DATABASE": "kpis"}) == ("kpis", "oms_raw")


def test_the_simulators_take_the_generated_credentials_and_publish_them_privately(tmp_path):
    """What the demo hands the simulators (``--credentials @file``) replaces every public default, and the
    manifest the OMS reads them from is private."""
    from simulators.__main__ import build_parser
    from simulators.stack import start_simulators

    creds = credentials.simulator_credentials(tmp_path / "home", SECRETS)
    assert build_parser().parse_args(["--credentials", "@x"]).credentials == "@x"
    with start_simulators(manual=True, state_dir=tmp_path / "sims", options=creds) as sims:
        manifest = sims.write_manifest(tmp_path / "sims" / "simulators.json")
        published = json.loads(manifest.read_text())["simulators"]
    assert _mode(manifest) == 0o600
    for system, fields in creds.items():
        for name, value in fields.items():
            assert published[system]["credentials"][name] == value
