"""Sessions and the checks before any action runs: the token (signature, expiry, the account as it is now),
the role, the action's name."""

from __future__ import annotations

from oms_ops.api.app import issue_token
from oms_ops.users import MAX_FAILURES, add_user, load_users, save_users
from tests.api.conftest import bearer, sign_in


def test_health(client):
    res = client.get("/v1/health")
    assert res.status_code == 200
    assert res.json()["status"] == "ok"


def test_a_session_gives_a_signed_token_with_user_role_and_expiry(client):
    res = client.post("/v1/session", json={"username": " OLGA ", "password": "ops-password"})
    assert res.status_code == 200, res.text
    body = res.json()
    assert (body["username"], body["role"]) == ("olga", "ops")
    assert body["expires_at"] and body["token"].startswith("v1.")
    assert "ops-password" not in res.text


def test_wrong_password_or_unknown_user_is_401_with_the_same_message(client):
    wrong = client.post("/v1/session", json={"username": "olga", "password": "nope-nope"})
    unknown = client.post("/v1/session", json={"username": "nobody", "password": "nope-nope"})
    assert wrong.status_code == unknown.status_code == 401
    assert (
        wrong.json()
        == unknown.json()
        == {"error": "unauthorized", "detail": "unknown user or wrong password"}
    )


def test_repeated_failures_lock_the_name_like_the_dashboards_sign_in(client):
    for _ in range(MAX_FAILURES):
        assert (
            client.post("/v1/session", json={"username": "olga", "password": "guess-guess"}).status_code
            == 401
        )
    # now even the right password is refused without being checked
    res = client.post("/v1/session", json={"username": "olga", "password": "ops-password"})
    assert res.status_code == 429
    assert res.json()["error"] == "locked" and res.json()["retry_after_s"] > 0


def test_session_body_is_validated_naming_the_field(client):
    res = client.post("/v1/session", json={"username": "olga"})
    assert res.status_code == 400
    assert res.json()["error"] == "invalid_arguments" and "password" in res.json()["detail"]
    res = client.post("/v1/session", content=b"{not json", headers={"Content-Type": "application/json"})
    assert res.status_code == 400 and "not valid JSON" in res.json()["detail"]


def test_actions_need_a_valid_token(client, signing_key, users_path):
    res = client.post("/v1/actions/quarantine.discard", json={"quarantine_ids": [1]})
    assert res.status_code == 401 and res.json()["error"] == "unauthorized"
    token = sign_in(client, "olga")
    tampered = token[:-3] + ("AAA" if not token.endswith("AAA") else "BBB")
    assert (
        client.post(
            "/v1/actions/quarantine.discard", json={"quarantine_ids": [1]}, headers=bearer(tampered)
        ).status_code
        == 401
    )
    other_key = issue_token(load_users(users_path)["olga"], signing_key + "x")[0]
    assert (
        client.post(
            "/v1/actions/quarantine.discard", json={"quarantine_ids": [1]}, headers=bearer(other_key)
        ).status_code
        == 401
    )
    expired = issue_token(load_users(users_path)["olga"], signing_key, ttl_s=-1)[0]
    res = client.post("/v1/actions/quarantine.discard", json={"quarantine_ids": [1]}, headers=bearer(expired))
    assert res.status_code == 401 and "expired" in res.json()["detail"]
    ok = client.post("/v1/actions/quarantine.discard", json={"quarantine_ids": [1]}, headers=bearer(token))
    assert ok.status_code == 200, ok.text
    assert ok.json() == {"action": "quarantine.discard", "result": {"discarded": 0}}


def test_a_changed_password_or_removed_user_ends_the_session(client, users_path):
    token = sign_in(client, "olga")
    add_user("olga", "ops", "a-new-password", path=users_path)
    res = client.post("/v1/actions/quarantine.discard", json={"quarantine_ids": [1]}, headers=bearer(token))
    assert res.status_code == 401 and "changed or removed" in res.json()["detail"]
    token = sign_in(client, "ada")
    users = load_users(users_path)
    del users["ada"]
    save_users(users, users_path)
    assert (
        client.post(
            "/v1/actions/quarantine.discard", json={"quarantine_ids": [1]}, headers=bearer(token)
        ).status_code
        == 401
    )


def test_the_role_is_checked_and_a_changed_role_applies_at_once(client, users_path):
    manager = sign_in(client, "maria")
    res = client.post(
        "/v1/actions/orders.cancel", json={"order_ids": [1], "reason": "x"}, headers=bearer(manager)
    )
    assert res.status_code == 403
    assert res.json() == {"error": "forbidden", "detail": "the manager role may not run orders.cancel"}
    ops = sign_in(client, "olga")
    users = load_users(users_path)
    users["olga"] = users["olga"].__class__("olga", "manager", users["olga"].password_hash, "")
    save_users(users, users_path)
    res = client.post("/v1/actions/quarantine.discard", json={"quarantine_ids": [1]}, headers=bearer(ops))
    assert res.status_code == 403


def test_unknown_action_is_404(client):
    token = sign_in(client, "ada")
    res = client.post("/v1/actions/orders.delete_everything", json={}, headers=bearer(token))
    assert res.status_code == 404
    assert res.json()["error"] == "unknown_action" and "orders.delete_everything" in res.json()["detail"]


def test_health_figures_need_a_session_and_come_from_the_oms_login(client):
    assert client.get("/v1/health/figures").status_code == 401
    res = client.get("/v1/health/figures", headers=bearer(sign_in(client, "maria")))
    assert res.status_code == 200, res.text
    figures = {f["key"]: f for f in res.json()["figures"]}
    assert figures and all(f["verdict"] in ("ok", "warn", "bad") for f in figures.values())
    assert all(f["label"] and f["summary"] for f in figures.values())
