"""The dashboards in a real browser: sign in, see the pages of the role, download a carrier label, read the
sync panel, release a hold through the OMS API; screenshots saved. The app reads as the read-only dashboard
login and acts through the OMS API; every row it shows was
written by the code that writes it in production (the CDEK connector against the CDEK simulator, the feed
bookkeeping of the connectors)."""

import pytest

from oms_ops.connectors.cdek import CdekClient, book_shipment, sync_bookings
from oms_ops.connectors.config import settings_from_manifest
from oms_ops.connectors.state import record_failure, record_success, set_cursor
from simulators import start_simulators
from tests.core import factories as f

pytestmark = pytest.mark.browser


def sign_in(page, url, username, password):
    page.goto(url, wait_until="networkidle")
    page.get_by_role("textbox", name="Username").fill(username)
    page.get_by_role("textbox", name="Password").fill(password)
    page.get_by_role("button", name="Sign in").click()
    page.get_by_text(f"Signed in as {username}").wait_for(timeout=30_000)


def test_sign_in_and_see_health(browser, streamlit_app, artifacts_dir):
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    try:
        page.goto(streamlit_app, wait_until="networkidle")
        page.get_by_role("button", name="Sign in").wait_for(timeout=30_000)
        page.screenshot(path=str(artifacts_dir / "01-login.png"))
        sign_in(page, streamlit_app, "ops", "ops-password")
        open_page(page, "Service health")
        page.get_by_text("Postgres is up").wait_for(timeout=30_000)
        page.get_by_text("ClickHouse is up").wait_for(timeout=30_000)
        page.screenshot(path=str(artifacts_dir / "02-health.png"), full_page=True)
    finally:
        page.close()


def test_wrong_password_stays_on_login(browser, streamlit_app, artifacts_dir):
    page = browser.new_page()
    try:
        page.goto(streamlit_app, wait_until="networkidle")
        page.get_by_role("textbox", name="Username").fill("ops")
        page.get_by_role("textbox", name="Password").fill("not-the-password")
        page.get_by_role("button", name="Sign in").click()
        page.get_by_text("Unknown user or wrong password.").wait_for(timeout=30_000)
        page.screenshot(path=str(artifacts_dir / "wrong-password.png"))
    finally:
        page.close()


def open_page(page, title):
    page.get_by_role("link", name=title).first.click()
    page.get_by_role("heading", name=title).first.wait_for(timeout=30_000)


def test_ops_look_up_an_order(browser, streamlit_app, conn, artifacts_dir):
    f.world(conn)
    oid = f.order(conn, [("SKU-1", 2)], customer_name="Иван Петров", customer_phone="+7 915 123-45-12")
    number = conn.execute("SELECT order_number FROM oms.orders WHERE order_id = %s", (oid,)).fetchone()[0]
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    try:
        sign_in(page, streamlit_app, "ops", "ops-password")
        page.get_by_role("heading", name="Operations").first.wait_for(timeout=30_000)
        page.get_by_text("Backlog by state and age").wait_for(timeout=30_000)
        page.get_by_role("heading", name="Feeds: last success, last error, cursor").wait_for(timeout=30_000)
        page.locator(".vega-embed canvas, .vega-embed svg").first.wait_for(timeout=30_000)
        page.screenshot(path=str(artifacts_dir / "01-operations.png"), full_page=True)
        open_page(page, "Order lookup")
        search = page.get_by_role("textbox", name="Search")
        search.fill(number)
        search.press("Enter")
        page.get_by_text(f"{number} — new").wait_for(timeout=30_000)
        page.get_by_text("Иван Петров").first.wait_for(timeout=30_000)
        page.get_by_text("No return.").wait_for(timeout=30_000)
        page.screenshot(path=str(artifacts_dir / "02-lookup.png"), full_page=True)
    finally:
        page.close()


def test_manager_sees_masked_customer_and_kpis(browser, streamlit_app, conn, artifacts_dir):
    f.world(conn)
    oid = f.order(conn, [("SKU-1", 1)], customer_name="Иван Петров", customer_phone="+7 915 123-45-12")
    number = conn.execute("SELECT order_number FROM oms.orders WHERE order_id = %s", (oid,)).fetchone()[0]
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    try:
        sign_in(page, streamlit_app, "manager", "manager-password")
        page.get_by_role("heading", name="KPIs").first.wait_for(timeout=30_000)
        page.get_by_text("No KPI data yet").wait_for(timeout=30_000)  # the test ClickHouse has no marts
        page.screenshot(path=str(artifacts_dir / "01-kpis.png"), full_page=True)
        open_page(page, "Order lookup")
        search = page.get_by_role("textbox", name="Search")
        search.fill(number)
        search.press("Enter")
        page.get_by_text("И*** П***").first.wait_for(timeout=30_000)
        page.get_by_text("No return.").wait_for(timeout=30_000)
        assert page.get_by_text("Иван Петров").count() == 0
        assert page.get_by_text("+7 *** ***-**-12").count() == 1
        page.screenshot(path=str(artifacts_dir / "02-lookup-masked.png"), full_page=True)
    finally:
        page.close()


