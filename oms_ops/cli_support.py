"""What every ``oms`` sub-command shares: one way to fail (an ``error:`` line on stderr and an exit code) and
one way to find the database (``OMS_DATABASE_URL``, else the running stack's Postgres), so the commands agree
on both."""

from __future__ import annotations

import getpass
from typing import NoReturn

import typer

from oms_ops.platform import stack
from oms_ops.platform.settings import ConfigError
from oms_ops.services.settings import load_oms_settings


def fail(message: str, code: int = 2) -> NoReturn:
    """Print ``error: <message>`` on stderr and exit with ``code`` (2: usage or set-up, 1: refused)."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def database_url() -> str:
    """``OMS_DATABASE_URL``, else the running stack's Postgres; exit 2 naming the problem otherwise."""
    try:
        settings = load_oms_settings()
    except ConfigError as exc:
        fail(str(exc))
    if settings.database_url:
        return settings.database_url
    state = stack.read_state(settings) if stack.running_services(settings).get("postgres") else None
    if state is None or not state.database_url:
        fail("OMS_DATABASE_URL is not set and no running stack was found (start it with `oms up`)")
    return state.database_url


def cli_actor() -> str:
    """Who did it, as recorded in events: ``cli:<login>``."""
    return f"cli:{getpass.getuser()}"
