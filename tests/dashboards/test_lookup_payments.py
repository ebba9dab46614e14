"""Order lookup shows the order's payment link (the customer pays on it), its payments and refunds — read with
the dashboards' read-only login (migration 0023 grants SELECT on oms.payment_links)."""

import random

from oms_ops.connectors.config import settings_from_manifest
from oms_ops.connectors.http import RetryPolicy
from oms_ops.services import payments as svc
from oms_ops.services.clients import Clients
from oms_ops.services.outbox import drain_outbox
from simulators import start_simulators
from tests.core import factories as f
from tests.dashboards.conftest import OPS, frame, page, texts


def test_lookup_shows_the_payment_link_of_a_call_centre_order(dash_url, conn, tmp_path):
    f.world(conn)
    f.channel(conn, "callcentre", "callcentre")
    oid = f.order(conn, channel_code="callcentre", payment_status="pending", customer_email="a@b.ru")
    stack = start_simulators(manual=True, seed=5, n_skus=20, only=["yookassa"], state_dir=tmp_path / "sim")
    try:
        policy = RetryPolicy(attempts=2, backoff_base=0.01, backoff_cap=0.01, rng=random.Random(1))
        with Clients(settings_from_manifest(stack.manifest()), policy=policy) as clients:
            svc.run(conn, clients)
            drain_outbox(conn, clients, effects=("payment.create",))
    finally:
        stack.stop()
    url = conn.execute(
        "SELECT confirmation_url FROM oms.payment_links WHERE order_id = %s", (oid,)
    ).fetchone()[0]
    number = conn.execute("SELECT order_number FROM oms.orders WHERE order_id = %s", (oid,)).fetchone()[0]

    at = page("lookup", OPS).run()
    at.text_input(key="lookup_text").input(number).run()
    assert not at.exception
    links = frame(at, "confirmation_url", "purpose")
    assert links.to_dict("records")[0]["confirmation_url"] == url
    assert links.to_dict("records")[0]["status"] == "pending"
    assert "Payments" in texts(at)
