"""The operational steps the pipelines run between the connectors: allocate, ship, returns, health numbers.

Each step is a thin, idempotent loop over the core operations (A's and B's) — it decides *which* orders to
move and leaves *how* to ``oms_ops``: a repeated run finds nothing left to do.

``ship_allocated`` stands in for the warehouse floor in the simulated world: there is no WMS pick/pack feed, so
reserved units are recorded as picked in full, packed as one parcel and shipped with the carrier and tariff
the allocation decision chose (``self`` where the customer collects at the location). Offline (till) sales are
handed over at once. With a real WMS, replace this step by the WMS's pick/pack confirmations.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import psycopg

from oms_ops import fulfillment
from oms_ops.allocation import allocate_backorders, allocate_batch, expire_reservations, latest_decision
from oms_ops.business_config import BusinessConfig
from oms_ops.errors import OmsError
from oms_ops.orders import release_resolved_unknown_sku_holds

log = logging.getLogger("oms.connectors.flow")
#: channels whose orders are handed over at the moment of the sale (the customer leaves with the goods)
INSTANT_HANDOVER_CHANNELS = ("offline",)
OPEN_ORDER_STATES = ("new", "on_hold", "backordered", "partially_allocated", "allocated", "picking", "packed")


@dataclass
class AllocateResult:
    expired: int = 0
    released_holds: int = 0
    allocated: int = 0
    partially_allocated: int = 0
    backordered: int = 0
    from_backorders: int = 0

    def metadata(self) -> dict:
        return dict(self.__dict__)


def allocate(
    conn: psycopg.Connection, config: BusinessConfig, *, now: datetime | None = None, actor: str = "allocator"
) -> AllocateResult:
    """Expire unpaid reservations, release holds whose SKUs now exist, allocate new orders, then backorders."""
    res = AllocateResult()
    res.expired = expire_reservations(conn, now=now)
    res.released_holds = len(release_resolved_unknown_sku_holds(conn, actor=actor))
    a = allocate_batch(conn, config=config, actor=actor, now=now)
    res.allocated, res.partially_allocated, res.backordered = (
        len(a.allocated),
        len(a.partially_allocated),
        len(a.backordered),
    )
    b = allocate_backorders(conn, config=config, actor=actor, now=now)
    res.from_backorders = len(b.allocated) + len(b.partially_allocated)
    return res


@dataclass
class ShipResult:
    shipments: int = 0
    handovers: int = 0
    errors: list[str] = field(default_factory=list)

    def metadata(self) -> dict:
        return {"shipments": self.shipments, "handovers": self.handovers, "errors": len(self.errors)}


def ship_allocated(
    conn: psycopg.Connection,
    *,
    limit: int = 500,
    actor: str = "fulfilment",
    instant_handover_channels: Sequence[str] = INSTANT_HANDOVER_CHANNELS,
) -> ShipResult:
    """Pick, pack and ship what is reserved for allocated orders (one order/location per transaction)."""
    res = ShipResult()
    work = conn.execute(
        """SELECT DISTINCT o.order_id, r.location_code, o.channel_code, o.placed_at
           FROM oms.orders o JOIN oms.reservations r ON r.order_id = o.order_id AND r.state = 'active'
           WHERE o.state IN ('allocated', 'partially_allocated', 'picking', 'packed')
           ORDER BY o.placed_at, o.order_id, r.location_code LIMIT %s""",
        (limit,),
    ).fetchall()
    for order_id, location, channel, _ in work:
        decision = latest_decision(conn, order_id) or {}
        plan = next((s for s in decision.get("shipments") or [] if s.get("location") == location), {})
        handover = bool(plan.get("handover"))
        carrier = fulfillment.SELF_CARRIER if handover else (plan.get("carrier") or "cdek")
        try:
            fulfillment.record_pick(conn, order_id, location, actor=actor)
            fulfillment.pack(conn, order_id, location, actor=actor)
            shipment = fulfillment.create_shipment(
                conn, order_id, location, carrier_code=carrier, actor=actor, service_code=plan.get("tariff")
            )
        except OmsError as exc:
            res.errors.append(f"order {order_id} at {location}: {exc}")
            log.warning("ship_allocated: order %s at %s: %s", order_id, location, exc)
            continue
        res.shipments += shipment.created
        if handover and shipment.created:
            fulfillment.mark_ready_for_pickup(conn, [shipment.shipment_id], actor=actor)
            if channel in instant_handover_channels:
                fulfillment.mark_picked_up(conn, [shipment.shipment_id], actor=actor)
            res.handovers += 1
    return res


@dataclass
class ReturnsResult:
    refunded: int = 0
    refund_ids: list[int] = field(default_factory=list)


def refund_inspected_returns(
    conn: psycopg.Connection, *, actor: str = "returns", limit: int = 500
) -> ReturnsResult:
    """Refund and close every inspected refund-kind return (the refund goes out through the outbox)."""
    from oms_ops.returns import refund_return

    res = ReturnsResult()
    rows = conn.execute(
        "SELECT return_id FROM oms.returns WHERE state = 'inspected' AND kind = 'refund' ORDER BY return_id LIMIT %s",
        (limit,),
    ).fetchall()
    for (rid,) in rows:
        refund_id = refund_return(conn, rid, actor=actor)
        res.refunded += 1
        if refund_id:
            res.refund_ids.append(refund_id)
    return res


# -- health numbers for the asset checks ------------------------------------------------------------------------
def orders_past_sla(
    conn: psycopg.Connection, config: BusinessConfig, *, now: datetime | None = None, sample: int = 10
) -> dict:
    """Open (not yet shipped) orders whose ship-by deadline has passed: the allocation decision's ``ship_by``,
    or placed_at + the SLA's ship-by hours for orders without a decision."""
    now = now or datetime.now(UTC)
    combos = [(c.code, m) for c in config.channels for m in ("courier", "pickup_point", "store_pickup")]
    hours = [config.sla_for(c, m).ship_by_hours for c, m in combos]
    rows = conn.execute(
        """WITH sla AS (SELECT * FROM unnest(%s::text[], %s::text[], %s::float8[]) AS t(channel, method, hours)),
                open AS (
                    SELECT o.order_id, o.order_number, o.state, o.channel_code,
                           coalesce((SELECT d.ship_by FROM oms.allocation_decisions d WHERE d.order_id = o.order_id
                                     ORDER BY d.decision_id DESC LIMIT 1),
                                    o.placed_at + make_interval(secs => sla.hours * 3600)) AS ship_by
                    FROM oms.orders o LEFT JOIN sla ON sla.channel = o.channel_code AND sla.method = o.delivery_method
                    WHERE o.state = ANY(%s))
           SELECT order_id, order_number, state, channel_code, ship_by FROM open WHERE ship_by < %s
           ORDER BY ship_by""",
        ([c for c, _ in combos], [m for _, m in combos], hours, list(OPEN_ORDER_STATES), now),
    ).fetchall()
    by_state: dict[str, int] = {}
    by_channel: dict[str, int] = {}
    for _, _, state, channel, _ in rows:
        by_state[state] = by_state.get(state, 0) + 1
        by_channel[channel] = by_channel.get(channel, 0) + 1
    return {
        "count": len(rows),
        "by_state": by_state,
        "by_channel": by_channel,
        "oldest": [{"order": r[1], "state": r[2], "ship_by": r[4].isoformat()} for r in rows[:sample]],
    }


