"""What every sales channel is made of: the ``Channel`` record and the types its parts exchange.

A channel (Ozon, Wildberries, the web store, the shops' tills, the call centre) is one module in this package
that declares one :class:`Channel`: where it is configured (environment variables), how its API client is
built, how its feed is polled, how its payloads map to a ``NormalizedOrder`` (an exact fast path and the
pydantic definition), how available-to-sell and order statuses are pushed back, and the thresholds of its
Dagster checks. ``oms_ops.channels.registry`` lists the records; everything that needs "every channel"
(normalisation, ATS, the outbox drain, the Dagster resource, assets, checks and schedules, the seed) loops
over that registry, so adding a channel never touches those places.

This module depends on the domain only for the order types; channel modules depend on it, never the
reverse.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Annotated, Any

import psycopg
from pydantic import BeforeValidator, ValidationError

from oms_ops.business_config import BusinessConfigError, IntakeLimits, load_business_config
from oms_ops.orders import ORDER_FIELDS, NormalizedOrder, ValidatedOrder
from oms_ops.quarantine import quarantine_many

log = logging.getLogger("oms.channels")


# -- payload identity -----------------------------------------------------------------------------------------
def canonical_json(payload: Any) -> str:
    """Canonical JSON text (sorted keys, compact, UTF-8): the same payload always gives the same text.

    Equal to ``oms_ops.orders.payload_hash``'s input for JSON-shaped payloads (what HTTP APIs return), so a
    row stored by a connector and one stored through ``record_raw_orders`` dedupe against each other.
    """
    return json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def payload_sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


# -- mapping --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Mapped:
    """What a channel mapper made of one payload."""

    external_id: str | None
    #: a NormalizedOrder-shaped mapping (validated by NormalizedOrder), or the fast path's ValidatedOrder
    order: dict | ValidatedOrder | None = None
    cancelled: bool = False  # the channel says the order is cancelled
    skip: str | None = None  # not an order (e.g. a POS return receipt): kept raw, nothing created
    error: str | None = None  # cannot be mapped: quarantined with this reason


@dataclass
class MappingContext:
    """Lookups a mapper needs, read once per batch from the connectors' mapping tables."""

    locations: dict[str, dict[str, str]] = field(default_factory=dict)  # system → external id → location
    hubs: dict[str, str] = field(default_factory=dict)  # pickup point hub → own pickup point

    @classmethod
    def load(cls, conn: psycopg.Connection) -> MappingContext:
        ctx = cls()
        for system, loc, ext in conn.execute(
            "SELECT system, location_code, external_id FROM connectors.channel_locations WHERE active"
        ).fetchall():
            ctx.locations.setdefault(system, {})[str(ext)] = loc
        ctx.hubs = dict(
            conn.execute("SELECT hub, location_code FROM connectors.pickup_point_hubs").fetchall()
        )
        return ctx

    def location(self, system: str, external_id: Any) -> str | None:
        return self.locations.get(system, {}).get(str(external_id))

    def pickup_point(self, code: str | None) -> str | None:
        """The own pickup point standing in for a carrier pickup point code ("MSK123" → hub MSK)."""
        if not code:
            return None
        hub = "".join(ch for ch in code if ch.isalpha())[:3].upper()
        return self.hubs.get(hub)


Mapper = Callable[[Mapping[str, Any], MappingContext], Mapped]
#: A channel's exact fast path (see ``fastcheck``): ``(payload, ctx, raw_id)`` → ``(external id, cancelled,
#: ValidatedOrder)``, or ``fastcheck.Unsure`` raised when the pydantic mapper must decide.
FastMapper = Callable[[Any, MappingContext, int | None], tuple[str, bool, ValidatedOrder]]


def validation_text(exc: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(map(str, e['loc'])) or 'payload'}: {e['msg']}" for e in exc.errors(include_url=False)
    )


def normalize_phone(raw: str | None) -> str | None:
    """Russian phone numbers typed any way (8 (916) 123-45-67, +7(916)1234567, 9161234567) → +79161234567.
    Anything that is not 10 national digits is kept as typed (a human will look at it)."""
    if not raw:
        return None
    digits = re.sub(r"\D", "", raw)
    if len(digits) == 11 and digits[0] in "78":
        digits = digits[1:]
    if len(digits) == 10:
        return "+7" + digits
    return raw.strip() or None


