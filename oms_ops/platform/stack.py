"""Starts, stops and reports the whole stack: Postgres, ClickHouse, Dagster (webserver + daemon), Streamlit.

Embedded defaults are used unless OMS_DATABASE_URL / OMS_CLICKHOUSE_URL point at real servers. Every
process is started detached (own session, logs under ``$OMS_HOME/logs``) and recorded in
``$OMS_HOME/run/stack.json`` (mode 0600: its URLs carry credentials) so that ``oms status`` and ``oms down``
work from any other shell, and a second ``oms up`` finds the running stack instead of starting another one.

The embedded servers and the simulators take credentials generated into ``$OMS_HOME/secrets``
(:mod:`oms_ops.platform.credentials`): each service gets URLs with the login it needs — the OMS the owner
(Postgres superuser, ClickHouse writer of the analytics databases), the dashboards their least-privilege
Postgres login and a read-only ClickHouse user.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import psutil
import psycopg
from psycopg import sql

from oms_ops.business_config import BusinessConfigError, load_business_config
from oms_ops.platform import credentials
from oms_ops.platform.clickhouse.supervisor import start_clickhouse_process
from oms_ops.platform.clickhouse.users import ClickHouseUser
from oms_ops.platform.migrate import migrate
from oms_ops.platform.netutil import PORTS_FILE, choose_port, port_in_use, record_port, stable_port
from oms_ops.platform.postgres import EmbeddedPostgres, ensure_database
from oms_ops.platform.settings import ConfigError, Settings, redact

REPO_ROOT = Path(__file__).resolve().parents[2]
ALL_SERVICES = (
    "postgres",
    "clickhouse",
    "worker",
    "dagster-code-server",
    "dagster-webserver",
    "dagster-daemon",
    "api",
    "streamlit",
)
#: the live demo adds the simulated outside world (channels, carrier, WMS) and the web store's webhook receiver
DEMO_SERVICES = (
    "postgres",
    "clickhouse",
    "simulators",
    "webhooks",
    "worker",
    "dagster-code-server",
    "dagster-webserver",
    "dagster-daemon",
    "api",
    "streamlit",
)
KNOWN_SERVICES = frozenset(DEMO_SERVICES)
DAGSTER_DB = "dagster"


class StackError(RuntimeError):
    """A service could not be started; the message is one line that names the cause."""


@dataclass
class ServiceInfo:
    name: str
    url: str | None = None
    pid: int | None = None
    embedded: bool = True
    log: str | None = None


@dataclass
class StackState:
    """What runs, and the URLs (with credentials) the services are given: ``database_url`` and
    ``clickhouse_url`` are the OMS's own, the ``*dashboard*`` ones the dashboards' (embedded servers only).
    ``ServiceInfo.url`` is for display and never carries a password."""

    services: dict[str, ServiceInfo] = field(default_factory=dict)
    database_url: str | None = None
    clickhouse_url: str | None = None
    started_at: float | None = None
    dashboard_database_url: str | None = None
    clickhouse_dashboard_url: str | None = None
    #: the OMS API's port, chosen before the simulators start (the simulated 1C polls the API's
    #: ``/1c_exchange``), used when the API starts; not persisted: the running API's URL is in ``services``
    api_port: int | None = field(default=None, compare=False)

    def to_json(self) -> str:
        return json.dumps(
            {
                "services": {k: asdict(v) for k, v in self.services.items()},
                "database_url": self.database_url,
                "clickhouse_url": self.clickhouse_url,
                "dashboard_database_url": self.dashboard_database_url,
                "clickhouse_dashboard_url": self.clickhouse_dashboard_url,
                "started_at": self.started_at,
            },
            indent=2,
        )

    @classmethod
    def from_json(cls, text: str) -> StackState:
        raw = json.loads(text)
        return cls(
            services={k: ServiceInfo(**v) for k, v in raw.get("services", {}).items()},
            database_url=raw.get("database_url"),
            clickhouse_url=raw.get("clickhouse_url"),
            started_at=raw.get("started_at"),
            dashboard_database_url=raw.get("dashboard_database_url"),
            clickhouse_dashboard_url=raw.get("clickhouse_dashboard_url"),
        )


def _state_path(settings: Settings) -> Path:
    return settings.run_dir / "stack.json"


def read_state(settings: Settings) -> StackState | None:
    path = _state_path(settings)
    if not path.exists():
        return None
    try:
        return StackState.from_json(path.read_text())
    except (ValueError, TypeError):
        return None


def _write_state(settings: Settings, state: StackState) -> None:
    """Atomically, mode 0600 in a 0700 directory: the URLs carry the servers' passwords."""
    settings.run_dir.mkdir(parents=True, exist_ok=True)
    settings.run_dir.chmod(0o700)
    tmp = _state_path(settings).with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(state.to_json())
    tmp.replace(_state_path(settings))


def pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        proc = psutil.Process(pid)
        return proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


# -- URL checks (one-line errors naming the variable) -------------------------------------------------------
def check_postgres(url: str, var: str = "OMS_DATABASE_URL") -> None:
    try:
        with psycopg.connect(url, connect_timeout=5) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        cause = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"{var}: cannot connect to {redact(url)}: {cause}") from None


def check_clickhouse(url: str, var: str = "OMS_CLICKHOUSE_URL") -> None:
    try:
        resp = httpx.get(url.rstrip("/") + "/ping", timeout=5)
    except httpx.HTTPError as exc:
        raise ConfigError(f"{var}: cannot reach {redact(url)}: {exc or type(exc).__name__}") from None
    if resp.status_code != 200:
        raise ConfigError(f"{var}: {redact(url)}/ping answered HTTP {resp.status_code}")


DASHBOARD_LOGIN = "oms_dashboard_app"
#: the embedded ClickHouse's users: the OMS's writer and the dashboards' reader
CLICKHOUSE_WRITER = "oms"
CLICKHOUSE_READER = "oms_dashboard"
#: the databases the OMS writes on ClickHouse (the analytics' variables and defaults:
#: oms_ops.analytics.dbt; read here, where the platform cannot import the analytics)
CLICKHOUSE_DATABASES = {"OMS_CH_DATABASE": "analytics", "OMS_CH_RAW_DATABASE": "oms_raw"}


def ensure_dashboard_login(conn: psycopg.Connection, password: str) -> None:
    """On the embedded server the dashboards log in as a member of the least-privilege role
    ``oms_dashboard`` instead of the superuser, with their own password (set again at every start, from
    ``$OMS_HOME/secrets``; sent as a SCRAM verifier, never in clear). With a real server the operator
    creates that login with a password and sets OMS_DASHBOARD_DATABASE_URL (docs/dashboards.md)."""
    verifier = sql.Literal(credentials.scram_sha256_verifier(password))
    login = sql.Identifier(DASHBOARD_LOGIN)
    exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (DASHBOARD_LOGIN,)).fetchone()
    if exists:
        conn.execute(sql.SQL("ALTER ROLE {} LOGIN PASSWORD {}").format(login, verifier))
    else:
        conn.execute(
            sql.SQL("CREATE ROLE {} LOGIN PASSWORD {} IN ROLE oms_dashboard").format(login, verifier)
        )


def dashboard_database_url(settings: Settings, state: StackState) -> str | None:
    """The dashboards' Postgres URL: ``OMS_DASHBOARD_DATABASE_URL``, else (embedded server) the
    ``oms_dashboard_app`` login with its password; None with a real server and no such variable."""
    explicit = settings.dashboard_database_url
    if explicit or settings.database_url or not state.database_url:
        return explicit
    return state.dashboard_database_url or credentials.with_credentials(
        state.database_url, DASHBOARD_LOGIN, credentials.secret(settings.home, credentials.POSTGRES_DASHBOARD)
    )


def clickhouse_writer_databases(env: dict[str, str] | None = None) -> tuple[str, ...]:
    """The databases the embedded ClickHouse's writer may write into (``OMS_CH_DATABASE``,
    ``OMS_CH_RAW_DATABASE``, or their defaults)."""
    env = os.environ if env is None else env
    return tuple(dict.fromkeys(env.get(var) or default for var, default in CLICKHOUSE_DATABASES.items()))


def clickhouse_users(settings: Settings) -> list[ClickHouseUser]:
    """The embedded ClickHouse's users, their passwords from ``$OMS_HOME/secrets``."""
    home = settings.home
    return [
        ClickHouseUser(
            CLICKHOUSE_WRITER,
            credentials.secret(home, credentials.CLICKHOUSE_WRITER),
            "writer",
            clickhouse_writer_databases(),
        ),
        ClickHouseUser(
            CLICKHOUSE_READER, credentials.secret(home, credentials.CLICKHOUSE_DASHBOARD), "reader"
        ),
    ]


