"""The read model of operations: one function per operational figure, each a ``SELECT`` from its view.

Every figure has ONE definition — a dbt view in the Postgres schema ``ops`` (``dbt/models/ops/``, described in
docs/analytics.md) — and every reader goes through this module: the Operations and Lookup pages, the ATS
pushers and the Dagster checks. Nothing here computes a figure; the functions only filter, order and shape
what the views say, so a page and a check can never disagree about what "at risk" or "available" means.

The views are created at start-up (``oms_ops.analytics.dbt.build_ops_views`` after the migrations) and
rebuilt by the Dagster asset ``ops_dbt_views``; they live in schema ``ops`` (the dbt profile's default
``OMS_PG_SCHEMA``). Values travel as placeholders only. Connections are
autocommit (one statement = one snapshot); rows are plain ``dict``s (or small frozen dataclasses) that
pickle, so pages can cache them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row


def _rows(conn: psycopg.Connection, query: str, params: Any = None) -> list[dict[str, Any]]:
    return conn.cursor(row_factory=dict_row).execute(query, params).fetchall()


def _float(value: Any) -> float | None:
    return None if value is None else float(value)


# -- available to sell --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AtsTarget:
    """One value an ATS pusher sends: the channel's stock of ``sku`` at ``location`` (``qty`` = ATS) and the
    ids the channel's API keys it by (same fields, in the same order, as the pushers' ``AtsItem``)."""

    channel: str
    location: str
    sku: str
    qty: int
    external_location: str
    offer_id: str | None = None
    product_id: int | None = None
    chrt_id: int | None = None
    inventory_item_id: int | None = None


def ats_targets(conn: psycopg.Connection, channel: str) -> list[AtsTarget]:
    """Every ATS value of ``channel`` (view ``ops_ats_targets``): each active listing at each location of the
    channel's ATS pool that the channel knows, by location and SKU."""
    rows = conn.execute(
        """SELECT channel_code, location_code, sku, ats, external_location, offer_id, product_id, chrt_id,
                  inventory_item_id
           FROM ops.ops_ats_targets WHERE channel_code = %s ORDER BY location_code, sku""",
        (channel,),
    ).fetchall()
    return [AtsTarget(*r) for r in rows]


def availability(
    conn: psycopg.Connection,
    *,
    channel: str | None = None,
    location: str | None = None,
    sku: str | None = None,
) -> list[dict[str, Any]]:
    """ATS per channel × location × SKU with its parts (view ``ops_stock_availability``): ``{channel_code,
    location_code, location_kind, sku, sku_class, on_hand, reserved, available, safety_stock, ats}``."""
    return _rows(
        conn,
        """SELECT channel_code, location_code, location_kind, sku, sku_class, on_hand, reserved, available,
                  safety_stock, ats
           FROM ops.ops_stock_availability
           WHERE (%(channel)s::text IS NULL OR channel_code = %(channel)s)
             AND (%(location)s::text IS NULL OR location_code = %(location)s)
             AND (%(sku)s::text IS NULL OR sku = %(sku)s)
           ORDER BY channel_code, location_code, sku""",
        {"channel": channel, "location": location, "sku": sku},
    )


def ats_by_channel(conn: psycopg.Connection) -> list[dict[str, Any]]:
    """ATS per channel and SKU, summed over the channel's pool (view ``ops_ats_by_channel``): ``{channel_code,
    sku, on_hand, reserved, safety_stock, ats, locations}``."""
    return _rows(
        conn,
        """SELECT channel_code, sku, on_hand, reserved, safety_stock, ats, locations
           FROM ops.ops_ats_by_channel ORDER BY sku, channel_code""",
    )


# -- backlog and risk ----------------------------------------------------------------------------------------


