"""Hostile input for every channel: valid payloads to start from, values a hostile or broken sender puts in
them, and the oracle an accepted order is compared with.

The hostile values are what the fuzz probe found and what such probes always try: NUL and other control
characters, lone UTF-16 surrogates, the storage escape character itself, U+FFFD, very long text, integers at
and beyond the 32/64-bit boundaries (2^31, 2^32 + 3 — which psycopg's binary COPY used to wrap to 3), booleans
where numbers belong, NaN and infinities, amounts whose product overflows ``numeric(14,2)``, wrong shapes
(null, lists, objects) and nesting far deeper than any order.
"""

from __future__ import annotations

import copy
from typing import Any

from hypothesis import strategies as st
from psycopg import sql

from oms_ops.channels.base import (
    IntakeRefused,
    MappingContext,
    apply_text_policy,
    intake_limits,
    limits_problem,
    prepare_payload,
    unescape_json,
)
from oms_ops.orders import ORDER_FIELDS, NormalizedOrder

# -- hostile values ----------------------------------------------------------------------------------------------
_chars = st.one_of(
    st.characters(exclude_categories=()),
    st.characters(min_codepoint=0, max_codepoint=0x1F),
    st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF),
    st.sampled_from(["\x7f", "\ue000", "\ufffd", "\u202e", "\u200b", "\xa0", "\x85"]),
)
KNOWN_TEXT = [
    "\x00",
    "a\x00b",
    "\ud800",
    "x\udfffy",
    "\ue000",
    "\ue0000000",
    "\ufffd",
    "\x1f",
    "\x7f",
    " \t\n ",
    "",
    " ",
    "NaN",
    "\u202eRTL",
    "'; DROP TABLE oms.orders; --",
    "%s%s%(x)s",
    "\\u0000",
    "𝔘𝔫𝔦𝔠𝔬𝔡𝔢",
]
long_text = st.builds(
    lambda c, n: c * n,
    st.sampled_from(["x", "я", "\x00", "\ud800"]),
    st.sampled_from([65, 129, 255, 301, 1001, 5000, 100_000]),  # 1 MB: a fixed probe trigger
)
hostile_text = st.one_of(st.sampled_from(KNOWN_TEXT), st.text(_chars, max_size=30), long_text)

