"""The environment dbt needs for the analytics project, an in-process runner, and the start-up build of the
operations read model.

``profiles.yml`` reads connection fields from environment variables; :func:`analytics_dbt_env` derives them
from the store URLs (through ``oms_ops.platform.dbt_env``) and adds the two databases of the analytics:
``OMS_CH_RAW_DATABASE`` (the replicated raw tables, dbt sources) and ``OMS_CH_DATABASE`` (the models).

:func:`build_ops_views` creates the ``ops`` views (the read model that pages, pushers and checks read through
``oms_ops.read_model``) right after the migrations, so they exist from the first moment the system runs
instead of after the first scheduled dbt run.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from oms_ops.analytics.replication import DEFAULT_RAW_DATABASE
from oms_ops.platform.dbt_env import DBT_PROJECT_DIR, dbt_env

DEFAULT_ANALYTICS_DATABASE = "analytics"
RAW_DATABASE_ENV = "OMS_CH_RAW_DATABASE"
ANALYTICS_DATABASE_ENV = "OMS_CH_DATABASE"


def raw_database() -> str:
    """ClickHouse database of the replicated raw tables (``OMS_CH_RAW_DATABASE``, default ``oms_raw``)."""
    return os.environ.get(RAW_DATABASE_ENV) or DEFAULT_RAW_DATABASE


def analytics_database() -> str:
    """ClickHouse database of the dbt models (``OMS_CH_DATABASE``, default ``analytics``)."""
    return os.environ.get(ANALYTICS_DATABASE_ENV) or DEFAULT_ANALYTICS_DATABASE


def analytics_dbt_env(
    database_url: str | None,
    clickhouse_url: str | None,
    *,
    target: str = "clickhouse",
    analytics_db: str | None = None,
    raw_db: str | None = None,
    pg_schema: str | None = None,
) -> dict[str, str]:
    """Environment variables for one dbt invocation of the analytics project."""
    env = dbt_env(database_url, clickhouse_url, target=target)
    # profiles.yml pipes OMS_CH_SECURE through `as_bool`, which accepts only Python literals (True/False)
    if "OMS_CH_SECURE" in env:
        env["OMS_CH_SECURE"] = "True" if env["OMS_CH_SECURE"].lower() == "true" else "False"
    env[ANALYTICS_DATABASE_ENV] = analytics_db or analytics_database()
    env[RAW_DATABASE_ENV] = raw_db or raw_database()
    if pg_schema:
        env["OMS_PG_SCHEMA"] = pg_schema
    env.setdefault("DBT_SEND_ANONYMOUS_USAGE_STATS", "false")
    return env


@contextmanager
def patched_environ(env: Mapping[str, str]) -> Iterator[None]:
    """Set environment variables for the duration of the block, then restore the previous values."""
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@dataclass
class DbtRun:
    success: bool
    results: list[dict[str, Any]]
    exception: BaseException | None

    def failures(self) -> list[str]:
        return [
            f"{r['unique_id']}: {r['status']} {r.get('message') or ''}".strip()
            for r in self.results
            if r["status"] not in ("success", "pass", "skipped")
        ]


def run_dbt(
    args: list[str],
    env: Mapping[str, str],
    *,
    target_path: Path,
    project_dir: Path = DBT_PROJECT_DIR,
    retries: int = 2,
) -> DbtRun:
    """Run dbt in-process (dbtRunner) with ``env`` and private target/log folders (the project's own
    ``target/`` — the manifest Dagster reads — is never touched). Nodes that failed with a transient error
    (:data:`TRANSIENT_ERRORS`) are re-run with ``dbt retry`` up to ``retries`` times."""
    from dbt.cli.main import dbtRunner

    extra = {"DBT_TARGET_PATH": str(target_path), "DBT_LOG_PATH": str(target_path / "logs")}
    with patched_environ({**env, **extra}):
        res = dbtRunner().invoke(
            [*args, "--project-dir", str(project_dir), "--profiles-dir", str(project_dir)]
        )
        for _ in range(retries):
            if res.success or not _transient(res):
                break
            # re-run only what failed (and what it skipped), as `dbt retry` does
            res = dbtRunner().invoke(
                ["retry", "--project-dir", str(project_dir), "--profiles-dir", str(project_dir)]
            )
    return _summary(res)


#: Errors a re-run fixes: the embedded ClickHouse server can answer SESSION_IS_LOCKED when a client sends
#: the next query of a session a moment before the server released it after the previous one.
TRANSIENT_ERRORS = ("SESSION_IS_LOCKED",)


def _transient(res: Any) -> bool:
    messages = [str(getattr(r, "message", "") or "") for r in getattr(res.result, "results", None) or []]
    failed = [m for m in messages if m and any(t in m for t in TRANSIENT_ERRORS)]
    return bool(failed)


def _summary(res: Any) -> DbtRun:
    results = []
    for r in getattr(res.result, "results", None) or []:
        node = getattr(r, "node", None)
        results.append(
            {
                "unique_id": getattr(node, "unique_id", "?"),
                "status": str(getattr(r.status, "value", r.status)),
                "message": getattr(r, "message", None),
                "execution_time": getattr(r, "execution_time", None),
            }
        )
    return DbtRun(bool(res.success), results, res.exception)


#: dbt selection of the operations read model (the models under dbt/models/ops)
OPS_SELECT = "ops"


class OpsViewsError(RuntimeError):
    """The ops views could not be built; the message names the failed models and dbt's errors."""


def build_ops_views(database_url: str, *, target_path: Path | None = None) -> None:
    """Create (or replace) the read model's views in Postgres: ``dbt run --target postgres --select ops``.

    Views over the system of record hold no data, so building them is a matter of seconds and safe to repeat
    (every start-up does): a rebuilt view shows the same live rows, keeps its grants (dbt ``grants`` config)
    and picks up a changed definition. Run it after the migrations — the views read their tables. The dbt
    tests of the views run with the Dagster asset ``ops_dbt_views`` (``dbt build``), not here: start-up must
    not fail because live data breaks an invariant the tests watch. ``target_path``: where dbt keeps its
    artefacts (default: a temporary folder, removed afterwards). Raises :class:`OpsViewsError`.
    """
    env = analytics_dbt_env(database_url, None, target="postgres")
    with tempfile.TemporaryDirectory(prefix="oms-ops-views-") as tmp:
        res = run_dbt(
            ["run", "--target", "postgres", "--select", OPS_SELECT, "--quiet"],
            env,
            target_path=target_path or Path(tmp),
        )
    if not res.success:
        problems = res.failures() or [str(res.exception or "dbt failed")]
        raise OpsViewsError("building the ops views failed: " + "; ".join(problems))
    if not res.results:
        raise OpsViewsError(f"building the ops views failed: dbt selected nothing for --select {OPS_SELECT}")
