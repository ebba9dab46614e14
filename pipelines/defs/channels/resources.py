"""The ``channels`` resource: where the external systems are and how to talk to them.

Every field can be bound to an environment variable (``channel_resources`` binds the ones that are set, as
``EnvVar``s, so the Dagster UI shows where a value comes from and secrets never appear in code or run config).
Unset fields fall back to the simulators' manifest (``OMS_SIMULATORS_MANIFEST`` or
``$OMS_HOME/simulators/simulators.json``): pointing at the real Ozon, Wildberries, web store, CDEK or WMS is
setting that system's variables — no code changes.
"""

import os
from contextlib import contextmanager
from functools import lru_cache

import dagster as dg

from oms_ops.business_config import DEFAULT_PATH, BusinessConfig, load_business_config
from oms_ops.connectors.config import ConnectorSettings, load_settings
from oms_ops.connectors.http import RetryPolicy

#: resource field → environment variable
FIELD_ENV: dict[str, str] = {
    "manifest_path": "OMS_SIMULATORS_MANIFEST",
    "ozon_url": "OMS_OZON_URL",
    "ozon_client_id": "OMS_OZON_CLIENT_ID",
    "ozon_api_key": "OMS_OZON_API_KEY",
    "wb_url": "OMS_WB_URL",
    "wb_token": "OMS_WB_TOKEN",
    "shopify_url": "OMS_SHOPIFY_URL",
    "shopify_access_token": "OMS_SHOPIFY_ACCESS_TOKEN",
    "shopify_api_version": "OMS_SHOPIFY_API_VERSION",
    "shopify_webhook_secret": "OMS_SHOPIFY_WEBHOOK_SECRET",
    "cdek_url": "OMS_CDEK_URL",
    "cdek_client_id": "OMS_CDEK_CLIENT_ID",
    "cdek_client_secret": "OMS_CDEK_CLIENT_SECRET",
    "wms_url": "OMS_WMS_URL",
    "wms_api_key": "OMS_WMS_API_KEY",
    "pos_drop_dir": "OMS_POS_DROP_DIR",
    "business_config_path": "OMS_BUSINESS_CONFIG",
    "cdek_fallback_phone": "OMS_CDEK_FALLBACK_PHONE",
}


@lru_cache(maxsize=8)
def _config(path: str, mtime: float) -> BusinessConfig:
    return load_business_config(path)


class ChannelConnectorsResource(dg.ConfigurableResource):
    """Base URLs, credentials and retry behaviour of the channel, carrier and WMS connectors."""

    manifest_path: str = ""
    ozon_url: str = ""
    ozon_client_id: str = ""
    ozon_api_key: str = ""
    wb_url: str = ""
    wb_token: str = ""
    shopify_url: str = ""
    shopify_access_token: str = ""
    shopify_api_version: str = ""
    shopify_webhook_secret: str = ""
    cdek_url: str = ""
    cdek_client_id: str = ""
    cdek_client_secret: str = ""
    wms_url: str = ""
    wms_api_key: str = ""
    pos_drop_dir: str = ""
    business_config_path: str = ""
    cdek_fallback_phone: str = "+70000000000"
    retry_attempts: int = 6
    backoff_base_seconds: float = 0.5
    read_timeout_seconds: float = 30.0
    #: pace requests to the documented API limits (off: the server's 429s alone slow us down)
    pace_requests: bool = True
    #: most web-store inventory calls per ATS run (one call per value, 2 calls/s)
    webstore_ats_max_items: int = 200

    def settings(self) -> ConnectorSettings:
        overrides = {
            "ozon": {
                "base_url": self.ozon_url,
                "client_id": self.ozon_client_id,
                "api_key": self.ozon_api_key,
            },
            "wildberries": {"base_url": self.wb_url, "token": self.wb_token},
            "shopify": {
                "base_url": self.shopify_url,
                "access_token": self.shopify_access_token,
                "api_version": self.shopify_api_version,
                "webhook_secret": self.shopify_webhook_secret,
            },
            "cdek": {
                "base_url": self.cdek_url,
                "client_id": self.cdek_client_id,
                "client_secret": self.cdek_client_secret,
            },
            "wms": {"base_url": self.wms_url, "api_key": self.wms_api_key},
            "pos": {"drop_dir": self.pos_drop_dir},
        }
        env = {"OMS_HOME": os.environ.get("OMS_HOME", ".oms")}
        return load_settings(env, manifest=self.manifest_path or None, overrides=overrides)

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
        """An API client for ``ozon`` / ``wildberries`` / ``shopify`` / ``cdek`` / ``wms`` (closed after use).
        Raises ``NotConfigured`` when the system has neither variables nor a manifest entry."""
        from oms_ops.connectors.outbox_worker import Clients

        clients = Clients(self.settings(), **self.client_kwargs())
        try:
            yield clients.get(system)
        finally:
            clients.close()

    def clients(self):
        from oms_ops.connectors.outbox_worker import Clients

        return Clients(self.settings(), **self.client_kwargs())

    def business_config(self) -> BusinessConfig:
        path = self.business_config_path or str(DEFAULT_PATH)
        return _config(path, os.path.getmtime(path))


def channel_resources() -> dict[str, dg.ConfigurableResource]:
    """``{"channels": …}`` with every field whose variable is set bound as an ``EnvVar``."""
    bound = {field: dg.EnvVar(var) for field, var in FIELD_ENV.items() if os.environ.get(var)}
    return {"channels": ChannelConnectorsResource(**bound)}
