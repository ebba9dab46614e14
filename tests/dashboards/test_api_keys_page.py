"""API keys page (admins): create a key through the OMS API (shown once, stored hashed), see it listed with
the dashboards' read-only login (which is granted no hash), revoke it; other roles cannot open the page."""

from __future__ import annotations

import pytest

from oms_ops.services import api_keys
from tests.core import factories as f
from tests.dashboards.conftest import ADMIN, MANAGER, OPS, frame, page, texts


@pytest.mark.parametrize("user", [OPS, MANAGER])
def test_only_admins_open_the_page(dash_url, user):
    at = page("api_keys", user).run()
    assert not at.exception
    assert f"The {user.role} role cannot open this page." in texts(at)


def test_an_admin_creates_lists_and_revokes_a_key(dash_url, conn):
    f.world(conn)
    at = page("api_keys", ADMIN).run()
    assert not at.exception and "No API keys yet." in texts(at)
    at.text_input(key="ak_name").input("ERP")
    at.multiselect(key="ak_scopes").set_value(["orders:read", "stock:read"])
    at.button[0].click().run()
    assert not at.exception, texts(at)
    shown = at.code[0].value
    assert shown.startswith("oms_") and api_keys.authenticate(conn, shown).name == "ERP"
    table = frame(at, "key id", "system", "scopes")
    assert table.iloc[0]["system"] == "ERP" and table.iloc[0]["scopes"] == "orders:read, stock:read"
    key_id = shown.split("_")[1]
    actor = conn.execute("SELECT created_by FROM oms.api_keys WHERE key_id = %s", (key_id,)).fetchone()[0]
    assert actor == "dashboard:root"
    at.selectbox(key="ak_revoke_id").select(key_id)
    next(b for b in at.button if b.label == "Revoke").click().run()
    assert not at.exception
    with pytest.raises(api_keys.KeyRefused, match="revoked"):
        api_keys.authenticate(conn, shown)


def test_a_refused_key_says_why(dash_url, conn):
    f.world(conn)
    at = page("api_keys", ADMIN).run()
    at.text_input(key="ak_name").input("Shop")
    at.multiselect(key="ak_scopes").set_value(["orders:write"])
    at.button[0].click().run()
    assert not at.exception
    assert any("channel" in e.value for e in at.error), texts(at)
    assert conn.execute("SELECT count(*) FROM oms.api_keys").fetchone()[0] == 0
