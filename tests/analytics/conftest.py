"""Fixtures of the analytics tests: a known history in Postgres, the dbt environment and runner.

The per-test ClickHouse database (``ch_database``) holds both the replicated raw tables and the dbt models,
so a test is isolated from every other test while sharing the session's one ClickHouse server.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from oms_ops.analytics.dbt import DbtRun, analytics_dbt_env, run_dbt
from tests.analytics.history import History, build_history


@pytest.fixture
def history(conn) -> History:
    """The known order history of tests/analytics/history.py, written through the domain operations."""
    return build_history(conn)


@pytest.fixture
def ch_env(db_url, clickhouse_url, ch_database) -> dict[str, str]:
    """dbt environment for the ClickHouse target: raw tables and models in this test's database."""
    return analytics_dbt_env(db_url, clickhouse_url, analytics_db=ch_database, raw_db=ch_database)


@pytest.fixture
def dbt(tmp_path) -> Callable[..., DbtRun]:
    """Run dbt in-process with private target/log folders; fails the test with dbt's failures.

    ``build`` skips the dbt unit tests (they do not depend on data: one test runs them, with
    ``--resource-types all``), as the scheduled production runs do."""
    counter = iter(range(1000))

    def _run(env: dict[str, str], *args: str, expect_success: bool = True) -> DbtRun:
        argv = list(args)
        if argv[0] == "build" and "--resource-types" not in argv:
            argv += ["--exclude-resource-type", "unit_test"]
        elif "--resource-types" in argv:
            i = argv.index("--resource-types")
            del argv[i : i + 2]
        res = run_dbt(argv, env, target_path=tmp_path / f"dbt-{next(counter)}")
        if expect_success:
            assert res.success, res.failures() or res.exception
        return res

    return _run