def delivery_fields(
    ctx: MappingContext,
    method: str,
    *,
    pickup_point_code: str | None,
    store_code: str | None,
    address: str | None,
) -> dict[str, Any]:
    """Delivery method and pickup location in the OMS's terms.

    store_pickup: the store (POS/WMS store code → OMS location). pickup_point: the seller's own pickup point
    of the carrier point's city (``connectors.pickup_point_hubs``); a city without one becomes a courier
    delivery to the pickup point's address, which is what the parcel physically is.
    """
    if method == "store_pickup":
        loc = ctx.location("pos", store_code) or ctx.location("wms", store_code)
        if loc:
            return {"delivery_method": "store_pickup", "pickup_location_code": loc}
        return {
            "delivery_method": "store_pickup",
            "pickup_location_code": store_code,
        }  # accept_orders says why
    if method == "pickup_point":
        loc = ctx.pickup_point(pickup_point_code)
        if loc:
            return {"delivery_method": "pickup_point", "pickup_location_code": loc}
        where = f"пункт выдачи {pickup_point_code}" if pickup_point_code else "пункт выдачи"
        return {"delivery_method": "courier", "address": f"{where}; {address}" if address else where}
    return {"delivery_method": "courier"}


# -- hostile input: one policy for every channel ----------------------------------------------------------------
# Channel payloads are untrusted input. Whatever the channel and whichever path maps a payload (the exact fast
# path or pydantic), three rules hold, and they live here:
#
# * storing never fails: a payload is kept as received; the few things Postgres' jsonb and text cannot hold
#   (NUL, lone UTF-16 surrogates, NaN/Infinity) are escaped losslessly (``escape_json``); a payload that
#   cannot be kept at all (nested too deep, larger than ``limits.max_payload_bytes``, not JSON) is quarantined
#   with the reason and an excerpt (``prepare_payload``, ``quarantine_safely``);
# * text: an id or code holding a control character, a lone surrogate or U+FFFD is refused with the field
#   named; free text (names, phone, e-mail, addresses) loses NUL and the other control characters (tab and
#   newline stay) and a lone surrogate becomes U+FFFD (``apply_text_policy``, ``clean_text``);
# * sizes: numbers and text lengths stay within the business configuration's ``limits`` (``limits_problem``),
#   which sit inside the database's own bounds, and a boolean is never read as a number (``Int``, ``Float``).

#: The escape character of stored payloads: a private-use code point. In a stored string ESC + 4 hex digits
#: is that code point (NUL, a lone surrogate, or ESC itself) and a whole string ESC + ``NaN`` / ``Infinity`` /
#: ``-Infinity`` is that float. Every ESC of the original is escaped too, so :func:`unescape_json` restores
#: the original exactly, and an ordinary payload is stored byte for byte unchanged (same hash as before).
ESC = "\ue000"
_TO_ESCAPE = re.compile("[\x00\ud800-\udfff\ue000]")
_ESCAPED = re.compile("\ue000([0-9a-f]{4})")
_FLOAT_TAGS = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}
#: nesting a stored payload may have (an order nests a handful of levels; json and orjson stop near 1000)
MAX_DEPTH = 500


class Unstorable(ValueError):
    """A payload that cannot be stored as received (nested too deep, too large, not JSON): it is quarantined
    with this reason and an excerpt instead."""


def _escape_str(s: str) -> str:
    return _TO_ESCAPE.sub(lambda m: f"{ESC}{ord(m.group()):04x}", s) if _TO_ESCAPE.search(s) else s


