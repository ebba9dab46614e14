"""The less travelled endpoints and their error bodies, and fault determinism across two identical stacks."""

import pytest

API = "/admin/api/2024-10"


def test_wildberries_supply_and_cancel_errors(make_stack, client):
    stack = make_stack(only=["wildberries"], options={"wildberries": {"rate_limit": False}})
    url, headers = stack.urls["wildberries"], {"Authorization": stack.credentials["wildberries"]["token"]}
    stack.advance(600)
    order_id = stack["wildberries"].orders[0].id
    r = client.patch(f"{url}/api/v3/supplies/WB-GI-1/orders/{order_id}", headers=headers)
    assert r.status_code == 404 and set(r.json()) == {"code", "message", "data"}
    assert client.patch(f"{url}/api/v3/orders/1/cancel", headers=headers).status_code == 404
    assert client.patch(f"{url}/api/v3/orders/{order_id}/cancel", headers=headers).status_code == 204
    again = client.patch(f"{url}/api/v3/orders/{order_id}/cancel", headers=headers)
    assert again.status_code == 409 and again.json()["code"] == "StatusMismatch"
    assert client.post(url + "/api/v3/supplies", headers=headers, json={}).status_code == 400
    assert (
        client.post(url + "/api/v3/orders/status", headers=headers, json={"orders": ["x"]}).status_code == 400
    )
    assert client.get(url + "/api/v3/nothing", headers=headers).json() == {
        "code": "NotFound",
        "message": "Не найдено",
        "data": None,
    }


def test_shopify_inventory_levels_read(make_stack, client):
    stack = make_stack(only=["shopify"])
    url, headers = (
        stack.urls["shopify"],
        {"X-Shopify-Access-Token": stack.credentials["shopify"]["access_token"]},
    )
    item = stack.catalog[0].shopify_inventory_item_id
    client.post(f"{url}{API}/inventory_levels/set.json", headers=headers,
                json={"location_id": 71000002001, "inventory_item_id": item, "available": 3})  # fmt: skip
    levels = client.get(
        f"{url}{API}/inventory_levels.json", headers=headers, params={"inventory_item_ids": item}
    ).json()
    assert [(lv["location_id"], lv["available"]) for lv in levels["inventory_levels"]] == [(71000002001, 3)]
    assert client.get(f"{url}{API}/inventory_levels.json", headers=headers).status_code == 422
    assert client.get(f"{url}/admin/api/1999/orders.json", headers=headers).json() == {"errors": "Not Found"}


def test_cdek_lookup_errors(make_stack, client):
    stack = make_stack(only=["cdek"])
    url, creds = stack.urls["cdek"], stack.credentials["cdek"]
    token = client.post(url + "/v2/oauth/token", data={"grant_type": "client_credentials", **creds}).json()
    headers = {"Authorization": "Bearer " + token["access_token"]}
    r = client.get(url + "/v2/orders", headers=headers)
    assert r.status_code == 400 and r.json()["requests"][0]["errors"][0]["code"] == "v2_parameters_empty"
    r = client.get(url + "/v2/orders", headers=headers, params={"im_number": "missing"})
    assert (
        r.status_code == 404
        and r.json()["requests"][0]["errors"][0]["code"] == "v2_entity_not_found_im_number"
    )
    assert client.delete(url + "/v2/orders/nope", headers=headers).status_code == 404
    assert client.post(url + "/v2/print/orders", headers=headers, json={"orders": []}).status_code == 400
    wrong_grant = client.post(url + "/v2/oauth/token", data={"grant_type": "password", **creds})
    assert wrong_grant.status_code == 400 and wrong_grant.json()["error"] == "unsupported_grant_type"


def test_wms_paging_and_listing_errors(make_stack, client):
    stack = make_stack(only=["wms"])
    url, headers = stack.urls["wms"], {"X-Api-Key": stack.credentials["wms"]["api_key"]}
    codes = [w["code"] for w in client.get(url + "/wms/v1/warehouses", headers=headers).json()["warehouses"]]
    assert codes == ["MSK1", "SPB1", "EKB1", "MSK-S01", "MSK-S02", "SPB-S01", "KZN-S01"]
    for params, status in (({}, 400), ({"warehouse": "XXX"}, 404), ({"warehouse": "MSK1", "page_size": 0}, 400),
                           ({"warehouse": "MSK1", "page_token": "!!"}, 400)):  # fmt: skip
        r = client.get(url + "/wms/v1/stock", headers=headers, params=params)
        assert r.status_code == status and set(r.json()["error"]) >= {"code", "message"}
    first = client.get(
        url + "/wms/v1/stock", headers=headers, params={"warehouse": "MSK1", "page_size": 2}
    ).json()
    for _ in range(40):  # push the first snapshot out of the kept window
        client.get(url + "/wms/v1/stock", headers=headers, params={"warehouse": "SPB1", "page_size": 1})
    r = client.get(url + "/wms/v1/stock", headers=headers,
                   params={"warehouse": "MSK1", "page_size": 2, "page_token": first["next_page_token"]})  # fmt: skip
    assert r.status_code == 410 and r.json()["error"]["code"] == "page_token_expired"
    sku = stack.catalog[0].sku
    client.post(url + "/wms/v1/receipts", headers=headers,
                json={"receipt_id": "R-1", "warehouse": "EKB1", "lines": [{"sku": sku, "qty": 2}]})  # fmt: skip
    listed = client.get(
        url + "/wms/v1/receipts", headers=headers, params={"since": "2025-01-01T00:00:00Z"}
    ).json()
    assert [r["receipt_id"] for r in listed["receipts"]] == ["R-1"]


@pytest.mark.parametrize("seed", [3])
def test_probabilistic_faults_repeat_across_identical_stacks(make_stack, client, seed):
    def pattern() -> list[int]:
        stack = make_stack(only=["wildberries"], seed=seed, options={"wildberries": {"rate_limit": False}},
                           faults={"wildberries": [{"kind": "server_error", "probability": 0.3, "status": 502}]})  # fmt: skip
        url, headers = stack.urls["wildberries"], {"Authorization": stack.credentials["wildberries"]["token"]}
        codes = [client.get(url + "/api/v3/orders/new", headers=headers).status_code for _ in range(30)]
        stack.stop()
        return codes

    first = pattern()
    assert first == pattern()
    assert set(first) == {200, 502}
