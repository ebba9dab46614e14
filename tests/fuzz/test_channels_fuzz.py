"""Fuzz: one hostile payload among valid ones — in a polled page (Ozon, Wildberries, the web store) or in the
call centre's submitted entries — never takes its page or batch down.

Properties, per example (a batch of three valid payloads and one hostile one, in random order):

* storing and normalising the batch raises nothing, and nothing stays queued;
* every valid payload becomes its order, stored exactly as the pydantic definition maps it, with the line
  quantities the payload states (read from the payload itself: a wrapped integer cannot hide);
* the hostile payload is either accepted exactly as sent (after the text policy: names cleaned) or
  quarantined alone with a non-empty reason — or, when it is a valid cancellation, creates nothing;
* ``check_invariants`` finds nothing.

Plus the probe's known triggers as fixed examples, and the fast path held to the definition on hostile
payloads.
"""

from __future__ import annotations

import copy

import pytest
from hypothesis import given
from hypothesis import strategies as st

from oms_ops.channels import registry
from oms_ops.channels.base import IngestResult, MappingContext, Unstorable, intake_limits, limits_problem
from oms_ops.channels.callcentre import submit_orders
from oms_ops.channels.normalize import normalize_pending
from oms_ops.channels.rawstore import split_by_id, store_polled_page
from oms_ops.invariants import check_invariants
from oms_ops.orders import ORDER_FIELDS
from tests.fuzz.conftest import FUZZ, FUZZ_PURE, reset
from tests.fuzz.strategies import (
    BASES,
    definition,
    expected_row,
    lines_sent,
    mutated,
    stored_order,
)

CHANNELS = sorted(BASES)
FAST = [c for c in CHANNELS if registry.channel(c).fast_mapper is not None]


def _definition(channel, payload, ctx):
    try:
        return definition(channel, payload, ctx)
    except Unstorable as exc:  # cannot even be stored: it must be quarantined
        return ("error", str(exc))


def ingest(conn, code: str, payloads: list) -> None:
    """The batch through the channel's real entry: a polled page (store + normalise in its transaction, then
    the sweep), or the call centre's submission."""
    channel = registry.channel(code)
    if code == "callcentre":
        submit_orders(conn, payloads)
        return
    items, rejects = split_by_id(payloads, BASES[code][1])
    res = IngestResult(code)
    store_polled_page(
        conn,
        channel,
        items,
        rejects,
        res,
        cursor_name=f"fuzz:{code}",
        cursor_value={"page": 1},
        normalize=True,
        before_commit=None,
    )
    normalize_pending(conn, channel)


def check_batch(conn, code: str, valid: list[dict], hostile) -> str:
    """The properties of the module docstring; returns the hostile payload's outcome."""
    channel = registry.channel(code)
    ctx = MappingContext.load(conn)
    assert conn.execute("SELECT count(*) FROM raw.pending_orders").fetchone()[0] == 0
    for p in valid:
        kind, order = _definition(channel, p, ctx)
        assert kind == "order", order
        stored = stored_order(conn, code, order.external_id)
        assert stored is not None, f"valid payload {order.external_id} lost"
        assert stored == expected_row(order)
        assert [(s, q) for _, s, q, _, _ in stored[1]] == lines_sent(code, p)
    orders = conn.execute("SELECT count(*) FROM oms.orders").fetchone()[0]
    quarantine = conn.execute("SELECT reason FROM raw.quarantine").fetchall()
    assert all(r[0] and r[0].strip() for r in quarantine), quarantine
    kind, what = _definition(channel, hostile, ctx)
    if kind == "order":
        stored = stored_order(conn, code, what.external_id)
        if stored is not None:  # accepted: exactly as the definition maps it, quantities as sent
            assert stored == expected_row(what)
            assert [(s, q) for _, s, q, _, _ in stored[1]] == lines_sent(code, hostile)
            assert orders == len(valid) + 1 and not quarantine
            outcome = "accepted"
        else:  # the database refused what the definition took: still quarantined alone, with the reason
            assert orders == len(valid) and len(quarantine) == 1, quarantine
            outcome = "quarantined (database)"
    elif kind in ("cancelled", "skip"):
        assert orders == len(valid) and not quarantine, quarantine
        outcome = kind
    else:
        assert orders == len(valid), "a refused payload became an order"
        assert len(quarantine) == 1, f"refused payload not quarantined alone ({what}): {quarantine}"
        outcome = "quarantined"
    assert check_invariants(conn) == []
    return outcome


@st.composite
def batches(draw, code: str):
    make, id_field = BASES[code]
    hostile = draw(mutated(make(99), keep=() if draw(st.integers(0, 3)) == 0 else (id_field,)))
    valid = [make(i) for i in (1, 2, 3)]
    at = draw(st.integers(0, len(valid)))
    return valid, hostile, at


@pytest.mark.parametrize("code", CHANNELS)
def test_a_hostile_payload_never_takes_its_batch_down(fuzz_conn, tally, code):
    @FUZZ
    @given(batch=batches(code))
    def run(batch):
        valid, hostile, at = batch
        reset(fuzz_conn)
        ingest(fuzz_conn, code, [*valid[:at], hostile, *valid[at:]])
        tally.add(code, check_batch(fuzz_conn, code, valid, hostile))
        tally.add(code, "examples")

    run()


# -- the probe's triggers, as fixed examples -----------------------------------------------------------------------
def _set(p: dict, path: tuple, value) -> dict:
    p = copy.deepcopy(p)
    parent = p
    for step in path[:-1]:
        parent = parent[step]
    parent[path[-1]] = value
    return p


