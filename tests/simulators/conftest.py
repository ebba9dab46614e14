"""Fixtures for the simulator tests: real servers on loopback, a frozen simulated clock, a fake protocol clock.

Every stack is started per test (start-up is ~0.1 s) and stopped in the fixture teardown, so no server outlives
its test. Rate limits and token lifetimes run on ``FakeTime`` so the tests never depend on the wall clock.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import httpx
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from simulators import SimulatorStack, start_simulators


class FakeTime:
    """A protocol clock that moves only when told to."""

    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


@pytest.fixture
def fake_time() -> FakeTime:
    return FakeTime()


@pytest.fixture
def make_stack(tmp_path) -> Iterator[Callable[..., SimulatorStack]]:
    """Factory: ``make_stack(only=["ozon"], rate=5, ...)`` → a running stack with a manual clock."""
    stacks: list[SimulatorStack] = []

    def factory(**kwargs) -> SimulatorStack:
        kwargs.setdefault("manual", True)
        kwargs.setdefault("seed", 7)
        kwargs.setdefault("rate", 5.0)
        kwargs.setdefault("n_skus", 60)
        kwargs.setdefault("state_dir", tmp_path / "state")
        stack = start_simulators(**kwargs)
        stacks.append(stack)
        return stack

    yield factory
    for stack in stacks:
        stack.stop()


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=10) as c:
        yield c


class Receiver:
    """A webhook receiver on loopback that records raw bodies and headers and answers with ``status``."""

    def __init__(self) -> None:
        self.calls: list[tuple[bytes, dict[str, str]]] = []
        self.status = 200
        self.url = ""

    def app(self) -> Starlette:
        async def hook(request: Request):
            self.calls.append((await request.body(), dict(request.headers)))
            return JSONResponse({"ok": True}, status_code=self.status)

        return Starlette(routes=[Route("/hooks/shopify", hook, methods=["POST"])])


@contextmanager
def serve(app) -> Iterator[str]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(app, log_level="warning", lifespan="off", timeout_graceful_shutdown=1)
    )
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "receiver did not start"
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    with serve(r.app()) as url:
        r.url = url + "/hooks/shopify"
        yield r
