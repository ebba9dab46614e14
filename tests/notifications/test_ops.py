"""Ops reach the notifications from the CLI: `oms notifications run|list|resend|opt-out` against the database
and the simulators' manifest, as at a terminal beside a running stack."""

from __future__ import annotations

import json

import yaml
from typer.testing import CliRunner

from oms_ops import notifications as nt
from oms_ops.business_config import DEFAULT_PATH
from oms_ops.cli import app as cli
from tests.core import factories as f
from tests.notifications.conftest import notifications, sms_sent


def test_the_cli_runs_lists_resends_and_opts_out(world, sims, db_url, monkeypatch, tmp_path):
    conn = world
    oid = f.order(conn, customer_phone="+79161234500", customer_email=None)
    manifest = sims.write_manifest(tmp_path / "simulators.json")
    # the CLI's business configuration without quiet hours: this test runs at any wall-clock hour
    data = yaml.safe_load(DEFAULT_PATH.read_text(encoding="utf-8"))
    data["notifications"]["quiet_hours"] = None
    config = tmp_path / "business.yaml"
    config.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    for name, value in {
        "OMS_DATABASE_URL": db_url,
        "OMS_SIMULATORS_MANIFEST": str(manifest),
        "OMS_HOME": str(tmp_path / "home"),
        "OMS_BUSINESS_CONFIG": str(config),
    }.items():
        monkeypatch.setenv(name, value)
    runner = CliRunner()
    ran = runner.invoke(cli, ["notifications", "run"])
    assert ran.exit_code == 0, ran.output
    assert json.loads(ran.output)["delivery"]["done"] == 1
    number = conn.execute("SELECT order_number FROM oms.orders WHERE order_id = %s", (oid,)).fetchone()[0]
    listed = runner.invoke(cli, ["notifications", "list", "--order", number])
    assert listed.exit_code == 0 and number in listed.output and " sent " in listed.output
    [n] = notifications(conn, oid)
    resent = runner.invoke(cli, ["notifications", "resend", str(n["notification_id"])])
    assert resent.exit_code == 0 and nt.outbox_key(n["notification_id"], 1) in resent.output
    assert json.loads(runner.invoke(cli, ["notifications", "run"]).output)["delivery"]["done"] == 1
    assert len(sms_sent(sims, "79161234500")) == 2  # a resend is a new message
    out = runner.invoke(cli, ["notifications", "opt-out", "--phone", "+79161234500", "--reason", "asked"])
    assert out.exit_code == 0 and "opt_out_id" in out.output
    refused = runner.invoke(cli, ["notifications", "opt-out", "--phone", "123"])
    assert refused.exit_code == 1 and "phone: not a Russian mobile number" in refused.output
    assert runner.invoke(cli, ["notifications", "list", "--status", "nonsense"]).exit_code == 2
