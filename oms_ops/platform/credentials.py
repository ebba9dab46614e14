"""Credentials of the embedded servers and the simulated outside world, generated once into ``$OMS_HOME``.

Why: the embedded Postgres and ClickHouse listen on loopback, where every user of the host can reach them,
and the demo's simulators stand in for outside systems whose webhooks the OMS trusts by their signature. A
password that ships with the code protects nothing, so each secret is generated at the first start of an
``OMS_HOME``, kept in ``$OMS_HOME/secrets/<name>`` (directory 0700, files 0600: readable only by the user
that runs the OMS) and reused at every later start, so saved URLs, running clients and the simulators'
saved state keep working. ``oms status --secrets`` prints them.

This module also derives what the servers store instead of the password: Postgres's SCRAM-SHA-256 verifier
(so a plain password never appears in a statement the server might log) and ClickHouse's SHA-256 hex.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import os
import secrets
import stat
import uuid
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from urllib.parse import quote, urlsplit

SECRETS_DIR = "secrets"
DIR_MODE = 0o700
FILE_MODE = 0o600

#: the embedded Postgres's superuser, which the OMS connects as (it owns every schema and runs migrations)
POSTGRES_OWNER = "postgres-owner"
#: the dashboards' least-privilege login (``oms_dashboard_app``, member of ``oms_dashboard``)
POSTGRES_DASHBOARD = "postgres-dashboard"
#: the embedded ClickHouse's writer (replication, dbt, Dagster), limited to the analytics databases
CLICKHOUSE_WRITER = "clickhouse-oms"
#: the embedded ClickHouse's read-only user of the dashboards
CLICKHOUSE_DASHBOARD = "clickhouse-dashboard"
#: the simulators' API credentials and the web store's webhook secret (JSON, per simulator)
SIMULATORS = "simulators.json"
#: the password 1C signs in to the exchange with (``/1c_exchange``, docs/onec.md)
ONEC_EXCHANGE = "onec-exchange"


def new_password() -> str:
    """32 URL-safe characters (192 bits): usable in a URL's user-info without escaping."""
    return secrets.token_urlsafe(24)


def secrets_dir(home: Path) -> Path:
    """``$OMS_HOME/secrets``, created (or tightened) to mode 0700."""
    path = Path(home) / SECRETS_DIR
    path.mkdir(parents=True, exist_ok=True)
    if stat.S_IMODE(path.stat().st_mode) != DIR_MODE:
        path.chmod(DIR_MODE)
    return path


def _read_or_create(path: Path, make: Callable[[], str]) -> str:
    """The file's text; created first (mode 0600, atomically: a concurrent start gets the same value) if
    missing. A file left readable by others is tightened to 0600."""
    if not path.exists():
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(make())
            with contextlib.suppress(FileExistsError):  # another process won the race: use its value
                os.link(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
    if stat.S_IMODE(path.stat().st_mode) != FILE_MODE:
        path.chmod(FILE_MODE)
    return path.read_text(encoding="utf-8")


def secret(home: Path, name: str) -> str:
    """The password ``name`` of this ``OMS_HOME`` (generated at first use, then reused)."""
    return _read_or_create(secrets_dir(home) / name, new_password).strip()


def simulator_credentials(home: Path, wanted: Mapping[str, Iterable[str]]) -> dict[str, dict[str, str]]:
    """The demo simulators' credentials, as constructor options per simulator (``simulators.stack``):
    ``wanted`` names each system's secret fields (the channel registry's and the carrier's/WMS's
    declarations, ``oms_ops.services.clients.SECRETS``: API keys, tokens, the web store's access token and
    webhook signing secret, the carrier's client secret). Each is generated once and kept in
    ``$OMS_HOME/secrets/simulators.json``: the simulators' saved state outlives a restart, and so must the
    credentials the OMS holds for them. Account ids are not secrets and keep their defaults."""
    path = secrets_dir(home) / SIMULATORS
    creds: dict[str, dict[str, str]] = json.loads(_read_or_create(path, lambda: "{}\n"))
    missing = {(system, name) for system, names in wanted.items() for name in names} - {
        (system, name) for system, fields in creds.items() for name in fields
    }
    if missing:
        for system, name in sorted(missing):
            creds.setdefault(system, {})[name] = secrets.token_urlsafe(32)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(json.dumps(creds, indent=2, sort_keys=True) + "\n")
        os.replace(tmp, path)
    return creds


def stored_secrets(home: Path) -> dict[str, Path]:
    """Every secret file of this ``OMS_HOME`` by name (none if nothing was generated yet)."""
    path = Path(home) / SECRETS_DIR
    if not path.is_dir():
        return {}
    return {p.name: p for p in sorted(path.iterdir()) if p.is_file() and not p.name.startswith(".")}


def with_credentials(url: str, user: str, password: str) -> str:
    """``url`` with ``user:password@`` as its user-info (replacing any there)."""
    parts = urlsplit(url)
    host = parts.netloc.rsplit("@", 1)[-1]
    return parts._replace(netloc=f"{quote(user, safe='')}:{quote(password, safe='')}@{host}").geturl()


def scram_sha256_verifier(password: str, *, iterations: int = 4096, salt: bytes | None = None) -> str:
    """The verifier Postgres stores for ``password`` (``SCRAM-SHA-256$<iter>:<salt>$<StoredKey>:<ServerKey>``,
    RFC 5802/7677). Sent instead of the password in ``ALTER ROLE … PASSWORD``, Postgres stores it as is, so
    the password never appears in SQL text that the server could log. Generated passwords are ASCII, for
    which SASLprep is the identity."""
    salt = salt if salt is not None else os.urandom(16)
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    stored_key = hashlib.sha256(client_key).digest()
    server_key = hmac.new(salted, b"Server Key", hashlib.sha256).digest()

    def b64(b: bytes) -> str:
        return base64.b64encode(b).decode()

    return f"SCRAM-SHA-256${iterations}:{b64(salt)}${b64(stored_key)}:{b64(server_key)}"
