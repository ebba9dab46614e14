"""Health that tells the truth: is the operational loop keeping up, not only are the servers up.

A server can answer while the work it exists for stalls — runs failing before any step, marts twenty
minutes old, orders waiting for allocation. So next to the service probes (``oms_ops.platform.health``),
``oms status`` and the Service health page show these figures, each with a verdict (``ok`` / ``warn`` /
``bad``) from the thresholds below:

* **worker** — the fast lane's newest heartbeat and its lag (``oms.worker_heartbeats``, migration 0013);
  "no worker" when that table is missing or empty;
* **unallocated orders** — the age of the oldest order still ``new``;
* **ATS to <channel>** — per channel with an ATS pusher: values waiting to be pushed and the last successful
  push (``connectors.ats_push_state``). A channel whose every value is pushed is fine however old its last
  push: nothing changed since;
* **Dagster runs** — failed runs in the last hour (those the instance will not retry count against the
  verdict) and the oldest queued run, read from the run storage of the Dagster instance;
* **KPI marts** — how old the newest change reflected by the marts is (``_loaded_at``), judged only while
  the system of record has newer changes; marts not built although orders have shipped.

Each figure is read on its own: one that cannot be read says why (``warn``) and the others are still shown.
The Dagster run storage is read with SQL on its ``runs`` / ``run_tags`` tables (stable across Dagster
versions) rather than through ``DagsterInstance``: the CLI and the dashboards then need neither Dagster's
import nor its instance configuration. Timestamps there are naive and written in the session's time zone, so
ages are taken against ``localtimestamp`` — what Dagster itself compares with.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import psycopg

from oms_ops import dashboard_queries as dq
from oms_ops.channels import registry

OK, WARN, BAD = "ok", "warn", "bad"
_RANK = {OK: 0, WARN: 1, BAD: 2}

#: worker: seconds since the newest heartbeat (a cycle beats every few seconds while it works)
WORKER_BEAT_WARN_S = 60
WORKER_BEAT_BAD_S = 180
#: worker: its lag, the age of the oldest queued payload or unallocated order it reported
WORKER_LAG_WARN_S = 120
WORKER_LAG_BAD_S = 600
#: the oldest order still 'new' (not allocated, held or backordered yet)
UNALLOCATED_WARN_S = 300
UNALLOCATED_BAD_S = 900
#: ATS: seconds since a channel's last successful push while values wait to be pushed
ATS_PUSH_WARN_S = 15 * 60
ATS_PUSH_BAD_S = 60 * 60
#: Dagster: failed runs counted over this window; how many failures nobody will retry make it warn / bad
FAILED_RUNS_WINDOW_S = 3600
FAILED_RUNS_WARN = 1
FAILED_RUNS_BAD = 3
#: Dagster: the oldest run still waiting in the queue
QUEUED_RUN_WARN_S = 300
QUEUED_RUN_BAD_S = 900
#: KPI marts: age of the newest change they reflect while newer changes exist (they build every 10 minutes;
#: 30 minutes is the Dagster freshness checks' limit)
MART_STALE_WARN_S = 15 * 60
MART_STALE_BAD_S = 30 * 60
#: the marts whose freshness is judged (order-level: any change to an order reaches them)
FRESHNESS_MARTS = ("agg_kpi_daily", "fct_orders")

#: Dagster's run tag saying whether a failed run will be retried (set when it fails, with run_retries on)
WILL_RETRY_TAG = "dagster/will_retry"


@dataclass(frozen=True)
class Figure:
    """One health figure: ``key`` (stable id), ``label``, ``verdict`` (ok / warn / bad), a one-line
    ``summary``, the measured ``value`` (seconds or a count, None when there is none) and ``detail``."""

    key: str
    label: str
    verdict: str
    summary: str
    value: float | None = None
    detail: dict[str, Any] = field(default_factory=dict)


def worst(figures: Iterable[Figure]) -> str:
    """The worst verdict of ``figures`` (ok when there are none)."""
    return max((f.verdict for f in figures), key=_RANK.__getitem__, default=OK)


def _grade(value: float, warn: float, bad: float) -> str:
    return BAD if value > bad else WARN if value > warn else OK


def age_text(seconds: float | None) -> str:
    """``42 s`` / ``7 min`` / ``3.5 h`` (— for None)."""
    if seconds is None:
        return "—"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else type(exc).__name__


def _guarded(key: str, label: str, read: Callable[[], list[Figure]]) -> list[Figure]:
    """``read()``, or one ``warn`` figure saying why it could not be read."""
    try:
        return read()
    except Exception as exc:  # noqa: BLE001 - a figure that cannot be read must not hide the others
        return [Figure(key, label, WARN, f"cannot be read: {_first_line(exc)}")]


# -- the system of record ------------------------------------------------------------------------------------


def worker_figure(conn: psycopg.Connection) -> Figure:
    """The fast lane: the newest heartbeat's age and the lag of the workers beating now."""
    label = "Worker"
    if conn.execute("SELECT to_regclass('oms.worker_heartbeats')").fetchone()[0] is None:
        return Figure("worker", label, WARN, "no worker: the fast lane is not installed (schedules only)")
    rows = conn.execute(
        """SELECT worker_id, extract(epoch FROM now() - beat_at)::float8, lag_seconds, last_error
           FROM oms.worker_heartbeats ORDER BY beat_at DESC"""
    ).fetchall()
    if not rows:
        return Figure("worker", label, WARN, "no worker has reported a heartbeat")
    workers = [{"worker_id": w, "beat_age_s": a, "lag_s": lag, "last_error": e} for w, a, lag, e in rows]
    newest = rows[0][1]
    alive = [w for w in workers if w["beat_age_s"] <= WORKER_BEAT_BAD_S]
    lag = max((w["lag_s"] or 0.0 for w in alive), default=None)
    detail = {"workers": workers, "alive": len(alive)}
    if not alive:
        return Figure(
            "worker", label, BAD, f"no heartbeat for {age_text(newest)}: the worker is down", newest, detail
        )
    verdict = max(
        _grade(newest, WORKER_BEAT_WARN_S, WORKER_BEAT_BAD_S),
        _grade(lag or 0.0, WORKER_LAG_WARN_S, WORKER_LAG_BAD_S),
        key=_RANK.__getitem__,
    )
    return Figure(
        "worker",
        label,
        verdict,
        f"{len(alive)} alive, heartbeat {age_text(newest)} ago, lag {age_text(lag)}",
        lag,
        detail,
    )


