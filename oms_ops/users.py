"""Dashboard users: roles and scrypt-hashed passwords kept in a YAML file (configuration, not code), and the
server-side record of failed sign-ins that throttles password guessing.

The file is ``$OMS_HOME/users.yaml`` unless ``OMS_USERS_FILE`` names another. Users are created with
``oms users add NAME --role ROLE`` (``oms demo`` creates its demo logins itself): the dashboards never create
an account, and refuse to start while the file holds no admin (:func:`missing_admin_message`), because a
set-up form open to whoever reaches the page first would hand the admin role to that visitor. Passwords are
never stored: only ``scrypt$n$r$p$salt$hash`` strings, compared in constant time.

Failed sign-ins are counted per user name in ``<users file>.lockout.json`` next to the users file — on the
server, so neither a reload nor a new browser session resets them — and a name with
:data:`MAX_FAILURES` failures in a row is refused for :data:`LOCKOUT_BASE_S` seconds, doubling with every
further failure up to :data:`LOCKOUT_MAX_S` (:func:`sign_in`). The file is rewritten atomically under an
exclusive ``flock``, so concurrent Streamlit sessions (threads) and processes count every attempt.
"""

from __future__ import annotations

import base64
import fcntl
import hashlib
import hmac
import json
import os
import re
import secrets
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from oms_ops.platform.settings import load_settings

ROLES = ("ops", "manager", "admin")
_N, _R, _P = 2**14, 8, 1
_USERNAME = re.compile(r"^[a-z][a-z0-9_.-]{1,31}$")

#: failed sign-ins of one user name in a row before it is locked
MAX_FAILURES = 5
#: the first lockout (seconds); it doubles with every further failure
LOCKOUT_BASE_S = 30.0
#: the longest lockout (seconds)
LOCKOUT_MAX_S = 3600.0
#: a name's failures are forgotten this long after its last failure (keeps the file small)
FAILURE_MEMORY_S = 24 * 3600.0
#: the one-line fix shown when no admin exists
ADD_ADMIN_HINT = "oms users add <name> --role admin"


class UserError(ValueError):
    """Invalid user data; the message names the field."""


class LoginLocked(Exception):
    """Too many failed sign-ins for this user name: refused without checking the password."""

    def __init__(self, retry_after_s: float) -> None:
        super().__init__(f"locked for {retry_after_s:.0f} s")
        self.retry_after_s = retry_after_s


@dataclass(frozen=True)
class User:
    username: str
    role: str
    password_hash: str
    display_name: str = ""

    @property
    def masked_pii(self) -> bool:
        """Managers read KPIs and need no customer names, phones or addresses."""
        return self.role == "manager"


def users_file() -> Path:
    """``OMS_USERS_FILE``, else ``$OMS_HOME/users.yaml``."""
    settings = load_settings()
    return settings.users_file or settings.home / "users.yaml"


