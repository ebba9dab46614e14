"""Channel-specific behaviour: cancellations, mapping into NormalizedOrder, Shopify paging restarts, replay."""

from __future__ import annotations

from psycopg.types.json import Jsonb

from oms_ops.channels import ozon, webstore, wildberries
from oms_ops.connectors.state import get_cursor, set_cursor
from oms_ops.services.intake import replay_quarantine
from tests.connectors.conftest import count


def test_ozon_postings_become_orders_and_buyer_cancellations_cancel_them(world, policy):
    conn, stack, settings = world(only=["ozon"], rate=0.5, options={"ozon": {"cancel_share": 0.5}})
    client = ozon.OzonClient.from_endpoint(settings.endpoint("ozon"), policy=policy, rate=None)
    stack.advance(600)
    ozon.ingest_ozon(conn, client)
    first = count(conn, "SELECT count(*) FROM oms.orders WHERE channel_code = 'ozon'")
    assert first > 0
    row = conn.execute(
        """SELECT o.delivery_method, o.payment_status, o.region, o.city, o.channel_order_number, l.sku, l.qty
           FROM oms.orders o JOIN oms.order_lines l USING (order_id) WHERE o.channel_code = 'ozon' LIMIT 1"""
    ).fetchone()
    assert row[0] == "courier" and row[1] == "paid" and row[4]
    assert row[2] is None and row[3] is None  # FBS: Ozon gives the buyer's region and city for rFBS only
    stack.advance(12 * 3600)  # buyers cancel within 8 h
    ozon.ingest_ozon(conn, client)
    sim = {p["posting_number"]: p["status"] for p in stack["ozon"].rendered_postings()}
    states = dict(
        conn.execute("SELECT external_id, state FROM oms.orders WHERE channel_code = 'ozon'").fetchall()
    )
    cancelled_in_ozon = {n for n, s in sim.items() if s == "cancelled"}
    assert cancelled_in_ozon
    # seen open, then cancelled: cancelled in the OMS; first seen cancelled: never created
    assert all(states[n] == "cancelled" for n in cancelled_in_ozon if n in states)
    assert set(states) | cancelled_in_ozon == set(sim)


def test_wildberries_statuses_cancel_open_orders(world, policy):
    conn, stack, settings = world(
        only=["wildberries"],
        rate=0.5,
        options={"wildberries": {"cancel_share": 0.0, "confirm_deadline_hours": None}},
    )
    client = wildberries.WildberriesClient.from_endpoint(
        settings.endpoint("wildberries"), policy=policy, rate=None
    )
    stack.advance(3600)
    res = wildberries.ingest_wildberries(conn, client)
    assert res.normalized.accepted == len(stack["wildberries"].rendered_orders())
    line = conn.execute(
        """SELECT l.qty, l.unit_price, o.currency FROM oms.orders o JOIN oms.order_lines l USING (order_id)
           WHERE o.channel_code = 'wildberries' LIMIT 1"""
    ).fetchone()
    assert line[0] == 1 and line[1] > 0 and line[2] == "RUB"  # one WB order = one unit, kopecks → roubles
    victim = res.cursor["next"]  # the last order id
    stack["wildberries"].orders[-1].wb_status = "canceled_by_client"
    assert wildberries.sync_statuses(conn, client) == 1
    assert (
        conn.execute(
            "SELECT state FROM oms.orders WHERE channel_code = 'wildberries' AND external_id = %s",
            (str(victim),),
        ).fetchone()[0]
        == "cancelled"
    )


def test_webstore_restarts_the_window_when_page_info_is_stale(world, policy):
    conn, stack, settings = world(only=["shopify"], rate=0.5, options={"shopify": {"cancel_share": 0.0}})
    client = webstore.ShopifyClient.from_endpoint(settings.endpoint("shopify"), policy=policy, rate=None)
    stack.advance(2 * 3600)
    expected = {str(o["id"]) for o in stack["shopify"].rendered_orders()}
    webstore.ingest_webstore(conn, client, page_limit=5, max_pages=2)  # stops mid-window
    state = get_cursor(conn, webstore.CURSOR)
    assert state["run"]["page_info"]
    state["run"]["page_info"] = "bm90LWEtY3Vyc29y"  # garbage: Shopify answers 400
    with conn.transaction():
        set_cursor(conn, webstore.CURSOR, state)
    res = webstore.ingest_webstore(conn, client, page_limit=5)
    assert any("window restarted" in n for n in res.notes)
    got = {r[0] for r in conn.execute("SELECT external_id FROM oms.orders WHERE channel_code = 'webstore'")}
    assert got == expected
    assert get_cursor(conn, webstore.CURSOR)["run"] is None


def test_webstore_mapping_uses_own_pickup_points_and_stores(world, policy):
    conn, stack, settings = world(only=["shopify"], rate=2.0)
    client = webstore.ShopifyClient.from_endpoint(settings.endpoint("shopify"), policy=policy, rate=None)
    stack.advance(3 * 3600)
    webstore.ingest_webstore(conn, client)
    rows = conn.execute(
        """SELECT delivery_method, pickup_location_code, payment_method, count(*) FROM oms.orders
           WHERE channel_code = 'webstore' GROUP BY 1, 2, 3"""
    ).fetchall()
    methods = {r[0] for r in rows}
    assert {"courier", "pickup_point", "store_pickup"} <= methods
    assert all(r[1] and r[1][:3] in ("PP-", "ST-") for r in rows if r[0] != "courier")
    assert {r[2] for r in rows} == {"prepaid", "cod"}
    assert count(conn, "SELECT count(*) FROM raw.quarantine") == 0


