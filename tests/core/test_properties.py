"""Property: random sequences of operations never break the invariants, and a refused operation changes
nothing.

The operations are the real ones — receipts, WMS snapshots, write-offs, acceptance (incl. unknown SKUs),
the allocator (allocate_batch / allocate_backorders with the sample business config), holds, cancellation,
pick (with random short picks), pack, ship, delivery, return to sender, RMAs. After every step
``check_invariants`` must be empty. One database per test function; each example starts from TRUNCATE.
"""

from __future__ import annotations

import functools
from datetime import UTC, datetime

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from oms_ops import fulfillment as ff
from oms_ops import inventory, orders, returns, stock_counts
from oms_ops.errors import OmsError
from oms_ops.invariants import check_invariants
from tests.core import factories as f

NOW = datetime(2025, 11, 26, 6, 0, tzinfo=UTC)  # 09:00 Moscow, before every cut-off
LOCS = ("WH-MSK-POD", "WH-SPB-SHU")
SKUS = ("P-1", "P-2", "P-3")

lines_st = st.lists(
    st.tuples(st.sampled_from([0, 0, 1, 1, 2, 2, 3]), st.integers(1, 3)), min_size=1, max_size=3
)
advance = st.tuples(
    st.just("advance"),
    st.integers(0, 20),
    st.sampled_from([0, 1, 3, 3, 3]),
    st.sampled_from(["backorder", "cancel"]),
    st.integers(1, 3),
)
STEPS = {
    "receive": st.tuples(st.just("receive"), st.integers(0, 1), st.integers(0, 2), st.integers(1, 6)),
    "snapshot": st.tuples(
        st.just("snapshot"), st.integers(0, 1), st.lists(st.integers(0, 6), min_size=3, max_size=3)
    ),
    "write_off": st.tuples(st.just("write_off"), st.integers(0, 1), st.integers(0, 2), st.integers(1, 3)),
    "accept": st.tuples(st.just("accept"), lines_st),
    "allocate": st.tuples(st.just("allocate")),
    "backorders": st.tuples(st.just("backorders")),
    "hold": st.tuples(st.just("hold"), st.integers(0, 20)),
    "release": st.tuples(st.just("release"), st.integers(0, 20)),
    "cancel": st.tuples(st.just("cancel"), st.integers(0, 20)),
    "advance": advance,
    "deliver": st.tuples(st.just("deliver"), st.integers(0, 20)),
    "rts": st.tuples(st.just("rts"), st.integers(0, 20), st.booleans()),
    "rma": st.tuples(st.just("rma"), st.integers(0, 20), st.booleans()),
}
#: how often each step is drawn (fulfillment steps need several in a row to get anywhere)
WEIGHTS = {
    "receive": 2,
    "snapshot": 2,
    "write_off": 1,
    "accept": 2,
    "allocate": 2,
    "backorders": 2,
    "hold": 1,
    "release": 1,
    "cancel": 1,
    "advance": 8,
    "deliver": 2,
    "rts": 1,
    "rma": 2,
}
op = st.sampled_from([k for k, w in WEIGHTS.items() for _ in range(w)]).flatmap(STEPS.__getitem__)
#: initial world: stock per (location, sku) and a few orders, allocated once
initial = st.tuples(
    st.lists(st.integers(0, 8), min_size=6, max_size=6), st.lists(lines_st, min_size=1, max_size=4)
)


@functools.cache
def config():
    from oms_ops.business_config import load_business_config

    return load_business_config()


def _seed(conn, config) -> None:
    from oms_ops.business_config import sync_reference_data

    f.reset(conn)
    sync_reference_data(conn, config)
    for s in SKUS:
        f.product(conn, s, weight_g=300)


def _fingerprint(conn):
    return conn.execute(
        """SELECT (SELECT count(*) FROM oms.inventory_ledger), (SELECT count(*) FROM oms.order_events),
                  (SELECT coalesce(sum(on_hand * 7 + reserved), 0) FROM oms.stock),
                  (SELECT count(*) FROM oms.outbox), (SELECT count(*) FROM oms.reservations)"""
    ).fetchone()


def _pick(seq, i):
    return seq[i % len(seq)] if seq else None


def _advance(conn, oid, a) -> None:
    todo = conn.execute(
        """SELECT r.location_code, r.line_id, sum(r.qty)::int FROM oms.reservations r
           WHERE r.order_id = %s AND r.state = 'active' AND NOT EXISTS (
               SELECT 1 FROM oms.pick_lines pl JOIN oms.picks p USING (pick_id)
               WHERE pl.reservation_id = r.reservation_id AND p.state IN ('picked', 'packed'))
           GROUP BY 1, 2 ORDER BY 1, 2""",
        (oid,),
    ).fetchall()
    picks = conn.execute(
        "SELECT location_code, state FROM oms.picks WHERE order_id = %s AND state IN "
        "('picked', 'packed') ORDER BY pick_id",
        (oid,),
    ).fetchall()
    if todo:
        loc = todo[0][0]
        picked = {lid: (max(0, q - a[1]) if a[1] < 3 else q) for l2, lid, q in todo if l2 == loc}
        ff.record_pick(conn, oid, loc, picked, actor="p", short_policy=a[2])
    elif picks and picks[0][1] == "picked":
        ff.pack(conn, oid, picks[0][0], actor="p")
    elif picks:
        ff.create_shipment(conn, oid, picks[0][0], carrier_code="cdek", actor="p")
    else:
        ff.record_pick(conn, oid, LOCS[0], actor="p")  # nothing reserved: refused


