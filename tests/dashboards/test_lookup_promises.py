"""Order lookup shows the promise date of each waiting line and the supply it waits for (read with the
dashboards' read-only login), and says nothing about promises for an order that waits for nothing."""

from oms_ops import supply
from oms_ops.allocation import allocate_batch
from tests.core.test_alloc_support import NOW, place, receive, sample_config, seed_reference
from tests.dashboards.conftest import OPS, frame, page, texts


def _search(number: str):
    at = page("lookup", OPS).run()
    at.text_input(key="lookup_text").input(number).run()
    assert not at.exception
    return at


def _number(conn, order_id):
    return conn.execute("SELECT order_number FROM oms.orders WHERE order_id = %s", (order_id,)).fetchone()[0]


def test_a_backordered_line_shows_its_promise_date_and_supply(dash_url, conn):
    cfg = sample_config()
    seed_reference(conn, cfg, {"KETTLE": 1500, "MUG": 400})
    receive(conn, "WH-MSK-POD", {"MUG": 5})
    waiting = place(conn, [("KETTLE", 2), ("MUG", 1)])
    served = place(conn, [("MUG", 1)])
    allocate_batch(conn, config=cfg, now=NOW)
    supply.upsert_supplies(
        conn,
        [{"external_id": "PO-77", "location_code": "WH-MSK-POD", "expected_date": "2025-12-03",
          "lines": [{"sku": "KETTLE", "qty": 10}]}],
        source="manual",
    )  # fmt: skip
    supply.recompute_promises(conn, cfg, now=NOW)

    at = _search(_number(conn, waiting))
    promised = frame(at, "promised", "waits for")
    assert promised.to_dict("records")[0] | {"why": None} == {
        "line": 1, "sku": "KETTLE", "qty": 2, "promised": "2025-12-03", "waits for": "PO-77",
        "at": "WH-MSK-POD", "pre-order": False, "why": None,
    }  # fmt: skip
    assert "Promise dates of the waiting lines" in texts(at)
    events = frame(at, "change", "actor")
    assert any(str(r).startswith("promise: 2025-12-03") for r in events["reason"].tolist())

    at = _search(_number(conn, served))
    assert "Promise dates" not in texts(at)