def escape_json(
    value: Any,
    *,
    max_depth: int = MAX_DEPTH,
    cut: bool = False,
    max_str: int | None = None,
    max_items: int | None = None,
    _depth: int = 0,
) -> Any:
    """``value`` with every string (keys too) escaped and every non-finite float tagged (see ``ESC``).
    Nesting deeper than ``max_depth`` raises :class:`Unstorable`. Excerpts only (lossy, for a quarantine
    row of an unstorable payload): ``cut`` replaces deeper nesting by a marker, ``max_str`` and ``max_items``
    cut long strings and containers."""
    if isinstance(value, str):
        if max_str is not None and len(value) > max_str:
            value = value[:max_str] + f"… ({len(value)} characters)"
        return _escape_str(value)
    if isinstance(value, float):
        if math.isfinite(value):
            return value
        return ESC + ("NaN" if value != value else "Infinity" if value > 0 else "-Infinity")
    if isinstance(value, dict | list | tuple):
        if _depth >= max_depth:
            if cut:
                return f"… nested deeper than {max_depth} levels: cut"
            raise Unstorable(f"nested deeper than {max_depth} levels")
        kw = {
            "max_depth": max_depth,
            "cut": cut,
            "max_str": max_str,
            "max_items": max_items,
            "_depth": _depth + 1,
        }
        if isinstance(value, dict):
            pairs = list(value.items())[:max_items] if max_items is not None else value.items()
            return {(_escape_str(k) if isinstance(k, str) else k): escape_json(v, **kw) for k, v in pairs}
        seq = value[:max_items] if max_items is not None else value
        return [escape_json(v, **kw) for v in seq]
    return value


def unescape_json(value: Any, *, replace_surrogates: bool = False) -> Any:
    """The original of a payload :func:`escape_json` stored. ``replace_surrogates``: lone surrogates come
    back as U+FFFD — what the mappers are given (pydantic cannot read a lone surrogate, and the text policy
    replaces them in free text and refuses them in ids anyway)."""
    if isinstance(value, str):
        if ESC not in value:
            return value
        if value[:1] == ESC and value[1:] in _FLOAT_TAGS:
            return _FLOAT_TAGS[value[1:]]

        def sub(m: re.Match) -> str:
            cp = int(m.group(1), 16)
            return "\ufffd" if replace_surrogates and 0xD800 <= cp <= 0xDFFF else chr(cp)

        return _ESCAPED.sub(sub, value)
    if isinstance(value, dict):
        return {
            unescape_json(k, replace_surrogates=replace_surrogates): unescape_json(
                v, replace_surrogates=replace_surrogates
            )
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [unescape_json(v, replace_surrogates=replace_surrogates) for v in value]
    return value


def _dumps(value: Any, default: Callable[[Any], Any] | None) -> str:
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False, default=default
    )


def prepare_payload(
    payload: Any, *, max_bytes: int | None = None, default: Callable[[Any], Any] | None = None
) -> tuple[Any, str, str]:
    """``(payload as stored, its canonical JSON text, sha256 of the text)``: the payload itself when Postgres
    can hold it as it is (nearly always: :func:`canonical_json` and the hash are then exactly what they always
    were), else its :func:`escape_json` copy. Raises :class:`Unstorable` (nested deeper than ``MAX_DEPTH``,
    more than ``max_bytes``, not JSON)."""
    stored = payload
    try:
        text = _dumps(payload, default)
        plain = "\\u0000" not in text and ESC not in text
        data = text.encode() if plain else b""
    except RecursionError:
        raise Unstorable(f"nested deeper than {MAX_DEPTH} levels") from None
    except TypeError as exc:
        raise Unstorable(f"not JSON: {exc}") from None
    except ValueError:  # NaN / Infinity, a lone surrogate (UnicodeEncodeError), a circular reference
        plain = False
    if not plain:
        stored = escape_json(payload)
        try:
            text = _dumps(stored, default)
        except (TypeError, ValueError, RecursionError) as exc:
            raise Unstorable(f"not JSON: {exc}") from None
        data = text.encode()
    if max_bytes is not None and len(data) > max_bytes:
        raise Unstorable(f"{len(data)} bytes, more than limits.max_payload_bytes ({max_bytes})")
    return stored, text, hashlib.sha256(data).hexdigest()


def _quarantine_default(value: Any) -> Any:
    """Non-JSON values in a quarantine copy: kept as their text (a quarantine row must always be written)."""
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return str(value)


