"""The channels' fast mappers agree exactly with their pydantic mappers.

A fast mapper (``ozon.fast_posting``, ``wildberries.fast_order``, ``webstore.fast_order``) either gives the
order the pydantic path would give — same external id, same cancellation, the same ``oms.orders`` values
and lines — or says it is unsure, and the row goes through the pydantic path. It must never accept what
pydantic refuses, nor map anything differently. Checked on simulator payloads and on thousands of mutated
ones (wrong types, nulls, untrimmed strings, bad timestamps and amounts, missing keys), and end to end:
normalising the same raw rows with and without the fast path gives the same order book and quarantine.
"""

from __future__ import annotations

import copy
import random
from decimal import Decimal
from typing import Any

import pytest
from pydantic import ValidationError

from oms_ops.channels import normalize as norm
from oms_ops.channels.rawstore import store_page
from oms_ops.channels.registry import channel as channel_record
from oms_ops.orders import ORDER_FIELDS, NormalizedOrder

CHANNELS = {"ozon": "ozon", "wildberries": "wildberries", "webstore": "shopify"}

#: values a mutation puts somewhere in a payload (``DELETE`` removes the key)
DELETE = object()
REPLACEMENTS: list[Any] = [
    None,
    DELETE,
    "",
    " ",
    " padded ",
    "x",
    "RUB",
    "rub",
    0,
    -1,
    2**40,
    2**70,
    1.5,
    3.0,
    True,
    "12.345",
    "-1.00",
    "1e3",
    "99999999999.00",
    "100.5",
    "2025-02-30T10:00:00Z",
    "2025-03-03T07:47:28",
    "2025-03-03T07:47:28.1234567Z",
    "2025-03-03 07:47:28+03:00",
    "2025-03-03T07:47:28+03:00",
    [],
    {},
    [{}],
    {"amount": "1.00"},
    "\x1cx",
    91.0,
    -181,
]


def _paths(v: Any, prefix: tuple = ()) -> list[tuple]:
    out = [prefix] if prefix else []
    if isinstance(v, dict):
        for k, x in v.items():
            out += _paths(x, (*prefix, k))
    elif isinstance(v, list):
        for i, x in enumerate(v):
            out += _paths(x, (*prefix, i))
    return out


def _mutate(payload: dict, rng: random.Random) -> dict:
    p = copy.deepcopy(payload)
    for _ in range(rng.randint(1, 3)):
        paths = _paths(p)
        if not paths:
            break
        path = rng.choice(paths)
        parent = p
        for step in path[:-1]:
            parent = parent[step]
        value = rng.choice(REPLACEMENTS)
        if value is DELETE:
            if isinstance(parent, dict):
                del parent[path[-1]]
            else:
                parent.pop(path[-1])
        else:
            parent[path[-1]] = copy.deepcopy(value)
    return p


def _slow(channel: str, payload: Any, ctx: norm.MappingContext) -> tuple:
    try:
        m = channel_record(channel).mapper(payload, ctx)
    except (ValidationError, KeyError, TypeError, ValueError, ArithmeticError, AttributeError):
        return ("error",)
    if m.error:
        return ("error",)
    if m.cancelled:
        return ("cancelled", m.external_id)
    try:
        o = NormalizedOrder.model_validate({**m.order, "raw_id": 7})
    except ValidationError:
        return ("invalid", m.external_id)
    return ("order", m.external_id, tuple(o.staging_values()), o.staging_lines())


def _fast(channel: str, payload: Any, ctx: norm.MappingContext) -> tuple | None:
    try:
        key, cancelled, order = channel_record(channel).fast_mapper(payload, ctx, 7)
    except Exception:  # noqa: BLE001 - unsure: the pydantic path decides
        return None
    if cancelled:
        return ("cancelled", key)
    return ("order", key, tuple(order.staging_values()), order.staging_lines())


def _payloads(stack, channel: str) -> list[dict]:
    sim = stack[CHANNELS[channel]]
    if channel == "ozon":
        return [sim.render(p, analytics=True, financial=True) for p in sim.postings]  # as the connector asks
    if channel == "wildberries":  # both official shapes: /orders/new (OrderNew) and the history (Order)
        return sim.rendered_orders(new=True) + sim.rendered_orders()
    return sim.rendered_orders()


@pytest.fixture
def generated(world):
    conn, stack, _ = world()
    stack.advance(8 * 3600)
    return conn, stack, norm.MappingContext.load(conn)


@pytest.mark.parametrize("channel", sorted(CHANNELS))
def test_fast_path_matches_pydantic_on_simulator_payloads(generated, channel):
    conn, stack, ctx = generated
    payloads = _payloads(stack, channel)
    assert len(payloads) >= 20
    taken = 0
    for p in payloads:
        fast = _fast(channel, p, ctx)
        if fast is not None:
            taken += 1
            assert fast == _slow(channel, p, ctx), p
    # the fast path must actually carry the plain payloads, or the bulk speed-up silently disappears
    assert taken == len(payloads)


