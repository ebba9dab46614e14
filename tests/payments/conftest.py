"""Fixtures of the payment tests: a fresh database with the core world, the YooKassa simulator on loopback
(manual clock) and the OMS's clients pointed at it through the simulators' manifest."""

from __future__ import annotations

import random
from decimal import Decimal

import httpx
import pytest

from oms_ops import fulfillment as ff
from oms_ops.connectors.config import settings_from_manifest
from oms_ops.connectors.http import RetryPolicy
from oms_ops.services import payments as svc
from oms_ops.services.clients import Clients
from oms_ops.services.outbox import drain_outbox
from simulators import start_simulators
from tests.core import factories as f

POLICY = dict(attempts=3, backoff_base=0.01, backoff_cap=0.01, read_timeout=5)


@pytest.fixture
def sims(tmp_path):
    stack = start_simulators(
        manual=True,
        seed=5,
        n_skus=20,
        only=["yookassa"],
        state_dir=tmp_path / "sim",
        options={"yookassa": {"pay_share": 0.0, "pay_delay_s": 60, "expire_s": 3600}},
    )
    yield stack
    stack.stop()


@pytest.fixture
def clients(sims):
    with Clients(
        settings_from_manifest(sims.manifest()), policy=RetryPolicy(**POLICY, rng=random.Random(1))
    ) as c:
        yield c


@pytest.fixture
def world(conn):
    f.world(conn)
    f.channel(conn, "callcentre", "callcentre")
    return conn


def yk(sims, path: str, method: str = "GET", **kw) -> dict:
    return httpx.request(method, sims.urls["yookassa"] + path, timeout=10, **kw).json()


def provider_refunds(sims) -> list[dict]:
    """Every refund the simulator holds (its state, as it would be read in the shop's account)."""
    return list(sims["yookassa"].refunds.values())


def drain(conn, clients, *effects: str):
    return drain_outbox(
        conn, clients, effects=effects or ("payment.create", "payment.refund"), backoff_seconds=0
    )


def callcentre_order(conn, lines=(("SKU-1", 2),), **fields) -> int:
    return f.order(
        conn,
        lines,
        channel_code="callcentre",
        payment_status="pending",
        customer_email="ivan@example.ru",
        **fields,
    )


def link_of(conn, order_id: int, purpose: str = "order") -> dict:
    row = conn.execute(
        """SELECT link_id, status, confirmation_url, provider_payment_id, amount, error FROM oms.payment_links
           WHERE order_id = %s AND purpose = %s ORDER BY link_id DESC LIMIT 1""",
        (order_id, purpose),
    ).fetchone()
    return (
        dict(zip(("link_id", "status", "url", "payment_id", "amount", "error"), row, strict=True))
        if row
        else {}
    )


def paid_order(conn, sims, clients, lines=(("SKU-1", 2),)) -> tuple[int, str]:
    """A call-centre order paid through the provider: link → the customer pays → the poll applies it."""
    oid = callcentre_order(conn, lines)
    return oid, pay_through_link(conn, sims, clients, oid)


def pay_through_link(conn, sims, clients, oid: int) -> str:
    """The worker asks for the order's link, the outbox creates it, the customer pays, the poll applies it."""
    svc.run(conn, clients)
    drain(conn, clients, "payment.create")
    pid = link_of(conn, oid)["payment_id"]
    yk(sims, f"/_sim/yookassa/payments/{pid}/pay", "POST")
    svc.run(conn, clients)
    assert payment_status(conn, oid) == "paid"
    return pid


def delivered(conn, oid: int) -> None:
    f.reserve(conn, oid, "WH-MSK")
    ff.record_pick(conn, oid, "WH-MSK", actor="t")
    ff.pack(conn, oid, "WH-MSK", actor="t")
    sid = ff.create_shipment(conn, oid, "WH-MSK", carrier_code="cdek", actor="t").shipment_id
    ff.hand_over(conn, [sid], actor="t")
    ff.mark_delivered(conn, [sid], actor="t")


def payment_status(conn, oid: int) -> str:
    return conn.execute("SELECT payment_status FROM oms.orders WHERE order_id = %s", (oid,)).fetchone()[0]


def refund_row(conn, refund_id: int) -> tuple:
    return conn.execute(
        "SELECT state, provider, provider_refund_id, failure_reason FROM oms.refunds WHERE refund_id = %s",
        (refund_id,),
    ).fetchone()


def money(v: str) -> Decimal:
    return Decimal(v)
