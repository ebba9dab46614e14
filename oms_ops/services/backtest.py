"""Routing backtest use case: a draft business configuration replayed over a past period (read-only).

The CLI (``oms routing backtest``) and the admin dashboard page call this; the work is in
:mod:`oms_ops.backtest`. A draft is validated by the same loader as the live file, so a draft that would
not start the system is refused here with every problem named by its field path.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import psycopg
import yaml

from oms_ops.backtest import BacktestError, BacktestReport, backtest
from oms_ops.business_config import (
    BusinessConfig,
    BusinessConfigError,
    load_business_config,
    parse_business_config,
)

#: the longest period one backtest replays (a year of orders is already a long read)
MAX_PERIOD_DAYS = 366


def parse_draft(text: str, *, source: str = "draft") -> BusinessConfig:
    """A draft configuration pasted or uploaded as YAML text, validated like the live file."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise BusinessConfigError([f"(yaml): {exc}"], source) from None
    return parse_business_config(data, source=source)


def load_draft(path: str | Path | None) -> BusinessConfig:
    """The draft file (``None``: the live configuration, ``$OMS_BUSINESS_CONFIG`` or the sample)."""
    return load_business_config(path)


def period_bounds(start: date, end: date, tz: str) -> tuple[datetime, datetime]:
    """``--from``/``--to`` as whole days of the business time zone: [from 00:00, the day after to 00:00)."""
    if end < start:
        raise BacktestError(f"to: {end.isoformat()} is before from {start.isoformat()}")
    if (end - start).days + 1 > MAX_PERIOD_DAYS:
        raise BacktestError(f"to: the period has {(end - start).days + 1} days, at most {MAX_PERIOD_DAYS}")
    zone = ZoneInfo(tz)
    return datetime.combine(start, time(), zone), datetime.combine(end + timedelta(days=1), time(), zone)


def run_backtest(
    conn: psycopg.Connection,
    config: BusinessConfig,
    *,
    start: date,
    end: date,
    channels: Sequence[str] | None = None,
) -> BacktestReport:
    """Replay the orders placed from ``start`` to ``end`` (whole days, business time zone) against the
    draft ``config``; nothing is written (one read-only transaction)."""
    known = {c.code for c in config.channels}
    unknown = sorted(set(channels or ()) - known)
    if unknown:
        raise BacktestError(
            f"channel: unknown {', '.join(unknown)} (the draft has {', '.join(sorted(known))})"
        )
    lo, hi = period_bounds(start, end, config.business_timezone)
    return backtest(conn, config, start=lo, end=hi, channels=channels)