QTY = {
    "ozon": ("products", 0, "quantity"),
    "wildberries": None,
    "webstore": ("line_items", 0, "quantity"),
    "callcentre": ("lines", 0, "qty"),
}
PRICE = {
    "ozon": ("products", 0, "price", "amount"),
    "wildberries": ("finalPrice",),
    "webstore": ("line_items", 0, "price"),
    "callcentre": ("lines", 0, "unit_price"),
}
PHONE = {"webstore": ("phone",), "callcentre": ("customer", "phone")}
NAME = {
    "ozon": ("products", 0, "name"),
    "webstore": ("customer", "first_name"),
    "callcentre": ("customer", "full_name"),
    "wildberries": ("address", "fullAddress"),
}


#: text fields the probe poisoned, one of each kind per channel: the id, the order number, a SKU, a free text,
#: a timestamp, an amount
TEXT_PATHS = {
    "ozon": [
        ("posting_number",),
        ("order_number",),
        ("products", 0, "offer_id"),
        ("products", 0, "name"),
        ("customer", "address", "city"),
        ("in_process_at",),
        ("products", 0, "price", "amount"),
    ],
    "wildberries": [("rid",), ("article",), ("address", "fullAddress"), ("createdAt",)],
    "webstore": [
        ("name",),
        ("line_items", 0, "sku"),
        ("line_items", 0, "name"),
        ("customer", "first_name"),
        ("shipping_address", "address1"),
        ("email",),
        ("created_at",),
        ("total_price",),
    ],
    "callcentre": [
        ("external_id",),
        ("lines", 0, "sku"),
        ("customer", "full_name"),
        ("customer", "phone"),
        ("delivery", "address"),
        ("comment",),
        ("entered_at",),
        ("lines", 0, "qty"),
    ],
}


def triggers(code: str) -> list[tuple[str, dict]]:
    make, _ = BASES[code]
    base = make(99)
    paths = TEXT_PATHS[code]
    out = [(f"NUL in {'.'.join(map(str, path))}", _set(base, path, "a\x00b")) for path in paths]
    out += [(f"lone surrogate in {'.'.join(map(str, path))}", _set(base, path, "a\ud800b")) for path in paths]
    if QTY[code]:
        for q in (2**31 - 1, 2**31, 2**32 + 3, 4294967299, True, 10_001):
            out.append(
                (
                    f"quantity {q!r}",
                    _set(base, QTY[code], str(q) if code == "callcentre" and q is not True else q),
                )
            )
    huge = 10**9 if code == "wildberries" else "99999999.00"
    out.append(
        (
            "quantity x price above 10^12",
            _set(_set(base, QTY[code], 9999) if QTY[code] else base, PRICE[code], huge),
        )
    )
    if code in PHONE:
        out.append(("very long phone", _set(base, PHONE[code], "+7" + "9" * 10_000)))
    out.append(("1 MB name", _set(base, NAME[code], "Я" * 1_000_000)))
    return out


CASES = [(code, name, payload) for code in CHANNELS for name, payload in triggers(code)]


@pytest.mark.parametrize(("code", "name", "payload"), CASES, ids=[f"{c}:{n}" for c, n, _ in CASES])
def test_the_probes_triggers(fuzz_conn, tally, code, name, payload):
    make, _ = BASES[code]
    valid = [make(1), make(2)]
    reset(fuzz_conn)
    ingest(fuzz_conn, code, [valid[0], payload, valid[1]])
    outcome = check_batch(fuzz_conn, code, valid, payload)
    tally.add(f"{code} (probe triggers)", outcome)
    if name.startswith(("quantity 2147483648", "quantity 4294967299", "quantity True", "quantity 10001")):
        assert outcome == "quarantined"
    if name.startswith(("NUL in", "lone surrogate in")) and outcome == "accepted":
        row = conn_text(fuzz_conn)
        assert "\x00" not in row and "\ud800" not in row


def conn_text(conn) -> str:
    """Every text of the stored orders and lines, joined (to look for what must never be stored)."""
    rows = conn.execute(
        """SELECT concat_ws('|', o.external_id, o.channel_order_number, o.customer_name, o.customer_phone,
                            o.customer_email, o.region, o.city, o.address, l.sku, l.name)
           FROM oms.orders o JOIN oms.order_lines l USING (order_id)"""
    ).fetchall()
    return "\n".join(r[0] for r in rows)


# -- the fast path on hostile payloads ---------------------------------------------------------------------------
@pytest.mark.parametrize("code", FAST)
def test_the_fast_path_agrees_with_the_definition_on_hostile_payloads(tally, code):
    channel = registry.channel(code)
    make, _ = BASES[code]
    ctx = MappingContext()

    @FUZZ_PURE
    @given(payload=mutated(make(1)))
    def run(payload):
        from tests.fuzz.strategies import as_given_to_mappers

        try:
            given_payload = as_given_to_mappers(payload)
        except Unstorable:
            return
        try:
            key, cancelled, valid = channel.fast_mapper(given_payload, ctx, None)
        except Exception:  # noqa: BLE001 - unsure: the pydantic path decides
            tally.add(f"{code} (fast path)", "unsure")
            return
        if limits_problem(valid, intake_limits()) is not None:
            tally.add(f"{code} (fast path)", "over the limits: pydantic path")
            return
        kind, what = _definition(channel, payload, ctx)
        if cancelled:
            assert (kind, what) == ("cancelled", key)
        else:
            assert kind == "order", what
            values = dict(zip(ORDER_FIELDS, valid.staging_values(), strict=True))
            values.pop("raw_id")
            assert (values, [tuple(x) for x in valid.staging_lines()]) == expected_row(what)
        tally.add(f"{code} (fast path)", "taken, equal to the definition")

    run()