def unallocated_figure(conn: psycopg.Connection) -> Figure:
    """The oldest order still 'new': how long allocation has kept it waiting (since the OMS accepted it)."""
    count, age = conn.execute(
        """SELECT count(*), extract(epoch FROM now() - min(created_at))::float8
           FROM oms.orders WHERE state = 'new'"""
    ).fetchone()
    if not count:
        return Figure("unallocated", "Unallocated orders", OK, "no order waits for allocation", 0.0)
    return Figure(
        "unallocated",
        "Unallocated orders",
        _grade(age, UNALLOCATED_WARN_S, UNALLOCATED_BAD_S),
        f"{count} new, the oldest waiting {age_text(age)}",
        age,
        {"orders": count},
    )


def ats_figures(conn: psycopg.Connection) -> list[Figure]:
    """Per channel with an ATS pusher that has something to push or has pushed: values waiting (target
    differs from what was last pushed, or a retry is due) and the age of the last successful push."""
    codes = [c.code for c in registry.with_ats()]
    rows = conn.execute(
        """WITH targets AS (
               SELECT t.channel_code,
                      count(*) FILTER (WHERE s.pushed_qty IS DISTINCT FROM t.ats
                                          OR s.status NOT IN ('pushed', 'unverified')) AS waiting
               FROM ops.ops_ats_targets t
               LEFT JOIN connectors.ats_push_state s
                 ON s.channel_code = t.channel_code AND s.location_code = t.location_code AND s.sku = t.sku
               WHERE t.channel_code = ANY(%(codes)s)
               GROUP BY t.channel_code),
           pushes AS (
               SELECT channel_code, max(pushed_at) AS pushed_at,
                      count(*) FILTER (WHERE status = 'failed') AS failed
               FROM connectors.ats_push_state WHERE channel_code = ANY(%(codes)s)
               GROUP BY channel_code)
           SELECT coalesce(t.channel_code, p.channel_code), coalesce(t.waiting, 0), coalesce(p.failed, 0),
                  extract(epoch FROM now() - p.pushed_at)::float8
           FROM targets t FULL JOIN pushes p ON p.channel_code = t.channel_code
           ORDER BY 1""",
        {"codes": codes},
    ).fetchall()
    out = []
    for channel, waiting, failed, age in rows:
        detail = {"channel": channel, "waiting": waiting, "failed": failed, "last_push_age_s": age}
        label = f"ATS to {channel}"
        if age is None:
            verdict = BAD if failed else WARN
            summary = f"never pushed; {waiting} value(s) waiting" + (f", {failed} failing" if failed else "")
        elif waiting == 0:
            verdict, summary = OK, f"every value pushed; last push {age_text(age)} ago"
        else:
            verdict = _grade(age, ATS_PUSH_WARN_S, ATS_PUSH_BAD_S)
            summary = f"{waiting} value(s) waiting, last push {age_text(age)} ago" + (
                f", {failed} failing" if failed else ""
            )
        out.append(Figure(f"ats:{channel}", label, verdict, summary, age, detail))
    return out


