"""Shared fixtures: one embedded Postgres and one ClickHouse server for the whole test session."""

pytest_plugins = ["tests.fixtures.postgres", "tests.fixtures.clickhouse"]