def quarantine_copy(payload: Any) -> Any:
    """What a quarantine row keeps of ``payload``: the payload as it would be stored (lossless escaping), or,
    when it cannot be stored, ``{"unstorable": reason, "excerpt": …}`` with a cut, escaped excerpt."""
    if payload is None:
        return None
    try:
        return prepare_payload(payload, default=_quarantine_default)[0]
    except Unstorable as exc:
        excerpt = escape_json(payload, max_depth=12, cut=True, max_str=2000, max_items=50)
        return {"unstorable": str(exc), "excerpt": excerpt}


def storable_text(value: Any, max_len: int = 1000) -> str | None:
    """A value for a text column that Postgres always accepts: NUL and lone surrogates escaped as in stored
    payloads, cut to ``max_len`` characters (ids of quarantine rows, webhook ids)."""
    if value is None:
        return None
    text = _escape_str(str(value))
    return text if len(text) <= max_len else text[:max_len] + "…"


_NOT_PRINTABLE = re.compile("[\x00-\x08\x0b-\x1f\x7f\ud800-\udfff]")


def reason_text(reason: str, max_len: int = 2000) -> str:
    """A quarantine reason as stored: control characters and lone surrogates shown as ``\\uXXXX`` (a reason
    may quote what the payload held), cut to ``max_len`` characters."""
    text = _NOT_PRINTABLE.sub(lambda m: f"\\u{ord(m.group()):04x}", str(reason))
    return text if len(text) <= max_len else text[:max_len] + "…"


def quarantine_safely(conn: psycopg.Connection, rows: Sequence[tuple[str, Any, Any, str]]) -> list[int]:
    """``quarantine_many`` that cannot fail on what the rows hold (inside a transaction): payloads become
    their :func:`quarantine_copy`, ids and reasons storable text. Should the insert fail anyway, each row is
    retried alone, and one that still fails is kept as a marker with its reason — so a poisoned payload can
    never take its batch, page or file down with it."""
    if not rows:
        return []
    safe = [(src, storable_text(ext), quarantine_copy(p), reason_text(r)) for src, ext, p, r in rows]
    try:
        with conn.transaction():
            return quarantine_many(conn, safe)
    except Exception:
        if conn.broken or conn.closed:
            raise
        log.exception("quarantining %d rows failed: retrying them one by one", len(safe))
    ids: list[int] = []
    for src, ext, p, r in safe:
        try:
            with conn.transaction():
                ids += quarantine_many(conn, [(src, ext, p, r)])
        except Exception as exc:
            if conn.broken or conn.closed:
                raise
            marker = {"unstorable": f"the quarantine row could not be written: {type(exc).__name__}"}
            with conn.transaction():
                ids += quarantine_many(conn, [(src, ext, marker, r)])
    return ids


# text of orders: which policy each field follows
#: ids and codes: refused when they hold a control character, DEL, a lone surrogate or U+FFFD (what an
#: undecodable byte or a lone surrogate became on the way in)
_NOT_IN_IDS = re.compile("[\x00-\x1f\x7f\ud800-\udfff\ufffd]")
#: removed from free text: NUL and the other control characters except tab and newline, and DEL
_CONTROLS = re.compile("[\x00-\x08\x0b-\x1f\x7f]")
_SURROGATES = re.compile("[\ud800-\udfff]")
#: ``NormalizedOrder`` text field → kind (``limits.max_text_length`` has one limit per kind)
ORDER_TEXT = {
    "channel_code": "code",
    "external_id": "id",
    "channel_order_number": "id",
    "customer_name": "name",
    "customer_phone": "contact",
    "customer_email": "contact",
    "pickup_location_code": "code",
    "fulfilment_location_code": "code",
    "region": "address",
    "city": "address",
    "address": "address",
    "currency": "code",
}
#: kinds of free text (cleaned); the other kinds are ids and codes (refused)
FREE_TEXT = frozenset({"name", "contact", "address"})
_TEXT_AT = tuple((ORDER_FIELDS.index(f), f, kind) for f, kind in ORDER_TEXT.items())
_TOTAL_AT = ORDER_FIELDS.index("total_amount")
_SHIPPING_AT = ORDER_FIELDS.index("shipping_amount")