def backlog(conn: psycopg.Connection, *, channel: str | None = None) -> list[dict[str, Any]]:
    """Open orders by state and age bucket (view ``ops_backlog_by_state``), summed over channels unless one
    is given: ``{order_status, is_awaiting_shipment, age_bucket_rank, age_bucket, orders, open_units,
    oldest_placed_at}``, by state then age."""
    return _rows(
        conn,
        """SELECT order_status, bool_and(is_awaiting_shipment) AS is_awaiting_shipment, age_bucket_rank,
                  min(age_bucket) AS age_bucket, sum(orders)::int AS orders, sum(open_units)::int AS open_units,
                  min(oldest_placed_at) AS oldest_placed_at
           FROM ops.ops_backlog_by_state
           WHERE %(channel)s::text IS NULL OR channel_code = %(channel)s
           GROUP BY order_status, age_bucket_rank
           ORDER BY order_status, age_bucket_rank""",
        {"channel": channel},
    )


def at_risk_hours(conn: psycopg.Connection) -> float:
    """How close a deadline makes an order "at risk" (view ``ops_thresholds``, dbt var ``at_risk_hours``)."""
    return float(conn.execute("SELECT at_risk_hours FROM ops.ops_thresholds").fetchone()[0])


def orders_at_risk(
    conn: psycopg.Connection, *, risks: Sequence[str] | None = None, limit: int = 200
) -> list[dict[str, Any]]:
    """Open orders at risk of missing their ship-by or promise, most urgent first (view
    ``ops_orders_at_risk``; ``risks`` filters by reason): ``{order_id, order_number, channel_code,
    delivery_method, order_status, risk, deadline_at, hours_left, placed_at, ship_by_at, promise_date,
    locations, hold_reason, decision_reason}`` — ``hours_left`` is negative once the deadline passed."""
    rows = _rows(
        conn,
        """SELECT order_id, order_number, channel_code, delivery_method, order_status, risk, deadline_at,
                  hours_left, placed_at, ship_by_at, promise_date, locations, hold_reason, decision_reason
           FROM ops.ops_orders_at_risk
           WHERE %(risks)s::text[] IS NULL OR risk = ANY(%(risks)s::text[])
           ORDER BY deadline_at, order_id LIMIT %(limit)s""",
        {"risks": list(risks) if risks is not None else None, "limit": limit},
    )
    for r in rows:
        r["hours_left"] = _float(r["hours_left"])
    return rows


def orders_past_sla(conn: psycopg.Connection, *, sample: int = 10) -> dict[str, Any]:
    """Orders not shipped by their ship-by deadline (``ops_orders_at_risk`` with risk ``ship_by_missed``), for
    the SLA check: ``{count, by_state, by_channel, oldest: [{order, state, ship_by}, …]}`` (``sample``
    longest overdue)."""
    by = _rows(
        conn,
        """SELECT order_status, channel_code, count(*)::int AS n FROM ops.ops_orders_at_risk
           WHERE risk = 'ship_by_missed' GROUP BY order_status, channel_code""",
    )
    by_state: dict[str, int] = {}
    by_channel: dict[str, int] = {}
    for r in by:
        by_state[r["order_status"]] = by_state.get(r["order_status"], 0) + r["n"]
        by_channel[r["channel_code"]] = by_channel.get(r["channel_code"], 0) + r["n"]
    oldest = orders_at_risk(conn, risks=["ship_by_missed"], limit=sample)
    return {
        "count": sum(by_state.values()),
        "by_state": by_state,
        "by_channel": by_channel,
        "oldest": [
            {"order": r["order_number"], "state": r["order_status"], "ship_by": r["ship_by_at"].isoformat()}
            for r in oldest
        ],
    }


def shipments_awaiting_pickup(conn: psycopg.Connection, *, limit: int = 200) -> list[dict[str, Any]]:
    """Parcels booked with a carrier and not collected yet, longest waiting first (view
    ``ops_shipments_awaiting_pickup``)."""
    rows = _rows(
        conn,
        """SELECT shipment_id, shipment_number, order_number, channel_code, location_code, carrier_code,
                  shipment_status, tracking_number, has_label, created_at, hours_waiting
           FROM ops.ops_shipments_awaiting_pickup ORDER BY created_at, shipment_id LIMIT %s""",
        (limit,),
    )
    for r in rows:
        r["hours_waiting"] = _float(r["hours_waiting"])
    return rows


# -- quarantine ---------------------------------------------------------------------------------------------


