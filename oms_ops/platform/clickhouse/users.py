"""The embedded ClickHouse server's users: who may connect, with which password, and what each may do.

Why: the server listens on loopback, which every user of the host can reach, so it takes credentials like a
real ClickHouse server does. Users are given to the server process in a JSON file (mode 0600, read once at
start) holding, like ClickHouse's ``users.xml`` with ``password_sha256_hex``, only a SHA-256 of each password.
Three roles, the grants the OMS needs:

* ``admin`` — any statement on any database (the test suite's server; what ``default`` is on a fresh
  ClickHouse), within the limits every user has (:mod:`.access`);
* ``writer`` — reads anything, writes (INSERT, CREATE, DROP, ALTER …) only into its ``databases``;
* ``reader`` — SELECT only (``readonly=2``: it may still change query settings, as clients do).

This module uses only the standard library: the supervisor writes the file without loading chdb.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

Role = Literal["admin", "writer", "reader"]
ROLES: tuple[str, ...] = ("admin", "writer", "reader")


def password_sha256(password: str) -> str:
    return hashlib.sha256(password.encode()).hexdigest()


@dataclass(frozen=True)
class ClickHouseUser:
    """A user as the caller knows it (with its password): what :func:`write_users_file` stores hashed."""

    name: str
    password: str = field(repr=False)
    role: Role = "admin"
    #: a writer's databases (where its writes may go); ignored for the other roles
    databases: tuple[str, ...] = ()


@dataclass(frozen=True)
class StoredUser:
    """A user as the server knows it: the SHA-256 of the password, never the password."""

    name: str
    password_sha256: str = field(repr=False)
    role: Role
    databases: tuple[str, ...] = ()

    def check_password(self, password: str) -> bool:
        return hmac.compare_digest(password_sha256(password), self.password_sha256)


def write_users_file(path: Path, users: Iterable[ClickHouseUser]) -> Path:
    """Write the users (hashed) for the server's ``--users-file``; mode 0600, atomically."""
    entries = []
    for user in users:
        if user.role not in ROLES:
            raise ValueError(f"ClickHouse user {user.name}: unknown role {user.role!r} (one of {ROLES})")
        if not user.password:
            raise ValueError(f"ClickHouse user {user.name}: a password is required")
        entries.append(
            {
                "name": user.name,
                "password_sha256_hex": password_sha256(user.password),
                "role": user.role,
                "databases": list(user.databases),
            }
        )
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump({"users": entries}, fh, indent=2)
    os.replace(tmp, path)
    return path


def read_users_file(path: Path) -> dict[str, StoredUser]:
    """The users of a ``--users-file`` by name; a malformed file raises ValueError naming the problem."""
    try:
        raw = json.loads(Path(path).read_text(encoding="utf-8"))
        entries = raw["users"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"cannot read ClickHouse users from {path}: {exc}") from None
    users: dict[str, StoredUser] = {}
    for entry in entries:
        try:
            user = StoredUser(
                name=str(entry["name"]),
                password_sha256=str(entry["password_sha256_hex"]).lower(),
                role=entry.get("role", "admin"),
                databases=tuple(str(d) for d in entry.get("databases", ())),
            )
        except (KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"malformed user in {path}: {exc}") from None
        if user.role not in ROLES or len(user.password_sha256) != 64:
            raise ValueError(f"malformed user {user.name!r} in {path}: role or password hash")
        users[user.name] = user
    if not users:
        raise ValueError(f"no users in {path}")
    return users
