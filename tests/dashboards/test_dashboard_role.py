"""The least-privilege database role of the dashboards (migration 0006_dashboard_role.sql)."""

import psycopg
import pytest
from psycopg import errors

from oms_ops.db import connect
from oms_ops.platform.migrate import migrate


def test_role_is_a_nologin_group(conn):
    assert conn.execute("SELECT rolcanlogin FROM pg_roles WHERE rolname = 'oms_dashboard'").fetchone() == (
        False,
    )


def test_login_member_reads_but_cannot_delete_truncate_or_change_history(dash_url, conn):
    conn.execute("CREATE TABLE IF NOT EXISTS public.scratch (x int)")
    with psycopg.connect(dash_url, autocommit=True) as dash:
        assert dash.execute("SELECT current_user").fetchone()[0] == "oms_dashboard_test"
        assert dash.execute("SELECT count(*) FROM oms.orders").fetchone()[0] == 0
        assert dash.execute("SELECT count(*) FROM raw.quarantine").fetchone()[0] == 0
        assert dash.execute("SELECT count(*) FROM public.schema_migrations").fetchone()[0] > 0
        refused = [
            "DELETE FROM oms.orders",
            "DELETE FROM raw.quarantine",
            "TRUNCATE oms.stock",
            "UPDATE oms.order_events SET reason = 'rewritten'",
            "UPDATE oms.inventory_ledger SET actor = 'x'",
            "UPDATE oms.products SET price = 0",
            "INSERT INTO oms.channels (channel_code, name, kind) VALUES ('x', 'x', 'webstore')",
            "CREATE TABLE oms.sneaky (x int)",
            "SELECT * FROM public.scratch",
        ]
        for statement in refused:
            with pytest.raises(errors.InsufficientPrivilege):
                dash.execute(statement)


def test_migration_is_idempotent_across_databases_of_the_cluster(empty_db_url):
    # the role already exists (created by the template database's migration): a new database migrates cleanly
    with connect(empty_db_url) as c:
        assert "0006_dashboard_role.sql" in migrate(c)
        assert c.execute("SELECT has_table_privilege('oms_dashboard', 'oms.orders', 'SELECT')").fetchone()[0]
        assert not c.execute(
            "SELECT has_table_privilege('oms_dashboard', 'oms.orders', 'DELETE')"
        ).fetchone()[0]
