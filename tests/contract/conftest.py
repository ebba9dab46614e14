"""Fixtures for the contract tests: the services' own published clients driven against our simulators.

The clients (``wildberries-sdk``, ``ozonapi-async``, ``cdek``, ``ShopifyAPI``) were written by others from the
services' official specifications; if their models cannot parse what a simulator serves, or the simulator
refuses what they send, the simulator (and so every connector tested against it) has drifted from the real API.
Hosts are redirected per test (a base-URL attribute or a transport), never by editing the packages.

Simulators run with a manual clock and without rate limits; every stack is stopped in teardown.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from simulators import SimulatorStack, start_simulators

NO_LIMITS = {
    "wildberries": {"rate_limit": False},
    "shopify": {"rate_limit": False},
    "ozon": {"rps_limit": None},
}


@pytest.fixture
def make_stack(tmp_path: Path) -> Iterator[Callable[..., SimulatorStack]]:
    """Factory: ``make_stack(only=["wildberries"])`` → a running stack with a manual clock, no rate limits."""
    stacks: list[SimulatorStack] = []

    def factory(**kw) -> SimulatorStack:
        kw.setdefault("manual", True)
        kw.setdefault("seed", 5)
        kw.setdefault("rate", 4.0)
        kw.setdefault("n_skus", 30)
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
