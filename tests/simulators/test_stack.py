"""The stack and the runner: every simulator up on loopback, same seed → same data, clean shutdown."""

import json
import os
import signal
import subprocess
import sys
import time

import httpx

from simulators import start_simulators
from simulators.stack import SIMULATOR_NAMES
from tests.paths import ROOT


def test_same_seed_gives_the_same_orders_across_stacks(make_stack, client):
    def snapshot(seed: int) -> list:
        stack = make_stack(only=["ozon", "wildberries", "shopify"], seed=seed)
        stack.advance(1800)
        urls, creds = stack.urls, stack.credentials
        ozon = client.post(
            urls["ozon"] + "/v4/posting/fbs/list",
            headers={"Client-Id": creds["ozon"]["client_id"], "Api-Key": creds["ozon"]["api_key"]},
            json={"filter": {"since": "2025-03-01T00:00:00Z", "to": "2025-03-04T00:00:00Z"}, "limit": 1000},
        ).json()
        wb = client.get(
            urls["wildberries"] + "/api/v3/orders/new",
            headers={"Authorization": creds["wildberries"]["token"]},
        )
        shop = client.get(
            urls["shopify"] + "/admin/api/2024-10/orders.json?status=any&limit=250",
            headers={"X-Shopify-Access-Token": creds["shopify"]["access_token"]},
        )
        stack.stop()
        return [ozon["postings"], wb.json()["orders"], shop.json()["orders"]]

    first, second, other = snapshot(21), snapshot(21), snapshot(22)
    assert all(first) and first == second
    assert first != other


def test_python_api_starts_every_simulator(tmp_path):
    with start_simulators(manual=True, state_dir=tmp_path, n_skus=30, rate=1) as stack:
        assert set(stack.urls) == set(SIMULATOR_NAMES)
        for name, url in stack.urls.items():
            assert url.startswith("http://127.0.0.1:")
            assert httpx.get(url + "/_sim/health").json()["simulator"] == name
        manifest = stack.manifest()
        assert manifest["simulators"]["ozon"]["credentials"] == stack.credentials["ozon"]
        catalog = manifest["catalog"]
        assert {k: catalog[k] for k in ("seed", "n_skus", "version")} == {
            "seed": 42,
            "n_skus": 30,
            "version": 1,
        }
        # the catalog export a seller's OMS is seeded from: every product with every system's ids
        assert [p["sku"] for p in catalog["products"]] == [p.sku for p in stack.catalog]
        assert {"offer_id", "wb_chrt_id", "shopify_inventory_item_id", "price"} <= set(catalog["products"][0])
        urls = dict(stack.urls)
    for url in urls.values():  # stopped means stopped
        try:
            httpx.get(url + "/_sim/health", timeout=1)
            raise AssertionError(f"{url} still answers")
        except httpx.TransportError:
            pass


def test_runner_writes_manifest_and_stops_on_sigterm(tmp_path):
    state = tmp_path / "sims"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "simulators",
            "--seed",
            "3",
            "--rate",
            "2",
            "--speed",
            "60",
            "--base-port",
            "0",
            "--state-dir",
            str(state),
            "--webhook-url",
            "http://127.0.0.1:9/hooks",
            "--n-skus",
            "40",
            "--log-level",
            "WARNING",
        ],  # fmt: skip
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    manifest_path = state / "simulators.json"
    try:
        deadline = time.monotonic() + 30
        while not manifest_path.exists():
            assert proc.poll() is None, proc.stderr.read().decode()
            assert time.monotonic() < deadline, "runner did not write simulators.json"
            time.sleep(0.05)
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        assert set(manifest["simulators"]) == set(SIMULATOR_NAMES)
        assert manifest["clock"]["speed"] == 60 and manifest["seed"] == 3
        wb = manifest["simulators"]["wildberries"]
        r = httpx.get(
            wb["base_url"] + "/api/v3/orders/new", headers={"Authorization": wb["credentials"]["token"]}
        )
        assert r.status_code == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(timeout=20)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert code == 0, proc.stderr.read().decode()
    assert not manifest_path.exists()
