"""WMS stock snapshots over HTTP and end-of-day POS files in the drop folder."""

import csv
from datetime import timedelta

import pytest

from simulators import start_simulators
from simulators.clock import parse_rfc3339
from simulators.pos import COLUMNS, LOCAL


@pytest.fixture
def wms(make_stack):
    stack = make_stack(only=["wms", "pos"], rate=5.0)
    return stack, stack.urls["wms"], {"X-Api-Key": stack.credentials["wms"]["api_key"]}


def read_stock(client, url, headers, warehouse, page_size):
    items, token, snapshots = [], None, set()
    while True:
        params = {"warehouse": warehouse, "page_size": page_size}
        if token:
            params["page_token"] = token
        r = client.get(url + "/wms/v1/stock", headers=headers, params=params)
        assert r.status_code == 200, r.text
        data = r.json()
        items += data["items"]
        snapshots.add(data["snapshot_id"])
        token = data["next_page_token"]
        if not token:
            return items, snapshots


def test_api_key_required(wms, client):
    _, url, _ = wms
    r = client.get(url + "/wms/v1/stock", params={"warehouse": "MSK1"})
    assert r.status_code == 401 and r.json()["error"]["code"] == "unauthenticated"


def test_paged_snapshot_is_consistent_and_absolute(wms, client):
    stack, url, headers = wms
    items, snapshots = read_stock(client, url, headers, "MSK1", 7)
    assert len(snapshots) == 1 and len(items) == len(stack.catalog)  # every SKU, zeros included
    assert [i["sku"] for i in items] == sorted(p.sku for p in stack.catalog)
    assert all(isinstance(i["on_hand"], int) and i["on_hand"] >= 0 for i in items)

    first = client.get(
        url + "/wms/v1/stock", headers=headers, params={"warehouse": "MSK1", "page_size": 5}
    ).json()
    sku = first["items"][-1]["sku"]
    before = next(i["on_hand"] for i in items if i["sku"] == sku)
    receipt = {"receipt_id": "RC-1", "warehouse": "MSK1", "lines": [{"sku": sku, "qty": 10}]}
    assert client.post(url + "/wms/v1/receipts", headers=headers, json=receipt).status_code == 201
    # pages of the pinned snapshot don't move; a new snapshot shows the receipt
    page2 = client.get(url + "/wms/v1/stock", headers=headers,
                       params={"warehouse": "MSK1", "page_size": 5, "page_token": first["next_page_token"]}).json()  # fmt: skip
    assert page2["snapshot_id"] == first["snapshot_id"]
    fresh, _ = read_stock(client, url, headers, "MSK1", 500)
    assert next(i["on_hand"] for i in fresh if i["sku"] == sku) == before + 10


def test_receipts_are_idempotent_and_shipments_all_or_nothing(wms, client):
    stack, url, headers = wms
    sku_a, sku_b = stack.catalog[0].sku, stack.catalog[1].sku
    receipt = {"receipt_id": "RC-9", "warehouse": "SPB1", "lines": [{"sku": sku_a, "qty": 5}]}
    assert client.post(url + "/wms/v1/receipts", headers=headers, json=receipt).status_code == 201
    assert client.post(url + "/wms/v1/receipts", headers=headers, json=receipt).status_code == 200
    conflict = client.post(
        url + "/wms/v1/receipts", headers=headers, json={**receipt, "lines": [{"sku": sku_a, "qty": 6}]}
    )
    assert conflict.status_code == 409
    on_hand = stack["wms"].on_hand["SPB1"]
    want = {"shipment_id": "SH-1", "warehouse": "SPB1",
            "lines": [{"sku": sku_a, "qty": 1}, {"sku": sku_b, "qty": on_hand[sku_b] + 1}]}  # fmt: skip
    before = dict(on_hand)
    r = client.post(url + "/wms/v1/shipments", headers=headers, json=want)
    assert r.status_code == 409 and r.json()["error"]["code"] == "insufficient_stock"
    assert r.json()["error"]["details"] == [
        {"sku": sku_b, "on_hand": before[sku_b], "requested": before[sku_b] + 1}
    ]
    assert stack["wms"].on_hand["SPB1"] == before  # nothing half-applied
    bad = client.post(url + "/wms/v1/receipts", headers=headers,
                      json={"receipt_id": "RC-X", "warehouse": "SPB1", "lines": [{"sku": "NOPE", "qty": 1}, {"sku": sku_a, "qty": 0}]})  # fmt: skip
    assert bad.status_code == 400 and len(bad.json()["error"]["details"]) == 2
    moves = client.get(url + "/wms/v1/movements", headers=headers, params={"after_id": 0}).json()
    assert [m["ref"] for m in moves["movements"]] == ["RC-9"] and moves["has_more"] is False


