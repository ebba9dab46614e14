"""services.health: each figure is read from what the system itself wrote — the worker's heartbeat, the ATS
pushers' bookkeeping, orders accepted by the domain, runs recorded by a Dagster instance configured by the
repository's dagster.yaml, marts built by replication + dbt — and its verdict follows the thresholds.
Time passing is simulated by moving a timestamp back (or by judging the marts at a later ``now``)."""

from __future__ import annotations

from datetime import timedelta

import psycopg
import pytest

from oms_ops.analytics.replication import replicate_all
from oms_ops.channels import registry
from oms_ops.channels.normalize import CANCELLABLE_STATES
from oms_ops.inventory import adjust_stock
from oms_ops.orders import cancel_orders
from oms_ops.services import health
from oms_ops.services.clients import Clients
from oms_ops.services.orders import CANCEL, RELEASE, REROUTE, allowed_actions
from oms_ops.state_machine import states
from oms_ops.worker import Worker
from tests.analytics.conftest import ch_env, dbt, history  # noqa: F401 - fixtures
from tests.connectors.conftest import business_config, make_stack, settings_of, world  # noqa: F401 - fixtures
from tests.core import factories as f
from tests.dagster_runs import dagster_instance, enqueue, fail_before_start, fail_in_a_step


def by_key(figures: list[health.Figure]) -> dict[str, health.Figure]:
    return {fig.key: fig for fig in figures}


# -- actions an order's state allows --------------------------------------------------------------------------------


def test_allowed_actions_follow_the_state_machine():
    assert allowed_actions("cancelled") == set()
    assert allowed_actions("delivered") == set()
    assert allowed_actions("on_hold") == {CANCEL, RELEASE}
    assert allowed_actions("allocated") == {CANCEL, REROUTE}
    assert allowed_actions("packed") == {CANCEL}
    assert allowed_actions("partially_shipped") == {CANCEL}  # the unshipped remainder
    cancellable = {s for s in states("order") if CANCEL in allowed_actions(s)}
    assert cancellable == set(CANCELLABLE_STATES) | {"partially_shipped"}


# -- worker and ATS ---------------------------------------------------------------------------------------------------


def test_worker_heartbeat_and_ats_pushes_as_the_worker_wrote_them(db_url, world):  # noqa: F811
    conn, stack, _ = world(only=["ozon", "wms"], rate=1.0, n_skus=10)
    assert by_key([health.worker_figure(conn)])["worker"].verdict == health.WARN  # no heartbeat yet
    worker = Worker(db_url, Clients(settings_of(stack), rate=None), ship=False)
    try:
        worker.run_once(conn)
    finally:
        worker.clients.close()

    beat = health.worker_figure(conn)
    assert beat.verdict == health.OK and "1 alive" in beat.summary
    ats = by_key(health.ats_figures(conn))
    ozon = ats["ats:ozon"]
    assert ozon.detail["waiting"] == 0 and ozon.verdict == health.OK
    # the web store and Wildberries list the SKUs too, but their systems are not running: nothing reached them
    assert ats["ats:wildberries"].verdict == health.WARN
    assert ats["ats:wildberries"].summary.startswith("never pushed; 30 value(s) waiting")

    # the worker stops beating: ten minutes later it is reported down
    conn.execute("UPDATE oms.worker_heartbeats SET beat_at = now() - interval '10 minutes'")
    down = health.worker_figure(conn)
    assert down.verdict == health.BAD and "no heartbeat for 10 min" in down.summary

    # stock moves, nobody pushes: fine at first (the last push is recent), bad once it is an hour old
    sku = stack.catalog[0].sku
    adjust_stock(conn, "WH-MSK-POD", {sku: 5}, reference="health-1", reason="found", actor="test")
    waiting = by_key(health.ats_figures(conn))["ats:ozon"]
    assert waiting.detail["waiting"] == 1 and waiting.verdict == health.OK
    conn.execute("UPDATE connectors.ats_push_state SET pushed_at = pushed_at - interval '20 minutes'")
    assert by_key(health.ats_figures(conn))["ats:ozon"].verdict == health.WARN
    conn.execute("UPDATE connectors.ats_push_state SET pushed_at = pushed_at - interval '2 hours'")
    late = by_key(health.ats_figures(conn))["ats:ozon"]
    assert late.verdict == health.BAD and "1 value(s) waiting" in late.summary
    # only channels with a pusher are judged
    assert {fig.detail["channel"] for fig in health.ats_figures(conn)} <= {
        c.code for c in registry.with_ats()
    }


# -- allocation -------------------------------------------------------------------------------------------------------


def test_oldest_unallocated_order(conn):
    f.world(conn)
    assert health.unallocated_figure(conn).verdict == health.OK
    oid = f.order(conn, [("SKU-1", 1)])
    fresh = health.unallocated_figure(conn)
    assert fresh.verdict == health.OK and fresh.detail["orders"] == 1
    conn.execute(
        "UPDATE oms.orders SET created_at = now() - interval '6 minutes' WHERE order_id = %s", (oid,)
    )
    assert health.unallocated_figure(conn).verdict == health.WARN
    conn.execute(
        "UPDATE oms.orders SET created_at = now() - interval '20 minutes' WHERE order_id = %s", (oid,)
    )
    late = health.unallocated_figure(conn)
    assert late.verdict == health.BAD and late.summary == "1 new, the oldest waiting 20 min"


