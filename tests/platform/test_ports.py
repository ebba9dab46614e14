"""Stable ports: the embedded Postgres and ClickHouse keep the port they got first across restarts.

The unit tests drive the record (``oms_ops.platform.netutil``) with real sockets; the last test starts the
real embedded servers twice through ``stack.start_stores`` (no Dagster, no dbt) and once with the recorded
Postgres port taken.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from contextlib import contextmanager

from oms_ops.platform import stack
from oms_ops.platform.netutil import free_port, record_port, recorded_ports, stable_port
from oms_ops.platform.settings import load_settings


@contextmanager
def listening(port: int = 0) -> Iterator[int]:
    """Something listening on 127.0.0.1:port (0: any), as a server would; yields the port."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", port))
        s.listen()
        yield s.getsockname()[1]


def test_nothing_recorded_means_any_free_port(tmp_path):
    assert stable_port(tmp_path / "ports.json", "postgres") == 0
    (tmp_path / "garbled.json").write_text("{not json")
    assert stable_port(tmp_path / "garbled.json", "postgres") == 0


def test_two_start_cycles_get_the_same_port(tmp_path):
    path = tmp_path / "run" / "ports.json"
    ports = []
    for _ in range(2):
        wanted = stable_port(path, "postgres")
        with listening(wanted) as bound:  # the server binds what it was given (0: the OS picks)
            assert record_port(path, "postgres", bound) is None  # first record or unchanged: no note
            ports.append(bound)
    assert ports[0] == ports[1]
    assert recorded_ports(path) == {"postgres": ports[0]}


def test_a_taken_port_yields_a_new_one_recorded_with_a_note(tmp_path):
    path = tmp_path / "ports.json"
    record_port(path, "clickhouse", free_port())
    record_port(path, "postgres", free_port())
    old = recorded_ports(path)["clickhouse"]
    with listening(old):  # someone else took it meanwhile
        assert stable_port(path, "clickhouse") == 0
        with listening(0) as new:
            note = record_port(path, "clickhouse", new)
    assert new != old and recorded_ports(path)["clickhouse"] == new
    assert note and str(old) in note and str(new) in note and "taken" in note
    assert stable_port(path, "clickhouse") == new  # the new port sticks from now on
    with socket.socket() as bound_only:  # bound by another process but not listening yet: taken too
        bound_only.bind(("127.0.0.1", new))
        assert stable_port(path, "clickhouse") == 0
    assert "postgres" in recorded_ports(path)  # other services' records are kept
    assert json.loads(path.read_text())["clickhouse"] == new


def test_embedded_servers_keep_their_ports_across_restarts(tmp_path, capsys):
    settings = load_settings({"OMS_HOME": str(tmp_path / "home")})
    urls = []
    try:
        for _ in range(2):
            state = stack.StackState()
            stack.start_stores(settings, state)
            urls.append((state.database_url, state.clickhouse_url))
            stack.down(settings)
        assert urls[0] == urls[1]
        recorded = json.loads((settings.run_dir / "ports.json").read_text())
        assert set(recorded) == {"postgres", "clickhouse"}
        assert f":{recorded['postgres']}/" in urls[0][0] and urls[0][1].endswith(f":{recorded['clickhouse']}")
        capsys.readouterr()

        with listening(recorded["postgres"]):  # the recorded port is taken at the next start
            state = stack.StackState()
            stack.start_stores(settings, state)
            stack.down(settings)
        moved = json.loads((settings.run_dir / "ports.json").read_text())
        assert moved["postgres"] != recorded["postgres"] and moved["clickhouse"] == recorded["clickhouse"]
        assert f":{moved['postgres']}/" in state.database_url
        err = capsys.readouterr().err
        assert f"postgres: port {recorded['postgres']}" in err and f"now on port {moved['postgres']}" in err
    finally:
        stack.down(settings)


def test_explicit_port_variables_win_over_the_record(tmp_path):
    """OMS_PG_PORT / OMS_CLICKHOUSE_PORT are used as given, and the record is left as it was."""
    pg_port, ch_port, recorded = (
        free_port(),
        free_port(),
        {"postgres": free_port(), "clickhouse": free_port()},
    )
    env = {
        "OMS_HOME": str(tmp_path / "home"),
        "OMS_PG_PORT": str(pg_port),
        "OMS_CLICKHOUSE_PORT": str(ch_port),
    }
    settings = load_settings(env)
    path = settings.run_dir / "ports.json"
    for name, port in recorded.items():
        record_port(path, name, port)
    try:
        state = stack.StackState()
        stack.start_stores(settings, state)
        assert f":{pg_port}/" in state.database_url and state.clickhouse_url.endswith(f":{ch_port}")
    finally:
        stack.down(settings)
    assert recorded_ports(path) == recorded