def test_pos_writes_one_file_per_store_per_day_and_lowers_store_stock(wms, client):
    stack, url, headers = wms
    drop = stack["pos"].drop_dir
    store_stock_before = sum(stack["wms"].on_hand["MSK-S01"].values())
    stack.advance(timedelta(hours=19).total_seconds())  # 08:00 Moscow → 03:00 next day: day 1 closed at 23:00
    files = sorted(p.name for p in drop.iterdir())
    assert files == [f"sales_{s}_2025-03-03.csv" for s in ("KZN-S01", "MSK-S01", "MSK-S02", "SPB-S01")]
    with (drop / "sales_MSK-S01_2025-03-03.csv").open(encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert tuple(rows[0].keys()) == COLUMNS
    assert len({r["receipt_id"] for r in rows}) > 100
    assert all(r["store_code"] == "MSK-S01" and r["business_date"] == "2025-03-03" for r in rows)
    assert all(10 <= int(r["sold_at"][11:13]) < 22 and r["sold_at"].endswith("+03:00") for r in rows)
    assert {r["payment_method"] for r in rows} <= {"card", "cash", "sbp"}
    assert sum(stack["wms"].on_hand["MSK-S01"].values()) < store_stock_before
    listed = client.get(stack.urls["pos"] + "/_sim/files").json()["files"]
    assert len(listed) == 4 and all(f["rows"] > 0 for f in listed)


def test_pos_file_faults(make_stack):
    stack = make_stack(only=["pos"], rate=5.0,
                       faults={"pos": [{"kind": "malformed", "count": 1, "path": "file:MSK-S01", "share": 0.1}]})  # fmt: skip
    stack.advance(19 * 3600)
    with (stack["pos"].drop_dir / "sales_MSK-S01_2025-03-03.csv").open(encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    broken = [r for r in rows if not r["qty"].isdigit() or "," in r["price"] or not r["sku"]]
    assert broken and len(broken) == round(len(rows) * 0.1)
    assert not list(stack["pos"].drop_dir.glob(".*.tmp"))


DROPS = {"pos": {"drop_interval_s": 300}}


def _rows(path) -> list[dict]:
    with path.open(encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def test_pos_drops_a_small_file_per_store_every_few_minutes(make_stack, client):
    stack = make_stack(only=["wms", "pos"], rate=5.0, profile="steady", options=DROPS)
    drop = stack["pos"].drop_dir
    store_stock_before = sum(stack["wms"].on_hand["MSK-S01"].values())
    stack.advance(3600)  # 08:00 → 09:00 Moscow: twelve five-minute windows (shops open at any hour: steady)
    names = sorted(p.name for p in drop.glob("sales_MSK-S01_*.csv"))
    assert names == [f"sales_MSK-S01_2025-03-03_{seq:04d}.csv" for seq in range(97, 109)]  # 08:00 = window 97
    receipts_by_file = []
    for seq, name in zip(range(97, 109), names, strict=True):
        rows = _rows(drop / name)
        lo = (seq - 1) * 5  # minutes since midnight
        assert all(lo <= int(r["sold_at"][11:13]) * 60 + int(r["sold_at"][14:16]) < lo + 5 for r in rows)
        assert all(r["business_date"] == "2025-03-03" and r["store_code"] == "MSK-S01" for r in rows)
        receipts_by_file.append({r["receipt_id"] for r in rows})
    numbers = [int(rid.rsplit("-", 1)[1]) for ids in receipts_by_file for rid in sorted(ids)]
    assert numbers == list(range(1, len(numbers) + 1)) and len(numbers) > 12  # numbered on across drops
    assert sum(stack["wms"].on_hand["MSK-S01"].values()) < store_stock_before  # each drop lowers store stock
    stack.advance(299)
    assert len(list(drop.glob("sales_MSK-S01_*.csv"))) == 12  # the 09:00–09:05 window is still open
    stack.advance(1)
    assert (drop / "sales_MSK-S01_2025-03-03_0109.csv").exists()
    listed = client.get(stack.urls["pos"] + "/_sim/files").json()["files"]
    assert len(listed) == 4 * 13 and sum(f["receipts"] for f in listed) > 4 * 12


def test_pos_drop_interval_must_divide_the_day(make_stack):
    for bad in (7, 420, 59, 300.5):
        with pytest.raises(ValueError, match="divide"):
            make_stack(only=["pos"], options={"pos": {"drop_interval_s": bad}})


def test_daily_shops_sell_only_in_trading_hours_steady_ones_around_the_clock(make_stack):
    for profile, night_sales in (("daily", False), ("steady", True)):
        stack = make_stack(
            only=["pos"],
            rate=5.0,
            profile=profile,
            options=DROPS,
            state_dir=None,
            start=parse_rfc3339("2025-03-03T00:00:00Z"),
        )  # 03:00 Moscow
        stack.advance(3 * 3600)  # 03:00 → 06:00: a file every five minutes either way
        files = sorted(stack["pos"].drop_dir.glob("sales_KZN-S01_*.csv"))
        assert len(files) == 36
        assert any(_rows(f) for f in files) is night_sales
        stack.stop()


def test_pos_goes_on_after_a_restart_without_reusing_a_receipt_or_a_file(tmp_path):
    state = tmp_path / "sims"
    kw = dict(manual=True, seed=7, rate=5.0, n_skus=60, only=["pos"], profile="steady", options=DROPS,
              state_dir=state, persist=True)  # fmt: skip
    with start_simulators(**kw) as first:
        first.advance(1000)  # 08:16:40: window 100 (08:15–08:20) holds sales not in a file yet
        pending = {
            (store, sale.created_at.astimezone(LOCAL).isoformat(timespec="seconds"))
            for (store, _day, seq), sales in first["pos"].pending.items()
            for sale in sales
            if seq == 100
        }
        assert pending
    drop = state / "pos_drop"
    written = {p.name: p.read_bytes() for p in drop.glob("*.csv")}
    assert {n[-8:-4] for n in written} == {"0097", "0098", "0099"}
    with start_simulators(**kw) as second:  # the clock goes on from 08:16:40
        second.advance(1800)  # → 08:46:40: windows 100–105 (08:15–08:45) are due
    after = {p.name: p.read_bytes() for p in drop.glob("*.csv")}
    assert all(after[name] == body for name, body in written.items())  # nothing rewritten
    assert {n[-8:-4] for n in set(after) - set(written)} == {f"{seq:04d}" for seq in range(100, 106)}
    rows = [r for name in sorted(after) for r in _rows(drop / name)]
    # the sales of the window in progress at the stop are in its file, after the restart
    in_100 = {
        (r["store_code"], r["sold_at"])
        for name in after
        if name.endswith("_0100.csv")
        for r in _rows(drop / name)
    }
    assert pending <= in_100
    lines = [(r["receipt_id"], r["line_no"]) for r in rows]
    assert len(lines) == len(set(lines))  # no receipt id handed out twice
    for store in ("MSK-S01", "KZN-S01"):  # receipt numbers run on through the restart
        numbers = sorted({int(r["receipt_id"].rsplit("-", 1)[1]) for r in rows if r["store_code"] == store})
        assert numbers == list(range(1, len(numbers) + 1))


def _announce(client, url, headers, rma, warehouse, lines):
    return client.post(
        url + "/wms/v1/returns", headers=headers, json={"rma": rma, "warehouse": warehouse, "lines": lines}
    )


def test_announced_return_arrives_after_transit_and_is_listed_in_the_receipt_feed(wms, client):
    stack, url, headers = wms
    sku_a, sku_b = stack.catalog[2].sku, stack.catalog[3].sku
    lines = [{"sku": sku_a, "qty": 2}, {"sku": sku_b, "qty": 1}]
    assert _announce(client, url, headers, "RMA-1", "MSK1", lines).status_code == 201
    assert _announce(client, url, headers, "RMA-1", "MSK1", lines).status_code == 200  # same content: no-op
    conflict = _announce(client, url, headers, "RMA-1", "MSK1", lines[:1])
    assert conflict.status_code == 409 and conflict.json()["error"]["code"] == "conflict"
    bad = _announce(client, url, headers, "RMA-2", "MSK1", [{"sku": "NOPE", "qty": 1}])
    assert bad.status_code == 400
    before = dict(stack["wms"].on_hand["MSK1"])

    stack.advance(12 * 3600)  # under the shortest transit (one day): nothing yet
    feed = client.get(url + "/wms/v1/returns/receipts", headers=headers).json()
    assert feed == {"receipts": [], "next_cursor": "0", "has_more": False}
    assert client.get(url + "/wms/v1/returns/RMA-1", headers=headers).json()["return"]["status"] == "expected"

    stack.advance(5 * 24 * 3600)  # past the longest transit (five days)
    feed = client.get(url + "/wms/v1/returns/receipts", headers=headers).json()
    (receipt,) = feed["receipts"]
    assert receipt["rma"] == "RMA-1" and receipt["warehouse"] == "MSK1" and feed["has_more"] is False
    assert [(ln["sku"], ln["qty"]) for ln in receipt["lines"]] == [(sku_a, 2), (sku_b, 1)]
    assert {ln["condition"] for ln in receipt["lines"]} <= {"resellable", "damaged"}
    announced = client.get(url + "/wms/v1/returns/RMA-1", headers=headers).json()["return"]
    assert announced["status"] == "received" and announced["receipt_id"] == receipt["receipt_id"]
    # resellable units are back on hand in the WMS; damaged ones are not
    for line in receipt["lines"]:
        back = line["qty"] if line["condition"] == "resellable" else 0
        assert stack["wms"].on_hand["MSK1"][line["sku"]] == before[line["sku"]] + back
    # the cursor moves past what was read: the next page is empty
    again = client.get(url + "/wms/v1/returns/receipts", headers=headers,
                       params={"after": feed["next_cursor"]}).json()  # fmt: skip
    assert again["receipts"] == [] and again["next_cursor"] == feed["next_cursor"]


def test_return_receipt_feed_pages_and_needs_the_api_key(make_stack, client):
    stack = make_stack(only=["wms"], options={"wms": {"transit_scale": 0.01, "damaged_share": 1.0}})
    url, headers = stack.urls["wms"], {"X-Api-Key": stack.credentials["wms"]["api_key"]}
    sku = stack.catalog[0].sku
    before = stack["wms"].on_hand["SPB1"][sku]
    for n in range(5):
        assert (
            _announce(client, url, headers, f"RMA-{n}", "SPB1", [{"sku": sku, "qty": 1}]).status_code == 201
        )
    assert client.get(url + "/wms/v1/returns/receipts").status_code == 401
    stack.advance(2 * 3600)  # five days × 0.01 = 1.2 hours at most
    seen, cursor = [], None
    while True:
        params = {"limit": 2} | ({"after": cursor} if cursor else {})
        page = client.get(url + "/wms/v1/returns/receipts", headers=headers, params=params).json()
        seen += page["receipts"]
        cursor = page["next_cursor"]
        if not page["has_more"]:
            break
    assert sorted(r["rma"] for r in seen) == [f"RMA-{n}" for n in range(5)]
    assert len({r["receipt_id"] for r in seen}) == 5
    assert all(ln["condition"] == "damaged" for r in seen for ln in r["lines"])
    assert stack["wms"].on_hand["SPB1"][sku] == before  # damaged parcels never reach the shelf
    bad = client.get(url + "/wms/v1/returns/receipts", headers=headers, params={"limit": 501})
    assert bad.status_code == 400


def test_return_arrival_and_conditions_are_reproducible(make_stack, client):
    def run() -> list[dict]:
        stack = make_stack(only=["wms"], options={"wms": {"damaged_share": 0.5}})
        url, headers = stack.urls["wms"], {"X-Api-Key": stack.credentials["wms"]["api_key"]}
        for n in range(6):
            lines = [{"sku": stack.catalog[n].sku, "qty": 1}, {"sku": stack.catalog[n + 10].sku, "qty": 3}]
            _announce(client, url, headers, f"RMA-{n}", "EKB1", lines)
        stack.advance(6 * 24 * 3600)
        receipts = client.get(url + "/wms/v1/returns/receipts", headers=headers).json()["receipts"]
        stack.stop()
        return receipts

    first, second = run(), run()
    assert first == second and len(first) == 6
    conditions = [ln["condition"] for r in first for ln in r["lines"]]
    assert "damaged" in conditions and "resellable" in conditions
