"""Health probes of the stores, shared by the dashboards' health page and Dagster's platform asset."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit

import httpx
import psycopg

from oms_ops.platform.migrate import status as migration_status
from oms_ops.platform.settings import redact


@dataclass
class ServiceHealth:
    name: str
    up: bool
    url: str
    version: str = ""
    latency_ms: float = 0.0
    detail: dict = field(default_factory=dict)
    error: str = ""


def postgres_health(url: str | None) -> ServiceHealth:
    if not url:
        return ServiceHealth("Postgres", False, "-", error="OMS_DATABASE_URL is not set")
    t0 = time.perf_counter()
    try:
        with psycopg.connect(url, connect_timeout=3, autocommit=True) as conn:
            version = conn.execute("SHOW server_version").fetchone()[0]
            migrations = migration_status(conn)
    except psycopg.Error as exc:
        return ServiceHealth("Postgres", False, redact(url), error=str(exc).strip().splitlines()[0])
    return ServiceHealth(
        "Postgres",
        True,
        redact(url),
        version=version,
        latency_ms=(time.perf_counter() - t0) * 1000,
        detail={
            "migrations_applied": len(migrations["applied"]),
            "migrations_pending": migrations["pending"],
        },
    )


def clickhouse_health(url: str | None) -> ServiceHealth:
    if not url:
        return ServiceHealth("ClickHouse", False, "-", error="OMS_CLICKHOUSE_URL is not set")
    t0 = time.perf_counter()
    p = urlsplit(url)
    auth = (unquote(p.username), unquote(p.password or "")) if p.username else None
    base = f"{p.scheme}://{p.hostname}:{p.port or 8123}"
    try:
        resp = httpx.get(base + "/", params={"query": "SELECT version()"}, auth=auth, timeout=3)
        resp.raise_for_status()
    except httpx.HTTPError as exc:
        return ServiceHealth("ClickHouse", False, redact(url), error=str(exc) or type(exc).__name__)
    return ServiceHealth(
        "ClickHouse",
        True,
        redact(url),
        version=resp.text.strip(),
        latency_ms=(time.perf_counter() - t0) * 1000,
    )