@pytest.mark.parametrize("channel", sorted(CHANNELS))
def test_fast_path_never_disagrees_on_mutated_payloads(generated, channel):
    conn, stack, ctx = generated
    payloads = _payloads(stack, channel)
    rng = random.Random(f"fast-{channel}")
    outcomes: dict[str, int] = {}
    for _ in range(2500):
        p = _mutate(rng.choice(payloads), rng)
        slow = _slow(channel, p, ctx)
        fast = _fast(channel, p, ctx)
        outcomes[slow[0]] = outcomes.get(slow[0], 0) + 1
        if fast is not None:
            assert fast == slow, p
    # the mutations reach every kind of outcome, so the comparison is not vacuous
    assert outcomes.get("error", 0) > 100 and outcomes.get("order", 0) > 100, outcomes


def test_values_keep_pydantic_types(generated):
    """Amounts stay Decimal and coordinates float, as the binary COPY of the staging rows expects."""
    conn, stack, ctx = generated
    p = next(
        x for x in _payloads(stack, "wildberries") if (x.get("address") or {}).get("latitude") is not None
    )
    p["address"]["latitude"] = int(p["address"]["latitude"])  # a JSON integer where a float belongs
    _, _, order = channel_record("wildberries").fast_mapper(p, ctx, 1)
    values = dict(zip(ORDER_FIELDS, order.staging_values(), strict=True))
    assert type(order.staging_lines()[0][3]) is Decimal
    assert type(values["lat"]) is float and type(values["lon"]) is float


def _book(conn) -> tuple:
    orders = conn.execute(
        """SELECT channel_code, external_id, state, placed_at, channel_order_number, customer_name,
                  customer_phone, customer_email, delivery_method, pickup_location_code,
                  fulfilment_location_code, region, city, address, lat, lon, promised_at, payment_method,
                  payment_status, currency, total_amount, shipping_amount, hold_reason, raw_id
           FROM oms.orders ORDER BY channel_code, external_id"""
    ).fetchall()
    lines = conn.execute(
        """SELECT o.channel_code, o.external_id, l.line_no, l.sku, l.qty, l.unit_price, l.name, l.state
           FROM oms.order_lines l JOIN oms.orders o USING (order_id) ORDER BY 1, 2, 3"""
    ).fetchall()
    quarantine = conn.execute(
        "SELECT source, external_id, reason, payload FROM raw.quarantine ORDER BY source, external_id, reason"
    ).fetchall()
    return orders, lines, quarantine


def test_normalising_with_and_without_the_fast_path_gives_the_same_book(generated, monkeypatch):
    conn, stack, ctx = generated
    rng = random.Random("book")
    for channel in sorted(CHANNELS):
        payloads = _payloads(stack, channel)
        rows = [
            rng.choice(payloads) if rng.random() < 0.7 else _mutate(rng.choice(payloads), rng)
            for _ in range(300)
        ]
        key = {"ozon": "posting_number", "wildberries": "id", "webstore": "id"}[channel]
        items = [(str(p.get(key)) if isinstance(p, dict) else "?", p) for p in rows]
        store_page(conn, channel_record(channel), items)
    books = []
    for fast in (True, False):
        conn.execute(
            "TRUNCATE oms.orders, oms.order_lines, oms.order_events, raw.quarantine RESTART IDENTITY CASCADE"
        )
        conn.execute(
            "INSERT INTO raw.pending_orders SELECT channel_code, raw_id FROM raw.channel_orders ON CONFLICT DO NOTHING"
        )
        for channel in sorted(CHANNELS):
            norm.normalize_pending(conn, channel_record(channel), batch_size=250, fast_path=fast)
        books.append(_book(conn))
    assert books[0][0] and books[0][2]  # orders accepted and payloads quarantined
    assert books[0] == books[1]


def test_a_validated_order_acceptance_refuses_is_quarantined_like_a_normalized_one(generated):
    """Acceptance checks a ValidatedOrder like any other (here: a channel the OMS has switched off) and
    quarantines it with the NormalizedOrder-shaped payload the pydantic path would have stored."""
    from oms_ops.orders import accept_orders

    conn, stack, ctx = generated
    p = _payloads(stack, "wildberries")[0]
    _, _, fast = channel_record("wildberries").fast_mapper(p, ctx, None)
    slow = NormalizedOrder.model_validate(channel_record("wildberries").mapper(p, ctx).order)
    conn.execute("UPDATE oms.channels SET active = false WHERE channel_code = 'wildberries'")
    res = accept_orders(conn, [fast], actor="test", source="test-fast")
    assert not res.ids and res.rejected == [(fast.external_id, "channel 'wildberries' is inactive")]
    stored = conn.execute("SELECT payload FROM raw.quarantine WHERE source = 'test-fast'").fetchone()[0]
    assert stored == slow.model_dump(mode="json")
