"""Inbound supply from the WMS simulator over HTTP: its purchase orders and transfers become supplies at the
mapped OMS locations and give waiting lines promise dates; when the goods arrive the WMS's count brings the
stock in and the promised orders are allocated; re-reading the feed changes nothing; documents that do not
fit are quarantined."""

from __future__ import annotations

from datetime import date, timedelta

import pytest

from oms_ops import supply
from oms_ops.allocation import allocate_batch
from oms_ops.connectors import wms
from oms_ops.connectors.state import get_cursor
from oms_ops.invariants import check_invariants
from oms_ops.services import supply as svc
from tests.connectors.conftest import count
from tests.core import factories as f

LOCATION, WAREHOUSE = "WH-MSK-POD", "MSK1"  # seeded mapping (connectors.channel_locations, system 'wms')


@pytest.fixture
def supply_world(world, policy):
    made = []

    def make(**options):
        conn, stack, settings = world(only=["wms"], options={"wms": options})
        client = wms.WmsClient.from_endpoint(settings.endpoint("wms"), policy=policy)
        made.append(client)
        return conn, stack, client

    yield make
    for c in made:
        c.close()


def _pinned_order(conn, sku: str, qty: int, stack) -> int:
    """A marketplace order assigned to the Podolsk warehouse (it can only ship from there)."""
    return f.order(
        conn,
        [(sku, qty)],
        channel_code="ozon",
        fulfilment_location_code=LOCATION,
        placed_at=stack.ctx.clock.now(),
    )


def test_planned_purchase_order_promises_then_arrives_and_allocates(supply_world, business_config):
    conn, stack, client = supply_world()
    sim = stack["wms"]
    (po_id,) = [d["inbound_id"] for d in sim.inbound.values() if d["warehouse"] == WAREHOUSE]
    po = sim.inbound[po_id]
    sku = po["lines"][0]["sku"]
    assert sim.on_hand[WAREHOUSE][sku] == 0  # the simulated world orders what the warehouse lacks
    oid = _pinned_order(conn, sku, 2, stack)
    now = stack.ctx.clock.now()
    assert allocate_batch(conn, [oid], config=business_config, now=now).backordered == [oid]

    meta = svc.sync_wms(conn, client, business_config, now=now)

    assert meta["supplies_inserted"] == len(sim.inbound) and meta["supplies_arrived"] == 0
    row = conn.execute(
        "SELECT source, kind, location_code, expected_date, state, supplier FROM oms.supplies WHERE external_id = %s",
        (po_id,),
    ).fetchone()
    assert row == ("wms", "purchase_order", LOCATION, date.fromisoformat(po["expected_date"]), "expected",
                   po["supplier"])  # fmt: skip
    (p,) = supply.order_promises(conn, oid)
    assert (p["promised_date"], p["supply"], p["location_code"]) == (
        date.fromisoformat(po["expected_date"]),
        po_id,
        LOCATION,
    )
    assert get_cursor(conn, wms.INBOUND_CURSOR) is not None
    # the same feed again: nothing new, nothing changed
    again = svc.sync_wms(conn, client, business_config, now=now)
    assert again["supplies_inserted"] == again["supplies_updated"] == 0 and again["promises_changed"] == 0

    # the day comes: the WMS receives the goods, the OMS counts them in and allocates the promised order
    due = date.fromisoformat(po["expected_date"])
    stack.advance((due - now.date()).days * 86400 + 86400)
    assert sim.inbound[po_id]["status"] == "received"
    meta = svc.sync_wms(conn, client, business_config, now=stack.ctx.clock.now())
    assert meta["supplies_arrived"] >= 1 and meta["arrival_allocated"] == 1
    assert f.order_state(conn, oid) == "allocated"
    assert (
        conn.execute("SELECT state FROM oms.supplies WHERE external_id = %s", (po_id,)).fetchone()[0]
        == "received"
    )
    assert f.stock_row(conn, LOCATION, sku) == (sim.on_hand[WAREHOUSE][sku], 2)
    # the stock came with the WMS's count (an adjustment), not a second receipt
    assert count(conn, "SELECT count(*) FROM oms.inventory_ledger WHERE kind = 'receipt'") == 0
    assert supply.order_promises(conn, oid) == []
    assert check_invariants(conn) == []


def test_transfer_and_partial_receipt_and_cancellation_follow_the_wms(supply_world, business_config):
    conn, stack, client = supply_world(planned_inbound=False)
    sim = stack["wms"]
    sku = next(p.sku for p in stack.catalog if sim.on_hand["SPB1"][p.sku] >= 5)
    today = stack.ctx.clock.now().date()
    with sim.lock:
        sim.plan_inbound("TR-1", WAREHOUSE, [{"sku": sku, "qty": 4}], expected_date=today + timedelta(days=3),
                         kind="transfer", from_warehouse="SPB1")  # fmt: skip
        sim.plan_inbound("PO-X", WAREHOUSE, [{"sku": sku, "qty": 5}], expected_date=today + timedelta(days=4))
    svc.sync_wms(conn, client, business_config)
    tr = {s["external_id"]: s for s in supply.list_supplies(conn)}["TR-1"]
    assert (tr["kind"], tr["from_location_code"], tr["location_code"]) == ("transfer", "WH-SPB-SHU", LOCATION)

    with sim.lock:
        sim.receive_inbound("TR-1", [{"sku": sku, "qty": 1}])
        sim.cancel_inbound("PO-X")
    meta = svc.sync_wms(conn, client, business_config)
    assert meta["supplies_updated"] == 2 and meta["supplies_arrived"] == 1
    got = {s["external_id"]: s for s in supply.list_supplies(conn, include_closed=True)}
    assert got["TR-1"]["state"] == "partially_received" and got["TR-1"]["lines"][0]["qty_received"] == 1
    assert got["PO-X"]["state"] == "cancelled"


