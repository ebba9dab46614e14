"""The own courier (carriers without an API): hand-over and delivery as use cases, the demo courier that plays
them set-based, and the route sheet PDF — on the sample business configuration's real allocation decisions."""

from __future__ import annotations

import re
from datetime import date, datetime, timedelta

import pytest

from oms_ops import fulfillment, pdf, read_model, route_sheet
from oms_ops.allocation import allocate_batch
from oms_ops.errors import ValidationFailed
from oms_ops.fulfillment import ShipRequest
from oms_ops.invariants import check_invariants
from oms_ops.services import shipping
from tests.core.test_alloc_support import NOW, place, sample_config
from tests.services.conftest import T0
from tests.simulators.pdfcheck import assert_valid_pdf


@pytest.fixture
def shipped(world, conn) -> dict[str, int]:
    """The world shipped (its Moscow courier orders go with the own courier), plus a click & collect order
    the store cannot serve that the warehouse sends to the store with the own courier. Order ids by case."""
    world["to_store"] = place(
        conn,
        [("TEA", 1)],
        method="store_pickup",
        pickup="ST-MSK-1",
        region=None,
        placed_at=T0 + timedelta(hours=1),
    )
    allocate_batch(conn, config=sample_config(), now=NOW)
    # the allocator found CDEK cheaper for that one; the warehouse sends it with its own courier all the same
    out = fulfillment.ship_in_full(
        conn, [ShipRequest(world["to_store"], "WH-MSK-POD", carrier_code="own_courier")], actor="test"
    )
    assert len(out.shipments) == 1
    res = shipping.ship_reserved(conn)
    assert not res.errors
    return world


def _shipments(conn) -> dict[int, tuple]:
    """shipment id → (order id, carrier, delivery method, state)."""
    return {
        r[0]: r[1:]
        for r in conn.execute(
            "SELECT shipment_id, order_id, carrier_code, delivery_method, state FROM oms.shipments ORDER BY 1"
        ).fetchall()
    }


def _own(conn) -> list[int]:
    return [sid for sid, (_, carrier, _, _) in _shipments(conn).items() if carrier not in ("cdek", "self")]


def test_the_demo_courier_hands_over_then_delivers_and_orders_follow(conn, shipped):
    own = _own(conn)
    before = _shipments(conn)
    assert {before[s][2] for s in own} == {"courier", "store_pickup"}  # door deliveries and one for a store
    assert {before[s][3] for s in own} == {"created"}

    # too young for either step: nothing moves
    idle = shipping.advance_own_courier(conn, hand_over_after_s=3600, deliver_after_s=0)
    assert (idle.handed_over, idle.delivered, idle.at_store) == (0, 0, 0)

    first = shipping.advance_own_courier(conn, hand_over_after_s=0, deliver_after_s=3600)
    assert (first.handed_over, first.delivered, first.at_store) == (len(own), 0, 0)
    after = _shipments(conn)
    for (
        sid,
        row,
    ) in after.items():  # only the own courier's parcels moved; CDEK and the stores reported nothing
        assert row[3] == ("handed_over" if sid in own else before[sid][3])
    stamped = conn.execute(
        "SELECT count(*) FROM oms.shipments WHERE shipment_id = ANY(%s) AND handed_over_at IS NOT NULL",
        (own,),
    ).fetchone()[0]
    assert stamped == len(own)  # shipped, as the KPIs count it

    second = shipping.advance_own_courier(conn, hand_over_after_s=0, deliver_after_s=0)
    assert second.handed_over == 0
    assert second.delivered + second.at_store == len(own) and second.at_store == 1
    after = _shipments(conn)
    for sid in own:
        assert after[sid][3] == ("delivered" if after[sid][2] == "courier" else "ready_for_pickup")
    state = dict(conn.execute("SELECT order_id, state FROM oms.orders").fetchall())
    assert state[shipped["courier"]] == "delivered"
    assert state[shipped["to_store"]] == "ready_for_pickup"
    assert state[shipped["split"]] == "shipped"  # its CDEK parcel is still with the carrier
    actors = {
        r[0]
        for r in conn.execute(
            "SELECT DISTINCT actor FROM oms.order_events WHERE entity = 'shipment' AND entity_id = ANY(%s) "
            "AND to_state <> 'created'",
            (own,),
        ).fetchall()
    }
    assert actors == {"courier:demo"}
    assert check_invariants(conn) == []
    assert shipping.advance_own_courier(conn, hand_over_after_s=0, deliver_after_s=0).metadata() == {
        "handed_over": 0,
        "delivered": 0,
        "at_store": 0,
        "transactions": 0,
    }


