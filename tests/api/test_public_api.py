"""The public API for other systems, against a real API server and a real database: keys are scoped, revocable
and stored hashed; orders read with and without personal data, paged by change; stock with expired holds
counted as available; orders placed on the key's channel, idempotent by external id, refusals quarantined."""

from __future__ import annotations

import hashlib
import json
from datetime import timedelta

import httpx
import pytest
from typer.testing import CliRunner

from oms_ops.api.public import openapi
from oms_ops.cli import app as cli
from oms_ops.db import run_in_transaction
from oms_ops.errors import ValidationFailed
from oms_ops.services import api_keys
from tests.core import factories as f

B2B = "b2b"


def _key(conn, scopes, **kw) -> str:
    full, _ = run_in_transaction(
        conn, lambda c: api_keys.create_key(c, name="ERP", scopes=scopes, actor="test", **kw)
    )
    return full


def _auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture
def world(conn):
    f.world(conn)
    f.channel(conn, B2B, "callcentre")  # the merchant's own channel for the partner system (business config)
    return conn


def test_keys_are_stored_hashed_scoped_and_refused_once_revoked_or_expired(world, client):
    conn = world
    key = _key(conn, ["orders:read"])
    key_id, secret = key.split("_", 2)[1:]
    stored = conn.execute("SELECT secret_sha256 FROM oms.api_keys WHERE key_id = %s", (key_id,)).fetchone()[0]
    assert stored == hashlib.sha256(secret.encode()).hexdigest() and secret not in stored
    oid = f.order(conn)
    number = conn.execute("SELECT order_number FROM oms.orders WHERE order_id = %s", (oid,)).fetchone()[0]

    assert client.get(f"/v1/orders/{number}").status_code == 401
    assert (
        client.get(f"/v1/orders/{number}", headers=_auth(key[:-2] + "xx")).json()["error"] == "unauthorized"
    )
    assert client.get(f"/v1/orders/{number}", headers=_auth("Bearer nonsense")).status_code == 401
    ok = client.get(f"/v1/orders/{number}", headers={"X-Api-Key": key})
    assert ok.status_code == 200 and ok.json()["order_number"] == number
    assert conn.execute("SELECT last_used_at FROM oms.api_keys WHERE key_id = %s", (key_id,)).fetchone()[0]
    # a scope the key lacks
    denied = client.get("/v1/stock", params={"sku": "SKU-1"}, headers=_auth(key))
    assert denied.status_code == 403 and "stock:read" in denied.json()["detail"]
    # revoked: refused at once
    run_in_transaction(conn, lambda c: api_keys.revoke_key(c, key_id, actor="test"))
    gone = client.get(f"/v1/orders/{number}", headers=_auth(key))
    assert gone.status_code == 401 and "revoked" in gone.json()["detail"]
    # expired
    old = _key(conn, ["orders:read"], expires_in_days=1)
    conn.execute(
        "UPDATE oms.api_keys SET expires_at = now() - %s WHERE key_id = %s",
        (timedelta(seconds=1), old.split("_")[1]),
    )
    assert "expired" in client.get(f"/v1/orders/{number}", headers=_auth(old)).json()["detail"]


def test_creation_refuses_bad_scopes_and_channels_naming_the_field(world):
    conn = world
    for kwargs, field in (
        ({"scopes": ["orders:delete"]}, "scopes"),
        ({"scopes": []}, "scopes"),
        ({"scopes": ["orders:write"]}, "channel"),
        ({"scopes": ["orders:write"], "channel": "nowhere"}, "channel"),
        ({"scopes": ["orders:write"], "channel": "webstore"}, "channel"),  # fed by its connector
        ({"scopes": ["orders:read"], "expires_in_days": 0}, "expires_in_days"),
    ):
        with pytest.raises(ValidationFailed, match=f"^{field}:"):
            api_keys.create_key(conn, name="X", actor="test", **kwargs)
    assert conn.execute("SELECT count(*) FROM oms.api_keys").fetchone()[0] == 0


