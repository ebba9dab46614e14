"""The clients of the outside systems, built from one place: the channel registry plus the carrier and WMS.

``ENV_VARS`` is every outside system's ``{field: environment variable}`` — the channels' from their records,
CDEK's and the WMS's from ``oms_ops.connectors.config`` — and :func:`connector_settings` resolves them
(environment over the simulators' manifest). :class:`Clients` builds a system's client on first use.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from oms_ops.channels import registry
from oms_ops.connectors.cdek import CdekClient
from oms_ops.connectors.config import SYSTEM_ENV_VARS, SYSTEM_SECRETS, ConnectorSettings, load_settings
from oms_ops.connectors.wms import WmsClient

#: system → {settings field: environment variable}, for every outside system
ENV_VARS: dict[str, dict[str, str]] = {**registry.env_vars(), **SYSTEM_ENV_VARS}
#: system → the fields that are secrets
SECRETS: dict[str, frozenset[str]] = {
    **{c.system: c.secrets for c in registry.CHANNELS if c.system},
    **SYSTEM_SECRETS,
}
#: system → ``factory(endpoint, **client_kw)``
FACTORIES: dict[str, Callable[..., Any]] = {
    **{c.system: c.client for c in registry.CHANNELS if c.system and c.client},
    "cdek": CdekClient.from_endpoint,
    "wms": WmsClient.from_endpoint,
}


def connector_settings(
    env: Mapping[str, str] | None = None,
    *,
    manifest: Mapping[str, Any] | str | None = None,
    overrides: Mapping[str, Mapping[str, str]] | None = None,
) -> ConnectorSettings:
    """Every outside system's endpoint: the simulators' manifest, then the environment, then ``overrides``."""
    return load_settings(env, env_vars=ENV_VARS, manifest=manifest, overrides=overrides)


class Clients:
    """External clients built on first use from the connector settings (closed by :meth:`close`)."""

    def __init__(self, settings: ConnectorSettings, **client_kw: Any) -> None:
        self.settings = settings
        self.client_kw = client_kw
        self._made: dict[str, Any] = {}

    def get(self, system: str):
        """The client of ``system``; ``NotConfigured`` when neither the environment nor a manifest names it."""
        if system not in self._made:
            factory = FACTORIES[system]
            self._made[system] = factory(self.settings.endpoint(system), **self.client_kw)
        return self._made[system]

    def put(self, system: str, client: Any) -> None:
        self._made[system] = client

    def close(self) -> None:
        for c in self._made.values():
            c.close()
        self._made.clear()

    def __enter__(self) -> Clients:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
