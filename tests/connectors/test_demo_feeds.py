"""The demo's feeds as the OMS reads them: small POS drops and the call centre's order feed."""

from __future__ import annotations

from pathlib import Path

import httpx

from oms_ops.channels import callcentre, pos
from tests.connectors.conftest import count

DROPS = {"pos": {"drop_interval_s": 300}}


def test_pos_drops_every_few_minutes_are_read_once_each(world):
    conn, stack, settings = world(only=["wms", "pos"], rate=2.0, profile="steady", options=DROPS)
    drop = Path(settings.endpoint("pos").get("drop_dir"))
    stack.advance(1800)
    first = pos.ingest_pos(conn, drop)
    assert len(first.processed) == 4 * 6  # six five-minute windows per store
    assert all(n.startswith("sales_") and n.endswith(".csv") and n.count("_") == 3 for n in first.processed)
    stack.advance(900)
    second = pos.ingest_pos(conn, drop)
    assert len(second.processed) == 4 * 3 and not set(second.processed) & set(first.processed)
    assert pos.ingest_pos(conn, drop).files == []  # nothing is read twice
    sim_receipts = sum(f["receipts"] for f in stack["pos"].files)
    stored = count(conn, "SELECT count(*) FROM raw.channel_orders WHERE channel_code = 'offline'")
    assert stored == sim_receipts > 0  # receipt ids stay unique across the day's drops
    orders = count(conn, "SELECT count(*) FROM oms.orders WHERE channel_code = 'offline'")
    assert orders == stored - first.normalized.skipped - second.normalized.skipped


def test_call_centre_feed_orders_are_accepted_by_the_oms(world):
    conn, stack, _ = world(only=["wms", "callcentre"], rate=2.0, profile="steady")
    stack.advance(1800)
    url, headers = stack.urls["callcentre"], {"X-Api-Key": stack.credentials["callcentre"]["api_key"]}
    orders, cursor = [], None
    while True:  # what a poll of the feed does: page with the stored cursor, submit
        params = {"limit": 25} | ({"after": cursor} if cursor else {})
        body = httpx.get(url + "/callcentre/v1/orders", headers=headers, params=params).json()
        orders += body["orders"]
        cursor = body["next_cursor"]
        if not body["has_more"]:
            break
    res = callcentre.submit_orders(conn, orders)
    assert len(orders) > 30 and res.accepted == len(orders) and res.quarantined == 0
    assert count(conn, "SELECT count(*) FROM oms.orders WHERE channel_code = 'callcentre'") == len(orders)
    methods = {r[0] for r in conn.execute("SELECT DISTINCT delivery_method FROM oms.orders")}
    assert "courier" in methods and len(methods) >= 2
