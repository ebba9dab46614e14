"""Dagster resources for the stores, configured from the environment (EnvVar), never from code.

``oms up``/``oms demo`` put OMS_DATABASE_URL and OMS_CLICKHOUSE_URL in the environment of the Dagster
processes (the embedded servers' URLs, or the real servers' when the user set them), so this module has a
single way to find the stores: the environment. That is the "one function decides the environment" rule.
"""

from __future__ import annotations

import sys
from contextlib import contextmanager
from pathlib import Path

import clickhouse_connect
import dagster as dg
import psycopg
from dagster_dbt import DbtCliResource

from oms_ops.db import connect
from oms_ops.platform.dbt_env import DBT_PROJECT_DIR


class PostgresResource(dg.ConfigurableResource):
    """The system of record. Hands out autocommit connections; operations own their transactions."""

    database_url: str

    @contextmanager
    def connection(self) -> psycopg.Connection:
        with connect(self.database_url) as conn:
            yield conn


class ClickHouseResource(dg.ConfigurableResource):
    """The analytics store (embedded chdb server or a real ClickHouse) over the HTTP interface."""

    url: str
    database: str = "default"

    def client(self, database: str | None = None):
        from urllib.parse import urlsplit

        p = urlsplit(self.url)
        return clickhouse_connect.get_client(
            host=p.hostname,
            port=p.port or 8123,
            username=p.username or "default",
            password=p.password or "",
            secure=p.scheme == "https",
            database=database or self.database,
        )


def store_resources() -> dict[str, dg.ConfigurableResource]:
    """The resources every domain shares (keys: ``postgres``, ``clickhouse``, ``dbt``)."""
    return {
        "postgres": PostgresResource(database_url=dg.EnvVar("OMS_DATABASE_URL")),
        "clickhouse": ClickHouseResource(url=dg.EnvVar("OMS_CLICKHOUSE_URL")),
        "dbt": DbtCliResource(
            project_dir=str(DBT_PROJECT_DIR),
            profiles_dir=str(DBT_PROJECT_DIR),
            # the dbt of this environment, whatever PATH the Dagster process was started with
            dbt_executable=str(Path(sys.executable).parent / "dbt"),
        ),
    }