KNOWN_NUMBERS: list[Any] = [
    0,
    -1,
    1,
    True,
    False,
    10_001,
    2**31 - 1,
    2**31,
    2**32,
    2**32 + 3,
    2**63 - 1,
    2**63,
    2**64 + 3,
    2**70,
    -(2**63),
    10**12,
    10**30,
    1e308,
    -0.0,
    float("nan"),
    float("inf"),
    float("-inf"),
    "4294967299",
    "2147483648",
    "99999999999.99",
    "1e12",
    "1E+400",
    "-0.00",
    "12.345",
    "0x10",
    "Infinity",
]
hostile_number = st.one_of(
    st.sampled_from(KNOWN_NUMBERS),
    st.integers(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.decimals(allow_nan=False, allow_infinity=False).map(str),
)


def nested(depth: int) -> Any:
    v: Any = "bottom"
    for _ in range(depth):
        v = [v]
    return v


hostile_shape = st.one_of(
    st.sampled_from([None, [], {}, [None], {"\x00": "\x00"}, {"a": {"b": {"c": []}}}]),
    st.sampled_from([60, 200, 700, 2000]).map(nested),
)
hostile_value = st.one_of(hostile_text, hostile_number, hostile_shape)
hostile_key = st.one_of(
    st.sampled_from(["\x00", "\ud800", "\ue000", "id\x00", "x" * 5000]), st.text(_chars, max_size=8)
)


def _paths(v: Any, prefix: tuple = ()) -> list[tuple]:
    out = [prefix] if prefix else []
    if len(prefix) > 8:  # inside a hostile nesting: its top is path enough
        return out
    if isinstance(v, dict):
        for k, x in v.items():
            out += _paths(x, (*prefix, k))
    elif isinstance(v, list):
        for i, x in enumerate(v):
            out += _paths(x, (*prefix, i))
    return out


@st.composite
def mutated(draw, base: dict, *, keep: tuple[str, ...] = ()) -> dict:
    """``base`` with one to three places replaced by hostile values (or hostile keys added); ``keep``: top-level
    keys left alone (so the payload keeps the id that tells it apart)."""
    p = copy.deepcopy(base)
    for _ in range(draw(st.integers(1, 3))):
        paths = [x for x in _paths(p) if x[0] not in keep]
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        parent = p
        for step in path[:-1]:
            parent = parent[step]
        if isinstance(parent, dict) and draw(st.integers(0, 9)) == 0:
            parent[draw(hostile_key)] = draw(hostile_value)
        else:
            parent[path[-1]] = draw(hostile_value)
    return p


# -- valid payloads (each example numbers its own) ----------------------------------------------------------------
def ozon_posting(n: int) -> dict:
    return {
        "posting_number": f"FZ-{n}-1",
        "order_number": f"FZ-{n}",
        "status": "awaiting_packaging",
        "in_process_at": "2025-03-03T07:47:28Z",
        "tpl_integration_type": "ozon",
        "products": [
            {
                "offer_id": "SKU-A",
                "sku": 1001,
                "name": "Товар A",
                "quantity": 2,
                "price": {"amount": "1290.00", "currency": "RUB"},
            }
        ],
        "analytics_data": {"region": "Москва", "city": "Москва", "delivery_date_end": "2025-03-06T07:47:28Z"},
        "financial_data": {
            "products": [{"product_id": 1001, "customer_price": {"amount": "1190.00", "currency": "RUB"}}]
        },
        "customer": {"address": {"region": "Москва", "city": "Москва"}},
    }


def wb_order(n: int) -> dict:
    return {
        "id": 500_000 + n,
        "rid": f"rid-{n}",
        "article": "SKU-B",
        "chrtId": 2001,
        "finalPrice": 159_000,
        "price": 169_000,
        "currencyCode": 643,
        "createdAt": "2025-03-03T07:47:28Z",
        "address": {
            "fullAddress": "Московская обл., г. Подольск, ул. Ленина, 1",
            "latitude": 55.43,
            "longitude": 37.54,
        },
    }


def shop_order(n: int) -> dict:
    return {
        "id": 700_000 + n,
        "name": f"#{n}",
        "created_at": "2025-03-03T07:47:28Z",
        "currency": "RUB",
        "total_price": "2580.00",
        "financial_status": "paid",
        "email": "ivan@example.ru",
        "phone": "+79161234567",
        "customer": {"first_name": "Иван", "last_name": "Петров"},
        "shipping_address": {
            "address1": "ул. Тверская, 1",
            "city": "Москва",
            "province": "Москва",
            "latitude": 55.76,
            "longitude": 37.6,
        },
        "line_items": [{"sku": "SKU-C", "quantity": 2, "price": "1290.00", "name": "Товар C"}],
        "shipping_lines": [{"code": "courier", "title": "Курьер"}],
    }


def callcentre_order(n: int) -> dict:
    return {
        "external_id": f"CC-{n}",
        "entered_at": "2025-03-03T10:00:00+03:00",
        "customer": {"full_name": "ИВАН ПЕТРОВ", "phone": "8 (916) 123-45-67", "email": "i@example.ru"},
        "delivery": {
            "method": "courier",
            "region": "Москва",
            "city": "Москва",
            "postcode": "101000",
            "address": "ул. Тверская, 1",
        },
        "lines": [{"sku": "sku-d", "qty": "2", "unit_price": "990.00"}],
        "payment": {"method": "cash_on_delivery"},
        "comment": "позвонить заранее",
    }


#: channel code → (valid payload for number n, the field holding the channel's id)
BASES = {
    "ozon": (ozon_posting, "posting_number"),
    "wildberries": (wb_order, "id"),
    "webstore": (shop_order, "id"),
    "callcentre": (callcentre_order, "external_id"),
}


def lines_sent(channel: str, p: dict) -> list[tuple[str, int]]:
    """``(sku, qty)`` of the order lines exactly as the payload states them — read from the payload itself, not
    through the mapper, so a quantity the database wrapped (4294967299 → 3) cannot go unnoticed."""
    if channel == "ozon":
        return [(pr["offer_id"].strip(), pr["quantity"]) for pr in p["products"]]
    if channel == "wildberries":
        return [(p["article"].strip(), 1)]
    if channel == "webstore":
        out = []
        for li in p["line_items"]:
            qty = li["quantity"] if li.get("current_quantity") is None else li["current_quantity"]
            if qty:
                out.append((li["sku"].strip(), int(qty)))
        return out
    if channel == "callcentre":
        return [("".join(ln["sku"].split()).upper(), int(str(ln["qty"]).strip())) for ln in p["lines"]]
    raise AssertionError(channel)


# -- the oracle --------------------------------------------------------------------------------------------------
def as_given_to_mappers(payload: Any) -> Any:
    """The payload as stored and read back for the mappers (lone surrogates as U+FFFD)."""
    return unescape_json(prepare_payload(payload)[0], replace_surrogates=True)


def definition(channel, payload: Any, ctx: MappingContext) -> tuple[str, Any]:
    """What the pydantic definition (mapper, ``NormalizedOrder``, text policy, limits) makes of ``payload``:
    ``("order", NormalizedOrder)``, ``("cancelled", key)``, ``("skip", reason)`` or ``("error", reason)``."""
    try:
        m = channel.mapper(as_given_to_mappers(payload), ctx)
    except Exception as exc:  # noqa: BLE001 - the mapper refused it: an error outcome
        return ("error", type(exc).__name__)
    if m.error:
        return ("error", m.error)
    if m.skip:
        return ("skip", m.skip)
    if m.cancelled:
        return ("cancelled", m.external_id)
    try:
        order = NormalizedOrder.model_validate(m.order)
        apply_text_policy(order)
    except (ValueError, IntakeRefused) as exc:
        return ("error", str(exc))
    problem = limits_problem(order, intake_limits())
    return ("error", problem) if problem else ("order", order)


ORDER_COLUMNS = [c for c in ORDER_FIELDS if c != "raw_id"]


def stored_order(conn, channel_code: str, external_id: str) -> tuple[dict, list[tuple]] | None:
    query = sql.SQL(
        "SELECT {}, order_id FROM oms.orders WHERE channel_code = %s AND external_id = %s"
    ).format(sql.SQL(", ").join(map(sql.Identifier, ORDER_COLUMNS)))
    row = conn.execute(query, (channel_code, external_id)).fetchone()
    if row is None:
        return None
    lines = conn.execute(
        "SELECT line_no, sku, qty, unit_price, name FROM oms.order_lines WHERE order_id = %s ORDER BY line_no",
        (row[-1],),
    ).fetchall()
    return dict(zip(ORDER_COLUMNS, row[:-1], strict=True)), [tuple(x) for x in lines]


def expected_row(order: NormalizedOrder) -> tuple[dict, list[tuple]]:
    values = dict(zip(ORDER_FIELDS, order.staging_values(), strict=True))
    values.pop("raw_id")
    return values, [tuple(x) for x in order.staging_lines()]
