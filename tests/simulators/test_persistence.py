"""State across restarts: a persistent stack (``persist=True``, what ``python -m simulators`` runs) keeps what
the real systems keep — CDEK bookings, WMS stock and returns, marketplace orders and id counters — and never
hands out an id twice, also after a process that died between two saves."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest

from tests.paths import ROOT
from tests.simulators.test_cdek import order_body


def _token(client, stack) -> dict:
    url, creds = stack.urls["cdek"], stack.credentials["cdek"]
    r = client.post(url + "/v2/oauth/token", data={"grant_type": "client_credentials", **creds})
    return {"Authorization": "Bearer " + r.json()["access_token"]}


def _book(client, stack, number: str) -> str:
    r = client.post(stack.urls["cdek"] + "/v2/orders", headers=_token(client, stack), json=order_body(number))
    assert r.status_code == 202, r.text
    return r.json()["entity"]["uuid"]


def _order(client, stack, uuid: str):
    return client.get(f"{stack.urls['cdek']}/v2/orders/{uuid}", headers=_token(client, stack))


def test_a_cdek_booking_made_before_a_restart_is_found_after_it(make_stack, client):
    first = make_stack(only=["cdek"], persist=True)
    uuid = _book(client, first, "SHP-0001")
    first.advance(3600)  # registered, first statuses on the way
    before = _order(client, first, uuid).json()["entity"]
    form = client.post(
        first.urls["cdek"] + "/v2/print/barcodes",
        headers=_token(client, first),
        json={"orders": [{"order_uuid": uuid}], "format": "A6"},
    ).json()["entity"]["uuid"]
    first.advance(10)
    pdf_before = client.get(
        f"{first.urls['cdek']}/v2/print/barcodes/{form}.pdf", headers=_token(client, first)
    ).content
    saved_now = first.clock.now()
    first.stop()

    second = make_stack(only=["cdek"], persist=True)
    assert second.clock.now() >= saved_now  # the world goes on where it stopped
    after = _order(client, second, uuid)
    assert after.status_code == 200
    entity = after.json()["entity"]
    assert entity["number"] == "SHP-0001" and entity["cdek_number"] == before["cdek_number"]
    assert entity["statuses"] == before["statuses"]
    by_number = client.get(
        second.urls["cdek"] + "/v2/orders", params={"im_number": "SHP-0001"}, headers=_token(client, second)
    )
    assert by_number.json()["entity"]["uuid"] == uuid
    # CDEK still dedupes by number: the same shipment cannot be booked twice across the restart
    again = client.post(
        second.urls["cdek"] + "/v2/orders", headers=_token(client, second), json=order_body("SHP-0001")
    )
    assert again.status_code == 400
    assert again.json()["requests"][0]["errors"][0]["code"] == "v2_im_number_already_used"
    # the print form is still there and downloads the same document
    pdf_after = client.get(
        f"{second.urls['cdek']}/v2/print/barcodes/{form}.pdf", headers=_token(client, second)
    ).content
    assert pdf_after == pdf_before and pdf_after.startswith(b"%PDF")
    # the parcel's journey continues after the restart
    second.advance(20 * 24 * 3600)
    final = _order(client, second, uuid).json()["entity"]["statuses"][0]["code"]
    assert final in ("DELIVERED", "NOT_DELIVERED")


def test_a_new_booking_after_a_restart_gets_a_fresh_uuid_and_number(make_stack, client):
    first = make_stack(only=["cdek"], persist=True)
    old = [_book(client, first, f"SHP-{i:04d}") for i in range(3)]
    first.advance(60)
    old_numbers = {_order(client, first, u).json()["entity"]["cdek_number"] for u in old}
    first.stop()

    second = make_stack(only=["cdek"], persist=True)
    new = _book(client, second, "SHP-0100")
    second.advance(60)
    assert new not in old
    assert _order(client, second, new).json()["entity"]["cdek_number"] not in old_numbers
    # and every old booking still answers with its own number
    assert [_order(client, second, u).json()["entity"]["number"] for u in old] == [
        "SHP-0000",
        "SHP-0001",
        "SHP-0002",
    ]


def test_after_a_crash_no_uuid_or_number_seen_before_comes_out_again(make_stack, client):
    """The process dies between two saves: what it booked after the last save is lost (the client must
    reconcile), but neither its UUID nor its CDEK number is ever handed out again."""
    first = make_stack(only=["cdek"], persist=True)
    kept = _book(client, first, "SHP-0001")
    first.advance(60)
    first.save_state()  # the periodic save
    lost = _book(client, first, "SHP-0002")
    first.advance(60)
    lost_number = _order(client, first, lost).json()["entity"]["cdek_number"]
    first.store = None  # the process dies: no save at stop
    first.stop()

    second = make_stack(only=["cdek"], persist=True)
    assert _order(client, second, kept).status_code == 200
    gone = _order(client, second, lost)
    assert gone.status_code == 404
    assert gone.json()["requests"][0]["errors"][0]["code"] == "v2_entity_not_found"
    rebooked = _book(client, second, "SHP-0002")  # the number is free again: the client books it anew
    second.advance(60)
    assert rebooked not in (kept, lost)
    assert _order(client, second, rebooked).json()["entity"]["cdek_number"] != lost_number


def test_wms_stock_and_returns_survive_a_restart(make_stack, client):
    first = make_stack(only=["wms"], persist=True, options={"wms": {"transit_scale": 0.01}})
    url, headers = first.urls["wms"], {"X-Api-Key": first.credentials["wms"]["api_key"]}
    sku = first.catalog[0].sku
    before = first["wms"].on_hand["MSK1"][sku]
    assert (
        client.post(
            url + "/wms/v1/receipts",
            headers=headers,
            json={"receipt_id": "R-1", "warehouse": "MSK1", "lines": [{"sku": sku, "qty": 5}]},
        ).status_code
        == 201
    )
    rma = {"rma": "RMA-1", "warehouse": "MSK1", "lines": [{"sku": sku, "qty": 1}], "order_ref": "ORD-1"}
    assert client.post(url + "/wms/v1/returns", headers=headers, json=rma).status_code == 201
    movements = client.get(url + "/wms/v1/movements", headers=headers).json()["movements"]
    first.stop()

    second = make_stack(only=["wms"], persist=True, options={"wms": {"transit_scale": 0.01}})
    url = second.urls["wms"]
    stock = client.get(url + "/wms/v1/stock", headers=headers, params={"warehouse": "MSK1"}).json()
    assert {i["sku"]: i["on_hand"] for i in stock["items"]}[sku] == before + 5
    assert client.get(url + "/wms/v1/movements", headers=headers).json()["movements"] == movements
    # idempotency keys are remembered: the same receipt again changes nothing, other content conflicts
    same = client.post(
        url + "/wms/v1/receipts",
        headers=headers,
        json={"receipt_id": "R-1", "warehouse": "MSK1", "lines": [{"sku": sku, "qty": 5}]},
    )
    assert same.status_code == 200
    assert client.post(url + "/wms/v1/returns", headers=headers, json=rma).status_code == 200
    assert client.get(url + "/wms/v1/returns/RMA-1", headers=headers).json()["return"]["status"] == "expected"
    second.advance(3 * 3600)  # the announced parcel arrives after the restart
    feed = client.get(url + "/wms/v1/returns/receipts", headers=headers).json()
    assert [r["rma"] for r in feed["receipts"]] == ["RMA-1"]
    assert client.get(url + "/wms/v1/returns/RMA-1", headers=headers).json()["return"]["status"] == "received"


def _ozon_numbers(client, stack) -> list[str]:
    creds = stack.credentials["ozon"]
    body = {"filter": {"since": "2025-01-01T00:00:00Z", "to": "2025-12-31T00:00:00Z"}, "limit": 1000}
    r = client.post(
        stack.urls["ozon"] + "/v4/posting/fbs/list",
        headers={"Client-Id": creds["client_id"], "Api-Key": creds["api_key"]},
        json=body,
    )
    return [p["posting_number"] for p in r.json()["postings"]]


def _wb_ids(client, stack, after: int = 0) -> list[int]:
    r = client.get(
        stack.urls["wildberries"] + "/api/v3/orders",
        headers={"Authorization": stack.credentials["wildberries"]["token"]},
        params={"limit": 1000, "next": after},
    )
    return [o["id"] for o in r.json()["orders"]]


def _shop_ids(client, stack) -> list[int]:
    r = client.get(
        stack.urls["shopify"] + "/admin/api/2024-10/orders.json",
        headers={"X-Shopify-Access-Token": stack.credentials["shopify"]["access_token"]},
        params={"status": "any", "limit": 250, "since_id": 0},
    )
    return [o["id"] for o in r.json()["orders"]]


MARKETPLACES = dict(
    only=["ozon", "wildberries", "shopify"],
    persist=True,
    rate=1.0,
    options={"wildberries": {"rate_limit": False}, "shopify": {"rate_limit": False}},
)


@pytest.mark.parametrize("clean", [True, False], ids=["clean stop", "crash"])
def test_marketplace_orders_are_kept_and_their_ids_never_reused(make_stack, client, clean):
    first = make_stack(**MARKETPLACES)
    first.advance(3600)
    if not clean:
        first.save_state()
    ozon, wb, shop = _ozon_numbers(client, first), _wb_ids(client, first), _shop_ids(client, first)
    assert ozon and wb and shop
    if not clean:
        first.advance(600)  # orders made after the last save, then the process dies
        lost = (set(_ozon_numbers(client, first)), set(_wb_ids(client, first)), set(_shop_ids(client, first)))
        first.store = None
    first.stop()

    second = make_stack(**MARKETPLACES)
    assert _ozon_numbers(client, second)[: len(ozon)] == ozon
    assert _wb_ids(client, second)[: len(wb)] == wb
    assert _shop_ids(client, second)[: len(shop)] == shop
    second.advance(3600)
    ozon2, wb2, shop2 = _ozon_numbers(client, second), _wb_ids(client, second), _shop_ids(client, second)
    new_ozon, new_wb, new_shop = ozon2[len(ozon) :], wb2[len(wb) :], shop2[len(shop) :]
    assert new_ozon and new_wb and new_shop  # the stream goes on …
    if clean:
        lost = (set(ozon), set(wb), set(shop))
    else:
        lost = (lost[0] | set(ozon), lost[1] | set(wb), lost[2] | set(shop))
    assert not set(new_ozon) & lost[0]  # … with ids never handed out before
    assert not set(new_wb) & lost[1]
    assert not set(new_shop) & lost[2]
    assert len(set(ozon2)) == len(ozon2) and len(set(wb2)) == len(wb2) and len(set(shop2)) == len(shop2)
    # a WB cursor of the first run goes on from where it was
    assert _wb_ids(client, second, after=wb[-1]) == new_wb


def test_state_of_another_world_is_set_aside(make_stack, tmp_path, client):
    first = make_stack(only=["cdek"], persist=True, seed=7)
    uuid = _book(client, first, "SHP-0001")
    first.stop()
    other = make_stack(only=["cdek"], persist=True, seed=8)
    assert _order(client, other, uuid).status_code == 404
    state_dir = tmp_path / "state" / "state"
    assert [p.name for p in state_dir.glob("cdek.json.*.old")]
    assert json.loads((state_dir / "cdek.json").read_text())["world"]["seed"] == 8


def test_fresh_discards_the_saved_state(make_stack, client):
    first = make_stack(only=["cdek"], persist=True)
    uuid = _book(client, first, "SHP-0001")
    first.stop()
    second = make_stack(only=["cdek"], persist=True, fresh=True)
    assert _order(client, second, uuid).status_code == 404


def test_without_persist_nothing_is_kept(make_stack, client, tmp_path):
    first = make_stack(only=["cdek"])
    uuid = _book(client, first, "SHP-0001")
    first.stop()
    assert not (tmp_path / "state" / "state").exists()
    second = make_stack(only=["cdek"])
    assert _order(client, second, uuid).status_code == 404


def _run_runner(state_dir):
    """``python -m simulators`` (CDEK only) until it prints its URLs; returns (process, cdek URL, credentials)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "simulators", "--seed", "3", "--speed", "1", "--only", "cdek", "--n-skus", "20",
         "--state-dir", str(state_dir), "--log-level", "WARNING"],
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    line = proc.stdout.readline()
    assert line, proc.stderr.read().decode()
    manifest = json.loads((state_dir / "simulators.json").read_text(encoding="utf-8"))
    cdek = manifest["simulators"]["cdek"]
    return proc, cdek["base_url"], cdek["credentials"]


