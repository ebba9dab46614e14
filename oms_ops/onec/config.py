"""The 1C exchange's configuration: ``OMS_ONEC_*`` variables and the generated credential.

Why a generated password even on loopback: whoever can call ``/1c_exchange`` can mark orders paid and cancel
them. The password 1C signs in with is generated at the first start into ``$OMS_HOME/secrets/onec-exchange``
(``oms status --secrets`` shows it, to be typed into 1C's exchange settings) unless ``OMS_ONEC_PASSWORD`` is set.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from pydantic import Field

from oms_ops.platform import credentials
from oms_ops.platform.settings import Settings, load_model

#: the secret file (``$OMS_HOME/secrets/<name>``) holding 1C's password
SECRET = credentials.ONEC_EXCHANGE


class OnecSettings(Settings):
    """The platform settings plus the exchange's own (each variable named in docs/onec.md)."""

    onec_login: str = Field("1c", min_length=1, max_length=64, validation_alias="OMS_ONEC_LOGIN")
    onec_password: str | None = Field(None, validation_alias="OMS_ONEC_PASSWORD")
    #: 1C is the stock master: offers.xml's quantities become stock (off: the WMS is)
    onec_stock_master: bool = Field(False, validation_alias="OMS_ONEC_STOCK_MASTER")
    onec_file_limit: int = Field(1_000_000, ge=1024, le=100_000_000, validation_alias="OMS_ONEC_FILE_LIMIT")
    onec_max_file_bytes: int = Field(
        16 * 1024 * 1024, ge=1024, le=500_000_000, validation_alias="OMS_ONEC_MAX_FILE_BYTES"
    )
    onec_session_ttl_s: float = Field(3600, gt=0, le=86_400, validation_alias="OMS_ONEC_SESSION_TTL_S")
    onec_settle_s: float = Field(5, ge=0, le=600, validation_alias="OMS_ONEC_SETTLE_S")
    onec_batch_orders: int = Field(2000, ge=1, le=100_000, validation_alias="OMS_ONEC_BATCH_ORDERS")
    onec_timezone: str = Field("Europe/Moscow", validation_alias="OMS_ONEC_TIMEZONE")
    onec_schema_version: str = Field(
        "2.08", pattern=r"^2\.(08|10)$", validation_alias="OMS_ONEC_SCHEMA_VERSION"
    )


@dataclass(frozen=True)
class ExchangeConfig:
    login: str
    password: str
    cookie_name: str = "OMS_1C"
    session_ttl_s: float = 3600
    #: the largest part 1C may send in one ``mode=file`` (its ``init`` answer)
    file_limit: int = 1_000_000
    #: the largest file (all its parts) an import reads
    max_file_bytes: int = 16 * 1024 * 1024
    #: events younger than this wait for the next query (see oms_ops.onec.exchange)
    settle_s: float = 5.0
    stock_master: bool = False
    #: at most this many orders in one answer to ``query`` (the rest comes with the next ones)
    batch_orders: int = 2000
    timezone: str = "Europe/Moscow"
    version: str = "2.08"


def load_config(env: Mapping[str, str] | None = None) -> ExchangeConfig:
    """The configuration from the environment; the password from ``OMS_ONEC_PASSWORD`` or generated into
    ``$OMS_HOME/secrets``. A wrong value raises ``ConfigError`` naming the variable."""
    s = load_model(OnecSettings, env)
    return ExchangeConfig(
        login=s.onec_login,
        password=s.onec_password or credentials.secret(s.home, SECRET),
        session_ttl_s=s.onec_session_ttl_s,
        file_limit=s.onec_file_limit,
        max_file_bytes=s.onec_max_file_bytes,
        settle_s=s.onec_settle_s,
        stock_master=s.onec_stock_master,
        batch_orders=s.onec_batch_orders,
        timezone=s.onec_timezone,
        version=s.onec_schema_version,
    )
