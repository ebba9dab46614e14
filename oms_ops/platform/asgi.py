"""An ASGI app served by uvicorn on a loopback port in a background thread: the webhook receiver and the OMS
API in tests and in-process use. The socket is bound first (port 0: a free one, known before the server
runs), and the constructor returns once the server accepts connections."""

from __future__ import annotations

import socket
import threading
import time
from typing import Any, Self

import uvicorn


class BackgroundServer:
    """``app`` on ``host:port`` in a daemon thread; ``stop()`` (or the ``with`` block's end) shuts it down."""

    def __init__(self, app: Any, *, name: str, host: str = "127.0.0.1", port: int = 0, lifespan: str = "on"):
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind((host, port))
        self.host = host
        self.port = self._sock.getsockname()[1]
        config = uvicorn.Config(
            app, log_level="warning", access_log=False, lifespan=lifespan, timeout_graceful_shutdown=1
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self._sock]}, name=name, daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + 15
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"{name} did not start on {host}:{self.port}")
            time.sleep(0.01)

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)
        try:
            self._sock.close()
        except OSError:
            pass

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