def carrier_label(conn, tmp_path) -> tuple[int, str, bytes]:
    """A shipment booked with the CDEK simulator through the CDEK connector, which downloads and stores its
    label and waybill: ``(order_id, shipment_number, label bytes as stored)``."""
    f.world(conn)
    oid, sid = f.shipped_order(conn, [("SKU-1", 1)], carrier="cdek")
    payload = conn.execute(
        """SELECT payload FROM oms.outbox WHERE effect = 'carrier.create_shipment'
           AND (payload->>'shipment_id')::bigint = %s""",
        (sid,),
    ).fetchone()[0]
    stack = start_simulators(only=["cdek"], manual=True, seed=11, n_skus=10, state_dir=tmp_path / "sim")
    try:
        client = CdekClient.from_endpoint(
            settings_from_manifest(stack.manifest()).endpoint("cdek"), rate=None
        )
        book_shipment(conn, client, payload, fallback_phone="+79150000000")
        for _ in range(2):  # registered, print forms requested; then the forms are ready and downloaded
            stack.advance(10)
            sync_bookings(conn, client)
        client.close()
    finally:
        stack.stop()
    number, label = conn.execute(
        """SELECT s.shipment_number, d.content FROM connectors.shipment_documents d
           JOIN oms.shipments s USING (shipment_id) WHERE d.shipment_id = %s AND d.kind = 'label'""",
        (sid,),
    ).fetchone()
    return oid, number, bytes(label)


def test_ops_download_a_carrier_label(browser, streamlit_app, conn, artifacts_dir, tmp_path):
    oid, shipment_number, label = carrier_label(conn, tmp_path)
    assert label.startswith(b"%PDF")
    number = conn.execute("SELECT order_number FROM oms.orders WHERE order_id = %s", (oid,)).fetchone()[0]
    page = browser.new_page(viewport={"width": 1400, "height": 1000}, accept_downloads=True)
    try:
        sign_in(page, streamlit_app, "ops", "ops-password")
        open_page(page, "Order lookup")
        search = page.get_by_role("textbox", name="Search")
        search.fill(number)
        search.press("Enter")
        page.get_by_text(f"{number} — shipped").wait_for(timeout=30_000)
        button = page.get_by_role("button", name=f"Label · {shipment_number}")
        button.wait_for(timeout=30_000)
        page.get_by_role("button", name=f"Waybill · {shipment_number}").wait_for(timeout=30_000)
        page.screenshot(path=str(artifacts_dir / "01-lookup-documents.png"), full_page=True)
        with page.expect_download(timeout=30_000) as download:
            button.click()
        assert download.value.suggested_filename == f"label-{shipment_number}.pdf"
        path = download.value.path()
        assert open(path, "rb").read() == label
    finally:
        page.close()


def test_ops_see_feed_health_and_cursors(browser, streamlit_app, conn, artifacts_dir):
    f.world(conn)
    record_success(conn, "ozon", 12)
    set_cursor(conn, "ozon:postings", {"since": "2025-11-26T06:00:00+00:00"})
    record_failure(conn, "wildberries", "Wildberries API: 503 Service Unavailable")
    page = browser.new_page(viewport={"width": 1400, "height": 1400})
    try:
        sign_in(page, streamlit_app, "ops", "ops-password")
        page.get_by_role("heading", name="Operations").first.wait_for(timeout=30_000)
        panel = page.get_by_role("heading", name="Feeds: last success, last error, cursor")
        panel.wait_for(timeout=30_000)
        page.get_by_text("Failing since their last success: wildberries").wait_for(timeout=30_000)
        panel.scroll_into_view_if_needed()
        grid = page.locator(".stDataFrame").last
        grid.wait_for(timeout=30_000)
        grid.scroll_into_view_if_needed()
        page.screenshot(path=str(artifacts_dir / "01-sync-panel.png"), full_page=True)
        # the grid draws on a canvas; its cells are mirrored in an accessible table (what a screen reader reads)
        for cell in (
            "ozon:postings",
            '{"since": "2025-11-26T06:00:00+00:00"}',
            "Wildberries API: 503 Service Unavailable",
        ):
            grid.get_by_role("gridcell", name=cell, exact=True, include_hidden=True).wait_for(
                state="attached", timeout=30_000
            )
    finally:
        page.close()


def test_ops_release_a_hold_through_the_api(browser, streamlit_app, conn, artifacts_dir):
    """The whole path of an action: the signed-in user's token, the OMS API, the owner's login; the
    dashboards' own login could not have written it (migration 0016)."""
    from oms_ops.orders import hold_orders

    f.world(conn)
    oid = f.order(conn, [("SKU-1", 1)])
    hold_orders(conn, [oid], reason="fraud check", actor="test")
    number = conn.execute("SELECT order_number FROM oms.orders WHERE order_id = %s", (oid,)).fetchone()[0]
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    try:
        sign_in(page, streamlit_app, "ops", "ops-password")
        page.get_by_role("heading", name="Exceptions").wait_for(timeout=30_000)
        typed = page.get_by_role("textbox", name="…or any order number")
        typed.fill(number)
        typed.press("Enter")
        page.get_by_role("textbox", name="Reason (recorded in the order's events)").fill("checked by phone")
        page.get_by_role("button", name="Release hold").click()
        page.get_by_text(f"{number}: hold released").wait_for(timeout=30_000)
        page.screenshot(path=str(artifacts_dir / "released.png"), full_page=True)
    finally:
        page.close()
    assert f.order_state(conn, oid) == "new"
    assert ("dashboard:ops", "checked by phone") in conn.execute(
        "SELECT actor, reason FROM oms.order_events WHERE order_id = %s", (oid,)
    ).fetchall()
