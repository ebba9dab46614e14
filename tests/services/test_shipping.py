"""Set-based "ship what is reserved": same rows as the order-by-order path, skips, handovers, reruns, chunks."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import pytest
from psycopg import sql

from oms_ops import fulfillment
from oms_ops.allocation import allocate_batch
from oms_ops.db import connect
from oms_ops.errors import OmsError, ValidationFailed
from oms_ops.fulfillment import ShipRequest
from oms_ops.invariants import check_invariants
from oms_ops.orders import cancel_orders
from oms_ops.reservations import release_reservations
from oms_ops.services import shipping
from tests.core import factories as f
from tests.core.test_alloc_support import NOW, place, receive, sample_config

INSTANT = ("offline",)


def ship_order_by_order(conn) -> int:
    """The per-order path, exactly as the pipeline step did it before: per (order, location) a pick, a pack
    and a shipment transaction, then the handover transactions. Returns shipments created."""
    work = conn.execute(
        """SELECT DISTINCT o.order_id, r.location_code, o.channel_code, o.placed_at
           FROM oms.orders o JOIN oms.reservations r ON r.order_id = o.order_id AND r.state = 'active'
           WHERE o.state IN ('allocated', 'partially_allocated', 'picking', 'packed')
           ORDER BY o.placed_at, o.order_id, r.location_code"""
    ).fetchall()
    created = 0
    for order_id, location, channel, _ in work:
        created += shipping.ship_one(
            conn, order_id, location, channel=channel, instant_handover_channels=INSTANT
        )
    return created


def snapshot(conn) -> dict:
    """Everything shipping writes, with generated ids (pick, shipment) replaced by what they stand for —
    (order, location) — and timestamps reduced to set / not set, so two databases can be compared."""
    picks = {
        pid: f"{oid}/{loc}"
        for pid, oid, loc in conn.execute("SELECT pick_id, order_id, location_code FROM oms.picks")
    }
    ships = {
        sid: (num, f"{oid}/{loc}")
        for sid, num, oid, loc in conn.execute(
            "SELECT shipment_id, shipment_number, order_id, location_code FROM oms.shipments"
        )
    }
    by_number = {num: key for num, key in ships.values()}

    def norm(text):
        if text is None:
            return None
        text = re.sub(r"SHP-\d+", lambda m: f"SHP<{by_number[m.group()]}>", text)
        text = re.sub(r"pick (\d+)", lambda m: f"pick <{picks[int(m.group(1))]}>", text)
        return re.sub(r"shipment:(\d+)", lambda m: f"shipment:<{ships[int(m.group(1))][1]}>", text)

    def norm_payload(payload):
        out = dict(payload)
        if "shipment_id" in out:
            out["shipment_id"] = ships[out["shipment_id"]][1]
        if "shipment_number" in out:
            out["shipment_number"] = norm(out["shipment_number"])
        return out

    def rows(query):
        return [tuple(r) for r in conn.execute(query).fetchall()]

    events: dict[int, list] = {}
    for oid, entity, eid, frm, to, actor, reason, data in conn.execute(
        """SELECT order_id, entity, entity_id, from_state, to_state, actor, reason, data FROM oms.order_events
           ORDER BY event_id"""
    ):
        key = ships[eid][1] if entity == "shipment" else eid
        events.setdefault(oid, []).append((entity, key, frm, to, actor, norm(reason), data))
    return {
        "orders": rows(
            """SELECT order_id, state, allocated_at IS NOT NULL, picking_started_at IS NOT NULL,
                      picked_at IS NOT NULL, packed_at IS NOT NULL, first_shipped_at IS NOT NULL,
                      shipped_at IS NOT NULL, ready_for_pickup_at IS NOT NULL, delivered_at IS NOT NULL
               FROM oms.orders ORDER BY order_id"""
        ),
        "lines": rows(
            """SELECT line_id, order_id, state, qty, qty_shipped, qty_cancelled FROM oms.order_lines
               ORDER BY line_id"""
        ),
        "reservations": rows(
            """SELECT reservation_id, order_id, line_id, location_code, sku, qty, state, closed_at IS NOT NULL
               FROM oms.reservations ORDER BY reservation_id"""
        ),
        "picks": sorted(
            (picks[pid], state, packages, picker, actor, packed, ships[sid][1] if sid else None)
            for pid, state, packages, picker, actor, packed, sid in conn.execute(
                "SELECT pick_id, state, packages, picker, actor, packed_at IS NOT NULL, shipment_id FROM oms.picks"
            )
        ),
        "pick_lines": sorted(
            (picks[pid], *rest)
            for pid, *rest in conn.execute(
                """SELECT pick_id, reservation_id, line_id, sku, qty_expected, qty_picked, discrepancy_reason
                   FROM oms.pick_lines"""
            )
        ),
        "shipments": sorted(
            (ships[sid][1], *rest)
            for sid, *rest in conn.execute(
                """SELECT shipment_id, carrier_code, service_code, delivery_method, pickup_location_code,
                          packages, weight_g, promised_at, state, ready_for_pickup_at IS NOT NULL,
                          picked_up_at IS NOT NULL
                   FROM oms.shipments"""
            )
        ),
        "shipment_lines": sorted(
            (ships[sid][1], *rest)
            for sid, *rest in conn.execute("SELECT shipment_id, line_id, sku, qty FROM oms.shipment_lines")
        ),
        "stock": rows("SELECT location_code, sku, on_hand, reserved FROM oms.stock ORDER BY 1, 2"),
        "ledger": sorted(
            (*rest, norm(reason))
            for *rest, reason in conn.execute(
                """SELECT location_code, sku, kind, on_hand_delta, reserved_delta, order_id, line_id,
                          reservation_id, reference, actor, reason FROM oms.inventory_ledger"""
            )
        ),
        "events": events,
        "outbox": sorted(
            (norm(key), effect, repr(sorted(norm_payload(payload).items())))
            for key, effect, payload in conn.execute(
                "SELECT idempotency_key, effect, payload FROM oms.outbox"
            )
        ),
    }


def count(conn, table: str) -> int:
    return conn.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier("oms", table))).fetchone()[0]


def test_set_based_result_equals_the_order_by_order_path(twins):
    url_a, url_b, ids = twins
    with connect(url_a) as a, connect(url_b) as b:
        per_order = ship_order_by_order(a)
        res = shipping.ship_reserved(b)
        assert res.errors == [] and res.shipments == per_order == 8 and res.handovers == 2
        assert res.transactions == 1
        left, right = snapshot(a), snapshot(b)
        for part in left:
            assert right[part] == left[part], part
        assert check_invariants(b) == []
        # the cases really took different roads
        states = dict(b.execute("SELECT order_id, state FROM oms.orders").fetchall())
        assert states[ids["courier"]] == states[ids["split"]] == "shipped"
        assert states[ids["click_collect"]] == "ready_for_pickup"
        assert states[ids["till"]] == "picked_up"
        assert states[ids["partial"]] == "backordered"


def test_split_order_ships_location_by_location(conn, world):
    shipping.ship_reserved(conn)
    oid = world["split"]
    assert [
        (frm, to)
        for frm, to in conn.execute(
            "SELECT from_state, to_state FROM oms.order_events WHERE order_id = %s AND entity = 'order' "
            "AND from_state IS NOT NULL ORDER BY event_id",
            (oid,),
        )
    ] == [
        ("new", "allocated"),
        ("allocated", "picking"),
        ("picking", "partially_shipped"),
        ("partially_shipped", "shipped"),
    ]
    assert conn.execute(
        "SELECT location_code, carrier_code, service_code FROM oms.shipments WHERE order_id = %s ORDER BY 1",
        (oid,),
    ).fetchall() == [("WH-MSK-POD", "own_courier", "COURIER"), ("WH-SPB-SHU", "cdek", "137")]


def test_store_pickup_waits_at_the_store_and_a_till_sale_is_collected_at_once(conn, world):
    res = shipping.ship_reserved(conn)
    assert res.handovers == 2
    rows = conn.execute(
        """SELECT s.order_id, s.carrier_code, s.state, s.ready_for_pickup_at IS NOT NULL, o.state,
                  array_agg(l.state ORDER BY l.line_id)
           FROM oms.shipments s JOIN oms.orders o USING (order_id) JOIN oms.order_lines l USING (order_id)
           WHERE s.order_id = ANY(%s) GROUP BY 1, 2, 3, 4, 5 ORDER BY 1""",
        ([world["click_collect"], world["till"]],),
    ).fetchall()
    assert rows == [
        (world["click_collect"], "self", "ready_for_pickup", True, "ready_for_pickup", ["shipped"]),
        (world["till"], "self", "picked_up", True, "picked_up", ["delivered"]),
    ]
    # the store hands over itself: the channel hears of it, no carrier is booked
    effects = conn.execute(
        "SELECT effect FROM oms.outbox WHERE (payload->>'order_id')::bigint = ANY(%s) ORDER BY 1",
        ([world["click_collect"], world["till"]],),
    ).fetchall()
    assert effects == [("channel.order_status",), ("channel.order_status",)]
    assert check_invariants(conn) == []


def test_no_instant_handover_channels_leaves_the_till_sale_waiting(conn, world):
    shipping.ship_reserved(conn, instant_handover_channels=())
    assert conn.execute("SELECT state FROM oms.orders WHERE order_id = %s", (world["till"],)).fetchone()[
        0
    ] == ("ready_for_pickup")


def test_unshippable_pairs_are_skipped_with_their_reason_and_the_rest_ships(conn, world):
    cancel_orders(conn, [world["marketplace"]], reason="customer", actor="test")
    with conn.transaction():  # the reservation is gone but the order still says allocated
        conn.execute("SELECT 1 FROM oms.orders WHERE order_id = %s FOR UPDATE", (world["pickup_point"],))
        release_reservations(conn, order_ids=[world["pickup_point"]], actor="test", reason="lost")
    requests = [
        ShipRequest(world["courier"], "WH-MSK-POD"),
        ShipRequest(world["marketplace"], "WH-MSK-POD"),
        ShipRequest(world["pickup_point"], "WH-MSK-POD"),
        ShipRequest(world["courier"], "WH-KZN"),
        ShipRequest(999_999, "WH-MSK-POD"),
        ShipRequest(world["split"], "WH-MSK-POD", carrier_code="cdek", service_code="136"),
    ]
    out = fulfillment.ship_in_full(conn, requests, actor="test")
    assert sorted(out.skipped) == sorted(
        [
            (world["marketplace"], "WH-MSK-POD", "order is cancelled: nothing to pick"),
            (world["pickup_point"], "WH-MSK-POD", "nothing reserved at WH-MSK-POD to pick"),
            (world["courier"], "WH-KZN", "nothing reserved at WH-KZN to pick"),
            (999_999, "WH-MSK-POD", "order not found"),
        ]
    )
    assert sorted(out.shipments) == [(world["courier"], "WH-MSK-POD"), (world["split"], "WH-MSK-POD")]
    # an explicit carrier wins over the decision
    assert conn.execute(
        "SELECT carrier_code, service_code FROM oms.shipments WHERE order_id = %s", (world["split"],)
    ).fetchone() == ("cdek", "136")
    assert (
        conn.execute(
            "SELECT count(*) FROM oms.picks WHERE order_id = %s", (world["pickup_point"],)
        ).fetchone()[0]
        == 0
    )
    assert check_invariants(conn) == []


def test_an_open_pick_whose_reservation_is_gone_is_skipped_not_shipped(conn, world):
    oid = world["courier"]
    fulfillment.record_pick(conn, oid, "WH-MSK-POD", actor="picker")
    with conn.transaction():
        conn.execute("SELECT 1 FROM oms.orders WHERE order_id = %s FOR UPDATE", (oid,))
        release_reservations(conn, order_ids=[oid], actor="test", reason="stock lost")
    out = fulfillment.ship_in_full(
        conn, [ShipRequest(oid, "WH-MSK-POD"), ShipRequest(world["marketplace"], "WH-MSK-POD")], actor="t"
    )
    assert [s[:2] for s in out.skipped] == [(oid, "WH-MSK-POD")]
    assert "only 0 reserved" in out.skipped[0][2]
    assert list(out.shipments) == [(world["marketplace"], "WH-MSK-POD")]
    assert conn.execute("SELECT count(*) FROM oms.shipments WHERE order_id = %s", (oid,)).fetchone()[0] == 0


def test_a_chunk_that_fails_is_split_until_the_failing_order_is_isolated(conn, world, monkeypatch):
    bad = world["pickup_point"]
    real = fulfillment.enqueue_many

    def enqueue_failing_for_one_order(c, rows):
        if any(payload.get("order_id") == bad for _, payload, _ in rows):
            raise ValidationFailed(f"carrier refuses order {bad}")
        return real(c, rows)

    monkeypatch.setattr(fulfillment, "enqueue_many", enqueue_failing_for_one_order)
    ledger_before = count(conn, "inventory_ledger")
    res = shipping.ship_reserved(conn)
    assert res.errors == [f"order {bad}: carrier refuses order {bad}"]
    assert res.shipments == 7 and res.transactions > 1
    # the failing order is untouched: no pick, no shipment, still allocated, its reservation active
    assert (
        conn.execute("SELECT state FROM oms.orders WHERE order_id = %s", (bad,)).fetchone()[0] == "allocated"
    )
    assert conn.execute("SELECT count(*) FROM oms.picks WHERE order_id = %s", (bad,)).fetchone()[0] == 0
    assert (
        conn.execute(
            "SELECT count(*) FROM oms.inventory_ledger WHERE order_id = %s AND kind = 'ship'", (bad,)
        ).fetchone()[0]
        == 0
    )
    assert count(conn, "inventory_ledger") > ledger_before
    assert check_invariants(conn) == []


def test_rerun_ships_nothing_more(conn, world):
    first = shipping.ship_reserved(conn)
    assert first.shipments == 8
    before = {t: count(conn, t) for t in ("shipments", "picks", "order_events", "outbox", "inventory_ledger")}
    again = shipping.ship_reserved(conn)
    assert (again.shipments, again.handovers, again.errors, again.transactions) == (0, 0, [], 0)
    assert {t: count(conn, t) for t in before} == before
    # asking the domain directly for a pair that shipped returns its shipment, creates nothing
    out = fulfillment.ship_in_full(conn, [ShipRequest(world["partial"], "WH-KZN")], actor="t")
    number = conn.execute(
        "SELECT shipment_number FROM oms.shipments WHERE order_id = %s", (world["partial"],)
    ).fetchone()[0]
    assert out.shipments == {} and out.skipped == []
    assert [(s.shipment_number, s.created) for s in out.already_shipped.values()] == [(number, False)]
    assert {t: count(conn, t) for t in before} == before


def test_chunks_and_limit_take_the_oldest_orders_first(conn, world):
    res = shipping.ship_reserved(conn, limit=3, chunk_size=2)
    assert (res.shipments, res.transactions) == (3, 2)
    shipped = [r[0] for r in conn.execute("SELECT DISTINCT order_id FROM oms.shipments ORDER BY 1")]
    assert shipped == [world["courier"], world["marketplace"], world["pickup_point"]]
    rest = shipping.ship_reserved(conn, chunk_size=2)
    assert rest.shipments == 5 and rest.errors == []
    assert check_invariants(conn) == []


def test_orders_locked_by_another_operation_are_deferred_to_the_next_run(conn, db_url, world):
    with connect(db_url) as other, other.transaction():
        other.execute("SELECT 1 FROM oms.orders WHERE order_id = %s FOR UPDATE", (world["courier"],))
        res = shipping.ship_reserved(conn)
        assert res.deferred == 1 and res.errors == [] and res.shipments == 7
    assert conn.execute("SELECT state FROM oms.orders WHERE order_id = %s", (world["courier"],)).fetchone()[
        0
    ] == ("allocated")
    later = shipping.ship_reserved(conn)
    assert (later.shipments, later.deferred) == (1, 0)


def test_bad_arguments_are_refused(conn):
    with pytest.raises(ValidationFailed, match="chunk_size"):
        shipping.ship_reserved(conn, chunk_size=0)
    with pytest.raises(ValidationFailed, match="limit"):
        shipping.ship_reserved(conn, limit=-1)


def test_moving_shipments_on_through_the_use_cases(conn, world):
    shipping.ship_reserved(conn)
    sid = {
        oid: s
        for s, oid in conn.execute(
            "SELECT shipment_id, order_id FROM oms.shipments WHERE carrier_code <> 'self'"
        )
    }
    courier, pp = sid[world["courier"]], sid[world["pickup_point"]]
    at = datetime(2025, 11, 27, 12, 0, tzinfo=UTC)
    assert shipping.hand_over(conn, [courier, pp], actor="ops") == [
        (courier, "created", "handed_over"),
        (pp, "created", "handed_over"),
    ]
    shipping.mark_delivered(conn, [courier], actor="ops", at=at)
    shipping.mark_ready_for_pickup(conn, [pp], actor="ops")
    shipping.mark_picked_up(conn, [pp], actor="ops", at=at)
    states = dict(
        conn.execute(
            "SELECT order_id, state FROM oms.orders WHERE order_id = ANY(%s)",
            ([world["courier"], world["pickup_point"]],),
        ).fetchall()
    )
    assert states == {world["courier"]: "delivered", world["pickup_point"]: "picked_up"}
    assert (
        conn.execute("SELECT delivered_at FROM oms.shipments WHERE shipment_id = %s", (courier,)).fetchone()[
            0
        ]
        == at
    )
    with pytest.raises(OmsError):  # delivered is final
        shipping.hand_over(conn, [courier], actor="ops")
    assert check_invariants(conn) == []


def test_shipping_plans_read_the_latest_decision_of_each_order(conn, world):
    plans = fulfillment.shipping_plans(conn, [world["split"], world["click_collect"], 999_999])
    assert plans == {
        (world["split"], "WH-MSK-POD"): fulfillment.ShippingPlan("own_courier", "COURIER", False),
        (world["split"], "WH-SPB-SHU"): fulfillment.ShippingPlan("cdek", "137", False),
        (world["click_collect"], "ST-MSK-1"): fulfillment.ShippingPlan("self", None, True),
    }


def test_new_order_after_shipping_is_shipped_by_the_next_run(conn, world):
    shipping.ship_reserved(conn)
    receive(conn, "WH-MSK-POD", {"MUG": 1})
    oid = place(conn, [("MUG", 1)], region="Москва")
    allocate_batch(conn, config=sample_config(), now=NOW)
    res = shipping.ship_reserved(conn)
    assert res.shipments == 1
    assert conn.execute("SELECT state FROM oms.orders WHERE order_id = %s", (oid,)).fetchone()[0] == "shipped"


def test_a_prepaid_order_ships_only_once_paid_and_cash_on_delivery_at_once(conn):
    from oms_ops.payments import PaymentReport, record_payments

    f.world(conn)  # factories' world: orders reserved at WH-MSK without a business configuration
    unpaid = f.allocated_order(conn, [("SKU-1", 1)], payment_status="pending")
    cod = f.allocated_order(conn, [("SKU-2", 1)], payment_status="pending", payment_method="cod")
    first = shipping.ship_reserved(conn)
    assert f.order_state(conn, unpaid) == "allocated" and f.order_state(conn, cod) == "shipped"
    assert first.errors == []
    record_payments(
        conn,
        [
            PaymentReport(
                provider="yookassa", provider_payment_id="p-1", status="paid", amount=100, order_id=unpaid
            )
        ],
    )
    shipping.ship_reserved(conn)
    assert f.order_state(conn, unpaid) == "shipped"