def with_database(url: str, database: str) -> str:
    return urlsplit(url)._replace(path="/" + database).geturl()


def dagster_storage_url(database_url: str, override: str | None = None) -> str:
    """Dagster gets a psycopg2 URL: with SQLAlchemy 2.1 a plain postgresql:// URL selects psycopg 3 and
    Dagster's ``NOTIFY run_events, %(notify_id)s`` then fails (see DESIGN.md pitfalls). ``override``:
    ``OMS_DAGSTER_DATABASE_URL``."""
    url = override or with_database(database_url, DAGSTER_DB)
    scheme, rest = url.split("://", 1)
    return "postgresql+psycopg2://" + rest if "+" not in scheme else url


# -- process helpers --------------------------------------------------------------------------------------
def _spawn(name: str, args: list[str], settings: Settings, env: dict[str, str]) -> subprocess.Popen:
    settings.log_dir.mkdir(parents=True, exist_ok=True)
    log_path = settings.log_dir / f"{name}.log"
    log = open(log_path, "ab")  # noqa: SIM115 - handed to the child
    try:
        return subprocess.Popen(
            args,
            cwd=REPO_ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # own process group: Ctrl-C in the terminal is handled by us, not them
        )
    finally:
        log.close()


def _wait_http(url: str, proc: subprocess.Popen | None, name: str, log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            tail = log.read_text(errors="replace")[-1500:] if log.exists() else ""
            raise StackError(f"{name} exited with code {proc.returncode} during start-up; log {log}:\n{tail}")
        try:
            if httpx.get(url, timeout=2).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise StackError(f"{name} did not answer on {url} within {timeout:.0f}s; see {log}")


def stop_pid(pid: int | None, timeout: float = 15) -> None:
    """SIGTERM the process group (children too), then SIGKILL what is left."""
    if not pid_alive(pid):
        return
    try:
        procs = [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        return
    try:
        os.killpg(os.getpgid(pid), signal.SIGTERM)
    except (ProcessLookupError, PermissionError):
        for p in procs:
            try:
                p.terminate()
            except psutil.NoSuchProcess:
                pass
    _, alive = psutil.wait_procs(procs, timeout=timeout)
    for p in alive:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(alive, timeout=5)


def simulators_manifest(settings: Settings) -> Path:
    return settings.home / "simulators" / "simulators.json"


def child_env(settings: Settings, state: StackState) -> dict[str, str]:
    env = dict(os.environ)
    if "simulators" in state.services:
        env.setdefault("OMS_SIMULATORS_MANIFEST", str(simulators_manifest(settings)))
    env["OMS_HOME"] = str(settings.home)
    if state.database_url:
        env["OMS_DATABASE_URL"] = state.database_url
        env["OMS_DAGSTER_STORAGE_URL"] = dagster_storage_url(
            state.database_url, settings.dagster_database_url
        )
    if state.clickhouse_url:
        env["OMS_CLICKHOUSE_URL"] = state.clickhouse_url
    env["DAGSTER_HOME"] = str(settings.dagster_home)
    dashboard_url = dashboard_database_url(settings, state)
    if dashboard_url:
        env["OMS_DASHBOARD_DATABASE_URL"] = dashboard_url
    # the children (Dagster runs dbt, Streamlit…) must find this environment's executables even when
    # `oms` was started by path rather than through `uv run`
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


# -- the stack --------------------------------------------------------------------------------------------
def running_services(settings: Settings) -> dict[str, ServiceInfo]:
    state = read_state(settings)
    if state is None:
        return {}
    return {name: info for name, info in state.services.items() if not info.embedded or pid_alive(info.pid)}


def start_stores(settings: Settings, state: StackState) -> None:
    """Postgres + ClickHouse (embedded or external), migrated, with the Dagster database present."""
    if settings.database_url:
        check_postgres(settings.database_url)
        state.database_url = settings.database_url
        state.services["postgres"] = ServiceInfo("postgres", redact(settings.database_url), embedded=False)
    else:
        # the port it got first (recorded under OMS_HOME) unless taken; OMS_PG_PORT wins
        ports = settings.run_dir / PORTS_FILE
        pg = EmbeddedPostgres(
            settings.pg_data_dir,
            port=settings.pg_port or stable_port(ports, "postgres"),
            password=credentials.secret(settings.home, credentials.POSTGRES_OWNER),
        )
        try:
            state.database_url = pg.start(("oms", DAGSTER_DB))
        except (RuntimeError, psycopg.Error) as exc:
            raise StackError(f"embedded Postgres: {exc}") from None
        if not settings.pg_port and (note := record_port(ports, "postgres", pg.running_port() or 0)):
            print(f"note: {note}", file=sys.stderr)
        state.services["postgres"] = ServiceInfo(
            "postgres", redact(state.database_url), pg.pid(), True, str(pg.log_path)
        )
    _write_state(settings, state)
    with psycopg.connect(state.database_url, autocommit=True) as conn:
        migrate(conn)
        if not settings.database_url:
            password = credentials.secret(settings.home, credentials.POSTGRES_DASHBOARD)
            ensure_dashboard_login(conn, password)
            state.dashboard_database_url = credentials.with_credentials(
                state.database_url, DASHBOARD_LOGIN, password
            )
    if settings.database_url and not settings.dagster_database_url:
        try:
            ensure_database(settings.database_url, DAGSTER_DB)
        except psycopg.Error as exc:
            raise ConfigError(
                f"OMS_DAGSTER_DATABASE_URL: not set and database {DAGSTER_DB!r} cannot be created on "
                f"OMS_DATABASE_URL's server: {str(exc).strip().splitlines()[0]}"
            ) from None

    if settings.clickhouse_url:
        check_clickhouse(settings.clickhouse_url)
        state.clickhouse_url = settings.clickhouse_url
        state.services["clickhouse"] = ServiceInfo(
            "clickhouse", redact(settings.clickhouse_url), embedded=False
        )
    else:
        settings.clickhouse_data_dir.mkdir(parents=True, exist_ok=True)
        log = settings.log_dir / "clickhouse.log"
        settings.log_dir.mkdir(parents=True, exist_ok=True)
        ports = settings.run_dir / PORTS_FILE
        port = settings.clickhouse_port or stable_port(ports, "clickhouse") or None
        try:
            ch = start_clickhouse_process(
                settings.clickhouse_data_dir, port=port, log_path=log, users=clickhouse_users(settings)
            )
        except RuntimeError as exc:
            raise StackError(f"embedded ClickHouse: {exc}") from None
        if not settings.clickhouse_port and (note := record_port(ports, "clickhouse", ch.port)):
            print(f"note: {note}", file=sys.stderr)
        state.clickhouse_url = ch.url_for(CLICKHOUSE_WRITER)
        state.clickhouse_dashboard_url = ch.url_for(CLICKHOUSE_READER)
        state.services["clickhouse"] = ServiceInfo(
            "clickhouse", redact(state.clickhouse_url), ch.pid, True, str(log)
        )
    _write_state(settings, state)


#: the demo's tills send a file every five minutes instead of one at 23:00
DEMO_POS_DROP_INTERVAL_S = 300


def demo_stream_settings(settings: Settings) -> dict[str, str]:
    """How busy the simulated world is (``OMS_DEMO_*`` for a bigger or smaller demo), as the simulators'
    runner arguments: an order's whole life shows within minutes of start, at any hour."""
    scale = settings.demo_transit_scale
    return {
        "seed": str(settings.demo_seed),
        # orders per minute per channel; the simulated clock runs in real time so that placed, shipped and
        # delivered timestamps stay on one clock …
        "rate": str(settings.demo_rate),
        # … at the same pace at every hour (steady) unless OMS_DEMO_PROFILE=daily …
        "profile": settings.demo_profile,
        # … while the carrier compresses transit (1/1440: a day in the network takes a minute)
        "transit_scale": str(scale),
        # per simulator: returned parcels travel to the warehouse, and customers ask for returns, on the same
        # compressed time as the carrier; the shops' tills drop their sales every few minutes
        "options": json.dumps(
            {
                "cdek": {"transit_scale": scale},
                "wms": {"transit_scale": scale},
                "shopify": {"return_delay_scale": scale},
                "pos": {"drop_interval_s": DEMO_POS_DROP_INTERVAL_S},
            }
        ),
    }


#: ``seed(database_url, manifest path)``: the OMS's catalog, listings and stock from the simulated world
SeedHook = Callable[[str | None, Path], None]
#: called once the stores are up and migrated (e.g. to build the live operational views)
StoresHook = Callable[[StackState], None]
#: each outside system's secret credential fields (``oms_ops.services.clients.SECRETS``): what the demo
#: generates for the simulators
SimulatorSecrets = Mapping[str, Iterable[str]]


def start_outside_world(
    settings: Settings,
    state: StackState,
    services: Iterable[str],
    *,
    seed: SeedHook | None = None,
    simulator_secrets: SimulatorSecrets | None = None,
) -> None:
    """The simulators (marketplaces, web store, POS, WMS, CDEK) and the webhook receiver, then ``seed`` the
    OMS's catalog, channel listings and initial stock from them so the first scheduled ingest finds work.
    ``simulator_secrets``: the secret fields the simulators get generated values for (none: their
    built-in test credentials)."""
    services = set(services)
    if not services & {"simulators", "webhooks"}:
        return
    env = child_env(settings, state)
    manifest = simulators_manifest(settings)
    webhook_port = choose_port(0)
    if "simulators" in services:
        demo = demo_stream_settings(settings)
        manifest.unlink(missing_ok=True)
        # the simulators' credentials and the web store's webhook secret: generated into $OMS_HOME (never a
        # default that ships with the code), handed over as a file (a command line is visible to every user)
        args = [
            sys.executable, "-m", "simulators",
            "--seed", demo["seed"], "--rate", demo["rate"], "--profile", demo["profile"], "--speed", "1",
            "--state-dir", str(manifest.parent), "--options", demo["options"],
        ]  # fmt: skip
        if simulator_secrets is not None:
            credentials.simulator_credentials(settings.home, simulator_secrets)
            args += ["--credentials", f"@{credentials.secrets_dir(settings.home) / credentials.SIMULATORS}"]
        if "webhooks" in services:
            args += ["--webhook-url", f"http://127.0.0.1:{webhook_port}/webhooks/shopify"]
        sim_env = dict(env)
        if "api" in services:  # the simulated 1C polls the OMS API: give it the port the API will take
            state.api_port = choose_port(settings.api_port)
            sim_env.setdefault("OMS_ONEC_EXCHANGE_URL", f"http://127.0.0.1:{state.api_port}/1c_exchange")
        proc = _spawn("simulators", args, settings, sim_env)
        log = settings.log_dir / "simulators.log"
        state.services["simulators"] = ServiceInfo("simulators", str(manifest), proc.pid, True, str(log))
        _write_state(settings, state)
        deadline = time.monotonic() + 90
        while not manifest.exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                tail = log.read_text(errors="replace")[-1500:] if log.exists() else ""
                raise StackError(f"simulators did not start; log {log}:\n{tail}")
            time.sleep(0.2)
        env = child_env(settings, state)
        if seed is not None:
            seed(state.database_url, manifest)
    if "webhooks" in services:
        proc = _spawn(
            "webhooks",
            [
                sys.executable,
                "-m",
                "oms_ops.channels.webhooks",
                "--host",
                "127.0.0.1",
                "--port",
                str(webhook_port),
            ],
            settings,
            env,
        )
        url = f"http://127.0.0.1:{webhook_port}"
        log = settings.log_dir / "webhooks.log"
        state.services["webhooks"] = ServiceInfo(
            "webhooks", url + "/webhooks/shopify", proc.pid, True, str(log)
        )
        _write_state(settings, state)
        _wait_http(url + "/health", proc, "webhooks", log, timeout=60)


def _prepare_dagster_home(settings: Settings) -> None:
    settings.dagster_home.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(REPO_ROOT / "dagster.yaml", settings.dagster_home / "dagster.yaml")


#: the code location's name: the one ``workspace.yaml`` gives it (``dagster dev``), so schedules, sensors and
#: run history are the same whichever way Dagster is started
DAGSTER_LOCATION = "pipelines.definitions"
#: gRPC timeouts of the webserver, the daemon and the code server (Dagster's default is 60 s; on a loaded
#: 2-core box a sensor tick or a run launch took longer and the run failed before any step ran). Set in the
#: environment they are started with, unless the operator set them already.
DAGSTER_GRPC_ENV = {
    "DAGSTER_GRPC_TIMEOUT_SECONDS": "180",
    "DAGSTER_SCHEDULE_GRPC_TIMEOUT_SECONDS": "180",
    "DAGSTER_SENSOR_GRPC_TIMEOUT_SECONDS": "180",
    "DAGSTER_REPOSITORY_GRPC_TIMEOUT_SECONDS": "300",
    # how long a stopping code server waits for calls in flight (else the timeout above): `oms down` is quick
    "DAGSTER_GRPC_SHUTDOWN_GRACE_PERIOD": "10",
}


def dagster_env(env: dict[str, str]) -> dict[str, str]:
    """``env`` with the Dagster gRPC timeouts (:data:`DAGSTER_GRPC_ENV`) where not set already."""
    return {**DAGSTER_GRPC_ENV, **env}


def code_server_workspace(settings: Settings, host: str, port: int) -> Path:
    """Write ``$DAGSTER_HOME/workspace.yaml``: the code location served by the persistent code server (the
    repository's ``workspace.yaml`` stays the one ``dagster dev`` uses, which spawns its own servers)."""
    path = settings.dagster_home / "workspace.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        "# Written by `oms up` / `oms demo` (oms_ops/platform/stack.py): the webserver and the daemon load the\n"
        "# code location from the persistent code server instead of starting a process of their own.\n"
        "load_from:\n"
        "  - grpc_server:\n"
        f"      host: {host}\n"
        f"      port: {port}\n"
        f"      location_name: {DAGSTER_LOCATION}\n"
    )
    return path


def _wait_tcp(host: str, port: int, proc: subprocess.Popen, name: str, log: Path, timeout: float) -> None:
    """Wait until ``proc`` accepts connections on (host, port); a process that exits first is an error."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log.read_text(errors="replace")[-1500:] if log.exists() else ""
            raise StackError(f"{name} exited with code {proc.returncode} during start-up; log {log}:\n{tail}")
        if port_in_use(port, host):
            return
        time.sleep(0.3)
    raise StackError(f"{name} did not listen on {host}:{port} within {timeout:.0f}s; see {log}")


#: what the code server logs when the code location cannot be loaded (it serves the error then)
_CODE_LOAD_FAILURE = "Failure while loading code"


def start_code_server(settings: Settings, state: StackState, env: dict[str, str]) -> Path:
    """``dagster code-server start`` on loopback: one long-lived process that loads the code location once
    and launches every run, instead of the webserver and the daemon each spawning a server (and a process
    per request on a busy box). It binds its port only once the code is loaded, so a listening port means
    ready. Returns the generated workspace file the webserver and the daemon are started with."""
    host, port = "127.0.0.1", choose_port(0)
    log = settings.log_dir / "dagster-code-server.log"
    settings.log_dir.mkdir(parents=True, exist_ok=True)
    log_start = log.stat().st_size if log.exists() else 0
    proc = _spawn(
        "dagster-code-server",
        [
            str(Path(sys.executable).parent / "dagster"), "code-server", "start",
            "-h", host, "-p", str(port),
            "-m", DAGSTER_LOCATION, "-d", str(REPO_ROOT), "--location-name", DAGSTER_LOCATION,
            # run workers are started as `<this python> -m dagster`: the right environment whatever PATH says
            "--use-python-environment-entry-point",
        ],
        settings,
        env,
    )  # fmt: skip
    state.services["dagster-code-server"] = ServiceInfo(
        "dagster-code-server", f"grpc://{host}:{port}", proc.pid, True, str(log)
    )
    _write_state(settings, state)
    _wait_tcp(host, port, proc, "dagster-code-server", log, timeout=300)
    with open(log, "rb") as fh:
        fh.seek(log_start)
        new_output = fh.read().decode(errors="replace")
    if _CODE_LOAD_FAILURE in new_output:
        at = new_output.index(_CODE_LOAD_FAILURE)
        raise StackError(
            f"dagster-code-server cannot load {DAGSTER_LOCATION}; log {log}:\n{new_output[at:][:1500]}"
        )
    return code_server_workspace(settings, host, port)


def start_worker(settings: Settings, state: StackState, services: Iterable[str]) -> None:
    """The always-on worker (``python -m oms_ops.worker``: a supervisor restarting the worker process when
    it dies), started once the stores, the simulated world and its seed are there."""
    if "worker" not in set(services):
        return
    args = [sys.executable, "-m", "oms_ops.worker"]
    if "simulators" in set(services):  # the simulated world has no courier app: the worker plays it
        args.append("--demo-courier")
    proc = _spawn("worker", args, settings, child_env(settings, state))
    log = settings.log_dir / "worker.log"
    state.services["worker"] = ServiceInfo("worker", None, proc.pid, True, str(log))
    _write_state(settings, state)
    time.sleep(0.5)
    if proc.poll() is not None:
        tail = log.read_text(errors="replace")[-1500:] if log.exists() else ""
        raise StackError(f"the worker did not start; log {log}:\n{tail}")


def start_apps(settings: Settings, state: StackState, services: Iterable[str]) -> None:
    """The Dagster code server, webserver and daemon, the OMS API and Streamlit (which sends its actions to
    the API), detached, each waited for until it answers."""
    services = set(services)
    env = child_env(settings, state)
    bin_dir = Path(sys.executable).parent
    if services & {"dagster-code-server", "dagster-webserver", "dagster-daemon"}:
        _prepare_dagster_home(settings)
        # the webserver and the daemon need the code server: it comes with either of them
        workspace = str(start_code_server(settings, state, dagster_env(env)))
    if "dagster-webserver" in services:
        port = choose_port(settings.dagster_port)
        proc = _spawn(
            "dagster-webserver",
            [str(bin_dir / "dagster-webserver"), "-w", workspace, "-h", "127.0.0.1", "-p", str(port)],
            settings,
            dagster_env(env),
        )
        url = f"http://127.0.0.1:{port}"
        log = settings.log_dir / "dagster-webserver.log"
        state.services["dagster-webserver"] = ServiceInfo("dagster-webserver", url, proc.pid, True, str(log))
        _write_state(settings, state)
        _wait_http(url + "/server_info", proc, "dagster-webserver", log, timeout=180)
    if "dagster-daemon" in services:
        proc = _spawn(
            "dagster-daemon",
            [str(bin_dir / "dagster-daemon"), "run", "-w", workspace],
            settings,
            dagster_env(env),
        )
        log = settings.log_dir / "dagster-daemon.log"
        state.services["dagster-daemon"] = ServiceInfo("dagster-daemon", None, proc.pid, True, str(log))
        _write_state(settings, state)
    if "api" in services:
        # the OMS API runs the dashboards' actions on the OMS's own login (docs/api.md); its credentials are
        # the users' tokens, signed with a key generated into $OMS_HOME/secrets
        port = state.api_port if state.api_port and not port_in_use(state.api_port) else None
        if port is None:  # nothing reserved (no simulators), or taken since: the simulated 1C retries in vain
            port = choose_port(settings.api_port)
        proc = _spawn("api", [sys.executable, "-m", "oms_ops.api", "--port", str(port)], settings, env)
        url = f"http://127.0.0.1:{port}"
        log = settings.log_dir / "api.log"
        state.services["api"] = ServiceInfo("api", url, proc.pid, True, str(log))
        _write_state(settings, state)
        _wait_http(url + "/v1/health", proc, "api", log, timeout=60)
    if "streamlit" in services:
        # the dashboards read ClickHouse as its read-only user (the embedded server's; else the URL given)
        dashboards_env = dict(env)
        if state.clickhouse_dashboard_url:
            dashboards_env["OMS_CLICKHOUSE_URL"] = state.clickhouse_dashboard_url
        if "api" in state.services:  # their actions go to the API
            dashboards_env["OMS_API_URL"] = state.services["api"].url or ""
            if dashboards_env.get("OMS_DASHBOARD_DATABASE_URL"):
                # … and so do the health figures: the dashboards keep their read-only login only, never
                # the OMS's own login or Dagster's storage URL (a compromised dashboards process can read,
                # not write)
                for var in ("OMS_DATABASE_URL", "OMS_DAGSTER_STORAGE_URL", "OMS_DAGSTER_DATABASE_URL"):
                    dashboards_env.pop(var, None)
        port = choose_port(settings.streamlit_port)
        proc = _spawn(
            "streamlit",
            [
                str(bin_dir / "streamlit"),
                "run",
                "dashboards/app.py",
                "--server.headless=true",
                "--server.address=127.0.0.1",
                f"--server.port={port}",
                "--browser.gatherUsageStats=false",
            ],
            settings,
            dashboards_env,
        )
        url = f"http://127.0.0.1:{port}"
        log = settings.log_dir / "streamlit.log"
        state.services["streamlit"] = ServiceInfo("streamlit", url, proc.pid, True, str(log))
        _write_state(settings, state)
        _wait_http(url + "/_stcore/health", proc, "streamlit", log, timeout=120)


def check_business_config() -> None:
    """Invalid business configuration stops start-up, naming every wrong field (before anything starts)."""
    try:
        load_business_config()
    except BusinessConfigError as exc:
        raise ConfigError("OMS_BUSINESS_CONFIG: " + str(exc)) from None


def up(
    settings: Settings,
    services: Iterable[str] = ALL_SERVICES,
    *,
    after_stores: StoresHook | None = None,
    seed: SeedHook | None = None,
    simulator_secrets: SimulatorSecrets | None = None,
) -> tuple[StackState, bool]:
    """Start the stack. Returns (state, already_running). A running stack is reported, not duplicated.
    ``after_stores`` runs once Postgres and ClickHouse are up and migrated; ``seed`` once the simulated
    world is up; ``simulator_secrets`` names the simulators' secret fields to generate (the entry point
    passes the OMS's own steps and declarations, keeping this module below them)."""
    services = tuple(services)
    unknown = set(services) - KNOWN_SERVICES
    if unknown:
        raise ConfigError(
            f"--services: unknown service(s) {', '.join(sorted(unknown))}; known: {', '.join(DEMO_SERVICES)}"
        )
    running = running_services(settings)
    if running and any(info.embedded for info in running.values()):
        return read_state(settings), True  # type: ignore[return-value]
    check_business_config()
    state = StackState(started_at=time.time())
    try:
        start_stores(settings, state)
        if after_stores is not None:
            after_stores(state)
        start_outside_world(settings, state, services, seed=seed, simulator_secrets=simulator_secrets)
        start_worker(settings, state, services)
        start_apps(settings, state, services)
    except BaseException:
        down(settings)
        raise
    return state, False


def down(settings: Settings) -> list[str]:
    """Stop every service recorded in the state file (apps first, stores last). Returns what was stopped.

    One service failing to stop does not keep the others running; the state file is kept in that case so a
    second ``oms down`` can finish the job.
    """
    state = read_state(settings)
    stopped: list[str] = []
    if state is None:
        return stopped
    failures: list[str] = []

    def _stop(name: str, fn) -> None:
        try:
            if fn():
                stopped.append(name)
        except Exception as exc:  # noqa: BLE001 - report and go on with the other services
            failures.append(f"{name}: {exc}")

    def _stop_process(info: ServiceInfo | None) -> bool:
        if info and info.embedded and pid_alive(info.pid):
            stop_pid(info.pid)
            return True
        return False

    def _stop_postgres() -> bool:
        pg = state.services.get("postgres")
        if not (pg and pg.embedded):
            return False
        server = EmbeddedPostgres(settings.pg_data_dir)
        if server.running_port() is None:
            return False
        server.stop()
        return True

    for name in (
        "worker",
        "streamlit",
        "api",
        "dagster-daemon",
        "dagster-webserver",
        "dagster-code-server",
        "webhooks",
        "simulators",
        "clickhouse",
    ):
        _stop(name, lambda name=name: _stop_process(state.services.get(name)))
    _stop("postgres", _stop_postgres)
    if failures:
        raise StackError("could not stop " + "; ".join(failures))
    _state_path(settings).unlink(missing_ok=True)
    return stopped


def secrets_report(settings: Settings) -> list[tuple[str, str]]:
    """(what, value) for ``oms status --secrets``: each secret file of ``$OMS_HOME/secrets`` (path and
    content), then the URLs with credentials the running stack hands out."""
    rows: list[tuple[str, str]] = []
    for name, path in credentials.stored_secrets(settings.home).items():
        value = path.read_text(encoding="utf-8").strip()
        if name.endswith(".json"):
            value = json.dumps(json.loads(value), separators=(",", ":"))
        rows.append((name, f"{value}  ({path})"))
    state = read_state(settings)
    if state is not None:
        urls = {
            "OMS_DATABASE_URL": state.database_url,
            "OMS_DASHBOARD_DATABASE_URL": dashboard_database_url(settings, state),
            "OMS_CLICKHOUSE_URL": state.clickhouse_url,
            "OMS_CLICKHOUSE_URL (dashboards)": state.clickhouse_dashboard_url,
        }
        rows += [(name, url) for name, url in urls.items() if url]
    return rows


def status(settings: Settings) -> list[tuple[str, str, str]]:
    """(service, up/down, url) for every service that the state file knows."""
    state = read_state(settings)
    rows: list[tuple[str, str, str]] = []
    if state is None:
        return rows
    for name, info in state.services.items():
        if info.embedded:
            up_ = pid_alive(info.pid)
            if name == "postgres":
                up_ = EmbeddedPostgres(settings.pg_data_dir).running_port() is not None
        else:
            up_ = True
        rows.append((name, "up" if up_ else "down", info.url or "-"))
    return rows
