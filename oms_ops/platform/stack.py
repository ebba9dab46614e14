"""Starts, stops and reports the whole stack: Postgres, ClickHouse, Dagster (webserver + daemon), Streamlit.

Embedded defaults are used unless OMS_DATABASE_URL / OMS_CLICKHOUSE_URL point at real servers. Every
process is started detached (own session, logs under ``$OMS_HOME/logs``) and recorded in
``$OMS_HOME/run/stack.json`` so that ``oms status`` and ``oms down`` work from any other shell, and a
second ``oms up`` finds the running stack instead of starting another one.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import psutil
import psycopg
from psycopg import sql

from oms_ops.business_config import BusinessConfigError, load_business_config
from oms_ops.platform.clickhouse.supervisor import start_clickhouse_process
from oms_ops.platform.migrate import migrate
from oms_ops.platform.netutil import choose_port
from oms_ops.platform.postgres import EmbeddedPostgres, ensure_database
from oms_ops.platform.settings import ConfigError, Settings, redact

REPO_ROOT = Path(__file__).resolve().parents[2]
ALL_SERVICES = ("postgres", "clickhouse", "dagster-webserver", "dagster-daemon", "streamlit")
#: the live demo adds the simulated outside world (channels, carrier, WMS) and the web store's webhook receiver
DEMO_SERVICES = (
    "postgres",
    "clickhouse",
    "simulators",
    "webhooks",
    "dagster-webserver",
    "dagster-daemon",
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
    services: dict[str, ServiceInfo] = field(default_factory=dict)
    database_url: str | None = None
    clickhouse_url: str | None = None
    started_at: float | None = None

    def to_json(self) -> str:
        return json.dumps(
            {
                "services": {k: asdict(v) for k, v in self.services.items()},
                "database_url": self.database_url,
                "clickhouse_url": self.clickhouse_url,
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
    settings.run_dir.mkdir(parents=True, exist_ok=True)
    tmp = _state_path(settings).with_suffix(".tmp")
    tmp.write_text(state.to_json())
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


def ensure_dashboard_login(conn: psycopg.Connection) -> None:
    """On the embedded server (loopback only, trust authentication) the dashboards log in as a member of
    the least-privilege role ``oms_dashboard`` instead of the superuser. With a real server the operator
    creates that login with a password and sets OMS_DASHBOARD_DATABASE_URL (docs/dashboards.md)."""
    exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (DASHBOARD_LOGIN,)).fetchone()
    if not exists:
        conn.execute(
            sql.SQL("CREATE ROLE {} LOGIN IN ROLE oms_dashboard").format(sql.Identifier(DASHBOARD_LOGIN))
        )


def dashboard_database_url(settings: Settings, state: StackState) -> str | None:
    explicit = settings.dashboard_database_url
    if explicit or settings.database_url or not state.database_url:
        return explicit
    return (
        urlsplit(state.database_url)
        ._replace(netloc=f"{DASHBOARD_LOGIN}@" + urlsplit(state.database_url).netloc.split("@")[-1])
        .geturl()
    )


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
        pg = EmbeddedPostgres(settings.pg_data_dir, port=settings.pg_port)
        try:
            state.database_url = pg.start(("oms", DAGSTER_DB))
        except RuntimeError as exc:
            raise StackError(f"embedded Postgres: {exc}") from None
        state.services["postgres"] = ServiceInfo(
            "postgres", state.database_url, pg.pid(), True, str(pg.log_path)
        )
    _write_state(settings, state)
    with psycopg.connect(state.database_url, autocommit=True) as conn:
        migrate(conn)
        if not settings.database_url:
            ensure_dashboard_login(conn)
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
        try:
            ch = start_clickhouse_process(
                settings.clickhouse_data_dir, port=settings.clickhouse_port or None, log_path=log
            )
        except RuntimeError as exc:
            raise StackError(f"embedded ClickHouse: {exc}") from None
        state.clickhouse_url = ch.url
        state.services["clickhouse"] = ServiceInfo("clickhouse", ch.url, ch.pid, True, str(log))
    _write_state(settings, state)


def demo_stream_settings(settings: Settings) -> dict[str, str]:
    """How busy the simulated world is (``OMS_DEMO_*`` for a bigger or smaller demo)."""
    return {
        "seed": str(settings.demo_seed),
        # orders per minute per channel; the simulated clock runs in real time so that placed, shipped and
        # delivered timestamps stay on one clock …
        "rate": str(settings.demo_rate),
        # … while the carrier compresses transit (1/240: a day in the network takes six minutes)
        "transit_scale": str(settings.demo_transit_scale),
    }


#: ``seed(database_url, manifest path)``: the OMS's catalog, listings and stock from the simulated world
SeedHook = Callable[[str | None, Path], None]
#: called once the stores are up and migrated (e.g. to build the live operational views)
StoresHook = Callable[[StackState], None]


def start_outside_world(
    settings: Settings, state: StackState, services: Iterable[str], *, seed: SeedHook | None = None
) -> None:
    """The simulators (marketplaces, web store, POS, WMS, CDEK) and the webhook receiver, then ``seed`` the
    OMS's catalog, channel listings and initial stock from them so the first scheduled ingest finds work."""
    services = set(services)
    if not services & {"simulators", "webhooks"}:
        return
    env = child_env(settings, state)
    manifest = simulators_manifest(settings)
    webhook_port = choose_port(0)
    if "simulators" in services:
        demo = demo_stream_settings(settings)
        manifest.unlink(missing_ok=True)
        args = [
            sys.executable, "-m", "simulators",
            "--seed", demo["seed"], "--rate", demo["rate"], "--speed", "1",
            "--state-dir", str(manifest.parent),
            "--options", json.dumps({s: {"transit_scale": float(demo["transit_scale"])} for s in ("cdek", "wms")}),
        ]  # fmt: skip
        if "webhooks" in services:
            args += ["--webhook-url", f"http://127.0.0.1:{webhook_port}/webhooks/shopify"]
        proc = _spawn("simulators", args, settings, env)
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


