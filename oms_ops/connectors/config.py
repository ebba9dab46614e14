"""Where each external system is and how to authenticate: from the simulators' manifest and/or the environment.

Pointing a connector at the real host is a configuration change: every base URL and credential can be set
per channel with an ``OMS_<SYSTEM>_*`` variable, which overrides what the simulators' manifest
(``OMS_SIMULATORS_MANIFEST``, default ``$OMS_HOME/simulators/simulators.json``) says. With neither, the
system is "not configured" and its pipeline steps skip with a message instead of failing.

| system | variables |
|---|---|
| Ozon | ``OMS_OZON_URL``, ``OMS_OZON_CLIENT_ID``, ``OMS_OZON_API_KEY`` |
| Wildberries | ``OMS_WB_URL``, ``OMS_WB_TOKEN`` |
| web store (Shopify) | ``OMS_SHOPIFY_URL``, ``OMS_SHOPIFY_ACCESS_TOKEN``, ``OMS_SHOPIFY_API_VERSION``, ``OMS_SHOPIFY_WEBHOOK_SECRET`` |
| CDEK | ``OMS_CDEK_URL``, ``OMS_CDEK_CLIENT_ID``, ``OMS_CDEK_CLIENT_SECRET`` |
| WMS | ``OMS_WMS_URL``, ``OMS_WMS_API_KEY`` |
| POS drop folder | ``OMS_POS_DROP_DIR`` |
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

#: system → {credential field: environment variable}
ENV_VARS: dict[str, dict[str, str]] = {
    "ozon": {"base_url": "OMS_OZON_URL", "client_id": "OMS_OZON_CLIENT_ID", "api_key": "OMS_OZON_API_KEY"},
    "wildberries": {"base_url": "OMS_WB_URL", "token": "OMS_WB_TOKEN"},
    "shopify": {
        "base_url": "OMS_SHOPIFY_URL",
        "access_token": "OMS_SHOPIFY_ACCESS_TOKEN",
        "api_version": "OMS_SHOPIFY_API_VERSION",
        "webhook_secret": "OMS_SHOPIFY_WEBHOOK_SECRET",
    },
    "cdek": {
        "base_url": "OMS_CDEK_URL",
        "client_id": "OMS_CDEK_CLIENT_ID",
        "client_secret": "OMS_CDEK_CLIENT_SECRET",
    },
    "wms": {"base_url": "OMS_WMS_URL", "api_key": "OMS_WMS_API_KEY"},
    "pos": {"drop_dir": "OMS_POS_DROP_DIR"},
}
MANIFEST_VAR = "OMS_SIMULATORS_MANIFEST"
SYSTEMS = tuple(ENV_VARS)


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

    def endpoint(self, system: str) -> Endpoint:
        ep = self.endpoints.get(system)
        if ep is None or not (ep.base_url or ep.credentials.get("drop_dir")):
            hint = ", ".join(ENV_VARS.get(system, {}).values())
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
    manifest: Mapping[str, Any] | str | Path | None = None,
    overrides: Mapping[str, Mapping[str, str]] | None = None,
) -> ConnectorSettings:
    """Settings from a manifest (explicit, ``OMS_SIMULATORS_MANIFEST`` or the default path, if present),
    then each ``OMS_<SYSTEM>_*`` variable set in ``env``, then ``overrides`` (resource config)."""
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
    for system, fields in ENV_VARS.items():
        values = {key: env[var] for key, var in fields.items() if env.get(var)}
        if values:
            settings = settings.with_endpoint(system, **values)
    for system, values in (overrides or {}).items():
        clean = {k: v for k, v in values.items() if v not in (None, "")}
        if clean:
            settings = settings.with_endpoint(system, **clean)
    return settings
