"""Running the API: :class:`ApiServer` (a loopback port in a background thread, for tests) and
:func:`main` (``python -m oms_ops.api``, the stack's ``api`` service)."""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

import uvicorn

from oms_ops.api.app import SIGNING_KEY, TOKEN_TTL_S, build_app
from oms_ops.platform import credentials
from oms_ops.platform.asgi import BackgroundServer
from oms_ops.platform.settings import ConfigError, load_settings


class ApiServer(BackgroundServer):
    """The API on a loopback port in a background thread (tests, in-process use). ``stop()`` shuts it down."""

    def __init__(
        self,
        database_url: str,
        *,
        signing_key: str,
        users_path: Path | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        token_ttl_s: float = TOKEN_TTL_S,
    ) -> None:
        app = build_app(
            database_url,
            signing_key=signing_key,
            users_path=users_path,
            token_ttl_s=token_ttl_s,
            health_figures=_health_figures(database_url),
        )
        super().__init__(app, name="oms-api", host=host, port=port)
        self.url = f"http://{host}:{self.port}"


def _health_figures(database_url: str):
    """The Service health figures on the OMS's own URLs (the analytics and Dagster ones from the same
    environment ``oms up`` gives every process)."""
    from oms_ops.analytics.dbt import analytics_database
    from oms_ops.services import health
    from oms_ops.services.health import libpq_url

    def figures():
        dagster = os.environ.get("OMS_DAGSTER_DATABASE_URL") or os.environ.get("OMS_DAGSTER_STORAGE_URL")
        return health.system_health(
            database_url,
            clickhouse_url=os.environ.get("OMS_CLICKHOUSE_URL"),
            analytics_database=analytics_database(),
            dagster_database_url=libpq_url(dagster) if dagster else None,
        )

    return figures


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m oms_ops.api", description="The OMS's HTTP API (docs/api.md).")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=None, help="default: OMS_API_PORT (8600)")
    args = p.parse_args(argv)
    try:
        settings = load_settings()
    except ConfigError as exc:
        raise SystemExit(f"error: {exc}") from None
    url = os.environ.get("OMS_DATABASE_URL")
    if not url:
        raise SystemExit("error: OMS_DATABASE_URL is not set (the OMS's own login: the API writes with it)")
    key = credentials.secret(settings.home, SIGNING_KEY)
    logging.basicConfig(level="INFO", format="%(asctime)s %(name)s %(levelname)s %(message)s")
    uvicorn.run(
        build_app(url, signing_key=key, health_figures=_health_figures(url)),
        host=args.host,
        port=settings.api_port if args.port is None else args.port,
        log_level="warning",
    )
    return 0