def start_apps(settings: Settings, state: StackState, services: Iterable[str]) -> None:
    """Dagster webserver + daemon and Streamlit, detached, each waited for until it answers."""
    services = set(services)
    env = child_env(settings, state)
    bin_dir = Path(sys.executable).parent
    if services & {"dagster-webserver", "dagster-daemon"}:
        _prepare_dagster_home(settings)
    if "dagster-webserver" in services:
        port = choose_port(settings.dagster_port)
        proc = _spawn(
            "dagster-webserver",
            [str(bin_dir / "dagster-webserver"), "-w", "workspace.yaml", "-h", "127.0.0.1", "-p", str(port)],
            settings,
            env,
        )
        url = f"http://127.0.0.1:{port}"
        log = settings.log_dir / "dagster-webserver.log"
        state.services["dagster-webserver"] = ServiceInfo("dagster-webserver", url, proc.pid, True, str(log))
        _write_state(settings, state)
        _wait_http(url + "/server_info", proc, "dagster-webserver", log, timeout=180)
    if "dagster-daemon" in services:
        proc = _spawn(
            "dagster-daemon", [str(bin_dir / "dagster-daemon"), "run", "-w", "workspace.yaml"], settings, env
        )
        log = settings.log_dir / "dagster-daemon.log"
        state.services["dagster-daemon"] = ServiceInfo("dagster-daemon", None, proc.pid, True, str(log))
        _write_state(settings, state)
    if "streamlit" in services:
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
            env,
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
) -> tuple[StackState, bool]:
    """Start the stack. Returns (state, already_running). A running stack is reported, not duplicated.
    ``after_stores`` runs once Postgres and ClickHouse are up and migrated; ``seed`` once the simulated
    world is up (the entry point passes the OMS's own steps, keeping this module below them)."""
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
        start_outside_world(settings, state, services, seed=seed)
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

    for name in ("streamlit", "dagster-daemon", "dagster-webserver", "webhooks", "simulators", "clickhouse"):
        _stop(name, lambda name=name: _stop_process(state.services.get(name)))
    _stop("postgres", _stop_postgres)
    if failures:
        raise StackError("could not stop " + "; ".join(failures))
    _state_path(settings).unlink(missing_ok=True)
    return stopped


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
