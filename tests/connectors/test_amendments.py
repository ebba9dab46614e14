"""Order amendments: a channel's later version of an accepted order goes through the normaliser again and is
compared with what we hold — address changes applied with an event, everything else kept for ops with the
diff; ops accept (applied through oms_ops.changes) or reject; a re-exported POS receipt supersedes."""

from __future__ import annotations

import copy
import csv
from decimal import Decimal
from pathlib import Path

import pytest

from oms_ops.amendments import process_versions
from oms_ops.channels import ozon, pos, webstore, wildberries
from oms_ops.channels.normalize import normalize_pending
from oms_ops.errors import AmendmentNotOpen
from oms_ops.invariants import check_invariants
from oms_ops.orders import NormalizedOrder, record_raw_orders
from oms_ops.services import changes as service
from tests.connectors.conftest import count
from tests.core import factories as f

DAY = 24 * 3600


def _ozon(world, policy):
    conn, stack, settings = world(only=["ozon"], rate=0.5, options={"ozon": {"cancel_share": 0.0}})
    client = ozon.OzonClient.from_endpoint(settings.endpoint("ozon"), policy=policy, rate=None)
    stack.advance(900)
    ozon.ingest_ozon(conn, client)
    return conn, ozon.CHANNEL


def _wb(world, policy):
    conn, stack, settings = world(
        only=["wildberries"],
        rate=0.5,
        options={"wildberries": {"cancel_share": 0.0, "confirm_deadline_hours": None}},
    )
    client = wildberries.WildberriesClient.from_endpoint(
        settings.endpoint("wildberries"), policy=policy, rate=None
    )
    stack.advance(3600)
    wildberries.ingest_wildberries(conn, client)
    return conn, wildberries.CHANNEL


def _shop(world, policy):
    conn, stack, settings = world(only=["shopify"], rate=0.5, options={"shopify": {"cancel_share": 0.0}})
    client = webstore.ShopifyClient.from_endpoint(settings.endpoint("shopify"), policy=policy, rate=None)
    stack.advance(900)
    webstore.ingest_webstore(conn, client)
    return conn, webstore.CHANNEL


def _new_address(channel: str, payload: dict) -> dict:
    p = copy.deepcopy(payload)
    if channel == "ozon":
        p["tpl_integration_type"] = None
        p["customer"] = {
            **(p.get("customer") or {}),
            "address": {"region": "Тульская область", "city": "Тула"},
        }
    elif channel == "wildberries":
        p["address"] = {**(p.get("address") or {}), "fullAddress": "Тульская обл, г Тула, ул Ленина, д 5"}
    else:
        p["shipping_address"] = {**p["shipping_address"], "address1": "ул. Ленина, 5", "city": "Тула"}
    return p


def _more(channel: str, payload: dict) -> dict:
    """The same order with its first line's quantity (WB: its article — one WB order is one unit) changed."""
    p = copy.deepcopy(payload)
    if channel == "ozon":
        p["products"][0]["quantity"] += 1
    elif channel == "wildberries":
        p["article"] = p["article"] + "-XL"
    else:
        li = p["line_items"][0]
        li["quantity"] += 1
        if li.get("current_quantity") is not None:
            li["current_quantity"] += 1
    return p


FEEDS = {"ozon": _ozon, "wildberries": _wb, "webstore": _shop}


def _an_order(conn, channel: str) -> tuple[int, str, dict]:
    row = conn.execute(
        """SELECT o.order_id, o.external_id, r.payload FROM oms.orders o JOIN raw.channel_orders r USING (raw_id)
           WHERE o.channel_code = %s AND o.state = 'new' ORDER BY o.order_id LIMIT 1""",
        (channel,),
    ).fetchone()
    assert row, f"no open {channel} order"
    return row


def _send_again(conn, channel, ext: str, payload: dict):
    assert record_raw_orders(conn, channel.code, [(ext, payload)])
    return normalize_pending(conn, channel)