def test_quarantined_payload_is_replayed_after_the_fix(world, policy):
    conn, stack, settings = world(only=["ozon"], rate=0.5)
    client = ozon.OzonClient.from_endpoint(settings.endpoint("ozon"), policy=policy, rate=None)
    stack.advance(1800)
    good = {p["posting_number"]: p for p in stack["ozon"].rendered_postings()}
    stack["ozon"].faults.set([{"kind": "malformed", "count": 1, "share": 1.0}])
    ozon.ingest_ozon(conn, client)
    rows = conn.execute(
        "SELECT quarantine_id, external_id FROM raw.quarantine WHERE source = 'ozon'"
    ).fetchall()
    assert rows and all(r[0] for r in rows)
    # ops repair the payloads (here: with what the channel really meant) and replay them
    fixed = [qid for qid, ext in rows if ext in good]
    for qid, ext in rows:
        if ext in good:
            conn.execute(
                "UPDATE raw.quarantine SET payload = %s WHERE quarantine_id = %s", (Jsonb(good[ext]), qid)
            )
    res = replay_quarantine(conn, fixed, actor="ops")
    assert res.accepted == len(fixed) > 0
    assert count(
        conn,
        "SELECT count(*) FROM raw.quarantine WHERE quarantine_id = ANY(%s) AND state = 'replayed'",
        fixed,
    ) == len(fixed)
    # replaying again changes nothing (the rows are closed)
    assert replay_quarantine(conn, fixed, actor="ops").accepted == 0


def test_a_page_the_normaliser_chokes_on_is_still_stored_and_swept_later(world, policy, monkeypatch):
    from oms_ops.channels import normalize

    conn, stack, settings = world(only=["ozon"], rate=0.5, options={"ozon": {"cancel_share": 0.0}})
    client = ozon.OzonClient.from_endpoint(settings.endpoint("ozon"), policy=policy, rate=None)
    stack.advance(3600)
    real, calls = normalize.process_stored, []

    def flaky(*a, **kw):
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("normaliser bug")
        return real(*a, **kw)

    monkeypatch.setattr(normalize, "process_stored", flaky)
    res = ozon.ingest_ozon(conn, client, page_limit=10)
    expected = {p["posting_number"] for p in stack["ozon"].rendered_postings()}
    got = {r[0] for r in conn.execute("SELECT external_id FROM oms.orders WHERE channel_code = 'ozon'")}
    assert got == expected and res.normalized.accepted == len(expected)
    assert count(conn, "SELECT count(*) FROM raw.pending_orders") == 0


def test_marketplace_orders_keep_the_warehouse_the_marketplace_assigned(world, policy):
    conn, stack, settings = world(only=["ozon", "wildberries"], rate=0.5)
    stack.advance(1800)
    mapped = {
        (system, ext): loc
        for system, loc, ext in conn.execute(
            "SELECT system, location_code, external_id FROM connectors.channel_locations"
        ).fetchall()
    }
    ozon.ingest_ozon(conn, ozon.OzonClient.from_endpoint(settings.endpoint("ozon"), policy=policy, rate=None))
    wb_client = wildberries.WildberriesClient.from_endpoint(
        settings.endpoint("wildberries"), policy=policy, rate=None
    )
    wildberries.ingest_wildberries(conn, wb_client)
    got = dict(
        conn.execute(
            """SELECT channel_code || ':' || external_id, fulfilment_location_code FROM oms.orders
               WHERE channel_code IN ('ozon', 'wildberries')"""
        ).fetchall()
    )
    postings = stack["ozon"].rendered_postings()
    wb_orders = stack["wildberries"].rendered_orders()
    assert postings and wb_orders
    for p in postings:
        wh = str(p["delivery_method"]["warehouse_id"])
        assert got[f"ozon:{p['posting_number']}"] == mapped[("ozon", wh)]
    for o in wb_orders:
        assert got[f"wildberries:{o['id']}"] == mapped[("wildberries", str(o["warehouseId"]))]


def test_an_order_from_an_unmapped_marketplace_warehouse_is_quarantined_with_the_reason(world, policy):
    conn, stack, settings = world(only=["ozon"], rate=0.5)
    conn.execute("UPDATE connectors.channel_locations SET active = false WHERE system = 'ozon'")
    stack.advance(900)
    res = ozon.ingest_ozon(
        conn, ozon.OzonClient.from_endpoint(settings.endpoint("ozon"), policy=policy, rate=None)
    )
    assert res.normalized.accepted == 0 and res.normalized.quarantined > 0
    reasons = [
        r[0] for r in conn.execute("SELECT reason FROM raw.quarantine WHERE source = 'ozon'").fetchall()
    ]
    assert reasons and all(
        "is not mapped to a location" in r and "delivery_method.warehouse_id" in r for r in reasons
    )
    assert count(conn, "SELECT count(*) FROM oms.orders WHERE channel_code = 'ozon'") == 0
