"""Fixtures for connector tests: simulators over real HTTP, a fresh migrated database, a seeded world.

Simulators run with a manual clock (nothing happens until ``stack.advance``) and, unless a test says otherwise,
without their rate limiters: rate-limit behaviour is tested with injected 429 faults and a recording sleep,
so no test waits for real back-off. Every stack is stopped in teardown.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from oms_ops.business_config import BusinessConfig, load_business_config
from oms_ops.connectors.config import ConnectorSettings, settings_from_manifest
from oms_ops.connectors.http import RetryPolicy
from oms_ops.services.setup import seed_from_simulators
from simulators import SimulatorStack, start_simulators

NO_LIMITS = {
    "wildberries": {"rate_limit": False},
    "shopify": {"rate_limit": False},
    "ozon": {"rps_limit": None},
}


class SleepRecorder:
    """Injected instead of ``time.sleep``: records the waits, sleeps ``real`` seconds at most."""

    def __init__(self, real: float = 0.0) -> None:
        self.calls: list[float] = []
        self.real = real

    def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)
        if self.real:
            import time

            time.sleep(min(seconds, self.real))


class FakeTime:
    def __init__(self, t: float = 1000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


@pytest.fixture(scope="session")
def business_config() -> BusinessConfig:
    return load_business_config()


@pytest.fixture
def sleeps() -> SleepRecorder:
    return SleepRecorder()


@pytest.fixture
def policy(sleeps) -> RetryPolicy:
    """Fast retries: recorded sleeps, short timeouts, seeded jitter."""
    return RetryPolicy(
        attempts=5,
        backoff_base=0.01,
        backoff_cap=0.05,
        read_timeout=1.0,
        connect_timeout=1.0,
        sleep=sleeps,
        rng=random.Random(1),
    )


@pytest.fixture
def make_stack(tmp_path: Path) -> Iterator[Callable[..., SimulatorStack]]:
    stacks: list[SimulatorStack] = []

    def factory(**kw) -> SimulatorStack:
        kw.setdefault("manual", True)
        kw.setdefault("seed", 11)
        kw.setdefault("rate", 2.0)
        kw.setdefault("n_skus", 40)
        kw.setdefault("state_dir", tmp_path / "sim")
        options = {k: dict(v) for k, v in NO_LIMITS.items()}
        for k, v in (kw.pop("options", None) or {}).items():
            options.setdefault(k, {}).update(v)
        stack = start_simulators(options=options, **kw)
        stacks.append(stack)
        return stack

    yield factory
    for s in stacks:
        s.stop()


def settings_of(stack: SimulatorStack) -> ConnectorSettings:
    return settings_from_manifest(stack.manifest())


@pytest.fixture
def world(conn, make_stack, business_config):
    """A seeded database and a running stack: ``(conn, stack, settings)``. The clock has not moved yet."""

    def factory(**kw):
        stack = make_stack(**kw)
        seed_from_simulators(conn, stack, business_config, initial_stock="wms" in stack.urls)
        return conn, stack, settings_of(stack)

    return factory


def count(conn, sql: str, *params) -> int:
    return conn.execute(sql, params).fetchone()[0]
