"""The channel and operations definitions: they load, schedules are idempotent per tick, sensors keep cursors."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime

import dagster as dg

from oms_ops.channels import registry
from oms_ops.channels.rawstore import store_payloads
from oms_ops.read_model import normalisation_backlog
from oms_ops.services import intake
from pipelines.defs import channels, operations
from pipelines.defs.channels.checks import CHECKS
from pipelines.defs.channels.resources import ChannelConnectorsResource, channel_resources
from pipelines.defs.channels.sensors import (
    SENSORS,
    new_files,
    queued_payloads_sensor,
    simulators_manifest_sensor,
)
from pipelines.resources import PostgresResource

pos_drop_folder_sensor = next(s for s in SENSORS if s.name == "pos_drop_folder_sensor")


def test_domains_merge_and_resolve():
    merged = dg.Definitions.merge(
        channels.defs,
        operations.defs,
        dg.Definitions(resources={"postgres": PostgresResource(database_url="postgresql://x")}),
    )
    merged.resolve_all_job_defs()
    keys = {k.to_user_string() for k in merged.resolve_asset_graph().get_all_asset_keys()}
    assert {
        "ozon_orders",
        "wildberries_orders",
        "webstore_orders",
        "offline_orders",
        "callcentre_orders",
        "stock/wh_msk_pod",
        "allocation",
        "shipments",
        "outbox_delivery",
        "carrier_documents",
        "carrier_tracking",
        "returns",
        "ats_pushes",
    } <= keys
    schedules = {s.name: s for s in merged.schedules}
    assert schedules["ingest_and_allocate_schedule"].cron_schedule == "* * * * *"
    assert all(s.default_status == dg.DefaultScheduleStatus.RUNNING for s in schedules.values())
    assert {s.name for s in merged.sensors} == {
        "pos_drop_folder_sensor",
        "queued_payloads_sensor",
        "simulators_manifest_sensor",
        "worker_journal_sensor",
    }


def test_credentials_come_from_env_vars(monkeypatch):
    monkeypatch.setenv("OMS_OZON_API_KEY", "secret-key")
    monkeypatch.delenv("OMS_WB_TOKEN", raising=False)
    res = channel_resources()["channels"]
    assert isinstance(res, ChannelConnectorsResource)
    assert isinstance(res.ozon_api_key, dg.EnvVar) and res.ozon_api_key.env_var_name == "OMS_OZON_API_KEY"
    assert res.wildberries_token == ""


def test_a_schedule_tick_has_a_run_key_and_skips_while_the_job_runs():
    schedule = next(s for s in operations.defs.schedules if s.name == "ingest_and_allocate_schedule")
    tick = datetime(2025, 3, 3, 8, 1, tzinfo=UTC)
    with dg.instance_for_test() as instance:
        ctx = dg.build_schedule_context(instance=instance, scheduled_execution_time=tick)
        req = schedule.evaluate_tick(ctx).run_requests[0]
        assert req.run_key == f"ingest_and_allocate_schedule:{tick.isoformat()}"
        assert schedule.evaluate_tick(ctx).run_requests[0].run_key == req.run_key  # same tick, same key
        instance.add_run(
            dg.DagsterRun(job_name="ingest_and_allocate", run_id="r1", status=dg.DagsterRunStatus.STARTED)
        )
        skipped = schedule.evaluate_tick(ctx)
        assert not skipped.run_requests and "still in progress" in skipped.skip_message


def test_pos_sensor_keeps_its_position_in_the_cursor(tmp_path):
    drop = tmp_path / "pos_drop"
    drop.mkdir()
    (drop / "sales_MSK-S01_2025-03-03.csv").write_text("x")
    (drop / ".sales_MSK-S02_2025-03-03.csv.tmp").write_text("half-written")
    res = ChannelConnectorsResource(pos_drop_dir=str(drop), manifest_path=str(tmp_path / "none.json"))
    ctx = dg.build_sensor_context(cursor=None, resources={"channels": res})
    first = pos_drop_folder_sensor(ctx)
    assert isinstance(first, dg.RunRequest) and first.run_key.startswith("pos:")
    ctx2 = dg.build_sensor_context(cursor=ctx.cursor, resources={"channels": res})
    assert isinstance(pos_drop_folder_sensor(ctx2), dg.SkipReason)
    (drop / "sales_MSK-S02_2025-03-03.csv").write_text("y")
    os.utime(drop / "sales_MSK-S02_2025-03-03.csv", (2e9, 2e9))
    names, cursor = new_files(drop, ctx.cursor)
    assert names == ["sales_MSK-S02_2025-03-03.csv"] and json.loads(cursor)["mtime"] == 2e9


def test_queued_payloads_sensor_fires_once_per_new_delivery_for_that_channel(db_url, conn):
    pg = PostgresResource(database_url=db_url)
    ctx = dg.build_sensor_context(cursor=None, resources={"postgres": pg})
    assert isinstance(queued_payloads_sensor(ctx), dg.SkipReason)
    with conn.transaction():
        store_payloads(conn, "webstore", [("1", {"id": 1}), ("2", {"id": 2})])
    ctx = dg.build_sensor_context(cursor=None, resources={"postgres": pg})
    reqs = queued_payloads_sensor(ctx)
    assert [r.asset_selection for r in reqs] == [[dg.AssetKey("webstore_orders")]]
    assert reqs[0].tags["oms/pending"] == "2"
    again = dg.build_sensor_context(cursor=ctx.cursor, resources={"postgres": pg})
    assert isinstance(queued_payloads_sensor(again), dg.SkipReason)  # nothing new since


def test_manifest_sensor_seeds_once_per_simulator_start(tmp_path):
    path = tmp_path / "simulators.json"
    path.write_text(json.dumps({"started_at": "2025-03-03T05:00:00Z", "simulators": {}}))
    res = ChannelConnectorsResource(manifest_path=str(path))
    ctx = dg.build_sensor_context(cursor=None, resources={"channels": res})
    req = simulators_manifest_sensor(ctx)
    assert req.run_key == "seed:2025-03-03T05:00:00Z"
    again = simulators_manifest_sensor(
        dg.build_sensor_context(cursor=ctx.cursor, resources={"channels": res})
    )
    assert isinstance(again, dg.SkipReason)


def test_backlog_check_reports_payloads_stuck_in_the_normaliser_queue(db_url, conn):
    """The check passes on an empty queue, fails with the numbers once a payload has waited too long, and
    passes again when the normaliser has taken it."""
    max_wait = registry.channel("webstore").checks.max_queue_wait_seconds

    pg = PostgresResource(database_url=db_url)
    check = next(
        c
        for c in CHECKS
        if {k.to_user_string() for k in c.check_keys} == {"webstore_orders:normalisation_not_stuck"}
    )
    assert check(postgres=pg).passed
    with conn.transaction():
        store_payloads(conn, "webstore", [("9", {"id": 9})])
        conn.execute(
            "UPDATE raw.channel_orders SET received_at = now() - interval '1 hour' WHERE external_id = '9'"
        )
    assert normalisation_backlog(conn, "webstore")["queued"] == 1
    stuck = check(postgres=pg)
    assert not stuck.passed
    assert stuck.metadata["queued"].value == 1
    assert stuck.metadata["oldest_wait_seconds"].value > max_wait
    intake.normalize(conn, "webstore")  # not an order: quarantined with the reason, off the queue
    assert check(postgres=pg).passed
