"""Operations page: renders live panels from the read model (the ops views every test database has, built
at start-up), and each exception action changes the database through the OMS API (the dashboards' own
login only reads). Rows the panels show are written by the code that writes them in production."""

import hashlib
import json

from oms_ops.business_config import load_business_config, sync_reference_data
from oms_ops.connectors.state import record_failure, record_success, set_cursor
from oms_ops.orders import accept_orders, hold_orders
from oms_ops.outbox import claim, enqueue, fail
from tests.core import factories as f
from tests.dashboards.conftest import ADMIN, MANAGER, OPS, frame, page, texts


def test_empty_database_renders_every_panel(dash_url):
    at = page("operations", OPS).run()
    assert not at.exception
    out = texts(at)
    assert "Backlog (orders): 0" in out
    assert "No open orders." in out
    assert "No order is at risk" in out
    assert "The quarantine is empty." in out
    assert "No feed has run yet and no cursor is stored." in out
    assert "No parcel is waiting for a carrier." in out
    assert "Orders at risk (deadline within 4 h or passed)" in out  # the threshold of ops_thresholds
    assert [t.label for t in at.tabs] == [
        "On hold / backordered",
        "Unfillable",
        "Quarantine",
        "Carrier & outbox errors",
        "Courier",
        "Returns",
        "Channel mappings",
        "Amendments",
    ]
    assert "No channel has been discovered yet." in out


def test_other_roles_are_refused(dash_url):
    at = page("operations", MANAGER).run()
    assert not at.exception
    assert "The manager role cannot open this page." in texts(at)
    assert not at.button


def test_backlog_risk_stock_and_ats_are_shown(dash_url, conn):
    f.world(conn)
    f.channel(conn, "callcentre", "callcentre")
    oid = f.allocated_order(conn, [("SKU-1", 3)])
    late = f.order(conn, [("SKU-2", 1)], promised_at=f.T0)  # promise long passed: at risk
    # packed and shipped but not handed over yet: "shipped" means handed to the carrier, so it is backlog
    _, shipped = f.shipped_order(conn, [("SKU-3", 1)])
    at = page("operations", ADMIN).run()
    assert not at.exception
    out = texts(at)
    assert "Backlog (orders): 3" in out
    assert "0 more open order(s) are on their way to the customer" in out
    risk = frame(at, "hours_left", "deadline_at", "risk")
    number = conn.execute("SELECT order_number FROM oms.orders WHERE order_id = %s", (late,)).fetchone()[0]
    assert risk["order_number"].tolist() == [number]
    assert risk["risk"].tolist() == ["promise_missed"] and risk["hours_left"].iloc[0] < 0
    stock = frame(at, "orders_reserved").set_index("location_code")
    assert stock.loc["WH-MSK", "reserved"] == 3 and stock.loc["WH-MSK", "orders_reserved"] == 1
    # ATS per channel (no business configuration synced: every active location, no safety stock):
    # SKU-1 = 10 − 3 reserved at WH-MSK + 10 at WH-SPB; SKU-3 = 9 + 10 after one unit shipped
    ats = frame(at, "ozon", "webstore")
    assert ats.loc["SKU-1", "webstore"] == 17 and ats.loc["SKU-3", "ozon"] == 19
    parcels = frame(at, "shipment_number", "hours_waiting", "has_label")
    assert parcels["has_label"].tolist() == [False]
    assert "1 parcel(s) wait without a stored carrier label." in out
    assert oid and shipped


def test_sync_panel_shows_feed_health_and_cursors(dash_url, conn):
    f.world(conn)
    record_success(conn, "ozon", 12)
    set_cursor(conn, "ozon:postings", {"since": "2025-11-26T06:00:00+00:00"})
    record_failure(conn, "wildberries", "Wildberries API: 503 Service Unavailable")
    set_cursor(conn, "webstore:orders", {"watermark": "2025-11-26T05:00:00+00:00", "run": None})
    at = page("operations", OPS).run()
    assert not at.exception
    feeds = frame(at, "feed", "cursor_value", "last_error").set_index("feed")
    assert sorted(feeds.index) == ["ozon", "webstore", "wildberries"]
    assert feeds.loc["ozon", "cursor_name"] == "ozon:postings"
    assert json.loads(feeds.loc["ozon", "cursor_value"]) == {"since": "2025-11-26T06:00:00+00:00"}
    assert feeds.loc["ozon", "last_fetched"] == 12
    assert "503" in feeds.loc["wildberries", "last_error"] and bool(feeds.loc["wildberries", "is_failing"])
    assert any("Failing since their last success: wildberries" in e.value for e in at.error)
    ingest = frame(at, "channel_code", "queued_payloads").set_index("channel_code")
    assert set(ingest.index) == {"ozon", "webstore"}