def _run(conn, config, step) -> None:
    from oms_ops.allocation import allocate_backorders, allocate_batch

    kind, *a = step
    order_ids = [r[0] for r in conn.execute("SELECT order_id FROM oms.orders ORDER BY order_id").fetchall()]
    if kind == "receive":
        f.stock(conn, LOCS[a[0]], {SKUS[a[1]]: a[2]})
    elif kind == "snapshot":
        stock_counts.apply_wms_snapshot(
            conn, LOCS[a[0]], dict(zip(SKUS, a[1], strict=True)), snapshot_id=f"S{f.next_id()}"
        )
    elif kind == "write_off":
        inventory.write_off(
            conn, LOCS[a[0]], {SKUS[a[1]]: a[2]}, reference=f"WO{f.next_id()}", reason="dmg", actor="p"
        )
    elif kind == "accept":
        lines = [((SKUS + ("UNKNOWN",))[s], q) for s, q in a[0]]
        orders.accept_orders(conn, [f.order_dict(lines, region="Москва", placed_at=NOW)], actor="p")
    elif kind == "allocate":
        allocate_batch(conn, config=config, now=NOW, actor="p")
    elif kind == "backorders":
        allocate_backorders(conn, config=config, now=NOW, actor="p")
    elif kind in ("hold", "release", "cancel") and order_ids:
        oid = _pick(order_ids, a[0])
        if kind == "hold":
            orders.hold_orders(conn, [oid], reason="p", actor="p")
        elif kind == "release":
            orders.release_holds(conn, [oid], reason="p", actor="p")
        else:
            orders.cancel_orders(conn, [oid], reason="p", actor="p")
    elif kind == "advance" and order_ids:
        # the next fulfillment step of one order: pick what is reserved, else pack, else ship
        _advance(conn, _pick(order_ids, a[0]), a)

    elif kind in ("deliver", "rts"):
        ships = [r[0] for r in conn.execute("SELECT shipment_id FROM oms.shipments ORDER BY 1").fetchall()]
        sid = _pick(ships, a[0])
        if sid is None:
            return
        if kind == "deliver":
            ff.hand_over(conn, [sid], actor="p")
            ff.mark_delivered(conn, [sid], actor="p")
        else:
            ff.hand_over(conn, [sid], actor="p")
            ff.mark_not_delivered(conn, [sid], reason="p", actor="p")
            ff.return_to_sender(conn, sid, restock=a[1], actor="p")
    elif kind == "rma" and order_ids:
        oid = _pick(order_ids, a[0])
        can = {k: v for k, v in returns.returnable(conn, oid).items() if v > 0}
        if not can:
            return
        line = min(can)
        rma = returns.request_return(conn, oid, [returns.ReturnLineRequest(line, 1, "defective")], actor="p")
        returns.receive_return(conn, rma.return_id, location_code=LOCS[0], actor="p")
        returns.inspect_return(conn, rma.return_id, "restock" if a[1] else "write_off", actor="p")
        returns.refund_return(conn, rma.return_id, actor="p")


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(start=initial, steps=st.lists(op, min_size=5, max_size=30))
def test_random_operations_keep_every_invariant(conn, start, steps):
    cfg = config()
    _seed(conn, cfg)
    counts, first_orders = start
    for i, q in enumerate(counts):
        if q:
            f.stock(conn, LOCS[i // 3], {SKUS[i % 3]: q})
    for lines in first_orders:
        _run(conn, cfg, ("accept", lines))
    _run(conn, cfg, ("allocate",))
    assert check_invariants(conn) == []
    # an "advance" step with a count of n is n consecutive steps of the same order
    flat = [st_ for step in steps for st_ in ([step] * step[4] if step[0] == "advance" else [step])]
    for i, step in enumerate(flat):
        before = _fingerprint(conn)
        try:
            _run(conn, cfg, step)
        except OmsError as exc:
            event(f"refused: {type(exc).__name__}")
            assert _fingerprint(conn) == before, f"step {i} {step} failed but changed data"
        violations = check_invariants(conn)
        assert violations == [], f"after step {i} {step}: " + "; ".join(map(str, violations))
    for (st_,) in conn.execute(
        "SELECT DISTINCT to_state FROM oms.order_events WHERE entity = 'order'"
    ).fetchall():
        event(f"an order reached {st_}")
    for (st_,) in conn.execute("SELECT DISTINCT kind FROM oms.inventory_ledger").fetchall():
        event(f"ledger {st_}")