def test_orders_hide_personal_data_without_customer_read_and_page_by_change(world, client):
    conn = world
    ids = [f.order(conn) for _ in range(5)]
    _, shipment = f.shipped_order(conn)
    plain, personal = _key(conn, ["orders:read"]), _key(conn, ["orders:read", "customer:read"])
    first = client.get(
        "/v1/orders", params={"updated_after": "2000-01-01T00:00:00Z", "limit": 4}, headers=_auth(plain)
    )
    assert first.status_code == 200, first.text
    page = first.json()
    assert len(page["orders"]) == 4 and page["next_cursor"]
    assert all("customer" not in o for o in page["orders"])
    rest = client.get("/v1/orders", params={"cursor": page["next_cursor"]}, headers=_auth(plain)).json()
    seen = [o["order_number"] for o in page["orders"] + rest["orders"]]
    assert len(seen) == len(set(seen)) == len(ids) + 1 and rest["next_cursor"] is None
    shipped = next(o for o in rest["orders"] + page["orders"] if o["shipments"])
    assert shipped["shipments"][0]["carrier"] == "cdek" and shipped["lines"][0]["sku"] == "SKU-1"
    # with customer:read the customer's contact is there
    ext = conn.execute(
        "SELECT channel_code, external_id FROM oms.orders WHERE order_id = %s", (ids[0],)
    ).fetchone()
    found = client.get(
        "/v1/orders", params={"channel": ext[0], "external_id": ext[1]}, headers=_auth(personal)
    )
    assert found.json()["orders"][0]["customer"]["name"] == "Иван Петров"
    # a change moves an order to the end of the feed
    conn.execute(
        "UPDATE oms.orders SET updated_at = now() + interval '1 hour' WHERE order_id = %s", (ids[0],)
    )
    last = client.get(
        "/v1/orders", params={"updated_after": "2000-01-01T00:00:00Z", "limit": 200}, headers=_auth(plain)
    )
    assert last.json()["orders"][-1]["external_id"] == ext[1]
    for params in ({"limit": 0, "updated_after": "2000-01-01"}, {"updated_after": "yesterday"}, {"cursor": "!!"},
                   {"channel": "webstore"}, {}, {"bogus": "1"}):  # fmt: skip
        bad = client.get("/v1/orders", params=params, headers=_auth(plain))
        assert bad.status_code == 400 and bad.json()["error"] == "invalid_arguments", params
    assert shipment


def test_stock_counts_an_expired_hold_as_available(world, client):
    conn = world
    key = _key(conn, ["stock:read"])
    oid = f.order(conn, lines=[("SKU-2", 4)], payment_status="pending")
    f.reserve(conn, oid, "WH-MSK")
    conn.execute(
        "UPDATE oms.reservations SET expires_at = now() - interval '1 minute' WHERE order_id = %s", (oid,)
    )
    other = f.allocated_order(conn, lines=[("SKU-2", 3)], location="WH-MSK")
    res = client.get("/v1/stock", params=[("sku", "SKU-2"), ("sku", "SKU-1")], headers=_auth(key))
    assert res.status_code == 200, res.text
    by_sku = {s["sku"]: s for s in res.json()["stock"]}
    msk = next(loc for loc in by_sku["SKU-2"]["locations"] if loc["location"] == "WH-MSK")
    assert (msk["on_hand"], msk["reserved"], msk["available"]) == (10, 3, 7)  # the expired hold of 4 is free
    assert by_sku["SKU-2"]["available"] == 7 + 10 and by_sku["SKU-1"]["available"] == 20
    assert client.get("/v1/stock", headers=_auth(key)).status_code == 400
    assert other


def test_orders_placed_on_the_keys_channel_idempotent_and_refusals_quarantined(world, client):
    conn = world
    writer = _key(conn, ["orders:write", "orders:read"], channel=B2B)
    order_fields = f.order_dict(lines=[("SKU-1", 1)]).items()
    body = json.loads(json.dumps({k: v for k, v in order_fields if k != "channel_code"}, default=str))
    placed = client.post("/v1/orders", json=body, headers=_auth(writer))
    assert placed.status_code == 201, placed.text
    order = placed.json()
    assert order["channel"] == B2B and order["state"] == "new" and order["lines"][0]["qty"] == 1
    assert order["payment_links"] == []  # paid already (the factory's order): nothing to pay
    again = client.post("/v1/orders", json=body, headers=_auth(writer))
    assert again.status_code == 200 and again.json()["order_number"] == order["order_number"]
    assert conn.execute("SELECT count(*) FROM oms.orders WHERE channel_code = %s", (B2B,)).fetchone()[0] == 1
    # a bad order: refused naming the field, kept in the quarantine with the reason
    bad = {**body, "external_id": "BAD-1", "lines": [{"sku": "SKU-1", "qty": -3, "unit_price": "10"}]}
    refused = client.post("/v1/orders", json=bad, headers=_auth(writer))
    assert refused.status_code == 422 and "qty" in refused.json()["detail"]
    q = conn.execute(
        "SELECT source, reason FROM raw.quarantine WHERE quarantine_id = %s",
        (refused.json()["quarantine_ids"][0],),
    ).fetchone()
    assert q[0] == f"api:{B2B}" and "qty" in q[1]
    # the channel is the key's
    assert (
        client.post("/v1/orders", json={**body, "channel_code": "ozon"}, headers=_auth(writer)).status_code
        == 400
    )
    reader = _key(conn, ["orders:read"])
    assert client.post("/v1/orders", json=body, headers=_auth(reader)).status_code == 403
    assert client.post("/v1/orders", content=b"[1,", headers=_auth(writer)).status_code == 400


