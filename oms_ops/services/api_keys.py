"""API keys of other systems: created by an admin, shown once, kept as a SHA-256, scoped, revocable.

Why keys and not the dashboards' sessions: a system has no password to type and no working day; it needs a
credential that lives until it is revoked, that can do only what its scopes say, and that can be revoked
without touching anyone's password. A key is ``oms_<key_id>_<secret>``: ``key_id`` (12 hex) finds the row,
the secret (32 random bytes) is compared by its SHA-256 in constant time. The secret has 256 bits of entropy,
so a fast hash is enough (no password stretching: nothing to guess).

Scopes: ``orders:read`` (order status, lines, shipments and tracking), ``customer:read`` (the customer's name,
phone, e-mail and address in those answers — personal data, off unless asked for), ``stock:read`` (available
to sell per SKU and location), ``orders:write`` (place orders; the key is bound to one channel of the
business configuration that no connector feeds, so the OMS never mixes a system's order numbers with a
marketplace's).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

import psycopg
from psycopg import sql

from oms_ops.channels import registry
from oms_ops.errors import NotFound, ValidationFailed

SCOPES = ("orders:read", "orders:write", "stock:read", "customer:read")
PREFIX = "oms"
#: ``last_used_at`` is written at most this often per key (a busy system must not turn reads into writes)
TOUCH_EVERY = timedelta(minutes=1)


@dataclass(frozen=True)
class ApiKey:
    key_id: str
    name: str
    scopes: tuple[str, ...]
    channel_code: str | None
    created_by: str
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None

    @property
    def active(self) -> bool:
        return self.revoked_at is None


class KeyRefused(Exception):
    """A key that is malformed, unknown, wrong, revoked or expired; the message says which (never the secret)."""


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


_COLUMNS = sql.SQL(", ").join(
    map(
        sql.Identifier,
        ("key_id", "name", "scopes", "channel_code", "created_by", "created_at", "expires_at", "revoked_at",
         "last_used_at"),
    )
)  # fmt: skip


def _key(row) -> ApiKey:
    return ApiKey(row[0], row[1], tuple(row[2]), *row[3:])


def create_key(
    conn: psycopg.Connection,
    *,
    name: str,
    scopes: list[str] | tuple[str, ...],
    actor: str,
    channel: str | None = None,
    expires_in_days: int | None = None,
) -> tuple[str, ApiKey]:
    """A new key: ``(the full key — shown once, never stored —, its record)``. Refused with a message naming
    the field: an unknown scope, ``orders:write`` without a channel, a channel that is unknown, inactive or fed
    by a connector, an expiry out of 1 … 3650 days."""
    name = (name or "").strip()
    if not 1 <= len(name) <= 100:
        raise ValidationFailed("name: 1 to 100 characters")
    wanted = tuple(dict.fromkeys(s.strip() for s in scopes))
    unknown = [s for s in wanted if s not in SCOPES]
    if not wanted or unknown:
        raise ValidationFailed(f"scopes: {unknown or 'none given'}; choose from {', '.join(SCOPES)}")
    if "orders:write" in wanted and not channel:
        raise ValidationFailed("channel: orders:write needs the channel its orders are placed on")
    if channel is not None:
        row = conn.execute("SELECT active FROM oms.channels WHERE channel_code = %s", (channel,)).fetchone()
        if row is None or not row[0]:
            raise ValidationFailed(
                f"channel: {channel!r} is not an active channel of the business configuration"
            )
        if registry.find(channel) is not None:
            raise ValidationFailed(
                f"channel: {channel!r} is fed by its own connector; declare a channel of its own for this "
                "system in config/business.yaml (its order numbers must not mix with the connector's)"
            )
    if expires_in_days is not None and not 1 <= expires_in_days <= 3650:
        raise ValidationFailed("expires_in_days: 1 to 3650")
    key_id = secrets.token_hex(6)
    secret = secrets.token_urlsafe(32)
    row = conn.execute(
        sql.SQL(
            """INSERT INTO oms.api_keys (key_id, name, secret_sha256, scopes, channel_code, created_by, expires_at)
               VALUES (%s, %s, %s, %s, %s, %s,
                       CASE WHEN %s::int IS NULL THEN NULL ELSE now() + make_interval(days => %s::int) END)
               RETURNING {}"""
        ).format(_COLUMNS),
        (key_id, name, _digest(secret), list(wanted), channel, actor, expires_in_days, expires_in_days),
    ).fetchone()
    return f"{PREFIX}_{key_id}_{secret}", _key(row)


def list_keys(conn: psycopg.Connection, *, include_revoked: bool = False) -> list[ApiKey]:
    rows = conn.execute(
        sql.SQL(
            "SELECT {} FROM oms.api_keys WHERE %s OR revoked_at IS NULL ORDER BY created_at, key_id"
        ).format(_COLUMNS),
        (include_revoked,),
    ).fetchall()
    return [_key(r) for r in rows]


def revoke_key(conn: psycopg.Connection, key_id: str, *, actor: str) -> ApiKey:
    """Revoke at once (the next request with it is refused). Revoking a revoked key changes nothing."""
    row = conn.execute(
        sql.SQL(
            """UPDATE oms.api_keys SET revoked_at = coalesce(revoked_at, now()),
                                       revoked_by = coalesce(revoked_by, %s)
               WHERE key_id = %s RETURNING {}"""
        ).format(_COLUMNS),
        (actor, key_id),
    ).fetchone()
    if row is None:
        raise NotFound("API key", [key_id])
    return _key(row)


def authenticate(conn: psycopg.Connection, presented: str) -> ApiKey:
    """The key's record if ``presented`` is a live key; :class:`KeyRefused` naming why not. Records the use
    (``last_used_at``, at most once a minute)."""
    parts = (presented or "").strip().split("_", 2)
    if len(parts) != 3 or parts[0] != PREFIX or len(parts[1]) != 12 or not parts[2]:
        raise KeyRefused("malformed API key: expected oms_<key id>_<secret>")
    key_id, secret = parts[1], parts[2]
    row = conn.execute(
        sql.SQL(
            """SELECT {}, secret_sha256, expires_at IS NOT NULL AND expires_at <= now()
               FROM oms.api_keys WHERE key_id = %s"""
        ).format(_COLUMNS),
        (key_id,),
    ).fetchone()
    # compare even when the key id is unknown, so timing does not tell known ids from unknown ones
    stored = row[-2] if row else "0" * 64
    if not hmac.compare_digest(stored, _digest(secret)) or row is None:
        raise KeyRefused("unknown API key or wrong secret")
    key = _key(row[:-2])
    if key.revoked_at is not None:
        raise KeyRefused(f"API key {key_id} was revoked")
    if row[-1]:
        raise KeyRefused(f"API key {key_id} expired")
    conn.execute(
        """UPDATE oms.api_keys SET last_used_at = now()
           WHERE key_id = %s AND (last_used_at IS NULL OR last_used_at < now() - %s)""",
        (key_id, TOUCH_EVERY),
    )
    return key
