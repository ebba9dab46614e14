"""Payments through the payment provider, the use cases: the outbox effects 'payment.create' and
'payment.refund', the worker's step (links for orders that wait for one, the poll of open payments and
refunds) and the read of an order's payments for the Lookup page and the OMS API (oms_ops/payment_provider.py).

The provider's client is built on first use from the connector settings (``OMS_YOOKASSA_*`` or the simulators'
manifest). A refund of an order the OMS took no payment for never needs it, so it is recorded even where no
provider is configured; a payment link or a provider refund without one raises ``NotConfigured`` and the
outbox retries it once the provider is set up.
"""

from __future__ import annotations

import logging
from typing import Any

import psycopg

from oms_ops import payment_provider as pp
from oms_ops.connectors.http import ConnectorError
from oms_ops.connectors.yookassa import SYSTEM, YooKassaClient
from oms_ops.outbox import OutboxItem
from oms_ops.services.clients import Clients

log = logging.getLogger("oms.services.payments")
EFFECTS = ("payment.create", "payment.refund")
order_payments = pp.order_payments
new_link = pp.new_link


def provider_client(clients: Clients) -> YooKassaClient:
    """The provider's client of this ``Clients`` (built once, closed with the others)."""
    try:
        return clients.get(SYSTEM)
    except KeyError:  # not among the registry's factories: built here from the same settings
        client = YooKassaClient.from_endpoint(clients.settings.endpoint(SYSTEM), **clients.client_kw)
        clients.put(SYSTEM, client)
        return client


def deliver(conn: psycopg.Connection, clients: Clients, item: OutboxItem):
    """One 'payment.create' or 'payment.refund' effect: ``(outcome, note, result)`` for the effect log."""

    def client() -> YooKassaClient:  # built only when the provider is called
        return provider_client(clients)

    if item.effect == "payment.create":
        return pp.deliver_payment_link(conn, client, item)
    if item.effect == "payment.refund":
        return pp.deliver_refund(conn, client, item)
    raise ValueError(f"effect {item.effect!r} is not a payment effect")


def run(conn: psycopg.Connection, clients: Clients) -> dict[str, Any]:
    """The worker's ``payments`` step: payment links for the orders that wait for one (the outbox step
    sends them), then the poll of open payments and pending refunds — the safety net under the provider's
    notifications. Returns what moved (empty when nothing did)."""
    meta: dict[str, Any] = {}
    links = pp.enqueue_due_links(conn, actor="worker")
    if links:
        meta["links_requested"] = len(links)
    if clients.settings.configured(SYSTEM):
        try:
            polled = pp.poll_open(conn, provider_client(clients))
        except ConnectorError as exc:  # the next turn asks again
            log.warning("yookassa poll: %s", exc)
            polled = {"error": str(exc)}
        if any(polled.values()):
            meta["polled"] = polled
    return meta
