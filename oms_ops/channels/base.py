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
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import psycopg
from pydantic import ValidationError

from oms_ops.orders import ValidatedOrder


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
