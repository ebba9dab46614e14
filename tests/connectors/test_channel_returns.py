"""Customers' return requests from the web store (Shopify ``Return`` shape) open RMAs in the OMS: a delivered
web-store order comes back as a request, the service opens the RMA once (a request seen again changes
nothing), and a request the OMS cannot honour is quarantined with the reason."""

from __future__ import annotations

from oms_ops.services import allocation, carrier, intake, shipping
from oms_ops.services import returns as returns_service
from oms_ops.services.clients import Clients
from oms_ops.services.outbox import drain_outbox
from tests.connectors.conftest import count, settings_of


def test_a_customer_return_request_opens_an_rma_once(world, business_config):
    conn, stack, _ = world(
        only=["shopify", "cdek", "wms"],
        rate=1.0,
        options={
            "shopify": {"return_share": 1.0, "exchange_share": 0.0, "return_delay_scale": 0.001},
            "cdek": {"transit_scale": 1 / 240},
        },
    )
    clients = Clients(settings_of(stack), rate=None)
    try:
        stack.advance(1800)
        intake.poll(conn, "webstore", clients)
        allocation.allocate(conn, business_config)
        assert shipping.ship_reserved(conn).shipments > 0
        drain_outbox(conn, clients)  # CDEK bookings
        for _ in range(3):
            stack.advance(60)
            carrier.sync_documents(conn, clients)
        stack.advance(14 * 24 * 3600)  # delivered, and the customers have asked
        carrier.poll_tracking(conn, clients)
        stack.advance(3600)
        assert count(conn, "SELECT count(*) FROM oms.orders WHERE state = 'delivered'") > 0

        res = returns_service.sync_channel_returns(conn, clients)
        opened = count(conn, "SELECT count(*) FROM oms.returns WHERE channel_return_id IS NOT NULL")
        assert res.requested > 0 and opened == res.requested
        assert res.requested + res.quarantined == len(stack["shopify"].customer_returns.returns)
        line = conn.execute(
            """SELECT rl.reason_code, r.kind, o.channel_code FROM oms.return_lines rl
               JOIN oms.returns r USING (return_id) JOIN oms.orders o USING (order_id) LIMIT 1"""
        ).fetchone()
        assert line[0] in ("changed_mind", "size_fit", "defective", "not_as_described", "wrong_item", "other")
        assert line[1] == "refund" and line[2] == "webstore"
        # the warehouse is told what to expect, like for a return opened by ops
        assert count(conn, "SELECT count(*) FROM oms.outbox WHERE effect = 'wms.announce_return'") == opened

        # the feed read again from the start (cursor lost): nothing is opened twice
        conn.execute("DELETE FROM connectors.cursors WHERE name = 'webstore:returns'")
        again = returns_service.sync_channel_returns(conn, clients)
        assert again.requested == 0 and again.already_open == opened
        assert count(conn, "SELECT count(*) FROM oms.returns") == opened
    finally:
        clients.close()


def test_a_request_for_an_order_the_oms_does_not_know_is_quarantined(world):
    conn, stack, _ = world(only=["shopify"])
    shop = stack["shopify"]
    record = {
        "id": 9100000000999,
        "name": "#9-R1",
        "status": "requested",
        "order": {"id": 5600000099999, "name": "#9"},
        "return_line_items": [
            {"quantity": 1, "return_reason": "unwanted", "fulfillment_line_item": {"line_item": {"sku": "X"}}}
        ],
        "exchange_line_items": [],
    }
    shop.customer_returns.returns.append(record)
    shop.customer_returns.by_id[record["id"]] = record
    clients = Clients(settings_of(stack), rate=None)
    try:
        res = returns_service.sync_channel_returns(conn, clients)
    finally:
        clients.close()
    assert res.requested == 0 and res.quarantined == 1
    reason = conn.execute(
        "SELECT reason FROM raw.quarantine WHERE source = 'webstore:returns' AND external_id = %s",
        (str(record["id"]),),
    ).fetchone()[0]
    assert "5600000099999" in reason and "not in the OMS" in reason
