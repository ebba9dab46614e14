"""``oms routing …``: routing what-ifs from the command line (``oms routing backtest``).

A sub-app of :mod:`oms_ops.cli` (an entry point like it): it resolves the database and the draft, calls
:mod:`oms_ops.services.backtest` and prints the comparison — a table, or one JSON object with ``--json``.
Errors are one line naming the field (``error: draft.yaml: invalid business configuration: routing_rules[4]
.strategy: …``), exit code 2.
"""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import typer

from oms_ops.business_config import BusinessConfigError
from oms_ops.cli_support import database_url, fail
from oms_ops.db import connect
from oms_ops.services.backtest import BacktestError, load_draft, run_backtest

app = typer.Typer(help="Routing: replay past orders against a draft configuration.", no_args_is_help=True)


def _date(value: str, option: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError:
        fail(f"{option}: {value!r} is not a date (expected YYYY-MM-DD)")
        raise  # unreachable


@app.command("backtest")
def backtest_command(
    from_: str = typer.Option(..., "--from", help="first day of the period (YYYY-MM-DD, business time zone)"),
    to: str = typer.Option(..., "--to", help="last day of the period, included"),
    config: Path = typer.Option(
        None, "--config", help="draft business configuration (default: the live one, OMS_BUSINESS_CONFIG)"
    ),
    channel: list[str] = typer.Option(None, "--channel", help="only orders of these channels (repeatable)"),
    as_json: bool = typer.Option(False, "--json", help="print one JSON object instead of tables"),
) -> None:
    """Replay the period's orders against the draft configuration, on the stock each location had when
    each order arrived, and compare with what the live allocator decided. Writes nothing."""
    start, end = _date(from_, "--from"), _date(to, "--to")
    try:
        draft = load_draft(config)
    except BusinessConfigError as exc:
        fail(str(exc).replace("\n  ", "; ").replace(":;", ":"))
        return
    url = database_url()
    try:
        with connect(url) as conn:
            report = run_backtest(conn, draft, start=start, end=end, channels=channel or None)
    except BacktestError as exc:
        fail(str(exc))
        return
    except (OSError, RuntimeError) as exc:
        fail(str(exc))
        return
    if as_json:
        typer.echo(json.dumps(report.as_dict(), ensure_ascii=False, default=str))
        return
    typer.echo(
        f"routing backtest {start}…{end}"
        + (f" channels {', '.join(report.channels)}" if report.channels else "")
        + f": draft {report.config_fingerprint} vs live {', '.join(report.live_fingerprints) or '-'}"
    )
    typer.echo(f"{'figure':<42} {'real':>14} {'backtest':>14} {'change':>12}")
    for f in report.figures:
        typer.echo(
            f"{f['label']:<42} {_num(f['real']):>14} {_num(f['backtest']):>14} {_num(f['change']):>12}"
        )
    typer.echo("")
    typer.echo(
        f"{'location':<14} {'shipments real':>15} {'backtest':>10} {'units real':>11} {'backtest':>10}"
    )
    for row in report.locations:
        typer.echo(
            f"{row['location']:<14} {row['real_shipments']:>15} {row['backtest_shipments']:>10} "
            f"{row['real_units']:>11} {row['backtest_units']:>10}"
        )
    t = report.timings_s
    typer.echo(f"read {t['read']}s, replay {t['replay']}s, compare {t['compare']}s (read-only transaction)")


def _num(v: float | int) -> str:
    return f"{v:,}" if isinstance(v, int) else f"{v:,.4g}" if abs(v) < 10 else f"{v:,.1f}"
