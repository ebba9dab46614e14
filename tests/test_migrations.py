"""Migrations: apply on an empty database, idempotent, refuse tampering (an applied file edited or deleted)
and a new file numbered below the last applied one."""

import shutil

import pytest

from oms_ops.db import connect
from oms_ops.platform.migrate import MIGRATIONS_DIR, MigrationError, discover, migrate, status


def test_apply_on_empty_database_then_idempotent(empty_db_url):
    with connect(empty_db_url) as conn:
        applied = migrate(conn)
        assert applied == [m.path.name for m in discover()]
        assert migrate(conn) == []
        assert status(conn)["pending"] == []
        schemas = {r[0] for r in conn.execute("SELECT nspname FROM pg_namespace").fetchall()}
        assert {"raw", "oms", "ops"} <= schemas
        rows = conn.execute(
            "SELECT version, checksum FROM public.schema_migrations ORDER BY version"
        ).fetchall()
        assert [v for v, _ in rows] == [m.version for m in discover()]
        assert all(len(c) == 64 for _, c in rows)


def test_tampered_applied_migration_is_refused_naming_the_file(empty_db_url, tmp_path):
    mig_dir = tmp_path / "migrations"
    shutil.copytree(MIGRATIONS_DIR, mig_dir)
    with connect(empty_db_url) as conn:
        migrate(conn, mig_dir)
        first = sorted(mig_dir.glob("*.sql"))[0]
        first.write_text(first.read_text() + "\n-- edited after apply\n")
        with pytest.raises(MigrationError, match=first.name):
            migrate(conn, mig_dir)


def test_failing_migration_names_file_and_leaves_nothing_applied(empty_db_url, tmp_path):
    mig_dir = tmp_path / "migrations"
    shutil.copytree(MIGRATIONS_DIR, mig_dir)
    bad = mig_dir / "9999_broken.sql"
    bad.write_text("CREATE TABLE oms.half_applied (id int);\nSELECT * FROM no_such_table;\n")
    with connect(empty_db_url) as conn:
        with pytest.raises(MigrationError, match="9999_broken.sql"):
            migrate(conn, mig_dir)
        assert conn.execute("SELECT to_regclass('oms.half_applied')").fetchone()[0] is None
        assert "9999_broken.sql" in status(conn, mig_dir)["pending"]


def test_bad_file_name_is_rejected(tmp_path):
    (tmp_path / "1_x.sql").write_text("SELECT 1")
    with pytest.raises(MigrationError, match="1_x.sql"):
        discover(tmp_path)


def test_new_migration_numbered_below_the_last_applied_is_refused(empty_db_url, tmp_path):
    mig_dir = tmp_path / "migrations"
    shutil.copytree(MIGRATIONS_DIR, mig_dir)
    versions = {m.version for m in discover(mig_dir)}
    assert 4 not in versions and max(versions) < 9000  # the test's premises: 0004 is free, 9000 is last
    (mig_dir / "9000_later.sql").write_text("CREATE TABLE oms.later (id int);\n")
    with connect(empty_db_url) as conn:
        migrate(conn, mig_dir)
        # 0004 is a free number below every applied one: a branch's migration merged after 9000 was applied
        late = mig_dir / "0004_forgotten.sql"
        late.write_text("CREATE TABLE oms.forgotten (id int);\n")
        with pytest.raises(MigrationError, match="0004_forgotten.sql") as exc:
            migrate(conn, mig_dir)
        assert "last applied migration 9000 (9000_later.sql)" in str(exc.value)
        assert conn.execute("SELECT to_regclass('oms.forgotten')").fetchone()[0] is None
        assert "0004_forgotten.sql" in status(conn, mig_dir)["pending"]
        # renumbered above the last applied one, it applies
        late.rename(mig_dir / "9001_forgotten.sql")
        assert migrate(conn, mig_dir) == ["9001_forgotten.sql"]


def test_deleted_applied_migration_is_refused_naming_the_file(empty_db_url, tmp_path):
    mig_dir = tmp_path / "migrations"
    shutil.copytree(MIGRATIONS_DIR, mig_dir)
    with connect(empty_db_url) as conn:
        migrate(conn, mig_dir)
        gone = sorted(mig_dir.glob("*.sql"))[-1]
        gone.unlink()
        with pytest.raises(MigrationError, match=f"{gone.name}: applied to the database but missing"):
            migrate(conn, mig_dir)
