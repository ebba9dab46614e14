"""Every polled channel, in every fault mode, over real HTTP: no order lost, none duplicated, cursors right
after a crash between fetching a page and storing it."""

from __future__ import annotations

import pytest

from oms_ops.channels import ozon, webstore, wildberries
from oms_ops.connectors.state import get_cursor
from tests.connectors.conftest import count

PAGE = 7

CHANNELS = {
    "ozon": dict(
        sim="ozon",
        channel="ozon",
        list_path="/v4/posting/fbs/list",
        cursor=ozon.CURSOR,
        client=lambda s, p: ozon.OzonClient.from_endpoint(s.endpoint("ozon"), policy=p, rate=None),
        ingest=lambda c, cl, **kw: ozon.ingest_ozon(c, cl, page_limit=PAGE, refresh_window=None, **kw),
        expected=lambda st: [p["posting_number"] for p in st["ozon"].rendered_postings()],
        options={"ozon": {"cancel_share": 0.0}},
    ),
    "wildberries": dict(
        sim="wildberries",
        channel="wildberries",
        list_path="/api/v3/orders",
        cursor=wildberries.CURSOR,
        client=lambda s, p: wildberries.WildberriesClient.from_endpoint(
            s.endpoint("wildberries"), policy=p, rate=None
        ),
        ingest=lambda c, cl, **kw: wildberries.ingest_wildberries(
            c, cl, page_limit=PAGE, use_new=False, **kw
        ),
        expected=lambda st: [str(o["id"]) for o in st["wildberries"].rendered_orders()],
        options={"wildberries": {"cancel_share": 0.0, "confirm_deadline_hours": None}},
    ),
    "webstore": dict(
        sim="shopify",
        channel="webstore",
        list_path="/admin/api/2024-10/orders.json",
        cursor=webstore.CURSOR,
        client=lambda s, p: webstore.ShopifyClient.from_endpoint(s.endpoint("shopify"), policy=p, rate=None),
        ingest=lambda c, cl, **kw: webstore.ingest_webstore(c, cl, page_limit=PAGE, **kw),
        expected=lambda st: [str(o["id"]) for o in st["shopify"].rendered_orders()],
        options={"shopify": {"cancel_share": 0.0}},
    ),
}
FAULTS = {
    "rate_limit": {"kind": "rate_limit", "count": 3, "retry_after": 0},
    "server_error": {"kind": "server_error", "count": 3, "status": 500},
    "timeout": {"kind": "timeout", "count": 1, "delay": 1.0},
    "malformed": {"kind": "malformed", "count": 3, "share": 0.3},
    "duplicate": {"kind": "duplicate", "count": 6, "share": 0.3},
    "out_of_order": {"kind": "out_of_order", "count": 6},
}


def _setup(world, name, **kw):
    spec = CHANNELS[name]
    conn, stack, settings = world(only=[spec["sim"]], rate=0.5, options=spec["options"], **kw)
    stack.advance(2 * 3600)
    return spec, conn, stack, settings


def _ids(conn, channel):
    orders = [
        r[0] for r in conn.execute("SELECT external_id FROM oms.orders WHERE channel_code = %s", (channel,))
    ]
    quarantined = conn.execute(
        "SELECT external_id FROM raw.quarantine WHERE source = %s", (channel,)
    ).fetchall()
    return orders, [r[0] for r in quarantined]


@pytest.mark.parametrize("fault", list(FAULTS))
@pytest.mark.parametrize("name", list(CHANNELS))
def test_no_order_lost_or_duplicated_under_faults(world, policy, name, fault):
    spec, conn, stack, settings = _setup(world, name)
    expected = spec["expected"](stack)
    assert len(expected) > 2 * PAGE  # several pages
    rule = {**FAULTS[fault], "path": spec["list_path"]}
    stack[spec["sim"]].faults.set([rule])
    policy.read_timeout = 0.3
    res = spec["ingest"](conn, spec["client"](settings, policy))
    assert res.pages > 2
    orders, quarantined = _ids(conn, spec["channel"])
    assert len(orders) == len(set(orders)), "an order was duplicated"
    if fault == "malformed":
        assert quarantined, "malformed records must be quarantined with a reason"
        # every record is an order or kept in quarantine (one without an id cannot be matched by id)
        assert set(orders) | {q for q in quarantined if q} <= set(expected)
        assert len(set(orders)) + len(quarantined) >= len(expected)
        reasons = [
            r[0]
            for r in conn.execute("SELECT reason FROM raw.quarantine WHERE source = %s", (spec["channel"],))
        ]
        assert all(reasons)
    else:
        assert sorted(orders) == sorted(expected)
        assert quarantined == []
    # a second run finds nothing new and changes nothing
    before = count(conn, "SELECT count(*) FROM oms.orders")
    again = spec["ingest"](conn, spec["client"](settings, policy))
    assert count(conn, "SELECT count(*) FROM oms.orders") == before
    assert again.normalized.accepted == 0


class Crash(RuntimeError):
    pass


@pytest.mark.parametrize("where", ["after_fetch", "before_commit"])
@pytest.mark.parametrize("name", list(CHANNELS))
def test_crash_between_fetch_and_store_refetches_and_never_skips(world, policy, name, where):
    spec, conn, stack, settings = _setup(world, name)
    expected = spec["expected"](stack)
    client = spec["client"](settings, policy)
    cursors = []

    def after_fetch(page, records):
        if page == 3:
            raise Crash("killed after fetching page 3")

    def before_commit():
        cursors.append(True)
        if len(cursors) == 3:
            raise Crash("killed before committing page 3")

    hook = {"on_fetched": after_fetch} if where == "after_fetch" else {"before_commit": before_commit}
    with pytest.raises(Crash):
        spec["ingest"](conn, client, normalize=False, **hook)
    stored = count(
        conn,
        "SELECT count(DISTINCT external_id) FROM raw.channel_orders WHERE channel_code = %s",
        spec["channel"],
    )
    assert 0 < stored <= 2 * PAGE + 1  # two pages stored (webstore: plus the boundary), not the third
    cursor = get_cursor(conn, spec["cursor"])
    assert cursor is not None  # the cursor covers exactly what was stored
    spec["ingest"](conn, spec["client"](settings, policy))
    orders, quarantined = _ids(conn, spec["channel"])
    assert sorted(orders) == sorted(expected)
    assert quarantined == []