def test_parcel_with_a_stored_label_is_not_flagged(dash_url, conn):
    f.world(conn)
    _, sid = f.shipped_order(conn, [("SKU-1", 1)])
    pdf = b"%PDF-1.4 label of the test parcel"
    conn.execute(
        """INSERT INTO connectors.shipment_documents (shipment_id, kind, carrier_code, print_uuid, content,
                                                     sha256, size_bytes)
           VALUES (%s, 'label', 'cdek', 'print-1', %s, %s, %s)""",
        (sid, pdf, hashlib.sha256(pdf).hexdigest(), len(pdf)),
    )
    at = page("operations", OPS).run()
    assert not at.exception
    assert frame(at, "shipment_number", "has_label")["has_label"].tolist() == [True]
    assert "without a stored carrier label" not in texts(at)


def test_release_hold_makes_the_order_new(dash_url, conn):
    f.world(conn)
    oid = f.order(conn)
    hold_orders(conn, [oid], reason="fraud check", actor="test")
    number = conn.execute("SELECT order_number FROM oms.orders WHERE order_id = %s", (oid,)).fetchone()[0]
    at = page("operations", OPS).run()
    assert number in frame(at, "hold_reason", "decision")["order_number"].tolist()
    at.selectbox(key="ops_pick").select(number).run()
    at.text_input(key="ops_reason").input("customer confirmed").run()
    at.button(key="ops_release").click().run()
    assert not at.exception
    assert f.order_state(conn, oid) == "new"
    assert any("hold released" in s.value for s in at.success)
    actor, reason = conn.execute(
        "SELECT actor, reason FROM oms.order_events WHERE order_id = %s ORDER BY event_id DESC LIMIT 1",
        (oid,),
    ).fetchone()
    assert (actor, reason) == ("dashboard:olga", "customer confirmed")


def test_release_refused_for_unknown_sku_shows_the_reason(dash_url, conn):
    f.world(conn)
    oid = f.order(conn, [("NO-SUCH-SKU", 1)])
    assert f.order_state(conn, oid) == "on_hold"
    number = conn.execute("SELECT order_number FROM oms.orders WHERE order_id = %s", (oid,)).fetchone()[0]
    at = page("operations", OPS).run()
    at.selectbox(key="ops_pick").select(number).run()
    at.button(key="ops_release").click().run()
    assert not at.exception
    assert any("unknown sku NO-SUCH-SKU" in e.value for e in at.error)
    assert f.order_state(conn, oid) == "on_hold"


def test_cancel_releases_reservations(dash_url, conn):
    f.world(conn)
    oid = f.allocated_order(conn, [("SKU-1", 2)])
    assert f.stock_row(conn, "WH-MSK", "SKU-1") == (10, 2)
    number = conn.execute("SELECT order_number FROM oms.orders WHERE order_id = %s", (oid,)).fetchone()[0]
    at = page("operations", OPS).run()
    at.text_input(key="ops_number").input(number).run()
    at.button(key="ops_cancel").click().run()
    assert any("Give a reason" in e.value for e in at.error)  # no reason: nothing happens
    assert f.order_state(conn, oid) == "allocated"
    at.text_input(key="ops_reason").input("customer called to cancel").run()
    at.button(key="ops_cancel").click().run()
    assert not at.exception
    assert f.order_state(conn, oid) == "cancelled"
    assert f.stock_row(conn, "WH-MSK", "SKU-1") == (10, 0)
    states = {r[0] for r in conn.execute("SELECT state FROM oms.reservations WHERE order_id = %s", (oid,))}
    assert states == {"released"}


def test_reroute_moves_the_reservation_away_from_an_excluded_location(dash_url, conn):
    config = load_business_config()
    sync_reference_data(conn, config)
    f.product(conn, "SKU-1")
    f.stock(conn, "WH-MSK-POD", {"SKU-1": 5})
    f.stock(conn, "WH-SPB-SHU", {"SKU-1": 5})
    oid = f.order(conn, [("SKU-1", 1)], channel_code="webstore", region="Москва", city="Москва")
    f.reserve(conn, oid, "WH-MSK-POD")
    number = conn.execute("SELECT order_number FROM oms.orders WHERE order_id = %s", (oid,)).fetchone()[0]
    at = page("operations", OPS).run()
    at.text_input(key="ops_number").input(number).run()
    at.multiselect(key="ops_exclude").select("WH-MSK-POD").run()
    at.button(key="ops_reroute").click().run()
    assert not at.exception
    assert not at.error, [e.value for e in at.error]
    active = conn.execute(
        "SELECT location_code FROM oms.reservations WHERE order_id = %s AND state = 'active'", (oid,)
    ).fetchall()
    assert active and all(r[0] != "WH-MSK-POD" for r in active)
    kind = conn.execute(
        "SELECT kind FROM oms.allocation_decisions WHERE order_id = %s ORDER BY decision_id DESC LIMIT 1",
        (oid,),
    ).fetchone()[0]
    assert kind == "reroute"


