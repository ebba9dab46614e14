"""A refusal for stock names every affected line: SKU, quantity asked, quantity there and the location — for
picking (more than is reserved) and for shipping (a pick whose reservation is gone), as allocation and
``consume_reservations`` already do."""

from __future__ import annotations

import pytest

from oms_ops import fulfillment as ff
from oms_ops.errors import InsufficientStock
from oms_ops.fulfillment import ShipRequest
from oms_ops.reservations import release_reservations
from tests.core import factories as f


def test_an_over_pick_names_every_line_with_sku_quantities_and_location(conn):
    f.world(conn)
    oid = f.allocated_order(conn, [("SKU-1", 2), ("SKU-2", 1)])
    l1, l2 = f.line_ids(conn, oid)
    with pytest.raises(InsufficientStock) as exc:
        ff.record_pick(conn, oid, "WH-MSK", {l1: 3, l2: 4}, actor="t")
    assert [str(s) for s in exc.value.shortfalls] == [
        f"order {oid} line {l1} (SKU-1) at WH-MSK: pick 3, only 2 reserved",
        f"order {oid} line {l2} (SKU-2) at WH-MSK: pick 4, only 1 reserved",
    ]
    assert conn.execute("SELECT count(*) FROM oms.picks").fetchone()[0] == 0


def test_shipping_a_pick_whose_reservation_is_gone_names_the_sku_and_location(conn):
    f.world(conn)
    oid = f.allocated_order(conn, [("SKU-1", 2), ("SKU-3", 1)])
    l1, l3 = f.line_ids(conn, oid)
    ff.record_pick(conn, oid, "WH-MSK", actor="picker")
    with conn.transaction():
        conn.execute("SELECT 1 FROM oms.orders WHERE order_id = %s FOR UPDATE", (oid,))
        release_reservations(conn, order_ids=[oid], actor="test", reason="stock lost")
    out = ff.ship_in_full(conn, [ShipRequest(oid, "WH-MSK")], actor="t")
    assert out.skipped == [
        (
            oid,
            "WH-MSK",
            f"order {oid} line {l1} (SKU-1) at WH-MSK: ship 2, only 0 reserved; "
            f"order {oid} line {l3} (SKU-3) at WH-MSK: ship 1, only 0 reserved",
        )
    ]
