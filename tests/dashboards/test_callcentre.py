"""Call-centre order entry: the form creates a real order through accept_orders (channel 'callcentre'), the
order is then found by the lookup page; incomplete forms create nothing; managers cannot open the page."""

from tests.core import factories as f
from tests.dashboards.conftest import MANAGER, OPS, frame, page, texts


def _world(conn):
    f.world(conn)
    f.channel(conn, "callcentre", "callcentre")
    f.location(conn, "PP-MSK-1", "pickup_point")


def _submit(at):
    next(b for b in at.button if b.label == "Create order").click().run()
    assert not at.exception
    return at


def fill(at, **values):
    for key, value in values.items():
        widget = next(w for w in at.main if getattr(w, "key", None) == f"cc_{key}")
        widget.set_value(value)
    return at


def test_form_creates_an_order_that_lookup_finds(dash_url, conn):
    _world(conn)
    at = page("callcentre", OPS).run()
    assert not at.exception
    ext = at.session_state["cc_external_id"]
    fill(
        at,
        name="Анна Смирнова",
        phone="+7 916 555-44-33",
        address="ул. Арбат, 10",
        sku_0="SKU-1",
        qty_0=2,
        sku_1="SKU-3",
    )
    _submit(at)
    assert any("created" in s.value for s in at.success), texts(at)
    row = conn.execute(
        """SELECT o.order_number, o.state, o.channel_code, o.customer_name, o.total_amount, count(l.*)
           FROM oms.orders o JOIN oms.order_lines l USING (order_id)
           WHERE o.external_id = %s GROUP BY o.order_id""",
        (ext,),
    ).fetchone()
    number, state, channel, name, total, lines = row
    assert (state, channel, name, lines) == ("new", "callcentre", "Анна Смирнова", 2)
    assert total == 300  # catalog prices: 2 × 100 + 1 × 100
    assert (
        conn.execute(
            "SELECT actor FROM oms.order_events WHERE order_id = (SELECT order_id FROM oms.orders WHERE external_id = %s)",
            (ext,),
        ).fetchone()[0]
        == "dashboard:olga"
    )
    # a new form gets a new id: the next order is not a duplicate of this one
    assert at.session_state["cc_external_id"] != ext

    lookup = page("lookup", OPS).run()
    lookup.selectbox(key="lookup_mode").select("Phone").run()
    lookup.text_input(key="lookup_text").input("89165554433").run()
    assert f"{number} — new" in texts(lookup)
    assert frame(lookup, "sku", "qty")["sku"].tolist() == ["SKU-1", "SKU-3"]


def test_pickup_order_needs_a_pickup_location(dash_url, conn):
    _world(conn)
    at = page("callcentre", OPS).run()
    fill(at, name="Анна", phone="+7 916 555-44-33", delivery="pickup_point", sku_0="SKU-2")
    _submit(at)
    assert any("a pickup location" in e.value for e in at.error)
    assert conn.execute("SELECT count(*) FROM oms.orders").fetchone()[0] == 0
    fill(at, pickup="PP-MSK-1")
    _submit(at)
    method, pickup = conn.execute("SELECT delivery_method, pickup_location_code FROM oms.orders").fetchone()
    assert (method, pickup) == ("pickup_point", "PP-MSK-1")


def test_incomplete_form_creates_nothing(dash_url, conn):
    _world(conn)
    at = page("callcentre", OPS).run()
    _submit(at)
    (error,) = at.error
    assert "the customer's name" in error.value and "at least one item" in error.value
    assert conn.execute("SELECT count(*) FROM oms.orders").fetchone()[0] == 0


def test_inactive_channel_rejects_into_the_quarantine(dash_url, conn):
    f.world(conn)
    f.channel(conn, "callcentre", "callcentre", active=False)
    at = page("callcentre", OPS).run()
    fill(at, name="Анна", phone="+7 916 555-44-33", address="ул. Арбат, 10", sku_0="SKU-1")
    _submit(at)
    assert any("quarantine" in e.value for e in at.error)
    assert conn.execute("SELECT source FROM raw.quarantine").fetchone()[0] == "callcentre"


def test_managers_cannot_enter_orders(dash_url):
    at = page("callcentre", MANAGER).run()
    assert "The manager role cannot open this page." in texts(at)
    assert not at.text_input
