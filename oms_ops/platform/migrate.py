"""Versioned, forward-only SQL migrations.

Files live in ``oms_ops/migrations`` and are named ``NNNN_description.sql``. Each applied version is
recorded in ``public.schema_migrations`` with the SHA-256 of its text: editing a migration that has
already been applied is an error that names the file (write a new migration instead), because a silently
diverging schema is worse than a loud start-up failure. For the same reason a new file numbered below the
last applied version is refused rather than applied out of order: the databases that applied the later
versions first would run it on a schema its author never saw (and, on a branch merge, a fresh database would
run it before them), so the same set of files would give different schemas. Renumber it above the last
applied one.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

import psycopg

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"
_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
#: Serialises concurrent ``migrate`` calls (two services starting at once).
_LOCK_KEY = 0x0_4D5F_6D69  # arbitrary, stable


class MigrationError(RuntimeError):
    """A migration cannot be applied; the message names the file."""


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    path: Path
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def discover(directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    """All migration files in version order; rejects stray names and duplicate versions."""
    found: dict[int, Migration] = {}
    for path in sorted(directory.glob("*.sql")):
        m = _NAME.match(path.name)
        if not m:
            raise MigrationError(f"{path.name}: migration files must be named NNNN_description.sql")
        version = int(m.group(1))
        if version in found:
            raise MigrationError(f"{path.name}: version {version} already used by {found[version].path.name}")
        found[version] = Migration(version, m.group(2), path, path.read_text())
    return [found[v] for v in sorted(found)]


def migrate(conn: psycopg.Connection, directory: Path = MIGRATIONS_DIR) -> list[str]:
    """Apply pending migrations, each in its own transaction. Returns the file names applied.

    Raises MigrationError, naming the file, if an applied migration's file changed or disappeared, or if a
    pending file is numbered below the last applied version (out of order); nothing is applied then.
    """
    migrations = discover(directory)
    applied_now: list[str] = []
    with conn.transaction():
        conn.execute(
            """CREATE TABLE IF NOT EXISTS public.schema_migrations (
                   version integer PRIMARY KEY,
                   name text NOT NULL,
                   checksum text NOT NULL,
                   applied_at timestamptz NOT NULL DEFAULT now())"""
        )
    with conn.transaction():
        # Session-level advisory lock held across the per-migration transactions below.
        conn.execute("SELECT pg_advisory_lock(%s)", (_LOCK_KEY,))
    try:
        applied = {
            v: (n, c)
            for v, n, c in conn.execute(
                "SELECT version, name, checksum FROM public.schema_migrations"
            ).fetchall()
        }
        by_version = {m.version: m for m in migrations}
        for version, (name, checksum) in sorted(applied.items()):
            mig = by_version.get(version)
            if mig is None:
                raise MigrationError(
                    f"{version:04d}_{name}.sql: applied to the database but missing from {directory}"
                )
            if mig.checksum != checksum:
                raise MigrationError(
                    f"{mig.path.name}: changed after it was applied (checksum differs); "
                    "add a new migration instead of editing an applied one"
                )
        if applied:
            last = max(applied)
            last_name = f"{last:04d}_{applied[last][0]}.sql"
            late = [m for m in migrations if m.version not in applied and m.version < last]
            if late:
                raise MigrationError(
                    f"{late[0].path.name}: numbered below the last applied migration {last:04d} ({last_name}); "
                    f"migrations apply in order only: renumber it above {last:04d}"
                    + (f" (also: {', '.join(m.path.name for m in late[1:])})" if len(late) > 1 else "")
                )
        for mig in migrations:
            if mig.version in applied:
                continue
            try:
                with conn.transaction():
                    conn.execute(mig.sql)
                    conn.execute(
                        "INSERT INTO public.schema_migrations (version, name, checksum) VALUES (%s, %s, %s)",
                        (mig.version, mig.name, mig.checksum),
                    )
            except psycopg.Error as exc:
                raise MigrationError(f"{mig.path.name}: {type(exc).__name__}: {exc}".strip()) from exc
            applied_now.append(mig.path.name)
    finally:
        conn.execute("SELECT pg_advisory_unlock(%s)", (_LOCK_KEY,))
    return applied_now


def status(conn: psycopg.Connection, directory: Path = MIGRATIONS_DIR) -> dict[str, list[str]]:
    """Which migration files are applied and which are pending."""
    exists = conn.execute("SELECT to_regclass('public.schema_migrations') IS NOT NULL").fetchone()[0]
    applied = set()
    if exists:
        applied = {v for (v,) in conn.execute("SELECT version FROM public.schema_migrations").fetchall()}
    migrations = discover(directory)
    return {
        "applied": [m.path.name for m in migrations if m.version in applied],
        "pending": [m.path.name for m in migrations if m.version not in applied],
    }