def _stop(proc) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        assert proc.wait(timeout=20) == 0, proc.stderr.read().decode()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_the_runner_keeps_its_world_across_a_restart(tmp_path, client):
    state_dir = tmp_path / "sims"
    proc, url, creds = _run_runner(state_dir)
    try:
        token = client.post(url + "/v2/oauth/token", data={"grant_type": "client_credentials", **creds})
        headers = {"Authorization": "Bearer " + token.json()["access_token"]}
        uuid = client.post(url + "/v2/orders", headers=headers, json=order_body("SHP-RUN-1")).json()[
            "entity"
        ]["uuid"]
    finally:
        _stop(proc)
    saved = json.loads((state_dir / "state" / "cdek.json").read_text(encoding="utf-8"))
    assert saved["clean"] and [o["uuid"] for o in saved["state"]["orders"]] == [uuid]

    proc, url, creds = _run_runner(state_dir)
    try:
        token = client.post(url + "/v2/oauth/token", data={"grant_type": "client_credentials", **creds})
        headers = {"Authorization": "Bearer " + token.json()["access_token"]}
        again = client.get(f"{url}/v2/orders/{uuid}", headers=headers)
        assert again.status_code == 200 and again.json()["entity"]["number"] == "SHP-RUN-1"
    finally:
        _stop(proc)
    assert json.loads((state_dir / "state" / "cdek.json").read_text(encoding="utf-8"))["generation"] == 1