# -- Dagster ----------------------------------------------------------------------------------------------------------


def test_failed_runs_count_only_those_dagster_will_not_retry(empty_db_url, tmp_path, monkeypatch):
    with psycopg.connect(empty_db_url, autocommit=True) as dconn:
        assert health.dagster_figures(dconn)[0].verdict == health.WARN  # Dagster never ran here

    with dagster_instance(empty_db_url, tmp_path / "dagster", monkeypatch) as instance:
        fail_before_start(instance)  # dagster.yaml: run_retries retries what failed before any step
        with psycopg.connect(empty_db_url, autocommit=True) as dconn:
            runs, queue = health.dagster_figures(dconn)
        assert runs.verdict == health.OK and runs.summary == "1 failed and retried in the last hour"
        assert queue.verdict == health.OK

        fail_in_a_step(instance)  # … but not a failed op (retry_on_asset_or_op_failure: false)
        queued = enqueue(instance)
        with psycopg.connect(empty_db_url, autocommit=True) as dconn:
            runs, queue = health.dagster_figures(dconn)
            assert runs.verdict == health.WARN
            assert runs.detail == {"failed": 2, "not_retried": 1, "retried": 1, "jobs": ["failing_job"]}
            assert queue.verdict == health.OK and queue.detail == {"queued": 1}

            fail_in_a_step(instance)
            fail_in_a_step(instance)
            assert health.dagster_figures(dconn)[0].verdict == health.BAD

            # the queued run waits: 20 minutes later the queue is bad
            dconn.execute(
                "UPDATE runs SET create_timestamp = create_timestamp - interval '20 minutes' WHERE run_id = %s",
                (queued,),
            )
            queue = health.dagster_figures(dconn)[1]
            assert queue.verdict == health.BAD and queue.summary == "1 queued, the oldest for 20 min"
            # failures older than the window no longer count
            dconn.execute("UPDATE runs SET update_timestamp = update_timestamp - interval '2 hours'")
            assert health.dagster_figures(dconn)[0].summary == "no failed run in the last hour"


# -- marts ------------------------------------------------------------------------------------------------------------


def test_mart_freshness_against_the_system_of_record(history, conn, ch_client, ch_env, dbt, clickhouse_url):  # noqa: F811
    database = ch_client.database
    # orders have shipped but no mart is built: a warning, bad once that has lasted half an hour
    missing = health.marts_figure(conn, clickhouse_url, database)
    assert missing.verdict == health.WARN and missing.summary.startswith("not built yet")
    later = health.marts_figure(conn, clickhouse_url, database, now=_now(conn) + timedelta(minutes=40))
    assert later.verdict == health.BAD
    assert health.marts_figure(conn, clickhouse_url, "analytics_not_built_yet").summary.startswith(
        "not built yet"
    )

    replicate_all(conn, ch_client)
    dbt(ch_env, "run", "--select", "+agg_kpi_daily", "+fct_orders")
    built = health.marts_figure(conn, clickhouse_url, database, now=_now(conn) + timedelta(hours=3))
    assert built.verdict == health.OK and built.summary.startswith("current")  # nothing changed since

    cancel_orders(conn, [history.orders["O5"]], reason="customer changed their mind", actor="test")
    behind = health.marts_figure(conn, clickhouse_url, database)
    assert behind.verdict == health.OK and behind.summary.startswith("newest data")
    assert health.marts_figure(
        conn, clickhouse_url, database, now=_now(conn) + timedelta(minutes=20)
    ).verdict == (health.WARN)
    assert health.marts_figure(
        conn, clickhouse_url, database, now=_now(conn) + timedelta(minutes=40)
    ).verdict == (health.BAD)

    replicate_all(conn, ch_client)
    dbt(ch_env, "run", "--select", "+agg_kpi_daily", "+fct_orders")
    assert health.marts_figure(conn, clickhouse_url, database).summary.startswith("current")


def _now(conn):
    return conn.execute("SELECT now()").fetchone()[0]


# -- all together -----------------------------------------------------------------------------------------------------


def test_system_health_reads_every_figure_and_names_an_unreachable_database(
    db_url, empty_db_url, clickhouse_url
):
    figures = health.system_health(
        db_url,
        clickhouse_url=clickhouse_url,
        analytics_database="analytics_none",
        dagster_database_url=empty_db_url,
    )
    assert [fig.key for fig in figures] == ["worker", "unallocated", "dagster_runs", "marts"]
    assert health.worst(figures) == health.WARN  # no worker, no Dagster run storage yet
    assert health.libpq_url("postgresql+psycopg2://u:p@h:1/dagster") == "postgresql://u:p@h:1/dagster"

    down = health.system_health("postgresql://nobody@127.0.0.1:9/oms")
    assert [(fig.key, fig.verdict) for fig in down] == [("database", health.BAD)]
    assert health.worst(down) == health.BAD


@pytest.mark.parametrize(
    ("seconds", "text"), [(None, "—"), (42, "42 s"), (7 * 60, "7 min"), (3.5 * 3600, "3.5 h")]
)
def test_age_text(seconds, text):
    assert health.age_text(seconds) == text
