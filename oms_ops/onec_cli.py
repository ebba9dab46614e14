"""``oms onec status|resend|config``: the 1C exchange from a terminal (oms_ops/onec/, docs/onec.md).

``status`` shows what 1C has confirmed, the batch waiting for its confirmation, the last batches and imports;
``resend --since`` makes 1C's next query carry again every document changed since a time (after 1C's database
was restored from a backup, say); ``config`` shows the URL, login and settings to type into 1C.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

import typer

from oms_ops.cli_support import cli_actor, database_url, fail
from oms_ops.db import connect
from oms_ops.errors import OmsError
from oms_ops.platform.settings import ConfigError
from oms_ops.services import onec

onec_app = typer.Typer(
    help="The 1C exchange (CommerceML 2): status, re-export, configuration.", no_args_is_help=True
)


def _echo(value) -> None:
    typer.echo(json.dumps(value, ensure_ascii=False, default=str, indent=2))


@onec_app.command("status")
def status(limit: int = typer.Option(10, help="How many recent batches and imports")) -> None:
    """The confirmed watermark, the batch 1C has not confirmed yet, recent batches, imports and resends."""
    with connect(database_url()) as conn:
        _echo(onec.status(conn, limit=limit))


@onec_app.command("resend")
def resend(
    since: str = typer.Option(..., "--since", help="ISO date or time (UTC unless it names a zone)"),
) -> None:
    """Export again, at 1C's next query, every order, payment and return changed since ``--since``."""
    try:
        at = datetime.fromisoformat(since)
    except ValueError:
        fail(f"--since: not an ISO date or time: {since!r}")
    at = at if at.tzinfo else at.replace(tzinfo=UTC)
    with connect(database_url()) as conn:
        try:
            rid = onec.request_resend(conn, at, actor=cli_actor())
        except OmsError as exc:
            fail(str(exc), 1)
    typer.echo(f"resend {rid}: everything changed since {at.isoformat()} goes to 1C with its next query")


@onec_app.command("config")
def config(show_password: bool = typer.Option(False, "--show-password")) -> None:
    """What to enter in 1C's "exchange with the site" settings (the URL is the OMS API's, path /1c_exchange)."""
    try:
        cfg = onec.load_config()
    except ConfigError as exc:
        fail(str(exc))
    _echo(
        {
            "path": "/1c_exchange",
            "login": cfg.login,
            "password": cfg.password if show_password else "(oms status --secrets, or --show-password)",
            "file_limit": cfg.file_limit,
            "max_file_bytes": cfg.max_file_bytes,
            "stock_master": cfg.stock_master,
            "schema_version": cfg.version,
        }
    )