def test_inbound_documents_that_do_not_fit_are_quarantined(supply_world, business_config):
    conn, stack, client = supply_world(planned_inbound=False)
    sim = stack["wms"]
    sku = stack.catalog[0].sku
    today = stack.ctx.clock.now().date()
    with sim.lock:
        sim.plan_inbound(
            "PO-OK", WAREHOUSE, [{"sku": sku, "qty": 3}], expected_date=today + timedelta(days=2)
        )
        sim.plan_inbound(
            "PO-UNMAPPED", "MSK-S02", [{"sku": sku, "qty": 3}], expected_date=today + timedelta(days=2)
        )
    conn.execute(
        "UPDATE connectors.channel_locations SET active = false WHERE system = 'wms' AND external_id = 'MSK-S02'"
    )
    meta = svc.sync_wms(conn, client, business_config)
    assert meta["supplies_inserted"] == 1 and meta["supplies_quarantined"] == 1
    (reason,) = conn.execute("SELECT reason FROM raw.quarantine WHERE source = 'supply:wms'").fetchone()
    assert "MSK-S02" in reason and "not mapped" in reason


def test_simulator_inbound_feed_pages_and_lists_changes_again(supply_world):
    _, stack, client = supply_world(planned_inbound=False)
    sim = stack["wms"]
    sku = stack.catalog[0].sku
    today = stack.ctx.clock.now().date()
    with sim.lock:
        for i in range(3):
            sim.plan_inbound(
                f"PO-{i}", WAREHOUSE, [{"sku": sku, "qty": 2}], expected_date=today + timedelta(days=1)
            )
    first = client.inbound(None, limit=2)
    assert [d["inbound_id"] for d in first["inbound"]] == ["PO-0", "PO-1"] and first["has_more"]
    rest = client.inbound(first["next_cursor"], limit=2)
    assert [d["inbound_id"] for d in rest["inbound"]] == ["PO-2"] and not rest["has_more"]
    stack.advance(2 * 86400)  # due: delivered in full, listed again with the received quantities
    changed = client.inbound(rest["next_cursor"])["inbound"]
    assert sorted(d["inbound_id"] for d in changed) == ["PO-0", "PO-1", "PO-2"]
    assert all(d["status"] == "received" and d["lines"][0]["qty_received"] == 2 for d in changed)
    receipts = [
        r for r in client.request("GET", "/wms/v1/receipts").json()["receipts"] if r.get("inbound_id")
    ]
    assert len(receipts) == 3


def test_the_worker_step_and_the_dagster_asset_read_the_inbound_feed(db_url, supply_world, tmp_path):
    import dagster as dg

    from oms_ops.services.clients import Clients
    from oms_ops.worker import Worker
    from pipelines.defs.channels.assets import wms_inbound_supply
    from pipelines.defs.channels.checks import promises_within_supply
    from pipelines.defs.channels.resources import ChannelConnectorsResource
    from pipelines.defs.operations.sensors import worker_journal_sensor
    from pipelines.resources import PostgresResource
    from tests.connectors.conftest import settings_of

    conn, stack, _ = supply_world()
    worker = Worker(db_url, Clients(settings_of(stack), rate=None), ship=False)
    try:
        (step,) = [s for s in worker.steps if s.name == "supply"]
        worker._run(conn, step)
    finally:
        worker.close()
    assert count(conn, "SELECT count(*) FROM oms.supplies WHERE source = 'wms'") == len(stack["wms"].inbound)
    (meta,) = conn.execute(
        "SELECT metadata FROM oms.worker_journal WHERE asset = 'wms_inbound_supply'"
    ).fetchone()
    assert meta["supplies_inserted"] == len(stack["wms"].inbound) and meta["step"] == "supply"
    ctx = dg.build_sensor_context(cursor=None, resources={"postgres": PostgresResource(database_url=db_url)})
    keys = {e.asset_key.to_user_string() for e in worker_journal_sensor(ctx).asset_events}
    assert "wms_inbound_supply" in keys

    # the control plane runs the same service: the feed read again, nothing changes
    manifest = stack.write_manifest(tmp_path / "simulators.json")
    channels = ChannelConnectorsResource(manifest_path=str(manifest), pace_requests=False, retry_attempts=2)
    res = dg.materialize(
        [wms_inbound_supply, promises_within_supply],
        resources={"postgres": PostgresResource(database_url=db_url), "channels": channels},
    )
    assert res.success
    (mat,) = res.asset_materializations_for_node("wms_inbound_supply")
    assert mat.metadata["supplies_inserted"].value == 0 and mat.metadata["promises_changed"].value == 0
    (check,) = res.get_asset_check_evaluations()
    assert check.passed and check.metadata["overpromised_lines"].value == 0