def open_quarantine(
    conn: psycopg.Connection, *, source: str | None = None, limit: int = 200
) -> list[dict[str, Any]]:
    """Open quarantine rows, oldest first (view ``ops_quarantine_open``): ``{quarantine_id, source,
    external_id, reason, received_at, age_hours, payload}``."""
    rows = _rows(
        conn,
        """SELECT quarantine_id, source, external_id, reason, received_at, age_hours, payload
           FROM ops.ops_quarantine_open WHERE %(source)s::text IS NULL OR source = %(source)s
           ORDER BY quarantine_id LIMIT %(limit)s""",
        {"source": source, "limit": limit},
    )
    for r in rows:
        r["age_hours"] = _float(r["age_hours"])
    return rows


def quarantine_summary(conn: psycopg.Connection, source: str | None = None) -> list[dict[str, Any]]:
    """Open quarantine per source (view ``ops_quarantine_by_source``): ``{source, open_rows, new_last_hour,
    oldest_received_at, newest_received_at}``; a source with nothing open has no row."""
    return _rows(
        conn,
        """SELECT source, open_rows::int AS open_rows, new_last_hour::int AS new_last_hour, oldest_received_at,
                  newest_received_at
           FROM ops.ops_quarantine_by_source WHERE %(source)s::text IS NULL OR source = %(source)s
           ORDER BY source""",
        {"source": source},
    )


# -- ingest and sync state ----------------------------------------------------------------------------------


def normalisation_backlog(conn: psycopg.Connection, channel: str) -> dict[str, Any]:
    """A channel's payloads waiting for the normaliser (view ``ops_normalisation_backlog``):
    ``{queued, oldest_wait_seconds}`` (0 and 0.0 when nothing waits)."""
    row = conn.execute(
        """SELECT queued_payloads, oldest_wait_seconds FROM ops.ops_normalisation_backlog
           WHERE channel_code = %s""",
        (channel,),
    ).fetchone()
    if row is None:
        return {"queued": 0, "oldest_wait_seconds": 0.0}
    return {"queued": int(row[0]), "oldest_wait_seconds": float(row[1])}


def channel_ingest(conn: psycopg.Connection) -> list[dict[str, Any]]:
    """Ingest health per channel (view ``ops_channel_ingest``): ``{channel_code, is_active,
    last_received_at, received_last_24h, queued_payloads, oldest_queued_at, open_quarantine,
    last_order_at}``."""
    return _rows(
        conn,
        """SELECT channel_code, is_active, last_received_at, received_last_24h::int AS received_last_24h,
                  queued_payloads::int AS queued_payloads, oldest_queued_at, open_quarantine::int AS open_quarantine,
                  last_order_at
           FROM ops.ops_channel_ingest ORDER BY channel_code""",
    )


def sync_state(conn: psycopg.Connection) -> list[dict[str, Any]]:
    """Where every feed stands (view ``ops_sync_state``): ``{feed, last_success_at, success_age_seconds,
    last_error_at, last_error, is_failing, last_fetched, total_fetched, cursor_name, cursor_value,
    cursor_updated_at, cursors}``, by feed."""
    rows = _rows(
        conn,
        """SELECT feed, last_success_at, success_age_seconds, last_error_at, last_error, is_failing,
                  last_fetched, total_fetched, cursor_name, cursor_value, cursor_updated_at, cursors::int AS cursors
           FROM ops.ops_sync_state ORDER BY feed""",
    )
    for r in rows:
        r["success_age_seconds"] = _float(r["success_age_seconds"])
    return rows


def feed_freshness(conn: psycopg.Connection, feed: str) -> dict[str, Any]:
    """One feed's freshness (view ``ops_sync_state``), for the ingestion check: ``{last_success_at,
    age_seconds, last_error_at, last_error}`` (ISO texts; all None for a feed never seen)."""
    row = conn.execute(
        """SELECT last_success_at, success_age_seconds, last_error_at, last_error FROM ops.ops_sync_state
           WHERE feed = %s""",
        (feed,),
    ).fetchone()
    if row is None:
        return {"last_success_at": None, "age_seconds": None, "last_error_at": None, "last_error": None}
    success, age, error_at, error = row
    return {
        "last_success_at": success.isoformat() if success else None,
        "age_seconds": _float(age),
        "last_error_at": error_at.isoformat() if error_at else None,
        "last_error": error,
    }