def quarantine_growth(conn: psycopg.Connection, source: str, *, window_minutes: int = 60) -> dict:
    """Open quarantine rows of a source: total and new within the window."""
    total, recent = conn.execute(
        """SELECT count(*), count(*) FILTER (WHERE received_at > now() - make_interval(mins => %s))
           FROM raw.quarantine WHERE state = 'open' AND source = %s""",
        (window_minutes, source),
    ).fetchone()
    return {"open": total, f"new_last_{window_minutes}_min": recent}


def normalisation_backlog(conn: psycopg.Connection, channel: str) -> dict:
    """Payloads of a channel waiting in the normaliser's queue (``raw.pending_orders``): how many, and how
    long the oldest has waited. A queue that only grows means the normaliser keeps failing on a batch."""
    queued, oldest = conn.execute(
        """SELECT count(*), extract(epoch FROM now() - min(r.received_at))
           FROM raw.pending_orders p JOIN raw.channel_orders r USING (raw_id) WHERE p.channel_code = %s""",
        (channel,),
    ).fetchone()
    return {"queued": queued, "oldest_wait_seconds": float(oldest) if oldest is not None else 0.0}


def feed_freshness(conn: psycopg.Connection, feed: str) -> dict:
    row = conn.execute(
        """SELECT last_success_at, extract(epoch FROM now() - last_success_at), last_error_at, last_error
           FROM connectors.feed_status WHERE feed = %s""",
        (feed,),
    ).fetchone()
    if row is None:
        return {"last_success_at": None, "age_seconds": None, "last_error": None}
    return {
        "last_success_at": row[0].isoformat() if row[0] else None,
        "age_seconds": float(row[1]) if row[1] is not None else None,
        "last_error_at": row[2].isoformat() if row[2] else None,
        "last_error": row[3],
    }
