"""Where each external system is and how to authenticate: from the simulators' manifest and/or the environment.

Pointing a connector at the real host is a configuration change: every base URL and credential can be set
per system with an ``OMS_<SYSTEM>_*`` variable, which overrides what the simulators' manifest
(``OMS_SIMULATORS_MANIFEST``, default ``$OMS_HOME/simulators/simulators.json``) says. With neither, the
system is "not configured" and its pipeline steps skip with a message instead of failing.

The variables of the sales channels are declared by each channel's record (``Channel.env``); the carrier's
and the WMS's are here (:data:`SYSTEM_ENV_VARS`). ``oms_ops.services.settings`` puts both together.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

#: the outside systems that are not sales channels: system → {credential field: environment variable}
SYSTEM_ENV_VARS: dict[str, dict[str, str]] = {
    "cdek": {
        "base_url": "OMS_CDEK_URL",
        "client_id": "OMS_CDEK_CLIENT_ID",
        "client_secret": "OMS_CDEK_CLIENT_SECRET",
    },
    "wms": {"base_url": "OMS_WMS_URL", "api_key": "OMS_WMS_API_KEY"},
    # customer notifications (oms_ops/notifications.py): an SMS.ru-like gateway and an SMTP server
    "sms": {"base_url": "OMS_SMS_URL", "api_id": "OMS_SMS_API_ID", "sender": "OMS_SMS_FROM"},
    "smtp": {
        "base_url": "OMS_SMTP_URL",  # smtp://host:587 (STARTTLS when offered) or smtps://host:465
        "username": "OMS_SMTP_USERNAME",
        "password": "OMS_SMTP_PASSWORD",
        "sender": "OMS_SMTP_FROM",
    },
    # the payment provider (oms_ops/connectors/yookassa.py): payment links, refunds; return_url is where the
    # payment page sends the customer back to
    "yookassa": {
        "base_url": "OMS_YOOKASSA_URL",  # https://api.yookassa.ru (the connector adds /v3)
        "shop_id": "OMS_YOOKASSA_SHOP_ID",
        "secret_key": "OMS_YOOKASSA_SECRET_KEY",
        "return_url": "OMS_YOOKASSA_RETURN_URL",
    },
}
SYSTEM_SECRETS: dict[str, frozenset[str]] = {
    "cdek": frozenset({"client_secret"}),
    "wms": frozenset({"api_key"}),
    "sms": frozenset({"api_id"}),
    "smtp": frozenset({"password"}),
    "yookassa": frozenset({"secret_key"}),
}
MANIFEST_VAR = "OMS_SIMULATORS_MANIFEST"


class NotConfigured(RuntimeError):
    """A system has no base URL / credentials: neither the environment nor a manifest names it."""


@dataclass(frozen=True)
class Endpoint:
    """One external system: base URL (or drop folder) and credentials."""

    system: str
    base_url: str = ""
    credentials: Mapping[str, str] = field(default_factory=dict)

    def get(self, key: str, default: str = "") -> str:
        value = self.credentials.get(key)
        return default if value in (None, "") else str(value)


@dataclass(frozen=True)
class ConnectorSettings:
    endpoints: Mapping[str, Endpoint] = field(default_factory=dict)
    manifest: Mapping[str, Any] | None = None
    #: system → {field: variable}, for the hint in "not configured"
    env_vars: Mapping[str, Mapping[str, str]] = field(default_factory=lambda: SYSTEM_ENV_VARS)

    def endpoint(self, system: str) -> Endpoint:
        ep = self.endpoints.get(system)
        if ep is None or not (ep.base_url or ep.credentials.get("drop_dir")):
            hint = ", ".join(self.env_vars.get(system, {}).values())
            raise NotConfigured(f"{system}: not configured (set {hint} or {MANIFEST_VAR})")
        return ep

    def configured(self, system: str) -> bool:
        try:
            self.endpoint(system)
        except NotConfigured:
            return False
        return True

    @property
    def seed(self) -> int | None:
        return (self.manifest or {}).get("seed")

    @property
    def n_skus(self) -> int | None:
        return ((self.manifest or {}).get("catalog") or {}).get("n_skus")

    def with_endpoint(self, system: str, **values: Any) -> ConnectorSettings:
        ep = self.endpoints.get(system, Endpoint(system))
        base = values.pop("base_url", ep.base_url)
        creds = {**ep.credentials, **values}
        return replace(self, endpoints={**self.endpoints, system: Endpoint(system, base, creds)})


def load_manifest(path: str | Path) -> dict:
    """Read ``simulators.json`` (written atomically by ``python -m simulators``)."""
    return json.loads(Path(path).read_text(encoding="utf-8"))


def settings_from_manifest(manifest: Mapping[str, Any]) -> ConnectorSettings:
    endpoints = {}
    for system, info in (manifest.get("simulators") or {}).items():
        creds = dict(info.get("credentials") or {})
        endpoints[system] = Endpoint(system, info.get("base_url", ""), creds)
    return ConnectorSettings(endpoints, dict(manifest))


def default_manifest_path(env: Mapping[str, str] | None = None) -> Path:
    env = os.environ if env is None else env
    home = Path(env.get("OMS_HOME") or ".oms").expanduser()
    return home / "simulators" / "simulators.json"


def load_settings(
    env: Mapping[str, str] | None = None,
    *,
    env_vars: Mapping[str, Mapping[str, str]] = SYSTEM_ENV_VARS,
    manifest: Mapping[str, Any] | str | Path | None = None,
    overrides: Mapping[str, Mapping[str, str]] | None = None,
) -> ConnectorSettings:
    """Settings from a manifest (explicit, ``OMS_SIMULATORS_MANIFEST`` or the default path, if present),
    then each variable of ``env_vars`` set in ``env``, then ``overrides`` (resource config)."""
    env = dict(os.environ if env is None else env)
    data: Mapping[str, Any] | None = None
    if isinstance(manifest, Mapping):
        data = manifest
    else:
        path = Path(manifest) if manifest else Path(env[MANIFEST_VAR]) if env.get(MANIFEST_VAR) else None
        if path is None:
            candidate = default_manifest_path(env)
            path = candidate if candidate.exists() else None
        if path is not None and path.exists():  # the runner deletes it when the simulators stop
            data = load_manifest(path)
    settings = settings_from_manifest(data) if data else ConnectorSettings()
    settings = replace(settings, env_vars=env_vars)
    for system, fields in env_vars.items():
        values = {key: env[var] for key, var in fields.items() if env.get(var)}
        if values:
            settings = settings.with_endpoint(system, **values)
    for system, values in (overrides or {}).items():
        clean = {k: v for k, v in values.items() if v not in (None, "")}
        if clean:
            settings = settings.with_endpoint(system, **clean)
    return settings