# -- Dagster's run storage -------------------------------------------------------------------------------------


def dagster_figures(conn: psycopg.Connection) -> list[Figure]:
    """Failed runs of the last hour (retried ones apart) and the oldest queued run, from the run storage."""
    if conn.execute("SELECT to_regclass('runs')").fetchone()[0] is None:
        return [
            Figure("dagster_runs", "Dagster runs", WARN, "no Dagster run storage yet (Dagster never ran)")
        ]
    failed = conn.execute(
        """SELECT r.pipeline_name,
                  EXISTS (SELECT 1 FROM run_tags t
                          WHERE t.run_id = r.run_id AND t.key = %(tag)s AND t.value = 'true') AS will_retry
           FROM runs r
           WHERE r.status = 'FAILURE' AND r.update_timestamp > localtimestamp - make_interval(secs => %(window)s)
           ORDER BY r.update_timestamp DESC""",
        {"tag": WILL_RETRY_TAG, "window": FAILED_RUNS_WINDOW_S},
    ).fetchall()
    final = [job for job, will_retry in failed if not will_retry]
    retried = len(failed) - len(final)
    jobs = sorted(set(final))
    if not final:
        verdict = OK
        summary = (
            "no failed run in the last hour"
            if not failed
            else f"{retried} failed and retried in the last hour"
        )
    else:
        verdict = BAD if len(final) >= FAILED_RUNS_BAD else WARN if len(final) >= FAILED_RUNS_WARN else OK
        summary = f"{len(final)} failed in the last hour, not retried ({', '.join(jobs)})" + (
            f"; {retried} more failed and retried" if retried else ""
        )
    runs = Figure(
        "dagster_runs",
        "Dagster runs",
        verdict,
        summary,
        float(len(final)),
        {"failed": len(failed), "not_retried": len(final), "retried": retried, "jobs": jobs},
    )
    queued, oldest = conn.execute(
        """SELECT count(*), extract(epoch FROM localtimestamp - min(create_timestamp))::float8
           FROM runs WHERE status = 'QUEUED'"""
    ).fetchone()
    if not queued:
        queue = Figure("dagster_queue", "Dagster queue", OK, "no run waits in the queue", 0.0)
    else:
        queue = Figure(
            "dagster_queue",
            "Dagster queue",
            _grade(oldest, QUEUED_RUN_WARN_S, QUEUED_RUN_BAD_S),
            f"{queued} queued, the oldest for {age_text(oldest)}",
            oldest,
            {"queued": queued},
        )
    return [runs, queue]


# -- ClickHouse marts ----------------------------------------------------------------------------------------------


def _clickhouse_client(url: str, database: str) -> Any:
    import clickhouse_connect

    return clickhouse_connect.get_client(
        dsn=url, database=database, autogenerate_session_id=False, connect_timeout=5, send_receive_timeout=30
    )


