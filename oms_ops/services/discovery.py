"""Channel discovery: read each channel account's warehouses and listings through its own endpoints, map them
onto OMS locations and SKUs, and keep the mapping reviewable.

Why: a real deployment starts with an Ozon, Wildberries or Shopify account whose warehouse ids, product ids,
size ids (WB ``chrtId``) and inventory items the seller has never typed anywhere. Asking for them in a config
file is where connectors go wrong on day one. So on first contact (and on demand) the OMS asks the channel:

* locations (``Channel.discover`` → ``Discovery.locations``) match an OMS warehouse or store, in this order:
  an operator's decision (never overridden), the exact name, one of the location's ``external_names`` in the
  business configuration, a similar name (one contains the other, a single candidate), the same city (a single
  candidate of the same kind). Two channel warehouses never map to one OMS location; what does not match stays
  unmapped with the reason and is listed on the Operations page, where ops map it.
* listings match an OMS SKU by the seller's article as the channel holds it (Ozon ``offer_id``, WB
  ``vendorCode``, Shopify variant ``sku``), else by barcode; an item that matches nothing is listed for ops.

Every mapped row is written to ``connectors.channel_locations`` / ``connectors.channel_listings``, the tables
the order mappers and the ATS push read; so a fresh database needs no ids from anywhere but the channel.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import psycopg

from oms_ops.business_config import BusinessConfig
from oms_ops.channels import registry
from oms_ops.channels.base import Channel, Discovery, ExternalListing, ExternalLocation
from oms_ops.connectors.config import NotConfigured
from oms_ops.services.clients import Clients

#: OMS location kinds a channel warehouse can stand for (pickup points hold no stock)
_STOCK_KINDS = ("warehouse", "store")


@dataclass
class DiscoveryReport:
    channel: str
    locations: int = 0
    locations_mapped: int = 0
    listings: int = 0
    listings_matched: int = 0
    unmapped: list[str] = field(default_factory=list)
    unmatched: list[str] = field(default_factory=list)
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "locations": self.locations,
            "locations_mapped": self.locations_mapped,
            "listings": self.listings,
            "listings_matched": self.listings_matched,
            "unmapped": self.unmapped[:20],
            "unmatched": len(self.unmatched),
            **({"error": self.error} if self.error else {}),
        }


def _norm(text: str | None) -> str:
    t = (text or "").casefold().replace("ё", "е")
    t = re.sub(r"[\"'«»().,]", " ", t)
    return " ".join(t.split())


def item_key(item: ExternalListing) -> str:
    """The channel's own key of a sellable item: the stock key where the channel has one."""
    for v in (item.chrt_id, item.inventory_item_id, item.variant_id, item.channel_sku):
        if v is not None:
            return str(v)
    if item.offer_id:
        return item.offer_id
    if item.article:
        return item.article
    raise ValueError("a discovered item has no id and no article")


# -- matching ---------------------------------------------------------------------------------------------
def _match_location(
    loc: ExternalLocation, oms: list[dict], external_names: dict[str, list[str]], taken: set[str]
) -> tuple[str | None, str | None, str | None]:
    """(location_code, rule, note) for one channel location; ``taken`` are codes mapped already."""
    free = [o for o in oms if o["code"] not in taken]
    if loc.kind in _STOCK_KINDS:
        free = [o for o in free if o["kind"] == loc.kind]
    name = _norm(loc.name)
    for rule, pick in (
        ("name", lambda o: _norm(o["name"]) == name),
        ("external_name", lambda o: name in {_norm(n) for n in external_names.get(o["code"], [])}),
    ):
        hits = [o for o in free if pick(o)]
        if len(hits) == 1:
            return hits[0]["code"], rule, None
    similar = [o for o in free if name and (name in _norm(o["name"]) or _norm(o["name"]) in name)]
    if len(similar) == 1:
        return similar[0]["code"], "similar_name", None
    if loc.city:
        city = [o for o in free if _norm(o["city"]) == _norm(loc.city)]
        if len(city) == 1:
            return city[0]["code"], "city", None
        if len(city) > 1:
            return (
                None,
                None,
                "several OMS locations in " + loc.city + ": " + ", ".join(o["code"] for o in city),
            )
    if len(similar) > 1:
        return (
            None,
            None,
            "several OMS locations have a similar name: " + ", ".join(o["code"] for o in similar),
        )
    return None, None, "no OMS warehouse or store with this name" + (f" or in {loc.city}" if loc.city else "")


def _oms_locations(conn: psycopg.Connection) -> list[dict]:
    rows = conn.execute(
        "SELECT location_code, name, kind, city FROM oms.locations WHERE active AND kind = ANY(%s)",
        (list(_STOCK_KINDS),),
    ).fetchall()
    return [{"code": r[0], "name": r[1], "kind": r[2], "city": r[3]} for r in rows]


