"""Fixtures of the notification tests: a fresh database with the core world, the SMS gateway and the mail
server simulators on loopback (manual clock), and the OMS's clients pointed at them through the manifest."""

from __future__ import annotations

import random
from datetime import UTC, datetime

import httpx
import pytest

from oms_ops.business_config import BusinessConfig, load_business_config
from oms_ops.connectors.config import settings_from_manifest
from oms_ops.connectors.http import RetryPolicy
from oms_ops.services.clients import Clients
from simulators import start_simulators
from tests.core import factories as f

#: noon in Moscow: outside the quiet hours
NOON = datetime(2025, 11, 26, 9, 0, tzinfo=UTC)


@pytest.fixture(scope="session")
def config() -> BusinessConfig:
    return load_business_config()


@pytest.fixture
def sims(tmp_path):
    stack = start_simulators(
        manual=True,
        seed=5,
        n_skus=20,
        only=["sms", "smtp"],
        state_dir=tmp_path / "sim",
        options={"sms": {"fail_share": 0.0, "delivery_s": 20}},
    )
    yield stack
    stack.stop()


@pytest.fixture
def clients(sims):
    policy = RetryPolicy(
        attempts=2, backoff_base=0.01, backoff_cap=0.01, read_timeout=5, rng=random.Random(1)
    )
    with Clients(settings_from_manifest(sims.manifest()), policy=policy) as c:
        yield c


@pytest.fixture
def world(conn):
    f.world(conn)
    return conn


def sms_sent(sims, to: str | None = None) -> list[dict]:
    params = {"to": to} if to else {}
    return httpx.get(sims.urls["sms"] + "/_sim/sms/messages", params=params).json()["messages"]


def mailbox(sims, **params) -> list[dict]:
    return httpx.get(sims.urls["smtp"] + "/_sim/mailbox", params=params).json()["messages"]


def notifications(conn, order_id: int) -> list[dict]:
    from oms_ops.notifications import list_notifications

    return sorted(list_notifications(conn, order_id=order_id), key=lambda r: r["notification_id"])
