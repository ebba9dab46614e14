"""Runtime settings for the platform (where state lives, which servers to use).

Everything comes from the environment so that secrets never live in the code and the same code runs on
embedded defaults (a laptop, CI) or on real servers (production) by configuration alone. Validation
happens once, at start-up, and names the variable that is wrong.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit


class ConfigError(RuntimeError):
    """Invalid configuration: the message names the variable and the cause (one line)."""


def _check_url(var: str, value: str, schemes: tuple[str, ...]) -> str:
    parts = urlsplit(value)
    if parts.scheme not in schemes:
        raise ConfigError(
            f"{var}: unsupported scheme {parts.scheme!r} in {redact(value)!r} (expected {' or '.join(schemes)})"
        )
    if not parts.hostname and "host=" not in (parts.query or ""):
        raise ConfigError(f"{var}: no host in {redact(value)!r}")
    try:
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError as exc:
        raise ConfigError(f"{var}: bad port in {redact(value)!r}: {exc}") from None
    return value


def redact(url: str) -> str:
    """The URL with any password replaced, for messages and logs."""
    parts = urlsplit(url)
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
        return parts._replace(netloc=netloc).geturl()
    return url


def _int_env(env: dict[str, str], var: str, default: int) -> int:
    raw = env.get(var)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{var}: expected an integer port, got {raw!r}") from None
    if not 0 <= value <= 65535:
        raise ConfigError(f"{var}: port {value} out of range 0..65535")
    return value


@dataclass(frozen=True)
class Settings:
    """Validated settings. ``database_url``/``clickhouse_url`` of ``None`` mean "use the embedded server"."""

    home: Path
    database_url: str | None
    clickhouse_url: str | None
    pg_port: int
    clickhouse_port: int
    dagster_port: int
    streamlit_port: int

    @property
    def embedded_postgres(self) -> bool:
        return self.database_url is None

    @property
    def embedded_clickhouse(self) -> bool:
        return self.clickhouse_url is None

    @property
    def run_dir(self) -> Path:
        return self.home / "run"

    @property
    def log_dir(self) -> Path:
        return self.home / "logs"

    @property
    def pg_data_dir(self) -> Path:
        return self.home / "postgres"

    @property
    def clickhouse_data_dir(self) -> Path:
        return self.home / "clickhouse"

    @property
    def dagster_home(self) -> Path:
        return self.home / "dagster"


def load_settings(env: dict[str, str] | None = None) -> Settings:
    """Read and validate settings from the environment (``env`` overrides ``os.environ`` for tests)."""
    env = dict(os.environ if env is None else env)
    home = Path(env.get("OMS_HOME") or ".oms").expanduser().resolve()
    db_url = env.get("OMS_DATABASE_URL") or None
    ch_url = env.get("OMS_CLICKHOUSE_URL") or None
    if db_url:
        _check_url("OMS_DATABASE_URL", db_url, ("postgresql", "postgres"))
    if ch_url:
        _check_url("OMS_CLICKHOUSE_URL", ch_url, ("http", "https"))
    return Settings(
        home=home,
        database_url=db_url,
        clickhouse_url=ch_url,
        pg_port=_int_env(env, "OMS_PG_PORT", 0),
        clickhouse_port=_int_env(env, "OMS_CLICKHOUSE_PORT", 0),
        dagster_port=_int_env(env, "OMS_DAGSTER_PORT", 3000),
        streamlit_port=_int_env(env, "OMS_STREAMLIT_PORT", 8501),
    )
