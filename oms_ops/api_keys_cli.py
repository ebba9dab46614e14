"""``oms api-keys create|list|revoke``: keys of other systems for the public API (docs/api.md, "Public API").

An admin's tool at a terminal: the key is printed once at creation and never again (only its SHA-256 is kept),
so it goes straight into the other system's secret store.
"""

from __future__ import annotations

import json

import typer

from oms_ops.cli_support import cli_actor, database_url, fail
from oms_ops.db import connect, run_in_transaction
from oms_ops.errors import OmsError
from oms_ops.services import api_keys

api_keys_app = typer.Typer(
    help="API keys of other systems for the public API (shown once, stored hashed, scoped, revocable).",
    no_args_is_help=True,
)


@api_keys_app.command("create")
def create(
    name: str = typer.Option(..., "--name", help="Whose system it is (shown in the list)"),
    scope: list[str] = typer.Option(
        ..., "--scope", help=f"Repeat for each scope: {', '.join(api_keys.SCOPES)}"
    ),
    channel: str = typer.Option(None, "--channel", help="orders:write: the channel its orders are placed on"),
    expires_in_days: int = typer.Option(None, "--expires-in-days", help="1 to 3650 (default: no expiry)"),
) -> None:
    """Create a key and print it once."""
    try:
        with connect(database_url()) as conn:
            full, key = run_in_transaction(
                conn,
                lambda c: api_keys.create_key(
                    c,
                    name=name,
                    scopes=scope,
                    actor=cli_actor(),
                    channel=channel,
                    expires_in_days=expires_in_days,
                ),
            )
    except OmsError as exc:
        fail(str(exc), 1)
    typer.echo(f"API key {key.key_id} for {key.name!r}, scopes {', '.join(key.scopes)}"
               + (f", channel {key.channel_code}" if key.channel_code else "")
               + (f", expires {key.expires_at:%Y-%m-%d}" if key.expires_at else ""))  # fmt: skip
    typer.echo("Store it now — it is not shown again:")
    typer.echo(full)


@api_keys_app.command("list")
def list_(
    all_: bool = typer.Option(False, "--all", help="Also revoked keys"),
    as_json: bool = typer.Option(False, "--json", help="One JSON object per line"),
) -> None:
    """Keys, oldest first (never their secrets)."""
    with connect(database_url()) as conn:
        keys = api_keys.list_keys(conn, include_revoked=all_)
    if as_json:
        for k in keys:
            typer.echo(json.dumps({**k.__dict__, "scopes": list(k.scopes)}, ensure_ascii=False, default=str))
        return
    if not keys:
        typer.echo("No API keys.")
    for k in keys:
        status = "revoked" if k.revoked_at else "active"
        used = f"{k.last_used_at:%Y-%m-%d %H:%M}" if k.last_used_at else "never"
        typer.echo(f"  {k.key_id}  {status:<7}  {k.name:<24} {','.join(k.scopes):<40} "
                   f"{k.channel_code or '-':<12} last used {used}")  # fmt: skip


@api_keys_app.command("revoke")
def revoke(key_id: str = typer.Argument(..., help="The key's id (the part after oms_)")) -> None:
    """Revoke a key at once."""
    try:
        with connect(database_url()) as conn:
            key = run_in_transaction(conn, lambda c: api_keys.revoke_key(c, key_id, actor=cli_actor()))
    except OmsError as exc:
        fail(str(exc), 1)
    typer.echo(f"API key {key.key_id} ({key.name}) revoked at {key.revoked_at:%Y-%m-%d %H:%M:%S %Z}.")
