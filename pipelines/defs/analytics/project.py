"""The one cached dbt project of the code location.

dagster-dbt needs dbt's ``manifest.json`` to build the asset graph. It is produced by ``dbt parse`` the
first time the code location loads (and again whenever a file under dbt/ is newer than the manifest), so
a fresh clone works without a separate build step.

The manifest is parsed with ``all_targets: true``: the project enables its ClickHouse models (staging,
intermediate, marts) only on the clickhouse target and its ops views only on the postgres target, and
Dagster must see both sets to draw one lineage graph. Each ``@dbt_assets`` then runs on its own target,
where dbt enables exactly its half.
"""

from __future__ import annotations

import os
from functools import cache
from pathlib import Path

from dagster_dbt import DbtProject

from oms_ops.analytics.dbt import patched_environ
from oms_ops.platform.dbt_env import DBT_PROJECT_DIR

#: dbt vars of the manifest Dagster reads (see the module docstring).
PARSE_VARS = '{"all_targets": true}'


def _newest_source_mtime(project_dir: Path) -> float:
    newest = 0.0
    for sub in ("models", "macros", "seeds", "tests", "snapshots"):
        for path in (project_dir / sub).rglob("*"):
            if path.is_file():
                newest = max(newest, path.stat().st_mtime)
    for name in ("dbt_project.yml", "profiles.yml", "packages.yml"):
        if (project_dir / name).exists():
            newest = max(newest, (project_dir / name).stat().st_mtime)
    return newest


def ensure_manifest(project_dir: Path = DBT_PROJECT_DIR) -> Path:
    manifest = project_dir / "target" / "manifest.json"
    if manifest.exists() and manifest.stat().st_mtime >= _newest_source_mtime(project_dir):
        return manifest
    # parse renders profiles.yml but does not connect; defaults in profiles.yml cover unset variables,
    # except OMS_CH_SECURE, which profiles.yml pipes through `as_bool` (it accepts only True/False)
    os.environ.setdefault("DBT_SEND_ANONYMOUS_USAGE_STATS", "false")
    secure = "True" if os.environ.get("OMS_CH_SECURE", "").lower() == "true" else "False"
    with patched_environ({"OMS_CH_SECURE": secure}):
        result = _parse(project_dir)
    if not result.success:
        raise RuntimeError(f"dbt parse failed in {project_dir}: {result.exception}")
    return manifest


def _parse(project_dir: Path):
    from dbt.cli.main import dbtRunner

    return dbtRunner().invoke(
        [
            "parse",
            "--project-dir",
            str(project_dir),
            "--profiles-dir",
            str(project_dir),
            "--target-path",
            str(project_dir / "target"),
            "--vars",
            PARSE_VARS,
            "--quiet",
        ]
    )


@cache
def dbt_project() -> DbtProject:
    ensure_manifest()
    return DbtProject(project_dir=DBT_PROJECT_DIR, profiles_dir=DBT_PROJECT_DIR)