def test_replay_of_a_fixed_quarantined_payload_creates_the_order(dash_url, conn):
    f.world(conn)
    bad = f.order_dict(external_id="BAD-1")
    bad["lines"][0]["qty"] = 0
    res = accept_orders(conn, [bad], actor="test", source="webstore")
    (qid,) = res.quarantined
    at = page("operations", OPS).run()
    assert qid in frame(at, "quarantine_id")["quarantine_id"].tolist()
    payload = json.loads(at.text_area(key=f"q_payload_{qid}").value)
    assert payload["external_id"] == "BAD-1"
    at.button(key="q_replay").click().run()  # unchanged: still rejected, the row stays open
    assert any("still rejected" in e.value for e in at.error)
    payload["lines"][0]["qty"] = 2
    at.text_area(key=f"q_payload_{qid}").input(json.dumps(payload)).run()
    at.button(key="q_replay").click().run()
    assert not at.exception
    assert any("replayed: order accepted" in s.value for s in at.success)
    row = conn.execute(
        "SELECT o.state, l.qty FROM oms.orders o JOIN oms.order_lines l USING (order_id) WHERE o.external_id = 'BAD-1'"
    ).fetchone()
    assert row == ("new", 2)
    state, by = conn.execute(
        "SELECT state, resolved_by FROM raw.quarantine WHERE quarantine_id = %s", (qid,)
    ).fetchone()
    assert (state, by) == ("replayed", "dashboard:olga")


def test_discard_closes_a_quarantine_row(dash_url, conn):
    f.world(conn)
    res = accept_orders(conn, [{"external_id": "JUNK"}], actor="test", source="webstore")
    (qid,) = res.quarantined
    at = page("operations", OPS).run()
    at.button(key="q_discard").click().run()
    assert not at.exception
    assert conn.execute("SELECT state FROM raw.quarantine WHERE quarantine_id = %s", (qid,)).fetchone()[
        0
    ] == ("discarded")
    assert "The quarantine is empty." in texts(at)


def test_retry_of_a_dead_outbox_effect_makes_it_due_again(dash_url, conn):
    with conn.transaction():
        oid = enqueue(
            conn, "carrier.create_shipment", {"order_number": "ORD-X"}, "carrier.create_shipment:SHP-X"
        )
    (item,) = claim(conn, effects=["carrier.create_shipment"])
    assert fail(conn, item.outbox_id, "CDEK 500: internal error", max_attempts=1) == "dead"
    at = page("operations", OPS).run()
    table = frame(at, "outbox_id", "last_error")
    assert table["state"].tolist() == ["dead"] and "CDEK 500" in table["last_error"].iloc[0]
    at.multiselect(key="outbox_pick").select(oid).run()
    at.button(key="outbox_retry").click().run()
    assert not at.exception
    state, attempts = conn.execute(
        "SELECT state, attempts FROM oms.outbox WHERE outbox_id = %s", (oid,)
    ).fetchone()
    assert (state, attempts) == ("pending", 0)
    assert claim(conn, effects=["carrier.create_shipment"])[0].outbox_id == oid  # due now


def _action_buttons(at) -> set[str]:
    return {b.key for b in at.button} & {"ops_release", "ops_cancel", "ops_reroute"}


def test_only_the_actions_the_state_allows_are_offered_and_a_cancelled_order_has_none(dash_url, conn):
    f.world(conn)
    held = f.order(conn)
    hold_orders(conn, [held], reason="fraud check", actor="test")
    allocated = f.allocated_order(conn, [("SKU-1", 1)])
    numbers = dict(
        conn.execute(
            "SELECT order_id, order_number FROM oms.orders WHERE order_id = ANY(%s)", ([held, allocated],)
        ).fetchall()
    )
    at = page("operations", OPS).run()
    at.text_input(key="ops_number").input(numbers[held]).run()
    assert _action_buttons(at) == {"ops_release", "ops_cancel"}
    at.text_input(key="ops_number").input(numbers[allocated]).run()
    assert _action_buttons(at) == {"ops_cancel", "ops_reroute"}
    at.text_input(key="ops_reason").input("customer called to cancel").run()
    at.button(key="ops_cancel").click().run()
    assert not at.exception
    assert f.order_state(conn, allocated) == "cancelled"
    # the same order, still on screen: nothing is offered any more
    assert _action_buttons(at) == set()
    assert "No action applies to an order in state cancelled." in texts(at)


def test_headline_counts_change_right_after_an_action(dash_url, conn):
    f.world(conn)
    oid = f.order(conn)
    hold_orders(conn, [oid], reason="fraud check", actor="test")
    res = accept_orders(conn, [{"external_id": "JUNK"}], actor="test", source="webstore")
    number = conn.execute("SELECT order_number FROM oms.orders WHERE order_id = %s", (oid,)).fetchone()[0]
    at = page("operations", OPS).run()
    assert {"On hold: 1", "Quarantined: 1"} <= set(texts(at).splitlines())
    at.selectbox(key="ops_pick").select(number).run()
    at.button(key="ops_release").click().run()
    assert not at.exception
    assert "On hold: 0" in texts(at).splitlines()  # read again, not the cached count
    at.button(key="q_discard").click().run()
    assert not at.exception
    assert "Quarantined: 0" in texts(at).splitlines()
    assert res.quarantined
