"""Runtime settings for the platform (where state lives, which servers to use).

Everything comes from the environment so that secrets never live in the code and the same code runs on
embedded defaults (a laptop, CI) or on real servers (production) by configuration alone. Validation
happens once, at start-up, and names the variable that is wrong.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar
from urllib.parse import urlsplit

from pydantic import BaseModel, Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class ConfigError(RuntimeError):
    """Invalid configuration: the message names the variable and the cause (one line)."""


def _check_url(value: str, schemes: tuple[str, ...]) -> str:
    """A URL of one of ``schemes`` with a host and a numeric port (raises ValueError: inside a model the
    variable is named by :func:`config_error`)."""
    parts = urlsplit(value)
    if parts.scheme not in schemes:
        raise ValueError(
            f"unsupported scheme {parts.scheme!r} in {redact(value)!r} (expected {' or '.join(schemes)})"
        )
    if not parts.hostname and "host=" not in (parts.query or ""):
        raise ValueError(f"no host in {redact(value)!r}")
    try:
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError as exc:
        raise ValueError(f"bad port in {redact(value)!r}: {exc}") from None
    return value


S = TypeVar("S", bound=BaseModel)


def redact(url: str) -> str:
    """The URL with any password replaced, for messages and logs."""
    parts = urlsplit(url)
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
        return parts._replace(netloc=netloc).geturl()
    return url


Port = Annotated[int, Field(ge=0, le=65535)]


def _blank_is_unset(value: Any) -> Any:
    """An empty variable means "not set" (``OMS_DATABASE_URL=`` keeps the embedded server)."""
    return None if value == "" else value


class Settings(BaseSettings):
    """Every platform variable, validated once at start-up. ``database_url``/``clickhouse_url`` of ``None``
    mean "use the embedded server". The outside systems' endpoints are added to this model by
    ``oms_ops.services.settings`` from the channel registry, so the whole environment is one model."""

    model_config = SettingsConfigDict(frozen=True, extra="ignore", case_sensitive=True, validate_default=True)

    @classmethod
    def settings_customise_sources(cls, settings_cls, init_settings, **_sources):  # noqa: ANN001
        """Values come from the mapping :func:`load_model` is given (the process environment by default), so
        a test's explicit environment is the whole environment."""
        return (init_settings,)

    home: Path = Field(Path(".oms"), validation_alias="OMS_HOME")
    database_url: str | None = Field(None, validation_alias="OMS_DATABASE_URL")
    clickhouse_url: str | None = Field(None, validation_alias="OMS_CLICKHOUSE_URL")
    pg_port: Port = Field(0, validation_alias="OMS_PG_PORT")
    clickhouse_port: Port = Field(0, validation_alias="OMS_CLICKHOUSE_PORT")
    dagster_port: Port = Field(3000, validation_alias="OMS_DAGSTER_PORT")
    streamlit_port: Port = Field(8501, validation_alias="OMS_STREAMLIT_PORT")
    api_port: Port = Field(8600, validation_alias="OMS_API_PORT")
    dagster_database_url: str | None = Field(None, validation_alias="OMS_DAGSTER_DATABASE_URL")
    dashboard_database_url: str | None = Field(None, validation_alias="OMS_DASHBOARD_DATABASE_URL")
    users_file: Path | None = Field(None, validation_alias="OMS_USERS_FILE")
    business_config: Path | None = Field(None, validation_alias="OMS_BUSINESS_CONFIG")
    simulators_manifest: Path | None = Field(None, validation_alias="OMS_SIMULATORS_MANIFEST")
    demo_rate: float = Field(3.0, gt=0, le=10_000, validation_alias="OMS_DEMO_RATE")
    demo_seed: int = Field(42, validation_alias="OMS_DEMO_SEED")
    demo_transit_scale: float = Field(1 / 1440, gt=0, le=1, validation_alias="OMS_DEMO_TRANSIT_SCALE")
    #: demand over the clock in the demo: the same at every hour (a newcomer at 05:15 sees as much as one at
    #: 20:15), or the Moscow day's curve with shops open 10–22 (simulators.generator.PROFILES)
    demo_profile: Literal["steady", "daily"] = Field("steady", validation_alias="OMS_DEMO_PROFILE")

    _blank = field_validator(
        "database_url",
        "clickhouse_url",
        "dagster_database_url",
        "dashboard_database_url",
        "users_file",
        "business_config",
        "simulators_manifest",
        mode="before",
    )(_blank_is_unset)

    @field_validator("home", mode="before")
    @classmethod
    def _home(cls, value: Any) -> Any:
        return Path(value or ".oms").expanduser().resolve()

    @field_validator("database_url", "dagster_database_url", "dashboard_database_url")
    @classmethod
    def _postgres_url(cls, value: str | None) -> str | None:
        return value and _check_url(value, ("postgresql", "postgres", "postgresql+psycopg2"))

    @field_validator("clickhouse_url")
    @classmethod
    def _clickhouse_url(cls, value: str | None) -> str | None:
        return value and _check_url(value, ("http", "https"))

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


def config_error(exc: ValidationError, model: type[BaseModel]) -> ConfigError:
    """One line naming each wrong variable and why, from a settings model's validation error."""
    problems = []
    for err in exc.errors(include_url=False):
        name = str(err["loc"][0]) if err["loc"] else "settings"
        field = model.model_fields.get(name)
        var = (
            field.validation_alias if field is not None and isinstance(field.validation_alias, str) else name
        )
        given = err.get("input")
        # never echo a URL (it may carry a password): the URL checks name the redacted URL themselves
        shown = f", got {given!r}" if isinstance(given, str | int | float) and "://" not in str(given) else ""
        problems.append(f"{var}: {err['msg'].removeprefix('Value error, ')}{shown}")
    return ConfigError("; ".join(problems))


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Read and validate settings from the environment (``env`` replaces ``os.environ`` for tests);
    a wrong value raises :class:`ConfigError` naming the variable."""
    return load_model(Settings, env)


def load_model(model: type[S], env: Mapping[str, str] | None = None) -> S:
    """Validate ``model`` (a Settings subclass) from ``env`` (default: the process environment)."""
    source = dict(os.environ if env is None else env)
    try:
        return model.model_validate({k: v for k, v in source.items() if k.startswith("OMS_")})
    except ValidationError as exc:
        raise config_error(exc, model) from None