@pytest.mark.parametrize("code", sorted(FEEDS))
def test_a_new_address_is_applied_with_an_event(world, policy, code):
    conn, channel = FEEDS[code](world, policy)
    oid, ext, payload = _an_order(conn, code)
    before = conn.execute("SELECT city, address FROM oms.orders WHERE order_id = %s", (oid,)).fetchone()
    res = _send_again(conn, channel, ext, _new_address(code, payload))
    assert res.accepted == 0 and res.duplicates == 1
    after = conn.execute("SELECT city, address FROM oms.orders WHERE order_id = %s", (oid,)).fetchone()
    assert after != before and ("Тула" in (after[0] or "") or "Ленина" in (after[1] or ""))
    ev = conn.execute(
        """SELECT actor, reason FROM oms.order_events WHERE order_id = %s AND data->>'change' = 'contact'""",
        (oid,),
    ).fetchall()
    assert len(ev) == 1 and ev[0][0] == f"connector:{code}" and f"amended by {code}" in ev[0][1]
    assert count(conn, "SELECT count(*) FROM oms.order_amendments") == 0
    # the same version again (a re-delivered page) changes nothing more
    again = _send_again(conn, channel, ext, _new_address(code, payload) | {"_redelivered": 1})
    assert again.duplicates == 1
    assert (
        count(conn, "SELECT count(*) FROM oms.order_events WHERE order_id = %s AND data ? 'change'", oid) == 1
    )


@pytest.mark.parametrize("code", sorted(FEEDS))
def test_a_changed_line_waits_as_an_amendment_and_reject_leaves_the_order(world, policy, code):
    conn, channel = FEEDS[code](world, policy)
    oid, ext, payload = _an_order(conn, code)
    lines_before = conn.execute(
        "SELECT * FROM oms.order_lines WHERE order_id = %s ORDER BY line_id", (oid,)
    ).fetchall()
    raw_before = count(conn, "SELECT max(raw_id) FROM raw.channel_orders")
    _send_again(conn, channel, ext, _more(code, payload))
    rows = service.list_amendments(conn)
    assert len(rows) == 1
    am = rows[0]
    assert (am["order_id"], am["channel_code"], am["external_id"], am["state"]) == (oid, code, ext, "open")
    assert am["raw_id"] > raw_before
    field = "sku" if code == "wildberries" else "qty"
    entry = next(d for d in am["diff"] if d["path"] == f"lines[1].{field}")
    assert entry["ours"] != entry["theirs"]
    assert "need ops" in am["reason"]
    assert (
        conn.execute("SELECT * FROM oms.order_lines WHERE order_id = %s ORDER BY line_id", (oid,)).fetchall()
        == lines_before
    )
    service.reject_amendment(
        conn, am["amendment_id"], actor="ops:anna", note="customer confirmed the old one"
    )
    row = conn.execute(
        "SELECT state, resolved_by, note FROM oms.order_amendments WHERE amendment_id = %s",
        (am["amendment_id"],),
    ).fetchone()
    assert row == ("rejected", "ops:anna", "customer confirmed the old one")
    assert (
        conn.execute("SELECT * FROM oms.order_lines WHERE order_id = %s ORDER BY line_id", (oid,)).fetchall()
        == lines_before
    )
    with pytest.raises(AmendmentNotOpen, match="is rejected"):
        service.accept_amendment(conn, am["amendment_id"], actor="ops")


