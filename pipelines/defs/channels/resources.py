"""The ``channels`` resource: where the external systems are and how to talk to them.

Its endpoint fields are generated from the same declaration the rest of the OMS uses — every channel
record's ``env`` plus the carrier's and the WMS's (``oms_ops.services.clients.ENV_VARS``) — one field
``<system>_<setting>`` per variable. ``channel_resources`` binds every variable that is set as an ``EnvVar``,
so the Dagster UI shows where a value comes from and secrets never appear in code or run config. Unset fields
fall back to the simulators' manifest (``OMS_SIMULATORS_MANIFEST`` or ``$OMS_HOME/simulators/simulators.json``):
pointing at the real Ozon, Wildberries, web store, CDEK or WMS is setting that system's variables — no code
changes.
"""

import os
from contextlib import contextmanager
from functools import lru_cache

import dagster as dg
from pydantic import create_model

from oms_ops.business_config import DEFAULT_PATH, BusinessConfig, load_business_config
from oms_ops.connectors.http import RetryPolicy
from oms_ops.services.clients import ENV_VARS, Clients, connector_settings
from oms_ops.services.outbox import DEFAULT_FALLBACK_PHONE
from oms_ops.services.settings import ENDPOINT_FIELDS, load_oms_settings

#: resource field → environment variable: the endpoint fields (those of the settings model) and the
#: resource's own
FIELD_ENV: dict[str, str] = {
    **{name: ENV_VARS[system][key] for name, (system, key) in ENDPOINT_FIELDS.items()},
    "manifest_path": "OMS_SIMULATORS_MANIFEST",
    "business_config_path": "OMS_BUSINESS_CONFIG",
    "cdek_fallback_phone": "OMS_CDEK_FALLBACK_PHONE",
}


@lru_cache(maxsize=8)
def _config(path: str, mtime: float) -> BusinessConfig:
    return load_business_config(path)


class _ConnectorsBase(dg.ConfigurableResource):
    """Base URLs, credentials and retry behaviour of the channel, carrier and WMS connectors."""

    manifest_path: str = ""
    business_config_path: str = ""
    cdek_fallback_phone: str = DEFAULT_FALLBACK_PHONE
    retry_attempts: int = 6
    backoff_base_seconds: float = 0.5
    read_timeout_seconds: float = 30.0
    #: pace requests to the documented API limits (off: the server's 429s alone slow us down)
    pace_requests: bool = True

    def settings(self):
        overrides: dict[str, dict[str, str]] = {}
        for name, (system, key) in ENDPOINT_FIELDS.items():
            overrides.setdefault(system, {})[key] = getattr(self, name)
        env = {"OMS_HOME": os.environ.get("OMS_HOME", ".oms")}
        return connector_settings(env, manifest=self.manifest_path or None, overrides=overrides)

    def policy(self) -> RetryPolicy:
        return RetryPolicy(
            attempts=self.retry_attempts,
            backoff_base=self.backoff_base_seconds,
            read_timeout=self.read_timeout_seconds,
        )

    def client_kwargs(self) -> dict:
        kw: dict = {"policy": self.policy()}
        if not self.pace_requests:
            kw["rate"] = None
        return kw

    @contextmanager
    def client(self, system: str):
        """An API client of ``system`` (closed after use). Raises ``NotConfigured`` when the system has
        neither variables nor a manifest entry."""
        with self.clients() as clients:
            yield clients.get(system)

    def clients(self) -> Clients:
        return Clients(self.settings(), **self.client_kwargs())

    def business_config(self) -> BusinessConfig:
        path = self.business_config_path or str(DEFAULT_PATH)
        return _config(path, os.path.getmtime(path))


ChannelConnectorsResource = create_model(
    "ChannelConnectorsResource",
    __base__=_ConnectorsBase,
    __module__=__name__,
    **{name: (str, "") for name in ENDPOINT_FIELDS},
)


def channel_resources() -> dict[str, dg.ConfigurableResource]:
    """``{"channels": …}`` with every field whose variable is set bound as an ``EnvVar``. The environment
    is validated by the settings model first: a wrong value fails the code location naming the variable."""
    load_oms_settings()
    bound = {field: dg.EnvVar(var) for field, var in FIELD_ENV.items() if os.environ.get(var)}
    return {"channels": ChannelConnectorsResource(**bound)}