class IntakeRefused(ValueError):
    """A payload the text policy or the limits refuse; the message names the field."""

    def __init__(self, field_name: str, problem: str) -> None:
        super().__init__(f"{field_name}: {problem}")
        self.field = field_name


def id_problem(value: str, limit: int | None = None, *, kind: str = "id") -> str | None:
    """Why ``value`` cannot be an id or code (None: it can): a character ids never hold, or longer than
    ``limit`` (``limits.max_text_length.<kind>``)."""
    m = _NOT_IN_IDS.search(value)
    if m:
        return f"contains U+{ord(m.group()):04X} (a control, undecodable or lone surrogate character): not allowed in an {kind}"
    if limit is not None and len(value) > limit:
        return f"{len(value)} characters, more than limits.max_text_length.{kind} ({limit})"
    return None


def clean_text(value: str) -> str:
    """Free text as the OMS keeps it: a lone surrogate becomes U+FFFD; NUL and the other control characters
    except tab and newline are removed (and the text stripped again when anything was)."""
    if _SURROGATES.search(value):
        value = _SURROGATES.sub("\ufffd", value)
    if _CONTROLS.search(value):
        value = _CONTROLS.sub("", value).strip()
    return value


def apply_text_policy(order: NormalizedOrder) -> None:
    """The text policy on a validated order (in place): free text cleaned (:func:`clean_text`), ids and codes
    checked (:func:`id_problem`; :class:`IntakeRefused` naming the field). The fast path only takes orders
    whose text needs neither (``fastcheck``), so both paths give the same order."""
    for name, kind in ORDER_TEXT.items():
        value = getattr(order, name)
        if value is None:
            continue
        if kind in FREE_TEXT:
            cleaned = clean_text(value)
            if cleaned is not value:
                setattr(order, name, cleaned)
        else:
            problem = id_problem(value, kind=kind)
            if problem:
                raise IntakeRefused(name, problem)
    for i, ln in enumerate(order.lines):
        problem = id_problem(ln.sku, kind="code")
        if problem:
            raise IntakeRefused(f"lines.{i}.sku", problem)
        if ln.name is not None:
            ln.name = clean_text(ln.name)


def limits_problem(order: NormalizedOrder | ValidatedOrder, limits: IntakeLimits) -> str | None:
    """The first limit ``order`` breaks, as ``field: value, more than limits.<name> (limit)``; None when it
    keeps every limit. The same check for both paths' orders (their staging values)."""
    lengths = limits.max_text_length
    values = order.staging_values()
    for i, name, kind in _TEXT_AT:
        v = values[i]
        if v is not None:
            limit = getattr(lengths, kind)
            if len(v) > limit:
                return f"{name}: {len(v)} characters, more than limits.max_text_length.{kind} ({limit})"
    lines = order.staging_lines()
    if len(lines) > limits.max_order_lines:
        return f"lines: {len(lines)} lines, more than limits.max_order_lines ({limits.max_order_lines})"
    for i, (_, sku, qty, price, name) in enumerate(lines):
        if len(sku) > lengths.code:
            return f"lines.{i}.sku: {len(sku)} characters, more than limits.max_text_length.code ({lengths.code})"
        if qty > limits.max_line_quantity:
            return f"lines.{i}.qty: {qty} is more than limits.max_line_quantity ({limits.max_line_quantity})"
        if price > limits.max_unit_price:
            return (
                f"lines.{i}.unit_price: {price} is more than limits.max_unit_price ({limits.max_unit_price})"
            )
        if name is not None and len(name) > lengths.name:
            return f"lines.{i}.name: {len(name)} characters, more than limits.max_text_length.name ({lengths.name})"
    for i, name in ((_TOTAL_AT, "total_amount"), (_SHIPPING_AT, "shipping_amount")):
        v = values[i]
        if v is not None and v > limits.max_order_total:
            return f"{name}: {v} is more than limits.max_order_total ({limits.max_order_total})"
    return None


_LIMITS: IntakeLimits | None = None


