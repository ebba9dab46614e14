"""The dashboards in a real browser: sign in, see the pages of the role, screenshots saved."""

import pytest

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