def marts_figure(
    conn: psycopg.Connection, clickhouse_url: str | None, database: str, *, now: datetime | None = None
) -> Figure:
    """How far behind the system of record the KPI marts are, judged at ``now`` (default: the clock)."""
    label = "KPI marts"
    if not clickhouse_url:
        return Figure("marts", label, WARN, "no ClickHouse configured (OMS_CLICKHOUSE_URL)")
    first_shipment, newest_change = conn.execute(
        """SELECT (SELECT created_at FROM oms.shipments ORDER BY shipment_id LIMIT 1),
                  (SELECT created_at FROM oms.order_events ORDER BY event_id DESC LIMIT 1)"""
    ).fetchone()
    try:
        client = _clickhouse_client(clickhouse_url, database)
    except Exception as exc:
        if "UNKNOWN_DATABASE" not in str(exc):
            return Figure("marts", label, BAD, f"ClickHouse cannot be read ({database}): {_first_line(exc)}")
        freshness: dict[str, datetime | None] = {}
    else:
        try:
            freshness = dq.kpi_freshness(client, dq.kpi_tables(client) & set(FRESHNESS_MARTS))
        finally:
            client.close()
    loaded = [freshness[m] for m in FRESHNESS_MARTS if freshness.get(m) is not None]
    now = now or datetime.now(UTC)
    if not loaded:
        if first_shipment is None:
            return Figure("marts", label, OK, "no shipment yet: nothing for the marts to show")
        waiting = (now - first_shipment).total_seconds()
        return Figure(
            "marts",
            label,
            BAD if waiting > MART_STALE_BAD_S else WARN,
            f"not built yet, although the first order shipped {age_text(waiting)} ago",
            waiting,
        )
    mart_time = min(loaded)  # the stalest of the marts judged
    age = max(0.0, (now - mart_time).total_seconds())
    detail = {"loaded_at": {m: freshness.get(m) for m in FRESHNESS_MARTS}, "newest_change": newest_change}
    if newest_change is None or newest_change <= mart_time:
        return Figure(
            "marts",
            label,
            OK,
            f"current: nothing changed since their data ({age_text(age)} old)",
            0.0,
            detail,
        )
    return Figure(
        "marts",
        label,
        _grade(age, MART_STALE_WARN_S, MART_STALE_BAD_S),
        f"newest data {age_text(age)} old",
        age,
        detail,
    )


# -- all of it ---------------------------------------------------------------------------------------------------


def system_health(
    database_url: str,
    *,
    clickhouse_url: str | None = None,
    analytics_database: str = "analytics",
    dagster_database_url: str | None = None,
) -> list[Figure]:
    """Every figure, in the order of the loop (worker, allocation, ATS, Dagster, marts). ``database_url``:
    the OMS database; ``dagster_database_url``: the Dagster instance's storage (a libpq URL, see
    :func:`libpq_url`), None when unknown."""
    try:
        conn = psycopg.connect(database_url, autocommit=True, connect_timeout=5)
    except psycopg.Error as exc:
        return [Figure("database", "System of record", BAD, f"cannot connect: {_first_line(exc)}")]
    with conn:
        figures = [
            *_guarded("worker", "Worker", lambda: [worker_figure(conn)]),
            *_guarded("unallocated", "Unallocated orders", lambda: [unallocated_figure(conn)]),
            *_guarded("ats", "ATS pushes", lambda: ats_figures(conn)),
        ]
        if dagster_database_url:

            def read_dagster() -> list[Figure]:
                with psycopg.connect(dagster_database_url, autocommit=True, connect_timeout=5) as dconn:
                    return dagster_figures(dconn)

            figures += _guarded("dagster_runs", "Dagster runs", read_dagster)
        else:
            figures.append(Figure("dagster_runs", "Dagster runs", WARN, "Dagster's storage is not known"))
        figures += _guarded(
            "marts", "KPI marts", lambda: [marts_figure(conn, clickhouse_url, analytics_database)]
        )
    return figures


def libpq_url(url: str) -> str:
    """A SQLAlchemy URL (``postgresql+psycopg2://…``, what Dagster's storage is configured with) as the
    plain ``postgresql://…`` libpq URL psycopg connects with."""
    scheme, sep, rest = url.partition("://")
    return f"{scheme.split('+', 1)[0]}{sep}{rest}" if sep else url
