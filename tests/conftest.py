"""Shared fixtures: one embedded Postgres and one ClickHouse server for the whole test session (per xdist
worker when the suite runs in parallel)."""

import sys

import pytest

pytest_plugins = ["tests.fixtures.postgres", "tests.fixtures.clickhouse"]


@pytest.fixture(autouse=True)
def _keep_main_module():
    """Streamlit's AppTest runs a page as ``__main__`` and leaves it there; a later test that starts
    processes with the ``spawn`` method would then re-run that page in every child (spawn re-imports the
    parent's ``__main__``). Each test ends with the ``__main__`` it started with."""
    main = sys.modules.get("__main__")
    yield
    if main is not None and sys.modules.get("__main__") is not main:
        sys.modules["__main__"] = main
