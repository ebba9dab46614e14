"""Ship what is reserved, order by order: the per-order path (the baseline of ``bench/fulfilment.py``).

Each step is idempotent — it decides *which* orders to move and leaves *how* to the domain: a repeated run
finds nothing left to do.

``ship_allocated`` stands in for the warehouse floor in the simulated world: there is no WMS pick/pack feed, so
reserved units are recorded as picked in full, packed as one parcel and shipped with the carrier and tariff
the allocation decision chose (``self`` where the customer collects at the location). Offline (till) sales are
handed over at once. With a real WMS, replace this step by the WMS's pick/pack confirmations.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

import psycopg

from oms_ops import fulfillment
from oms_ops.allocation import latest_decision
from oms_ops.channels import registry
from oms_ops.errors import OmsError

log = logging.getLogger("oms.services.operations")
#: channels whose orders are handed over at the moment of the sale (the customer leaves with the goods)
INSTANT_HANDOVER_CHANNELS = tuple(c.code for c in registry.CHANNELS if c.instant_handover)


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