# -- one channel -----------------------------------------------------------------------------------------
def discover(
    conn: psycopg.Connection, channel: Channel, client: Any, config: BusinessConfig | None = None
) -> DiscoveryReport:
    """Read ``channel``'s account through ``client``, store what it lists, map it and apply the mapping."""
    if channel.discover is None:
        raise ValueError(f"channel {channel.code} has no discovery")
    rep = DiscoveryReport(channel.code)
    run_id = conn.execute(
        "INSERT INTO connectors.discovery_runs (channel_code) VALUES (%s) RETURNING run_id", (channel.code,)
    ).fetchone()[0]
    try:
        found: Discovery = channel.discover(client)
    except Exception as exc:  # a failed read changes no mapping; the run row says why
        rep.error = f"{type(exc).__name__}: {exc}"
        conn.execute(
            "UPDATE connectors.discovery_runs SET finished_at = now(), error = %s WHERE run_id = %s",
            (rep.error[:2000], run_id),
        )
        return rep
    external_names = {loc.code: list(loc.external_names) for loc in (config.locations if config else [])}
    with conn.transaction():
        _store_locations(conn, channel.code, found.locations, external_names, rep)
        _store_listings(conn, channel.code, found.listings, rep)
        conn.execute(
            """UPDATE connectors.discovery_runs SET finished_at = now(), locations = %s, locations_mapped = %s,
                      listings = %s, listings_matched = %s WHERE run_id = %s""",
            (rep.locations, rep.locations_mapped, rep.listings, rep.listings_matched, run_id),
        )
    return rep


def _store_locations(
    conn: psycopg.Connection,
    system: str,
    locations: list[ExternalLocation],
    external_names: dict[str, list[str]],
    rep: DiscoveryReport,
) -> None:
    seen = {}
    for loc in locations:
        seen[str(loc.external_id)] = loc
    rep.locations = len(seen)
    with conn.cursor() as cur:
        cur.executemany(
            """INSERT INTO connectors.discovered_locations (system, external_id, name, city, address, kind, listed)
               VALUES (%s, %s, %s, %s, %s, %s, %s)
               ON CONFLICT (system, external_id) DO UPDATE SET name = excluded.name, city = excluded.city,
                   address = excluded.address, kind = excluded.kind, listed = excluded.listed, last_seen = now()""",
            [(system, k, v.name, v.city, v.address, v.kind, v.active) for k, v in seen.items()],
        )
        cur.execute(
            """UPDATE connectors.discovered_locations SET listed = false
               WHERE system = %s AND listed AND NOT (external_id = ANY(%s))""",
            (system, list(seen)),
        )
        rows = cur.execute(
            """SELECT external_id, location_code, reviewed_at IS NOT NULL, listed
               FROM connectors.discovered_locations WHERE system = %s ORDER BY external_id""",
            (system,),
        ).fetchall()
    reviewed = {r[0]: r[1] for r in rows if r[2]}
    taken = {code for code in reviewed.values() if code}
    oms = _oms_locations(conn)
    decisions: dict[str, tuple[str | None, str | None, str | None]] = {}
    for ext, _code, was_reviewed, listed in rows:
        if was_reviewed or not listed or ext not in seen:
            continue
        code, rule, note = _match_location(seen[ext], oms, external_names, taken)
        if code:
            taken.add(code)
        decisions[ext] = (code, rule, note)
    with conn.cursor() as cur:
        cur.executemany(
            """UPDATE connectors.discovered_locations SET location_code = %s, match_rule = %s, note = %s
               WHERE system = %s AND external_id = %s""",
            [(code, rule, note, system, ext) for ext, (code, rule, note) in decisions.items()],
        )
        mapped = {ext: code for ext, (code, _r, _n) in decisions.items() if code}
        mapped.update({ext: code for ext, code in reviewed.items() if code and ext in seen})
        # the connectors' table follows the decisions: unmapped ids leave it, mapped ones are (re)written
        cur.execute(
            "DELETE FROM connectors.channel_locations WHERE system = %s AND NOT (external_id = ANY(%s))",
            (system, list(mapped)),
        )
        cur.execute(
            "DELETE FROM connectors.channel_locations WHERE system = %s AND NOT (location_code = ANY(%s))",
            (system, list(mapped.values())),
        )
        cur.executemany(
            """INSERT INTO connectors.channel_locations (system, location_code, external_id) VALUES (%s, %s, %s)
               ON CONFLICT (system, location_code) DO UPDATE SET external_id = excluded.external_id,
                   active = true, updated_at = now()""",
            [(system, code, ext) for ext, code in mapped.items()],
        )
    rep.locations_mapped = len(mapped)
    rep.unmapped = [
        f"{seen[ext].name} ({ext}): {note}" for ext, (code, _r, note) in decisions.items() if code is None
    ]