# -- shipment documents ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ShipmentDocument:
    """A stored carrier print form (its bytes: :func:`document_bytes`)."""

    shipment_id: int
    shipment_number: str
    kind: str
    file_name: str
    content_type: str
    size_bytes: int
    created_at: datetime


def shipment_documents(conn: psycopg.Connection, shipment_ids: Sequence[int]) -> list[ShipmentDocument]:
    """Which labels and waybills are stored for the shipments (view ``ops_shipment_documents``), by shipment
    then kind."""
    if not shipment_ids:
        return []
    rows = conn.execute(
        """SELECT shipment_id, shipment_number, kind, file_name, content_type, size_bytes, created_at
           FROM ops.ops_shipment_documents WHERE shipment_id = ANY(%s) ORDER BY shipment_id, kind""",
        (list(shipment_ids),),
    ).fetchall()
    return [ShipmentDocument(*r) for r in rows]


def document_bytes(conn: psycopg.Connection, shipment_id: int, kind: str) -> bytes | None:
    """The stored bytes of one document, through the function ``connectors.shipment_document_content``
    (migration 0011: the dashboards' role may call it but cannot read the document table); None if absent."""
    row = conn.execute("SELECT connectors.shipment_document_content(%s, %s)", (shipment_id, kind)).fetchone()
    return bytes(row[0]) if row and row[0] is not None else None


# -- carrier bookings and the own courier ---------------------------------------------------------------------
# Plain reads of the tables (readable by the dashboards' role: connectors since 0005, oms since 0006): lists
# of parcels and bookings to act on, not figures with a definition to share, so no ops view is needed.

#: carriers the OMS talks to through an API (oms_ops.connectors): they report hand-over and delivery themselves
API_CARRIERS: tuple[str, ...] = ("cdek",)
#: a store handing over its own stock (``fulfillment.SELF_CARRIER``): the customer collects, no courier
SELF_CARRIER = "self"
#: every other carrier is an own courier: the OMS itself records when it takes a parcel and delivers it
NOT_OWN_COURIER: tuple[str, ...] = (*API_CARRIERS, SELF_CARRIER)


def carrier_booking_issues(conn: psycopg.Connection, *, limit: int = 200) -> list[dict[str, Any]]:
    """Carrier bookings ops should know about, latest first: re-created because the carrier no longer knew
    them (``reconcile_count`` > 0), or whose last poll or re-creation failed (``last_error``; with
    ``polling_stopped`` the booking was given up and waits in the quarantine as ``carrier:<code>``):
    ``{shipment_id, shipment_number, order_number, carrier_code, shipment_status, request_state,
    carrier_uuid, previous_carrier_uuid, tracking_number, previous_tracking_number, reconcile_count,
    reconciled_at, reconcile_reason, last_error, last_error_at, polling_stopped}``."""
    return _rows(
        conn,
        """SELECT b.shipment_id, s.shipment_number, o.order_number, b.carrier_code, s.state AS shipment_status,
                  b.request_state, b.carrier_uuid, b.previous_carrier_uuid, b.tracking_number,
                  b.previous_tracking_number, b.reconcile_count, b.reconciled_at, b.reconcile_reason,
                  b.last_error, b.last_error_at, b.final AND b.last_error IS NOT NULL AS polling_stopped
           FROM connectors.carrier_bookings AS b
           JOIN oms.shipments AS s ON s.shipment_id = b.shipment_id
           JOIN oms.orders AS o ON o.order_id = s.order_id
           WHERE b.reconcile_count > 0 OR b.last_error IS NOT NULL
           ORDER BY greatest(b.reconciled_at, b.last_error_at) DESC NULLS LAST, b.shipment_id
           LIMIT %s""",
        (limit,),
    )