def test_a_parcel_ops_moved_meanwhile_is_left_out_and_the_rest_moves(conn, shipped, monkeypatch):
    own = _own(conn)
    # ops took and delivered the first parcel on the page after the courier's list was read
    shipping.hand_over(conn, own[:1], actor="dashboard:olga")
    shipping.courier_delivered(conn, own[:1], actor="dashboard:olga")
    stale = own[:]  # what the courier read before ops acted
    monkeypatch.setattr(shipping, "_due", lambda conn, states, *a: stale if "created" in states else [])
    run = shipping.advance_own_courier(conn, hand_over_after_s=0, deliver_after_s=0)
    assert run.handed_over == len(own) - 1
    states = _shipments(conn)
    assert states[own[0]][3] in ("delivered", "ready_for_pickup")
    assert all(states[s][3] == "handed_over" for s in own[1:])


def test_courier_delivered_brings_each_parcel_where_it_goes(conn, shipped):
    own = _own(conn)
    shipping.hand_over(conn, own, actor="t")
    done = shipping.courier_delivered(conn, own, actor="t")
    methods = {s: _shipments(conn)[s][2] for s in own}
    assert sorted(done["delivered"]) == sorted(s for s in own if methods[s] == "courier")
    assert done["at_store"] == [s for s in own if methods[s] == "store_pickup"]


def test_advance_own_courier_refuses_negative_delays(conn):
    with pytest.raises(ValidationFailed, match="must be >= 0"):
        shipping.advance_own_courier(conn, hand_over_after_s=-1, deliver_after_s=0)


def test_the_route_sheet_lists_the_days_parcels(conn, shipped):
    own = _own(conn)
    today = conn.execute("SELECT (now() AT TIME ZONE 'Europe/Moscow')::date").fetchone()[0]
    waiting = read_model.courier_route(conn, "WH-MSK-POD", today)
    assert sorted(r["shipment_id"] for r in waiting) == sorted(own)
    assert {r["shipment_status"] for r in waiting} == {"created"}
    to_store = next(r for r in waiting if r["delivery_method"] == "store_pickup")
    assert (
        to_store["address"]
        == conn.execute("SELECT name FROM oms.locations WHERE location_code = 'ST-MSK-1'").fetchone()[0]
    )  # a parcel for store pickup goes to the store

    shipping.hand_over(conn, own, actor="t")
    sheet = shipping.courier_route_sheet(conn, location_code="WH-MSK-POD", day=today)
    assert_valid_pdf(sheet, pages=1)
    numbers = [
        r[0]
        for r in conn.execute("SELECT shipment_number FROM oms.shipments WHERE shipment_id = ANY(%s)", (own,))
    ]
    for number in numbers:
        assert f"({number})".encode() in sheet
    # Russian text is in the file as text (Windows-1251 positions, glyph names in the font's encoding)
    assert pdf.encode("Маршрутный лист курьера").decode("latin-1") in _strings(sheet)
    assert b"/afii10017" in sheet and b"/Widths [" in sheet
    assert read_model.courier_route(conn, "WH-MSK-POD", today - timedelta(days=1)) == []
    empty = shipping.courier_route_sheet(conn, location_code="WH-MSK-POD", day=today - timedelta(days=1))
    assert pdf.encode("Нет отправлений на этот день.").decode("latin-1") in _strings(empty)


def test_a_long_route_runs_over_pages(conn, shipped):
    rows = read_model.courier_route(
        conn, "WH-MSK-POD", conn.execute("SELECT (now() AT TIME ZONE 'Europe/Moscow')::date").fetchone()[0]
    )
    assert rows
    many = [dict(rows[i % len(rows)], shipment_number=f"SHP-{i:08d}") for i in range(40)]
    doc = route_sheet.render(
        many, location_code="WH-MSK-POD", location_name="Склад", city="Подольск", day=date(2025, 11, 26),
        printed_at=datetime(2025, 11, 26, 8, 0),
    )  # fmt: skip
    pages = doc.count(b"/Type /Page ")
    assert pages >= 2 and f"(Стр. {pages} из {pages})".encode("cp1251") in _unescape(doc)
    assert all(f"(SHP-{i:08d})".encode() in doc for i in range(40))


def _unescape(data: bytes) -> bytes:
    """The PDF's string literals with octal escapes turned back into bytes."""
    return re.sub(rb"\\([0-7]{3})", lambda m: bytes([int(m.group(1), 8)]), data)


def _strings(data: bytes) -> str:
    return _unescape(data).decode("latin-1")


def test_text_is_measured_and_fitted_with_the_fonts_widths():
    assert pdf.text_width("AB", 10) == pytest.approx((667 + 667) * 10 / 1000)
    assert pdf.text_width("Ж", 10) == pytest.approx(9.23)
    short = pdf.fit("ул. Большая Полянка, д. 12, кв. 345", 60, 8)
    assert short.endswith("…") and pdf.text_width(short, 8) <= 60
    assert pdf.encode("Ёё№ x\tz €") == bytes([168, 184, 185, 32, 120, 32, 122, 32, ord("?")])