def _store_listings(
    conn: psycopg.Connection, channel_code: str, listings: list[ExternalListing], rep: DiscoveryReport
) -> None:
    items: dict[str, ExternalListing] = {}
    for it in listings:
        items[item_key(it)] = it
    rep.listings = len(items)
    with conn.cursor() as cur:
        cur.executemany(
            """INSERT INTO connectors.discovered_listings (channel_code, item_key, article, barcode, name,
                   offer_id, product_id, channel_sku, chrt_id, variant_id, inventory_item_id, listed)
               VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, true)
               ON CONFLICT (channel_code, item_key) DO UPDATE SET article = excluded.article,
                   barcode = excluded.barcode, name = excluded.name, offer_id = excluded.offer_id,
                   product_id = excluded.product_id, channel_sku = excluded.channel_sku,
                   chrt_id = excluded.chrt_id, variant_id = excluded.variant_id,
                   inventory_item_id = excluded.inventory_item_id, listed = true, last_seen = now()""",
            [
                (
                    channel_code, k, it.article, it.barcode, it.name, it.offer_id, it.product_id,
                    it.channel_sku, it.chrt_id, it.variant_id, it.inventory_item_id,
                )
                for k, it in items.items()
            ],
        )  # fmt: skip
        cur.execute(
            """UPDATE connectors.discovered_listings SET listed = false
               WHERE channel_code = %s AND listed AND NOT (item_key = ANY(%s))""",
            (channel_code, list(items)),
        )
        # automatic matches: the article first, the barcode when the article names no SKU; an operator's
        # decision stays; a SKU matched by two items goes to neither (ops decide)
        cur.execute(
            """WITH m AS (
                 SELECT d.item_key,
                        coalesce(pa.sku, pb.sku) AS sku,
                        CASE WHEN pa.sku IS NOT NULL THEN 'article' WHEN pb.sku IS NOT NULL THEN 'barcode' END
                          AS rule
                   FROM connectors.discovered_listings d
                   LEFT JOIN oms.products pa ON pa.sku = d.article
                   LEFT JOIN LATERAL (SELECT p.sku FROM oms.products p
                                       WHERE d.barcode IS NOT NULL AND p.barcode = d.barcode
                                       ORDER BY p.sku LIMIT 1) pb ON pa.sku IS NULL
                  WHERE d.channel_code = %(ch)s AND d.listed AND d.reviewed_at IS NULL),
               taken AS (SELECT sku FROM connectors.discovered_listings
                          WHERE channel_code = %(ch)s AND reviewed_at IS NOT NULL AND sku IS NOT NULL AND listed),
               dup AS (SELECT sku FROM m WHERE sku IS NOT NULL GROUP BY sku HAVING count(*) > 1)
             UPDATE connectors.discovered_listings d
                SET sku = CASE WHEN m.sku IN (SELECT sku FROM dup) OR m.sku IN (SELECT sku FROM taken)
                               THEN NULL ELSE m.sku END,
                    match_rule = CASE WHEN m.sku IN (SELECT sku FROM dup) OR m.sku IN (SELECT sku FROM taken)
                                      THEN NULL ELSE m.rule END,
                    note = CASE WHEN m.sku IS NULL THEN 'no SKU with this article or barcode'
                                WHEN m.sku IN (SELECT sku FROM taken) THEN 'SKU ' || m.sku || ' is mapped by an operator'
                                WHEN m.sku IN (SELECT sku FROM dup) THEN 'several items match SKU ' || m.sku END
               FROM m
              WHERE d.channel_code = %(ch)s AND d.item_key = m.item_key""",
            {"ch": channel_code},
        )
        # the connectors' table follows: matched items (re)written, SKUs no longer matched removed
        cur.execute(
            """DELETE FROM connectors.channel_listings c
                WHERE c.channel_code = %(ch)s
                  AND NOT EXISTS (SELECT 1 FROM connectors.discovered_listings d
                                   WHERE d.channel_code = c.channel_code AND d.sku = c.sku AND d.listed)""",
            {"ch": channel_code},
        )
        cur.execute(
            """INSERT INTO connectors.channel_listings (channel_code, sku, offer_id, product_id, channel_sku,
                       chrt_id, variant_id, inventory_item_id, barcode)
               SELECT channel_code, sku, offer_id, product_id, channel_sku, chrt_id, variant_id,
                      inventory_item_id, barcode
                 FROM connectors.discovered_listings
                WHERE channel_code = %(ch)s AND sku IS NOT NULL AND listed
               ON CONFLICT (channel_code, sku) DO UPDATE SET offer_id = excluded.offer_id,
                   product_id = excluded.product_id, channel_sku = excluded.channel_sku,
                   chrt_id = excluded.chrt_id, variant_id = excluded.variant_id,
                   inventory_item_id = excluded.inventory_item_id, barcode = excluded.barcode, active = true,
                   updated_at = now()""",
            {"ch": channel_code},
        )
        rows = cur.execute(
            """SELECT item_key, sku FROM connectors.discovered_listings
                WHERE channel_code = %s AND listed ORDER BY item_key""",
            (channel_code,),
        ).fetchall()
    rep.listings_matched = sum(1 for _k, sku in rows if sku)
    rep.unmatched = [k for k, sku in rows if not sku]