def lockout_file(path: Path | None = None) -> Path:
    """The failed-sign-in record of a users file: ``users.yaml`` → ``users.lockout.json`` beside it."""
    path = path or users_file()
    return path.with_name(f"{path.stem}.lockout.json")


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive ``flock`` on ``<path>.lock`` for a read-modify-write of ``path`` (threads and processes)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path.with_name(path.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def _write_atomically(path: Path, text: str) -> None:
    """Write a private file (mode 0600) so that readers see the old or the new text, never half of it."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def hash_password(password: str) -> str:
    if len(password) < 8:
        raise UserError("password: must be at least 8 characters")
    try:
        password.encode()
    except UnicodeEncodeError:
        raise UserError("password: contains characters that are not valid text") from None
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=_N, r=_R, p=_P, dklen=32)
    return f"scrypt${_N}${_R}${_P}${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


def verify_password(password: str, stored: str) -> bool:
    try:
        scheme, n, r, p, salt_b64, hash_b64 = stored.split("$")
        if scheme != "scrypt":
            return False
        expected = base64.b64decode(hash_b64)
        digest = hashlib.scrypt(
            password.encode(),
            salt=base64.b64decode(salt_b64),
            n=int(n),
            r=int(r),
            p=int(p),
            dklen=len(expected),
        )
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(digest, expected)


def load_users(path: Path | None = None) -> dict[str, User]:
    path = path or users_file()
    if not path.exists():
        return {}
    raw = yaml.safe_load(path.read_text()) or {}
    users: dict[str, User] = {}
    for i, entry in enumerate(raw.get("users") or []):
        where = f"{path.name}: users[{i}]"
        if not isinstance(entry, dict):
            raise UserError(f"{where}: expected a mapping")
        name, role, ph = entry.get("username"), entry.get("role"), entry.get("password_hash")
        if not isinstance(name, str) or not _USERNAME.match(name):
            raise UserError(f"{where}.username: invalid {name!r}")
        if role not in ROLES:
            raise UserError(f"{where}.role: {role!r} is not one of {', '.join(ROLES)}")
        if not isinstance(ph, str) or not ph.startswith("scrypt$"):
            raise UserError(f"{where}.password_hash: not a scrypt hash")
        users[name] = User(name, role, ph, entry.get("display_name") or "")
    return users


def save_users(users: dict[str, User], path: Path | None = None) -> None:
    path = path or users_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {
        "users": [
            {
                "username": u.username,
                "role": u.role,
                "display_name": u.display_name,
                "password_hash": u.password_hash,
            }
            for u in users.values()
        ]
    }
    _write_atomically(path, yaml.safe_dump(data, sort_keys=False, allow_unicode=True))


def add_user(
    username: str, role: str, password: str, *, display_name: str = "", path: Path | None = None
) -> User:
    """Add or replace a user. A new password also lifts the name's lockout (the way an admin unlocks it)."""
    if not _USERNAME.match(username or ""):
        raise UserError("username: 2-32 characters, lower-case letters, digits, '.', '_' or '-'")
    if role not in ROLES:
        raise UserError(f"role: {role!r} is not one of {', '.join(ROLES)}")
    path = path or users_file()
    user = User(username, role, hash_password(password), display_name)
    with _locked(path):
        users = load_users(path)
        users[username] = user
        save_users(users, path)
    clear_failures(username, path)
    return user


def authenticate(username: str, password: str, path: Path | None = None) -> User | None:
    """The user if the password is theirs (no throttling: the dashboards sign in with :func:`sign_in`)."""
    user = load_users(path).get(username)
    if user is None:
        # spend the same time as a real check so usernames cannot be probed by timing
        verify_password(
            password, "scrypt$16384$8$1$AAAAAAAAAAAAAAAAAAAAAA==$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="
        )
        return None
    return user if verify_password(password, user.password_hash) else None


def needs_first_admin(path: Path | None = None) -> bool:
    return not any(u.role == "admin" for u in load_users(path).values())


def missing_admin_message(path: Path | None = None) -> str | None:
    """Why the dashboards must not start — no users file, no admin in it, or an invalid file — as one line
    naming the fix; None when an admin exists."""
    path = path or users_file()
    try:
        users = load_users(path)
    except (UserError, yaml.YAMLError, OSError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return (
            f"The users file {path} cannot be read ({first}): fix it or recreate it with `{ADD_ADMIN_HINT}`."
        )
    if not users:
        return (
            f"No dashboard users yet ({path} is missing or empty): create an admin with `{ADD_ADMIN_HINT}`."
        )
    if not any(u.role == "admin" for u in users.values()):
        return f"No admin in {path}: create one with `{ADD_ADMIN_HINT}`."
    return None


# -- throttled sign-in ------------------------------------------------------------------------------------------


def _name_key(username: str) -> str:
    """The record's key of a typed name: a hash, so that the file never holds what people typed (a password
    typed into the name box) and unknown names cost no more room than known ones."""
    return hashlib.sha256(username.strip().lower().encode("utf-8", "surrogatepass")).hexdigest()[:32]


def _read_failures(path: Path, now: float) -> dict[str, dict[str, Any]]:
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError):
        raw = {}  # a damaged record is started afresh rather than locking everyone out
    if not isinstance(raw, dict):
        return {}
    out: dict[str, dict[str, Any]] = {}
    for key, entry in raw.items():
        if not isinstance(entry, dict) or not isinstance(entry.get("failures"), int):
            continue
        last, until = entry.get("last_failure_at"), entry.get("locked_until")
        if not isinstance(last, int | float) or not isinstance(until, int | float):
            continue
        if now - last < FAILURE_MEMORY_S or until > now:
            out[key] = {"failures": entry["failures"], "last_failure_at": last, "locked_until": until}
    return out


def lockout_seconds(failures: int) -> float:
    """How long a name is refused after ``failures`` failed sign-ins in a row: none below
    :data:`MAX_FAILURES`, then 30 s, 60 s, 120 s … up to :data:`LOCKOUT_MAX_S`."""
    if failures < MAX_FAILURES:
        return 0.0
    return min(LOCKOUT_BASE_S * 2 ** (failures - MAX_FAILURES), LOCKOUT_MAX_S)


def locked_for(username: str, path: Path | None = None, *, now: float | None = None) -> float:
    """Seconds the name is still locked (0 when it may try)."""
    now = time.time() if now is None else now
    entry = _read_failures(lockout_file(path), now).get(_name_key(username))
    return max(0.0, entry["locked_until"] - now) if entry else 0.0


def clear_failures(username: str, path: Path | None = None, *, now: float | None = None) -> None:
    """Forget the name's failed sign-ins (after a success, or when its password is set anew)."""
    record = lockout_file(path)
    if not record.exists():
        return
    with _locked(record):
        failures = _read_failures(record, time.time() if now is None else now)
        failures.pop(_name_key(username), None)
        _write_atomically(record, json.dumps(failures))


def sign_in(
    username: str, password: str, path: Path | None = None, *, now: float | None = None
) -> User | None:
    """Check a sign-in, throttled per user name: raises :class:`LoginLocked` while the name is locked (the
    password is not even checked), returns the user or None. The attempt is counted *before* the password is
    checked, under the record's lock, so parallel guesses cannot slip through between check and count; a
    success then clears the name's record."""
    path = path or users_file()
    record = lockout_file(path)
    key = _name_key(username)
    with _locked(record):
        now = time.time() if now is None else now
        failures = _read_failures(record, now)
        entry = failures.get(key) or {"failures": 0, "locked_until": 0}
        remaining = entry["locked_until"] - now
        if remaining > 0:
            raise LoginLocked(remaining)
        entry["failures"] += 1
        entry["last_failure_at"] = now
        lock = lockout_seconds(entry["failures"])
        entry["locked_until"] = now + lock if lock else 0
        failures[key] = entry
        _write_atomically(record, json.dumps(failures))
    user = authenticate(username, password, path)
    if user is not None:
        clear_failures(username, path, now=now)
    return user


DEMO_USERS = {
    "admin": ("admin", "admin-demo"),
    "ops": ("ops", "ops-demo"),
    "manager": ("manager", "manager-demo"),
}


def ensure_demo_users(path: Path | None = None) -> dict[str, tuple[str, str]]:
    """Create the demo logins (only when no users exist yet). Returns {username: (role, password)} created."""
    if load_users(path):
        return {}
    for username, (role, password) in DEMO_USERS.items():
        add_user(username, role, password, display_name=username.title(), path=path)
    return dict(DEMO_USERS)
