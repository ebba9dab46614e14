"""Small network helpers shared by the service managers, and the record of the embedded servers' ports.

Why a record: the embedded Postgres and ClickHouse used to get a new free port at every start, so a saved
connection URL (a SQL client, a notebook, a bookmark) broke at each restart. Now each server keeps the port
it got first, written to ``$OMS_HOME/run/ports.json``; only if that port is taken by something else at the
next start does it get a new one, which is recorded in turn (and a line says so).
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

PORTS_FILE = "ports.json"


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    """True when something already listens on (host, port)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


def free_port(host: str = "127.0.0.1") -> int:
    """A port that was free a moment ago (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def choose_port(preferred: int, host: str = "127.0.0.1") -> int:
    """``preferred`` if free, otherwise a free port (0 means "any")."""
    if preferred and not port_in_use(preferred, host):
        return preferred
    return free_port(host)


def recorded_ports(path: Path) -> dict[str, int]:
    """The ports recorded in ``path`` (service → port); empty if there is no readable record."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict):
        return {}
    return {k: v for k, v in data.items() if isinstance(v, int) and 0 < v <= 65535}


def stable_port(path: Path, name: str, host: str = "127.0.0.1") -> int:
    """The port ``name`` was recorded with in ``path`` if nothing listens there now; else 0 ("any free
    port": nothing recorded yet, or the recorded port is taken). Record the port the server really got with
    :func:`record_port` once it runs."""
    port = recorded_ports(path).get(name, 0)
    return port if port and not port_in_use(port, host) and _bindable(port, host) else 0


def _bindable(port: int, host: str) -> bool:
    """True when a server could bind (host, port) now, as the embedded servers do (SO_REUSEADDR): a socket
    bound there without listening yet takes the port as surely as a listening one."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def record_port(path: Path, name: str, port: int) -> str | None:
    """Record that ``name`` listens on ``port`` (atomically: tmp + rename). Returns a one-line note when
    this replaces another recorded port (the old one was taken), None otherwise."""
    if not 0 < port <= 65535:
        return None  # nothing listens: nothing to keep
    path = Path(path)
    ports = recorded_ports(path)
    before = ports.get(name)
    if before == port:
        return None
    ports[name] = port
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(ports, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    if before is None:
        return None
    return f"{name}: port {before} (recorded in {path}) is taken; now on port {port}, recorded for next time"