def intake_limits() -> IntakeLimits:
    """The business configuration's ``limits`` (read once per process; the defaults when the configuration
    cannot be read — the same values as the shipped sample)."""
    global _LIMITS
    if _LIMITS is None:
        try:
            _LIMITS = load_business_config().limits
        except BusinessConfigError as exc:
            log.warning(
                "business configuration unreadable, intake limits are the defaults: %s", exc.problems[:1]
            )
            _LIMITS = IntakeLimits()
    return _LIMITS


def use_intake_limits(limits: IntakeLimits | None) -> None:
    """Use ``limits`` from now on (None: read the business configuration again on next use)."""
    global _LIMITS
    _LIMITS = limits


def _not_bool(value: Any) -> Any:
    if isinstance(value, bool):
        raise ValueError("a boolean is not a number")
    return value


#: An integer field of a channel model: pydantic's lax mode reads ``true`` as 1 (bool is an int in Python);
#: a channel that sends a boolean for a number sends garbage.
Int = Annotated[int, BeforeValidator(_not_bool)]
Float = Annotated[float, BeforeValidator(_not_bool)]


# -- results --------------------------------------------------------------------------------------------------
_COUNTS = ("rows", "accepted", "on_hold", "duplicates", "quarantined", "cancelled", "skipped")


@dataclass
class NormalizeResult:
    rows: int = 0
    accepted: int = 0
    on_hold: int = 0
    duplicates: int = 0
    quarantined: int = 0
    cancelled: int = 0
    skipped: int = 0
    order_ids: list[int] = field(default_factory=list, repr=False)

    def add(self, other: NormalizeResult) -> None:
        for name in _COUNTS:
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.order_ids.extend(other.order_ids)

    def as_dict(self) -> dict[str, int]:
        return {k: getattr(self, k) for k in _COUNTS}


@dataclass
class IngestResult:
    """One run of a channel feed: what came over the wire and what the OMS made of it."""

    channel: str
    pages: int = 0
    fetched: int = 0  # records received (duplicates inside pages included)
    new_raw: int = 0  # raw rows that were new
    rejected: int = 0  # records unusable at fetch time (no id): quarantined with the page
    cursor: dict | None = None
    normalized: NormalizeResult = field(default_factory=NormalizeResult)
    notes: list[str] = field(default_factory=list)
    #: extra figures a feed reports (e.g. the POS files read)
    extra: dict[str, Any] = field(default_factory=dict)

    def metadata(self) -> dict[str, Any]:
        return {
            "pages": self.pages,
            "fetched": self.fetched,
            "new_raw": self.new_raw,
            "rejected_at_fetch": self.rejected,
            **self.extra,
            **{f"normalized_{k}": v for k, v in self.normalized.as_dict().items()},
        }


#: Called after a page was fetched and before it is stored; tests raise in it to simulate a crash there.
PageHook = Callable[[int, list], None]


# -- discovery ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ExternalLocation:
    """A warehouse or location as the channel's account lists it (Ozon ``/v2/warehouse/list``, WB
    ``/api/v3/warehouses``, Shopify ``locations.json``). Matched onto an OMS location by name or city."""

    external_id: str
    name: str
    city: str | None = None
    address: str | None = None
    #: ``warehouse`` / ``store`` when the channel says which
    kind: str | None = None
    active: bool = True


@dataclass(frozen=True)
class ExternalListing:
    """One sellable item as the channel's account lists it. ``article`` is the seller's own article as the
    channel holds it (Ozon ``offer_id``, WB ``vendorCode``, Shopify variant ``sku``): the OMS SKU it is
    matched to; ``barcode`` is the fallback key. The id fields are those ``connectors.channel_listings``
    keeps (None where the channel has no such id)."""

    article: str | None
    barcode: str | None = None
    offer_id: str | None = None
    product_id: int | None = None
    channel_sku: int | None = None
    chrt_id: int | None = None
    variant_id: int | None = None
    inventory_item_id: int | None = None
    name: str | None = None


@dataclass
class Discovery:
    """What one discovery run read from the channel's account."""

    locations: list[ExternalLocation] = field(default_factory=list)
    listings: list[ExternalListing] = field(default_factory=list)