# -- every channel ---------------------------------------------------------------------------------------
def discovered(conn: psycopg.Connection, channel_code: str) -> bool:
    """True once a discovery run of the channel has finished without error."""
    return (
        conn.execute(
            """SELECT 1 FROM connectors.discovery_runs
                WHERE channel_code = %s AND finished_at IS NOT NULL AND error IS NULL LIMIT 1""",
            (channel_code,),
        ).fetchone()
        is not None
    )


def discover_all(
    conn: psycopg.Connection,
    clients: Clients,
    config: BusinessConfig | None = None,
    *,
    only_new: bool = False,
    only: list[str] | None = None,
) -> dict[str, DiscoveryReport | str]:
    """Run discovery for every configured channel that has it (``only_new``: those never discovered yet;
    ``only``: these channel codes). Returns per channel its report, or why it was skipped."""
    out: dict[str, DiscoveryReport | str] = {}
    if only:
        unknown = sorted(set(only) - {c.code for c in registry.CHANNELS if c.discover is not None})
        if unknown:
            raise ValueError(f"no channel with discovery: {', '.join(unknown)}")
    for channel in registry.CHANNELS:
        if channel.discover is None or channel.system is None or (only and channel.code not in only):
            continue
        if only_new and discovered(conn, channel.code):
            out[channel.code] = "discovered before"
            continue
        try:
            client = clients.get(channel.system)
        except NotConfigured as exc:
            out[channel.code] = f"not configured: {exc}"
            continue
        out[channel.code] = discover(conn, channel, client, config)
    return out


# -- review (Operations → Channel mappings) ------------------------------------------------------------------
def map_location(
    conn: psycopg.Connection, system: str, external_id: str, location_code: str | None, actor: str
) -> str:
    """An operator maps (or, with None, unmaps) a channel location; later discovery runs keep it."""
    conn.execute(
        "SELECT connectors.map_discovered_location(%s, %s, %s, %s)",
        (system, external_id, location_code, actor),
    )
    return f"{system} {external_id} → {location_code or 'unmapped'}"


def map_listing(conn: psycopg.Connection, channel_code: str, key: str, sku: str | None, actor: str) -> str:
    """An operator matches (or, with None, unmatches) a channel item to an OMS SKU; later runs keep it."""
    conn.execute("SELECT connectors.map_discovered_listing(%s, %s, %s, %s)", (channel_code, key, sku, actor))
    return f"{channel_code} item {key} → {sku or 'unmatched'}"


def location_mappings(conn: psycopg.Connection) -> list[dict[str, Any]]:
    """Every discovered channel location with its mapping, unmapped first."""
    cur = conn.execute(
        """SELECT system AS channel, external_id, name, city, location_code, match_rule, note, listed,
                  reviewed_by, reviewed_at, last_seen
             FROM connectors.discovered_locations
            ORDER BY (location_code IS NULL AND listed) DESC, system, name"""
    )
    cols = [d.name for d in cur.description]
    return [dict(zip(cols, r, strict=True)) for r in cur.fetchall()]


def listing_mappings(
    conn: psycopg.Connection, *, unmatched_only: bool = False, limit: int = 500
) -> list[dict[str, Any]]:
    """Discovered channel items with their SKU (unmatched first)."""
    cur = conn.execute(
        """SELECT channel_code AS channel, item_key, article, barcode, name, sku, match_rule, note, listed,
                  reviewed_by, reviewed_at
             FROM connectors.discovered_listings
            WHERE NOT %s OR (sku IS NULL AND listed)
            ORDER BY (sku IS NULL AND listed) DESC, channel_code, article NULLS LAST, item_key
            LIMIT %s""",
        (unmatched_only, limit),
    )
    cols = [d.name for d in cur.description]
    return [dict(zip(cols, r, strict=True)) for r in cur.fetchall()]


def last_runs(conn: psycopg.Connection) -> list[dict[str, Any]]:
    """The last discovery run per channel."""
    cur = conn.execute(
        """SELECT DISTINCT ON (channel_code) channel_code AS channel, started_at, finished_at, locations,
                  locations_mapped, listings, listings_matched, error
             FROM connectors.discovery_runs ORDER BY channel_code, started_at DESC"""
    )
    cols = [d.name for d in cur.description]
    return [dict(zip(cols, r, strict=True)) for r in cur.fetchall()]
