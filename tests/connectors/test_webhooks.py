"""The web store's webhooks: signed deliveries stored once, forged ones rejected and logged."""

from __future__ import annotations

import json
import logging

import httpx
import pytest

from oms_ops.channels.webhooks import WebhookServer
from oms_ops.services.intake import normalize
from oms_ops.wire.shopify import shopify_hmac
from tests.connectors.conftest import count

SECRET = "sim-shopify-webhook-secret"


@pytest.fixture
def receiver(db_url):
    with WebhookServer(db_url, SECRET) as server:
        yield server


def test_signed_deliveries_become_orders_once_even_when_delivered_twice(world, receiver):
    conn, stack, _ = world(only=["shopify"], rate=1.0)
    shop = stack["shopify"]
    shop.set_webhook(receiver.url)
    shop.faults.set([{"kind": "duplicate", "probability": 1.0, "method": "WEBHOOK"}])  # every delivery twice
    stack.advance(3600)
    deliveries = [d for d in shop.webhooks if d.topic == "orders/create"]
    assert deliveries and all(d.status == "delivered" for d in deliveries)
    receipts = count(conn, "SELECT count(*) FROM connectors.webhook_receipts WHERE verified")
    assert receipts == len(shop.webhooks)  # one receipt per webhook id, the second delivery was a no-op
    assert count(conn, "SELECT count(*) FROM raw.channel_orders WHERE channel_code = 'webstore'") == len(
        shop.orders
    )
    res = normalize(conn, "webstore")
    assert res.accepted == len(shop.orders)


def test_bad_signature_is_rejected_and_logged(world, receiver, caplog):
    conn, stack, _ = world(only=["shopify"], rate=1.0)
    body = json.dumps({"id": 1, "line_items": []}).encode()
    with caplog.at_level(logging.WARNING, logger="oms.connectors.webhooks"):
        forged = httpx.post(
            receiver.url,
            content=body,
            headers={
                "X-Shopify-Hmac-SHA256": shopify_hmac(body, "not-the-secret"),
                "X-Shopify-Webhook-Id": "w-1",
                "X-Shopify-Topic": "orders/create",
            },
        )
        missing = httpx.post(receiver.url, content=body, headers={"X-Shopify-Webhook-Id": "w-2"})
    assert forged.status_code == 401 and missing.status_code == 401
    assert "bad or missing X-Shopify-Hmac-SHA256" in caplog.text
    # a forged request writes nothing: it is counted in memory (and shown by /health), not stored
    assert count(conn, "SELECT count(*) FROM connectors.webhook_receipts") == 0
    assert receiver.rejections.total == 2
    assert httpx.get(receiver.url.replace("/webhooks/shopify", "/health")).json()["rejected"] == 2
    assert count(conn, "SELECT count(*) FROM raw.channel_orders") == 0
    # the same body correctly signed is accepted
    ok = httpx.post(
        receiver.url,
        content=body,
        headers={
            "X-Shopify-Hmac-SHA256": shopify_hmac(body, SECRET),
            "X-Shopify-Webhook-Id": "w-1",
            "X-Shopify-Topic": "orders/create",
        },
    )
    assert ok.status_code == 200 and ok.json()["result"] == "stored"


def test_unusable_payload_is_quarantined_and_acknowledged(world, receiver):
    conn, stack, _ = world(only=["shopify"], rate=1.0)
    body = b'{"note": "no id here"}'
    r = httpx.post(
        receiver.url,
        content=body,
        headers={
            "X-Shopify-Hmac-SHA256": shopify_hmac(body, SECRET),
            "X-Shopify-Webhook-Id": "w-9",
            "X-Shopify-Topic": "orders/create",
        },
    )
    assert r.status_code == 200 and r.json()["result"] == "quarantined"
    assert conn.execute("SELECT source, reason FROM raw.quarantine").fetchone() == (
        "webstore",
        "orders/create: webhook order without id: cannot be identified",
    )