def test_accepting_an_amendment_applies_its_diff_and_a_newer_version_supersedes(world, policy):
    conn, channel = _shop(world, policy)
    oid, ext, payload = _an_order(conn, "webstore")
    dearer = copy.deepcopy(payload)
    price = Decimal(str(payload["line_items"][0]["price"]))
    dearer["line_items"][0]["price"] = str(price + 100)
    _send_again(conn, channel, ext, dearer)
    first = service.list_amendments(conn)[0]
    dearer["line_items"][0]["price"] = str(price + 200)
    _send_again(conn, channel, ext, dearer)
    rows = service.list_amendments(conn, state=None)
    assert [r["state"] for r in rows] == ["open", "superseded"]
    assert (
        rows[1]["amendment_id"] == first["amendment_id"] and str(rows[0]["amendment_id"]) in rows[1]["note"]
    )
    theirs = next(d["theirs"] for d in rows[0]["diff"] if d["path"] == "lines[1].unit_price")
    out = service.accept_amendment(conn, rows[0]["amendment_id"], actor="ops:anna")
    assert out["state"] == "accepted"
    price = conn.execute(
        "SELECT unit_price FROM oms.order_lines WHERE order_id = %s AND line_no = 1", (oid,)
    ).fetchone()[0]
    assert price == Decimal(theirs)
    ev = conn.execute(
        """SELECT actor, reason FROM oms.order_events WHERE order_id = %s AND data->>'change' = 'unit_price'""",
        (oid,),
    ).fetchall()
    assert ev and ev[0][0] == "ops:anna" and f"amendment {rows[0]['amendment_id']} accepted" in ev[0][1]


def test_pos_reexport_with_a_corrected_receipt_supersedes_it(world):
    conn, stack, settings = world(only=["wms", "pos"], rate=2.0)
    stack.advance(DAY)
    drop = Path(settings.endpoint("pos").get("drop_dir"))
    pos.ingest_pos(conn, drop)
    oid, rid = conn.execute(
        "SELECT order_id, external_id FROM oms.orders WHERE channel_code = 'offline' AND state = 'new' LIMIT 1"
    ).fetchone()
    source = next(
        p for p in sorted(drop.glob("sales_*.csv")) if any(r["receipt_id"] == rid for r in pos.read_rows(p))
    )
    header = next(csv.reader(source.open(encoding="utf-8-sig")))
    rows = [r for r in pos.read_rows(source) if r["receipt_id"] == rid]
    # a re-export of the same receipt, unchanged, changes nothing
    same = drop / f"{source.stem}_reexport1.csv"
    _write(same, header, rows)
    pos.ingest_pos(conn, drop)
    assert count(conn, "SELECT count(*) FROM oms.order_amendments") == 0
    # the till corrects the first line's amount: the corrected receipt supersedes the order's
    fixed = [dict(r) for r in rows]
    first = min(fixed, key=lambda r: int(r["line_no"]))
    first["amount"] = str(Decimal(first["amount"]) - Decimal(first["qty"]))  # 1 rouble less per unit
    _write(drop / f"{source.stem}_reexport2.csv", header, fixed)
    before = conn.execute(
        "SELECT unit_price FROM oms.order_lines WHERE order_id = %s AND line_no = %s",
        (oid, int(first["line_no"])),
    ).fetchone()[0]
    pos.ingest_pos(conn, drop)
    after = conn.execute(
        "SELECT unit_price FROM oms.order_lines WHERE order_id = %s AND line_no = %s",
        (oid, int(first["line_no"])),
    ).fetchone()[0]
    assert after == before - 1
    am = conn.execute(
        "SELECT state, created_by, channel_code FROM oms.order_amendments WHERE order_id = %s", (oid,)
    ).fetchall()
    assert am == [("accepted", "connector:offline", "offline")]