_OWN_COURIER_COLUMNS = sql.SQL("""s.shipment_id, s.shipment_number, o.order_number, o.channel_code, s.location_code,
       s.carrier_code, s.state AS shipment_status,
       CASE WHEN s.state IN ('created', 'label_printed') THEN 'awaiting_handover' ELSE 'out_for_delivery' END
           AS stage,
       s.delivery_method, o.customer_name, o.customer_phone,
       coalesce(dest.city, o.city) AS city,
       CASE WHEN dest.location_code IS NOT NULL THEN dest.name ELSE o.address END AS address,
       (SELECT sum(sl.qty) FROM oms.shipment_lines AS sl WHERE sl.shipment_id = s.shipment_id)::int AS units,
       s.weight_g,
       CASE WHEN o.payment_method = 'cod' AND o.payment_status <> 'paid' THEN o.total_amount END
           AS cash_to_collect,
       s.created_at, s.handed_over_at""")
_OWN_COURIER_FROM = sql.SQL("""FROM oms.shipments AS s
JOIN oms.orders AS o ON o.order_id = s.order_id
LEFT JOIN oms.locations AS dest ON dest.location_code = s.pickup_location_code""")


def own_courier_shipments(
    conn: psycopg.Connection, *, location: str | None = None, limit: int = 500
) -> list[dict[str, Any]]:
    """Parcels of the own courier (carriers without an API) still to move: ``stage`` ``awaiting_handover``
    (created / label printed: the courier has not taken them) or ``out_for_delivery`` (handed over or in
    transit), by stage, location and age: ``{shipment_id, shipment_number, order_number, channel_code,
    location_code, carrier_code, shipment_status, stage, delivery_method, customer_name, customer_phone, city,
    address, units, weight_g, cash_to_collect, created_at, handed_over_at, hours_in_stage}`` — the address is
    the store's name for a parcel going to a store for pickup; ``cash_to_collect`` the total of an unpaid
    cash-on-delivery order."""
    rows = _rows(
        conn,
        sql.SQL("""SELECT {columns},
                  round(cast(extract(epoch from (now() - coalesce(s.handed_over_at, s.created_at))) / 3600.0
                             AS numeric), 1) AS hours_in_stage
           {source}
           WHERE s.state IN ('created', 'label_printed', 'handed_over', 'in_transit')
             AND s.carrier_code <> ALL(%(not_own)s::text[])
             AND (%(location)s::text IS NULL OR s.location_code = %(location)s)
           ORDER BY s.state IN ('handed_over', 'in_transit'), s.location_code, s.created_at, s.shipment_id
           LIMIT %(limit)s""").format(columns=_OWN_COURIER_COLUMNS, source=_OWN_COURIER_FROM),
        {"not_own": list(NOT_OWN_COURIER), "location": location, "limit": limit},
    )
    for r in rows:
        r["hours_in_stage"] = _float(r["hours_in_stage"])
        r["cash_to_collect"] = _float(r["cash_to_collect"])
    return rows


def courier_route(conn: psycopg.Connection, location: str, day: date) -> list[dict[str, Any]]:
    """The own courier's route of ``location`` on the local calendar ``day`` (the location's time zone):
    parcels handed over that day, and parcels still waiting for hand-over that were created before the day
    ended (what the courier is to take). Columns as :func:`own_courier_shipments` (without
    ``hours_in_stage``), by city, address and shipment."""
    return _rows(
        conn,
        sql.SQL("""WITH bounds AS (
                SELECT (%(day)s::date::timestamp AT TIME ZONE l.timezone) AS day_start,
                       ((%(day)s::date + 1)::timestamp AT TIME ZONE l.timezone) AS day_end
                FROM oms.locations AS l WHERE l.location_code = %(location)s)
           SELECT {columns}
           {source}
           CROSS JOIN bounds
           WHERE s.location_code = %(location)s
             AND s.carrier_code <> ALL(%(not_own)s::text[])
             AND ((s.handed_over_at >= bounds.day_start AND s.handed_over_at < bounds.day_end)
                  OR (s.state IN ('created', 'label_printed') AND s.created_at < bounds.day_end))
           ORDER BY city, address, s.shipment_id""").format(
            columns=_OWN_COURIER_COLUMNS, source=_OWN_COURIER_FROM
        ),
        {"day": day, "location": location, "not_own": list(NOT_OWN_COURIER)},
    )
