"""The dashboards in a real browser: sign in, see the pages of the role, screenshots saved."""

import pytest

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
        page.get_by_text("Connector cursors", exact=False).first.wait_for(timeout=30_000)
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
