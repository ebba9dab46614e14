"""The whole environment as one typed settings model: the platform's variables plus every outside system's
endpoint variables, the latter generated from the channel registry and the carrier/WMS declarations.

``oms up``/``oms demo`` validate it before anything starts, so a wrong value anywhere stops start-up with one
line naming the variable (``OMS_OZON_URL: …``). The Dagster ``channels`` resource is built from the same
declaration (``pipelines/defs/channels/resources.py``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import Field, create_model, field_validator

from oms_ops.connectors.config import ConnectorSettings
from oms_ops.platform.settings import Settings, load_model
from oms_ops.services.clients import ENV_VARS, connector_settings

#: model field → (system, setting)
ENDPOINT_FIELDS: dict[str, tuple[str, str]] = {
    f"{system}_{key}": (system, key) for system, fields in ENV_VARS.items() for key in fields
}


def _http_url(value: str | None) -> str | None:
    if value and not value.startswith(("http://", "https://")):
        raise ValueError(f"expected an http(s) URL, got {value!r}")
    return value or None


#: systems whose ``base_url`` is not HTTP: the mail server is reached over SMTP
NON_HTTP_SYSTEMS = frozenset({"smtp"})


def _smtp_url(value: str | None) -> str | None:
    if value and not value.startswith(("smtp://", "smtps://")):
        raise ValueError(f"expected an smtp:// or smtps:// URL, got {value!r}")
    return value or None


OmsSettings = create_model(
    "OmsSettings",
    __base__=Settings,
    __module__=__name__,
    __validators__={
        "_endpoint_urls": field_validator(
            *[
                name
                for name, (system, key) in ENDPOINT_FIELDS.items()
                if key == "base_url" and system not in NON_HTTP_SYSTEMS
            ],
            mode="before",
        )(_http_url),
        "_smtp_urls": field_validator(
            *[
                name
                for name, (system, key) in ENDPOINT_FIELDS.items()
                if key == "base_url" and system in NON_HTTP_SYSTEMS
            ],
            mode="before",
        )(_smtp_url),
    },
    **{
        name: (str | None, Field(None, validation_alias=ENV_VARS[system][key]))
        for name, (system, key) in ENDPOINT_FIELDS.items()
    },
)
OmsSettings.__doc__ = "Every variable of the OMS, platform and outside systems, validated in one place."


def load_oms_settings(env: Mapping[str, str] | None = None) -> Any:
    """The whole environment validated (``ConfigError`` naming each wrong variable)."""
    return load_model(OmsSettings, env)


def connectors_of(settings: Any) -> ConnectorSettings:
    """The outside systems' endpoints: the simulators' manifest overridden by the variables that are set."""
    overrides: dict[str, dict[str, str]] = {}
    for name, (system, key) in ENDPOINT_FIELDS.items():
        value = getattr(settings, name)
        if value:
            overrides.setdefault(system, {})[key] = value
    env = {"OMS_HOME": str(settings.home)}
    if settings.simulators_manifest:
        env["OMS_SIMULATORS_MANIFEST"] = str(settings.simulators_manifest)
    return connector_settings(env, overrides=overrides)