# -- the record -----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ChannelChecks:
    """Thresholds of the channel's Dagster checks."""

    #: the feed is stale when its last success is older than this (None: on demand, never stale)
    max_age_seconds: int | None = 15 * 60
    #: more new open quarantine rows than this in an hour is worth a look
    quarantine_per_hour: int = 50
    #: a payload queued for normalisation longer than this is stuck
    max_queue_wait_seconds: int = 15 * 60


@dataclass(frozen=True)
class AtsPush:
    """How available-to-sell reaches the channel: ``push(client, items, result)`` returns one
    ``(item, status, verified, error)`` per item; ``max_items`` caps the values sent per run (APIs that
    take one call per value)."""

    push: Callable[..., list]
    max_items: int | None = None
    #: the API accepts a value for the same key at most once per this many seconds (Ozon: 30 s per offer and
    #: warehouse): a newer value waits until the window opens instead of being sent and refused
    key_interval_s: float | None = None


@dataclass(frozen=True)
class Channel:
    """One sales channel, declared once in its own module (see the module docstring)."""

    #: the channel code in ``oms.channels`` / the business configuration
    code: str
    title: str
    #: the external system holding the channel's settings and client (``shopify`` for the web store)
    system: str | None
    #: settings field → environment variable (``base_url`` for HTTP APIs, ``drop_dir`` for file drops)
    env: Mapping[str, str] = field(default_factory=dict)
    #: secret settings (shown masked in the Dagster UI)
    secrets: frozenset[str] = frozenset()
    #: builds the client from the system's endpoint: ``client(endpoint, **client_kw)`` (has ``close()``)
    client: Callable[..., Any] | None = None
    #: polls the feed: ``poll(conn, client)`` → IngestResult (stores raw pages, normalises)
    poll: Callable[..., IngestResult] | None = None
    #: how the feed runs, for the Dagster asset's description
    feed: str = ""
    #: the pydantic mapper: the definition of a valid payload and the source of every quarantine reason
    mapper: Mapper | None = None
    #: the exact fast path for plain payloads (optional)
    fast_mapper: FastMapper | None = None
    ats: AtsPush | None = None
    #: ``push_status(conn, client, outbox payload)`` → (outcome, note, result); None: no status call
    push_status: Callable[..., tuple[str, str | None, Any]] | None = None
    #: quarantine sources this channel's payloads may carry (the channel code, and e.g. ``pos``)
    quarantine_sources: tuple[str, ...] = ()
    checks: ChannelChecks = field(default_factory=ChannelChecks)
    #: cron of the safety-net poll (None: event-driven only, e.g. a sensor)
    poll_cron: str | None = "* * * * *"
    #: a catalog product (the simulated world's manifest) → its listing on the channel ``(offer_id,
    #: product_id, channel_sku, chrt_id, variant_id, inventory_item_id, barcode)``; None: not listed
    listing: Callable[[Mapping[str, Any]], tuple | None] | None = None
    #: the key of a network location (the simulated world's manifest) holding the channel's id for it
    network_key: str | None = None
    #: the cursor a fresh feed starts from, given the first moment to read: ``(name, value)``
    start_cursor: Callable[[datetime], tuple[str, dict]] | None = None
    #: the sales orders placed at the till are handed over at once (the customer leaves with the goods)
    instant_handover: bool = False
    #: a feed of files dropped into a folder (``drop_dir``): the glob of its files, watched by a sensor
    drop_pattern: str | None = None
    #: customers' return requests: ``returns_feed(conn, client)`` → ``([(request id, payload)], cursor)`` and
    #: ``map_return(payload)`` → an object with ``request_id``, ``order_external_id``, ``lines`` ((sku, qty,
    #: reason code, note)…), ``exchange``, ``note`` (``ValueError`` naming what is wrong)
    returns_feed: Callable[..., tuple[list, Any]] | None = None
    map_return: Callable[[Any], Any] | None = None
    #: reads the account's warehouses/locations and listings through the channel's own endpoints:
    #: ``discover(client)`` → ``Discovery`` (``services.discovery`` stores and matches them)
    discover: Callable[[Any], Discovery] | None = None

    @property
    def sources(self) -> tuple[str, ...]:
        return self.quarantine_sources or (self.code,)

    @property
    def asset_name(self) -> str:
        return f"{self.code}_orders"
