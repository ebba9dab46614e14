"""Exact fast validation: the helpers the channels' fast mappers are built from.

Why: mapping a payload through the channel's pydantic model and then ``NormalizedOrder`` costs more Python
time per order than the database spends inserting it, and a bulk normalisation is mostly that. Nearly every
payload is plain: JSON strings that need no stripping, integers that are integers, two-decimal amounts, ISO
timestamps. For those a few type checks give exactly what pydantic would; for anything else (text the
hostile-input policy of ``base`` would clean or refuse included) a helper raises :class:`Unsure` and the row
goes through the pydantic mapper, which stays the one definition of validity and the source of every
quarantine reason. A fast mapper never decides that a payload is bad.

``tests/connectors/test_fast_mapping.py`` holds every channel's fast mapper to its pydantic mapper on
simulator payloads and on thousands of mutated ones.
"""

from __future__ import annotations

import re
from datetime import datetime
from decimal import Decimal
from operator import itemgetter
from typing import Any

from oms_ops.orders import ORDER_FIELDS, ValidatedOrder


class Unsure(Exception):  # noqa: N818 - not an error: "let pydantic decide"
    """The fast path cannot be sure this payload maps exactly as the pydantic path would."""


_TS = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d{1,6})?(?:Z|[+-]\d{2}:\d{2})\Z")
#: ≥ 0, at most 10 integer and 2 decimal digits: fits every amount column (numeric(12,2) and (14,2))
_MONEY = re.compile(r"\d{1,10}(?:\.\d{1,2})?\Z")
_CURRENCY = re.compile(r"[A-Z]{3}\Z")
_INT4_MAX = 2**31 - 1
#: text the hostile-input policy would change or refuse (control characters, lone surrogates, U+FFFD): such an
#: order goes through the pydantic path, where ``base.apply_text_policy`` cleans or refuses it
_NEEDS_POLICY = re.compile("[\x00-\x1f\x7f\ud800-\udfff\ufffd]")
_TOTAL_LIMIT = Decimal(10) ** 12  # numeric(14,2)
_ZERO = Decimal("0")


def text(v: Any) -> str | None:
    """An optional string field that ``NormalizedOrder`` strips: only an already stripped str (or None)."""
    if v is None:
        return None
    if type(v) is not str or v != v.strip():
        raise Unsure
    return v


def required_text(v: Any) -> str:
    """A required, non-empty, already stripped str."""
    if type(v) is not str or not v or v != v.strip():
        raise Unsure
    return v


def any_text(v: Any) -> str:
    """A required str used as is (not stored, e.g. a status compared with a constant)."""
    if type(v) is not str:
        raise Unsure
    return v


def optional_str(v: Any) -> str | None:
    """An optional str field used as is or combined (the final value goes through :func:`text`)."""
    if v is not None and type(v) is not str:
        raise Unsure
    return v


def timestamp(v: Any) -> datetime:
    """A timezone-aware ISO 8601 timestamp (``…Z`` or ``…±hh:mm``, at most microseconds)."""
    if type(v) is not str or not _TS.match(v):
        raise Unsure
    try:
        return datetime.fromisoformat(v)
    except ValueError:  # 2025-02-30 and the like: pydantic says why
        raise Unsure from None


def optional_timestamp(v: Any) -> datetime | None:
    return None if v is None else timestamp(v)


def integer(v: Any) -> int:
    """A JSON integer (not a bool, not 3.0, not "3": pydantic's lax coercions are left to pydantic)."""
    if type(v) is not int:
        raise Unsure
    return v


def optional_integer(v: Any) -> int | None:
    return None if v is None else integer(v)


def quantity(v: Any) -> int:
    v = integer(v)
    if not 0 < v <= _INT4_MAX:
        raise Unsure
    return v


def money(v: Any) -> Decimal:
    """A decimal amount given as a JSON string ("1290.00")."""
    if type(v) is not str or not _MONEY.match(v):
        raise Unsure
    return Decimal(v)


def optional_number(v: Any) -> float | None:
    if v is None:
        return None
    if type(v) is float or type(v) is int:
        return float(v)
    raise Unsure


def mapping(v: Any) -> dict:
    """An optional nested object: {} when absent."""
    if v is None:
        return {}
    if type(v) is not dict:
        raise Unsure
    return v


def required_mapping(v: Any) -> dict:
    if type(v) is not dict:
        raise Unsure
    return v


def items(v: Any, *, required: bool = False) -> list:
    """A list field (``p.get(key, [])`` for one with a default: an explicit null is pydantic's to refuse)."""
    if type(v) is not list or (required and not v):
        raise Unsure
    return v


_DEFAULTS: dict[str, Any] = dict.fromkeys(ORDER_FIELDS)
#: the text fields of an order (all of them go through the policy check)
_TEXT_FIELDS = (
    "channel_code",
    "external_id",
    "channel_order_number",
    "customer_name",
    "customer_phone",
    "customer_email",
    "pickup_location_code",
    "fulfilment_location_code",
    "region",
    "city",
    "address",
)
_DEFAULTS.update(payment_method="prepaid", payment_status="pending", currency="RUB", shipping_amount=_ZERO)
_FIELDS = frozenset(ORDER_FIELDS)
_VALUES = itemgetter(*ORDER_FIELDS)
_METHODS = frozenset(("courier", "pickup_point", "store_pickup"))


def validated_order(lines: list[tuple[str, int, Decimal, str | None]], **fields: Any) -> ValidatedOrder:
    """A ``ValidatedOrder`` from mapped fields that already passed the helpers above, after the checks
    ``NormalizedOrder`` adds (delivery method and pickup location, coordinates, currency, totals).
    ``lines``: ``(sku, qty, unit_price, name)``, numbered 1.. in the order given."""
    if not fields.keys() <= _FIELDS:
        raise TypeError(f"not NormalizedOrder fields: {sorted(fields.keys() - _FIELDS)}")
    d = _DEFAULTS.copy()
    d.update(fields)
    method = d["delivery_method"]
    if method not in _METHODS or (method != "courier" and not d["pickup_location_code"]):
        raise Unsure
    if d["payment_method"] not in ("prepaid", "cod") or d["payment_status"] not in (
        "pending",
        "paid",
        "failed",
    ):
        raise Unsure
    if type(d["currency"]) is not str or not _CURRENCY.match(d["currency"]):
        raise Unsure
    for k in _TEXT_FIELDS:
        v = d[k]
        if v is not None and (type(v) is not str or _NEEDS_POLICY.search(v)):
            raise Unsure
    for sku, _, _, name in lines:
        if _NEEDS_POLICY.search(sku) or (name is not None and _NEEDS_POLICY.search(name)):
            raise Unsure
    lat, lon = d["lat"], d["lon"]
    if (lat is not None and not -90 <= lat <= 90) or (lon is not None and not -180 <= lon <= 180):
        raise Unsure
    if d["total_amount"] is None:
        total = d["shipping_amount"]
        for _, q, p, _ in lines:
            total += q * p
        d["total_amount"] = total
    if d["total_amount"] >= _TOTAL_LIMIT or d["shipping_amount"] >= _TOTAL_LIMIT:
        raise Unsure
    numbered = [(1, *lines[0])] if len(lines) == 1 else [(i, *ln) for i, ln in enumerate(lines, start=1)]
    return ValidatedOrder(_VALUES(d), numbered)
