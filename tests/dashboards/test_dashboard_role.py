"""The least-privilege database role of the dashboards (migration 0006_dashboard_role.sql): it only reads
(migration 0016_dashboard_read_only.sql: every change goes through the OMS API), the read model's views
(granted by the views' dbt hook) and documents (migration 0011's function) included."""

import hashlib

import psycopg
import pytest
from psycopg import errors, sql

from oms_ops import read_model
from oms_ops.analytics.dbt import build_ops_views
from oms_ops.db import connect
from oms_ops.platform.migrate import migrate
from tests.core import factories as f


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


#: tables whose rows the dashboards' actions change — now only through the OMS API
GUARDED = (
    "oms.stock",
    "oms.orders",
    "oms.order_lines",
    "oms.reservations",
    "raw.channel_orders",
    "raw.quarantine",
    "oms.outbox",
)


@pytest.mark.parametrize("table", GUARDED)
def test_login_member_cannot_insert_update_or_delete_what_the_actions_change(dash_url, conn, table):
    schema, name = table.split(".")
    column = conn.execute(
        """SELECT column_name FROM information_schema.columns
            WHERE table_schema = %s AND table_name = %s AND is_identity = 'NO' AND is_generated = 'NEVER'
            ORDER BY ordinal_position LIMIT 1""",
        (schema, name),
    ).fetchone()[0]
    target, col = sql.Identifier(schema, name), sql.Identifier(column)
    statements = [
        sql.SQL("INSERT INTO {} DEFAULT VALUES").format(target),
        sql.SQL("INSERT INTO {} OVERRIDING SYSTEM VALUE SELECT * FROM {} LIMIT 1").format(target, target),
        sql.SQL("UPDATE {} SET {} = {}").format(target, col, col),
        sql.SQL("DELETE FROM {}").format(target),
    ]
    with psycopg.connect(dash_url, autocommit=True) as dash:
        dash.execute(sql.SQL("SELECT count(*) FROM {}").format(target))  # it still reads
        for statement in statements:
            with pytest.raises(errors.InsufficientPrivilege):
                dash.execute(statement)


def test_no_table_sequence_or_writing_function_of_the_domain_is_left_to_the_role(conn):
    writable = conn.execute(
        """SELECT c.oid::regclass::text, p.priv
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
             CROSS JOIN unnest(ARRAY['INSERT', 'UPDATE', 'DELETE', 'TRUNCATE']) AS p(priv)
            WHERE n.nspname IN ('oms', 'raw', 'ops', 'connectors') AND c.relkind IN ('r', 'p', 'v', 'm', 'f')
              AND (has_table_privilege('oms_dashboard', c.oid, p.priv)
                   OR (p.priv IN ('INSERT', 'UPDATE')
                       AND has_any_column_privilege('oms_dashboard', c.oid, p.priv)))
            ORDER BY 1, 2"""
    ).fetchall()
    assert writable == []
    sequences = conn.execute(
        """SELECT c.oid::regclass::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE n.nspname IN ('oms', 'raw', 'ops', 'connectors') AND c.relkind = 'S'
              AND (has_sequence_privilege('oms_dashboard', c.oid, 'USAGE')
                   OR has_sequence_privilege('oms_dashboard', c.oid, 'UPDATE'))"""
    ).fetchall()
    assert sequences == []
    for fn in ("connectors.map_discovered_location", "connectors.map_discovered_listing"):
        assert not conn.execute(
            "SELECT has_function_privilege('oms_dashboard', %s, 'EXECUTE')",
            (fn + "(text, text, text, text)",),
        ).fetchone()[0]
    # the one document reader stays callable
    assert conn.execute(
        "SELECT has_function_privilege('oms_dashboard', 'connectors.shipment_document_content(bigint, text)', "
        "'EXECUTE')"
    ).fetchone()[0]


def test_the_column_grants_of_earlier_migrations_are_gone_too(dash_url, conn):
    f.world(conn)
    _, sid = f.shipped_order(conn)
    with psycopg.connect(dash_url, autocommit=True) as dash:
        for statement in (
            "UPDATE oms.shipments SET state = state",  # 0014's column grant
            "UPDATE oms.return_lines SET qty_received = qty_received",  # 0012's column grant
            "SELECT nextval('oms.order_number_seq')",
            "SELECT connectors.map_discovered_listing('ozon', 'x', NULL, 'me')",
        ):
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


def test_login_member_reads_every_ops_view_even_after_a_rebuild_without_default_privileges(
    dash_url, conn, db_url
):
    views = [
        r[0]
        for r in conn.execute(
            "SELECT table_name FROM information_schema.views WHERE table_schema = 'ops' ORDER BY 1"
        ).fetchall()
    ]
    assert "ops_orders_at_risk" in views and "ops_shipment_documents" in views
    # the views' own grant (dbt hook), not the schema's default privileges, keeps them readable after a rebuild
    conn.execute("ALTER DEFAULT PRIVILEGES IN SCHEMA ops REVOKE SELECT ON TABLES FROM oms_dashboard")
    conn.execute("REVOKE SELECT ON ALL TABLES IN SCHEMA ops FROM oms_dashboard")
    with psycopg.connect(dash_url, autocommit=True) as dash:
        with pytest.raises(errors.InsufficientPrivilege):
            dash.execute("SELECT count(*) FROM ops.ops_backlog_by_state")
    build_ops_views(db_url)
    with psycopg.connect(dash_url, autocommit=True) as dash:
        for view in views:
            dash.execute(sql.SQL("SELECT * FROM {} LIMIT 1").format(sql.Identifier("ops", view)))
        for statement in ("DELETE FROM ops.ops_quarantine_open", "DROP VIEW ops.ops_thresholds"):
            with pytest.raises(errors.InsufficientPrivilege):
                dash.execute(statement)


def test_documents_are_read_one_at_a_time_through_the_narrow_function(dash_url, conn):
    f.world(conn)
    _, sid = f.shipped_order(conn)
    pdf = b"%PDF-1.4 label: Ivan Petrov, Tverskaya 1, +7 915 000-00-00"
    conn.execute(
        """INSERT INTO connectors.shipment_documents (shipment_id, kind, carrier_code, print_uuid, content,
                                                     sha256, size_bytes)
           VALUES (%s, 'label', 'cdek', 'print-1', %s, %s, %s)""",
        (sid, pdf, hashlib.sha256(pdf).hexdigest(), len(pdf)),
    )
    with psycopg.connect(dash_url, autocommit=True) as dash:
        (doc,) = read_model.shipment_documents(dash, [sid])
        assert (doc.kind, doc.size_bytes, doc.content_type) == ("label", len(pdf), "application/pdf")
        assert doc.file_name == f"label-{doc.shipment_number}.pdf"
        assert read_model.document_bytes(dash, sid, "label") == pdf
        assert read_model.document_bytes(dash, sid, "waybill") is None
        with pytest.raises(errors.InsufficientPrivilege):
            dash.execute("SELECT content FROM connectors.shipment_documents")
        with pytest.raises(errors.InsufficientPrivilege):
            dash.execute("UPDATE connectors.shipment_documents SET content = 'x'")