def _write(path: Path, header: list[str], rows: list[dict]) -> None:
    with path.open("w", encoding="utf-8", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        for r in rows:
            w.writerow(["" if r.get(h) is None else r[h] for h in header])


def _later(conn, oid, lines, **fields) -> NormalizedOrder:
    """A later version of order ``oid`` (same channel, external id and placing time) with ``lines``."""
    ext, placed = conn.execute(
        "SELECT external_id, placed_at FROM oms.orders WHERE order_id = %s", (oid,)
    ).fetchone()
    base = f.order_dict(lines, external_id=ext, placed_at=placed)
    base.update(fields)
    return NormalizedOrder.model_validate(base)


def test_lines_the_channel_removed_are_cancelled_and_the_address_follows(conn, business_config):
    f.world(conn)
    oid = f.allocated_order(conn, [("SKU-1", 2), ("SKU-2", 1)])
    phone = conn.execute("SELECT customer_phone FROM oms.orders WHERE order_id = %s", (oid,)).fetchone()[0]
    later = _later(conn, oid, [("SKU-1", 2)], address="ул. Ленина, 5", customer_phone=phone)
    ext = later.external_id
    res = process_versions(
        conn, "webstore", {ext: (later, None)}, config=business_config, actor="connector:webstore"
    )
    assert res.applied == [oid] and res.amendments == []
    assert conn.execute(
        "SELECT line_no, state, qty - qty_cancelled FROM oms.order_lines WHERE order_id = %s ORDER BY 1",
        (oid,),
    ).fetchall() == [(1, "allocated", 2), (2, "cancelled", 0)]
    assert f.stock_row(conn, "WH-MSK", "SKU-2") == (10, 0)
    assert (
        conn.execute("SELECT address FROM oms.orders WHERE order_id = %s", (oid,)).fetchone()[0]
        == "ул. Ленина, 5"
    )
    changes = {
        r[0] for r in conn.execute("SELECT data->>'change' FROM oms.order_events WHERE order_id = %s", (oid,))
    }
    assert {"removed", "contact"} <= changes
    assert check_invariants(conn) == []


def test_after_shipment_even_an_address_waits_for_ops(conn, business_config):
    f.world(conn)
    oid, _ = f.shipped_order(conn, [("SKU-1", 1)])
    phone = conn.execute("SELECT customer_phone FROM oms.orders WHERE order_id = %s", (oid,)).fetchone()[0]
    later = _later(conn, oid, [("SKU-1", 1)], address="ул. Ленина, 5", customer_phone=phone)
    res = process_versions(
        conn,
        "webstore",
        {later.external_id: (later, None)},
        config=business_config,
        actor="connector:webstore",
    )
    assert res.applied == [] and len(res.amendments) == 1
    diff, reason, raw_id = conn.execute(
        "SELECT diff, reason, raw_id FROM oms.order_amendments WHERE amendment_id = %s", (res.amendments[0],)
    ).fetchone()
    assert diff == [{"path": "address", "ours": "ул. Тверская, 1", "theirs": "ул. Ленина, 5"}]
    assert "the order is shipped" in reason and raw_id is None


def test_cli_lists_and_accepts_an_amendment(conn, db_url, business_config, monkeypatch):
    import json

    from typer.testing import CliRunner

    from oms_ops import cli

    f.world(conn)
    oid = f.allocated_order(conn, [("SKU-1", 3)])
    phone = conn.execute("SELECT customer_phone FROM oms.orders WHERE order_id = %s", (oid,)).fetchone()[0]
    later = _later(conn, oid, [("SKU-1", 3)], customer_phone=phone)
    later.lines[0].unit_price = Decimal("90.00")
    aid = process_versions(
        conn,
        "webstore",
        {later.external_id: (later, None)},
        config=business_config,
        actor="connector:webstore",
    ).amendments[0]
    monkeypatch.setenv("OMS_DATABASE_URL", db_url)
    listed = CliRunner().invoke(cli.app, ["amendments", "list"])
    assert listed.exit_code == 0, listed.output
    assert f"{aid}" in listed.output and "lines[1].unit_price: 100.00 → 90.00" in listed.output
    ok = CliRunner().invoke(cli.app, ["amendments", "accept", str(aid), "--note", "price match"])
    assert ok.exit_code == 0, ok.output
    assert json.loads(ok.output)["order"]["total_after"] == "270.00"
    again = CliRunner().invoke(cli.app, ["amendments", "reject", str(aid)])
    assert again.exit_code == 1 and f"amendment {aid} is accepted" in again.output
    assert CliRunner().invoke(cli.app, ["amendments", "list"]).output.strip() == "no open amendments"
