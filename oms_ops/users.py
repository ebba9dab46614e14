"""Dashboard users: roles and scrypt-hashed passwords kept in a YAML file (configuration, not code).

The file is ``$OMS_HOME/users.yaml`` unless ``OMS_USERS_FILE`` names another. When it is missing or holds no
admin, the dashboard offers a one-time admin set-up form. Passwords are never stored: only
``scrypt$n$r$p$salt$hash`` strings, compared in constant time.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
import secrets
from dataclasses import dataclass
from pathlib import Path

import yaml

from oms_ops.platform.settings import load_settings

ROLES = ("ops", "manager", "admin")
_N, _R, _P = 2**14, 8, 1
_USERNAME = re.compile(r"^[a-z][a-z0-9_.-]{1,31}$")


class UserError(ValueError):
    """Invalid user data; the message names the field."""


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


def hash_password(password: str) -> str:
    if len(password) < 8:
        raise UserError("password: must be at least 8 characters")
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
    tmp = path.with_suffix(".tmp")
    tmp.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True))
    os.chmod(tmp, 0o600)
    tmp.replace(path)


def add_user(
    username: str, role: str, password: str, *, display_name: str = "", path: Path | None = None
) -> User:
    if not _USERNAME.match(username or ""):
        raise UserError("username: 2-32 characters, lower-case letters, digits, '.', '_' or '-'")
    if role not in ROLES:
        raise UserError(f"role: {role!r} is not one of {', '.join(ROLES)}")
    users = load_users(path)
    user = User(username, role, hash_password(password), display_name)
    users[username] = user
    save_users(users, path)
    return user


def authenticate(username: str, password: str, path: Path | None = None) -> User | None:
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
