"""Environment variables for dbt's ``profiles.yml``, derived from the two connection URLs.

dbt profiles can read environment variables but cannot parse URLs, so this is the one place that turns
OMS_DATABASE_URL / OMS_CLICKHOUSE_URL into the host/port/user/password/database fields each adapter wants.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

DBT_PROJECT_DIR = Path(__file__).resolve().parents[2] / "dbt"


def dbt_env(
    database_url: str | None, clickhouse_url: str | None, *, target: str | None = None
) -> dict[str, str]:
    env: dict[str, str] = {}
    if database_url:
        p = urlsplit(database_url)
        query = parse_qs(p.query)
        env.update(
            OMS_PG_HOST=p.hostname or query.get("host", ["127.0.0.1"])[0],
            OMS_PG_PORT=str(p.port or 5432),
            OMS_PG_USER=unquote(p.username or "postgres"),
            OMS_PG_PASSWORD=unquote(p.password or ""),
            OMS_PG_DBNAME=(p.path or "/oms").lstrip("/") or "oms",
        )
    if clickhouse_url:
        p = urlsplit(clickhouse_url)
        env.update(
            OMS_CH_HOST=p.hostname or "127.0.0.1",
            OMS_CH_PORT=str(p.port or (8443 if p.scheme == "https" else 8123)),
            OMS_CH_USER=unquote(p.username or "default"),
            OMS_CH_PASSWORD=unquote(p.password or ""),
            OMS_CH_SECURE="True" if p.scheme == "https" else "False",
        )
    if target:
        env["OMS_DBT_TARGET"] = target
    return env