def test_a_key_is_rate_limited(db_url, users_path, signing_key, conn):
    from oms_ops.api.server import ApiServer

    f.world(conn)
    key = _key(conn, ["stock:read"])
    with ApiServer(db_url, signing_key=signing_key, users_path=users_path) as server:
        with httpx.Client(base_url=server.url, timeout=30) as c:
            codes = [
                c.get("/v1/stock", params={"sku": "SKU-1"}, headers=_auth(key)).status_code for _ in range(60)
            ]
    limited = [code for code in codes if code == 429]
    assert codes[0] == 200 and limited  # bursts of 40, then 20 a second
    assert set(codes) <= {200, 429}


def test_openapi_describes_every_public_endpoint(client):
    spec = client.get("/v1/openapi.json").json()
    assert spec == openapi()
    assert set(spec["paths"]) == {"/v1/orders/{order_number}", "/v1/orders", "/v1/stock"}
    assert "channel_code" not in spec["components"]["schemas"]["PlacedOrder"]["properties"]


def test_the_cli_creates_lists_and_revokes_keys(world, db_url, monkeypatch):
    monkeypatch.setenv("OMS_DATABASE_URL", db_url)
    runner = CliRunner()
    made = runner.invoke(cli, ["api-keys", "create", "--name", "Partner portal", "--scope", "orders:write",
                               "--scope", "stock:read", "--channel", B2B])  # fmt: skip
    assert made.exit_code == 0, made.output
    full = made.output.strip().splitlines()[-1]
    key_id = full.split("_")[1]
    assert full.startswith("oms_") and api_keys.authenticate(world, full).channel_code == B2B
    listed = runner.invoke(cli, ["api-keys", "list"])
    assert key_id in listed.output and full.split("_", 2)[2] not in listed.output
    bad = runner.invoke(cli, ["api-keys", "create", "--name", "X", "--scope", "orders:write"])
    assert bad.exit_code == 1 and "channel" in bad.output
    assert runner.invoke(cli, ["api-keys", "revoke", key_id]).exit_code == 0
    assert runner.invoke(cli, ["api-keys", "revoke", "ffffffffffff"]).exit_code == 1
    with pytest.raises(api_keys.KeyRefused, match="revoked"):
        api_keys.authenticate(world, full)


def test_an_unpaid_order_placed_by_a_partner_gets_a_payment_link(world, client):
    from oms_ops.services import payments as payments_service

    conn = world
    writer = _key(conn, ["orders:write", "orders:read"], channel=B2B)
    fields = f.order_dict(lines=[("SKU-1", 1)], payment_status="pending", customer_email="buyer@example.ru")
    body = json.loads(json.dumps({k: v for k, v in fields.items() if k != "channel_code"}, default=str))
    placed = client.post("/v1/orders", json=body, headers=_auth(writer)).json()
    assert placed["payment_status"] == "pending" and placed["payment_links"] == []
    # the worker's payments step (Dagster: payment_requests) asks for a link; the outbox then calls YooKassa
    run_in_transaction(conn, lambda c: payments_service.pp.enqueue_due_links(c, actor="test"))
    again = client.get(f"/v1/orders/{placed['order_number']}", headers=_auth(writer)).json()
    (link,) = again["payment_links"]
    assert link["purpose"] == "order" and link["amount"] == placed["total_amount"]
    assert link["status"] == "requested" and link["payment_url"] is None  # the URL arrives with the provider
