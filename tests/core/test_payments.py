"""Provider payment and refund reports: idempotent, out-of-order safe, order payment_status derived."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest

from oms_ops import payments
from oms_ops.orders import cancel_orders
from oms_ops.payments import PaymentReport as P
from oms_ops.payments import RefundReport
from tests.core import factories as f


@pytest.fixture
def unpaid(conn):
    f.world(conn)
    oid = f.order(conn, [("SKU-1", 2)], payment_status="pending")
    return conn, oid


def status(conn, oid):
    return conn.execute("SELECT payment_status FROM oms.orders WHERE order_id = %s", (oid,)).fetchone()[0]


def test_payment_reports_are_idempotent_and_ordered(unpaid):
    conn, oid = unpaid
    t = f.T0
    r1 = payments.record_payments(
        conn,
        [
            P("yookassa", "pay-1", "pending", Decimal("200"), order_id=oid, occurred_at=t),
            P(
                "yookassa",
                "pay-1",
                "paid",
                Decimal("200"),
                order_id=oid,
                occurred_at=t + timedelta(minutes=1),
            ),
        ],
    )
    assert len(r1.created) == 1 and [u[1:] for u in r1.updated] == [("pending", "paid")]
    assert status(conn, oid) == "paid"
    n_events = conn.execute("SELECT count(*) FROM oms.order_events WHERE entity = 'payment'").fetchone()[0]
    r2 = payments.record_payments(
        conn,
        [P("yookassa", "pay-1", "paid", Decimal("200"), order_id=oid, occurred_at=t + timedelta(minutes=1))],
    )
    assert r2.created == [] and r2.updated == [] and r2.unchanged == 1
    late = payments.record_payments(
        conn,
        [
            P(
                "yookassa",
                "pay-1",
                "pending",
                Decimal("200"),
                order_id=oid,
                occurred_at=t + timedelta(seconds=30),
            )
        ],
    )
    assert late.ignored and status(conn, oid) == "paid"
    assert (
        conn.execute("SELECT count(*) FROM oms.order_events WHERE entity = 'payment'").fetchone()[0]
        == n_events
    )
    assert conn.execute("SELECT paid_at FROM oms.payments").fetchone()[0] == t + timedelta(minutes=1)


def test_illegal_payment_regression_is_ignored_not_applied(unpaid):
    conn, oid = unpaid
    payments.record_payments(conn, [P("yookassa", "pay-1", "paid", Decimal("200"), order_id=oid)])
    res = payments.record_payments(conn, [P("yookassa", "pay-1", "authorized", Decimal("200"), order_id=oid)])
    assert res.ignored == [("pay-1", "payment paid -> authorized not allowed")]
    assert conn.execute("SELECT state FROM oms.payments").fetchone()[0] == "paid"


def test_failed_payment_and_unknown_orders(unpaid):
    conn, oid = unpaid
    num = conn.execute("SELECT order_number FROM oms.orders WHERE order_id = %s", (oid,)).fetchone()[0]
    res = payments.record_payments(
        conn,
        [
            P("yookassa", "pay-2", "failed", Decimal("200"), order_number=num),
            P("yookassa", "pay-3", "paid", Decimal("5"), order_number="NOPE"),
            P("yookassa", "pay-4", "weird", Decimal("5"), order_id=oid),
        ],
    )
    assert len(res.created) == 1 and len(res.quarantined) == 2
    assert status(conn, oid) == "failed"
    reasons = sorted(r[0] for r in conn.execute("SELECT reason FROM raw.quarantine").fetchall())
    assert reasons == ["unknown order", "unknown payment status 'weird'"]


def test_refund_flow_updates_order_payment_status(unpaid):
    conn, oid = unpaid
    payments.record_payments(conn, [P("yookassa", "pay-1", "paid", Decimal("200"), order_id=oid)])
    cancel_orders(conn, [oid], reason="changed mind", actor="cs")
    key = f"refund:cancel:{oid}"
    payload = conn.execute("SELECT payload FROM oms.outbox WHERE idempotency_key = %s", (key,)).fetchone()[0]
    assert payload["amount"] == "200.00" and payload["payments"][0]["provider_payment_id"] == "pay-1"
    r = payments.record_refund_status(
        conn, [RefundReport("pending", idempotency_key=key, provider="yookassa", provider_refund_id="rf-1")]
    )
    assert [u[1:] for u in r.updated] == [("requested", "pending")]
    r = payments.record_refund_status(
        conn, [RefundReport("succeeded", provider="yookassa", provider_refund_id="rf-1")]
    )
    assert [u[1:] for u in r.updated] == [("pending", "succeeded")]
    assert status(conn, oid) == "refunded"
    again = payments.record_refund_status(conn, [RefundReport("succeeded", idempotency_key=key)])
    assert again.updated == [] and again.unchanged == 1
    bad = payments.record_refund_status(conn, [RefundReport("succeeded", idempotency_key="refund:nope")])
    assert len(bad.quarantined) == 1


def test_partial_refund_of_marketplace_paid_order(conn):
    f.world(conn)
    oid = f.order(conn, [("SKU-1", 2)], payment_status="paid")  # the marketplace collected the money
    with conn.transaction():
        payments.request_refund(
            conn,
            order_id=oid,
            amount=Decimal("50"),
            reason="goodwill",
            actor="cs",
            idempotency_key="refund:goodwill:1",
        )
        assert (
            payments.request_refund(
                conn,
                order_id=oid,
                amount=Decimal("50"),
                reason="goodwill",
                actor="cs",
                idempotency_key="refund:goodwill:1",
            )
            == 1
        )
    payments.record_refund_status(conn, [RefundReport("succeeded", idempotency_key="refund:goodwill:1")])
    assert status(conn, oid) == "partially_refunded"
