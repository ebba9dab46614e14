"""The one cached dbt project of the code location.

dagster-dbt needs dbt's ``manifest.json`` to build the asset graph. It is produced by ``dbt parse`` the
first time the code location loads (and again whenever a file under dbt/ is newer than the manifest), so
a fresh clone works without a separate build step.
"""

from __future__ import annotations

import os
from functools import cache
from pathlib import Path

from dagster_dbt import DbtProject

from oms_ops.platform.dbt_env import DBT_PROJECT_DIR


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
    from dbt.cli.main import dbtRunner

    # parse renders profiles.yml but does not connect; defaults in profiles.yml cover unset variables
    os.environ.setdefault("DBT_SEND_ANONYMOUS_USAGE_STATS", "false")
    result = dbtRunner().invoke(
        ["parse", "--project-dir", str(project_dir), "--profiles-dir", str(project_dir), "--quiet"]
    )
    if not result.success:
        raise RuntimeError(f"dbt parse failed in {project_dir}: {result.exception}")
    return manifest


@cache
def dbt_project() -> DbtProject:
    ensure_manifest()
    return DbtProject(project_dir=DBT_PROJECT_DIR, profiles_dir=DBT_PROJECT_DIR)
