"""CDEK API v2: book shipments, fetch their label and waybill PDFs, poll tracking into the OMS.

* **OAuth**: ``POST /v2/oauth/token`` (client credentials); the token is cached until shortly before
  ``expires_in`` runs out, and a 401 (``v2_token_expired``) refreshes it once.
* **Booking** (outbox effect ``carrier.create_shipment``): ``POST /v2/orders`` with ``number`` = our shipment
  number — CDEK's natural idempotency key. A retry after a timeout (the first attempt may have been taken)
  meets ``v2_im_number_already_used``; we then look the order up with ``GET /v2/orders?im_number=`` and keep
  its uuid, so one shipment is booked once. Registration is asynchronous: :func:`sync_bookings` polls
  ``GET /v2/orders/{uuid}`` until the request is ``SUCCESSFUL`` (tracking number → ``record_carrier_booking``)
  or ``INVALID`` (the errors are kept and the shipment is quarantined for ops).
* **Documents**: for every registered booking a waybill (``POST /v2/print/orders``) and a barcode label
  (``POST /v2/print/barcodes``) are requested, polled until ``READY`` and downloaded into
  ``connectors.shipment_documents`` (bytea); storing the label moves the shipment to ``label_printed``.
  Nothing blocks: each step advances what is ready and leaves the rest for the next run.
* **Tracking**: :func:`poll_tracking` reads the statuses of open bookings and feeds them to
  ``fulfillment.record_tracking_events`` (idempotent by shipment, code and time).
* **Reconciliation**: a booking CDEK no longer knows — ``404`` with ``v2_entity_not_found``, or a uuid that now
  names another shipment's order (a carrier that lost its data and hands uuids out again) — is its own
  condition (:class:`BookingNotFound`), not an error to retry: :func:`reconcile_booking` books the shipment
  again with the same ``number`` (CDEK dedupes by it, so a booking that does exist is found, not doubled),
  stores the new uuid, drops the old tracking number and print forms (they name a booking that is gone) and
  counts the case in ``connectors.carrier_bookings`` (``reconcile_count``, ``reconciled_at``,
  ``reconcile_reason``, the previous uuid and tracking number) for ops. A booking that cannot be re-created
  (no booking request kept, refused by CDEK, re-created ``MAX_RECONCILE`` times already) stops being polled
  and goes to ``raw.quarantine`` (``carrier:cdek``) with the reason.
* **Cancellation** (outbox effect ``carrier.cancel_shipment``, a shipment cancelled before hand-over —
  ``oms_ops.shipment_cancel``): :func:`cancel_booking` deletes the CDEK order (``DELETE /v2/orders/{uuid}``);
  the booking stops being polled (``final``, ``cancelled_at``). CDEK not knowing the booking (404) means there
  is nothing left to cancel; a booking still on its way out of the outbox is waited for (the effect is retried);
  CDEK refusing the deletion (the parcel already reached its warehouse) is an answer, not a fault: it is kept
  on the booking (``last_error``: Operations → carrier booking issues), in ``raw.quarantine`` as
  ``carrier:cdek`` and as an event in the order's timeline, and not retried. A shipment cancelled before its
  booking was sent is never booked (:func:`book_shipment`).
* **One booking never stalls the others**: an answer about one booking that retrying will not fix (a 4xx) is
  kept on that booking (``last_error``) and the run goes on; CDEK unreachable or failing (5xx, transport,
  after the client's retries) still fails the run, which the next one repeats.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

import psycopg
from psycopg import errors as pg_errors
from psycopg import sql

from oms_ops import fulfillment
from oms_ops.connectors.http import ApiClient, ApiError, RetryPolicy
from oms_ops.errors import OmsError
from oms_ops.outbox import jsonb
from oms_ops.quarantine import quarantine_many

log = logging.getLogger("oms.connectors.cdek")
CARRIER = "cdek"
TOKEN_MARGIN_S = 60.0
DEFAULT_TARIFF = {"courier": 137, "pickup_point": 136, "store_pickup": 136}
FINAL_CODES = frozenset({"DELIVERED", "REMOVED", "RETURNED_TO_SENDER"})
FINAL_SHIPMENT_STATES = ("delivered", "picked_up", "returned_to_sender")
#: CDEK's error codes for "no such order / print form" (GET by uuid, by im_number)
NOT_FOUND_CODES = frozenset({"v2_entity_not_found", "v2_entity_not_found_im_number"})
#: a booking lost this many times is not re-created again: ops look at it (quarantine)
MAX_RECONCILE = 3
#: recipient phone when an order has none (Ozon hides customers); services pass OMS_CDEK_FALLBACK_PHONE
FALLBACK_PHONE = "+70000000000"


class BookingNotFound(Exception):
    """CDEK does not know the booking we stored: 404 ``v2_entity_not_found`` for its uuid, or the uuid now
    names an order with another ``number`` (the carrier lost its data and handed the uuid out again)."""


def is_not_found(exc: ApiError) -> bool:
    """True when CDEK answered 404 with one of its entity-not-found codes (not, e.g., a wrong path)."""
    return exc.status == 404 and bool(_error_codes(exc.body) & NOT_FOUND_CODES)


class CdekClient(ApiClient):
    api = "CDEK API"

    def __init__(
        self,
        base_url: str,
        client_id: str,
        client_secret: str,
        *,
        policy: RetryPolicy | None = None,
        rate: float | None = 20.0,
        **kw: Any,
    ) -> None:
        super().__init__(base_url, policy=policy, rate=rate, **kw)
        self.client_id = client_id
        self.client_secret = client_secret
        self._token: str | None = None
        self._expires: float = 0.0
        self._in_token = False
        self.token_requests = 0

    @classmethod
    def from_endpoint(cls, ep, **kw) -> CdekClient:
        return cls(ep.base_url, ep.get("client_id"), ep.get("client_secret"), **kw)

    # -- auth -------------------------------------------------------------------------------------------
    def token(self) -> str:
        now = self.policy.clock()
        if self._token and now < self._expires:
            return self._token
        self._token = None
        r = self.request(
            "POST",
            "/v2/oauth/token",
            data={
                "grant_type": "client_credentials",
                "client_id": self.client_id,
                "client_secret": self.client_secret,
            },
            idempotent=True,
        )
        body = r.json()
        self.token_requests += 1
        self._token = body["access_token"]
        self._expires = now + max(float(body.get("expires_in", 3599)) - TOKEN_MARGIN_S, 1.0)
        return self._token

    def auth_headers(self) -> dict[str, str]:
        if self._in_token:  # the token request itself carries no bearer
            return {}
        self._in_token = True
        try:
            return {"Authorization": f"Bearer {self.token()}"}
        finally:
            self._in_token = False

    def on_unauthorized(self, response) -> bool:
        if self._token is None:
            return False
        self._token = None  # expired or revoked: get a new one and retry once
        return True

    # -- orders -----------------------------------------------------------------------------------------
    def create_order(self, payload: dict) -> tuple[str, bool]:
        """Register an order. Returns (uuid, duplicate) — duplicate when ``number`` was already booked."""
        try:
            r = self.request("POST", "/v2/orders", json=payload, expect=(200, 201, 202), idempotent=True)
        except ApiError as exc:
            codes = _error_codes(exc.body)
            if exc.status == 400 and "v2_im_number_already_used" in codes:
                found = self.find_by_number(payload["number"])
                if found is not None:
                    return found["entity"]["uuid"], True
            raise
        return r.json()["entity"]["uuid"], False

    def get_order(self, uuid: str) -> dict:
        return self.request("GET", f"/v2/orders/{uuid}").json()

    def get_booking(self, uuid: str, number: str) -> dict:
        """``GET /v2/orders/{uuid}`` of our shipment ``number``; :class:`BookingNotFound` when CDEK does not
        know the uuid or it names another order."""
        try:
            order = self.get_order(uuid)
        except ApiError as exc:
            if is_not_found(exc):
                raise BookingNotFound(f"CDEK does not know booking {uuid} of {number}") from exc
            raise
        found = (order.get("entity") or {}).get("number")
        if found is not None and found != number:
            raise BookingNotFound(f"CDEK booking {uuid} of {number} now names order {found}")
        return order

    def delete_order(self, uuid: str) -> dict:
        """``DELETE /v2/orders/{uuid}``: CDEK deletes an order it has not taken into delivery yet (202). A
        repeat after success answers 404 (the order is gone), which the caller treats as done."""
        return self.request("DELETE", f"/v2/orders/{uuid}", expect=(200, 202), idempotent=True).json()

    def find_by_number(self, number: str) -> dict | None:
        r = self.request("GET", "/v2/orders", params={"im_number": number}, allow=(404,))
        return None if r.status_code == 404 else r.json()

    # -- print forms ------------------------------------------------------------------------------------
    def request_print(
        self, kind: str, order_uuids: list[str], *, copy_count: int = 1, page_format: str = "A6"
    ) -> str:
        """kind 'label' (``/v2/print/barcodes``) or 'waybill' (``/v2/print/orders``) → print form uuid."""
        body: dict[str, Any] = {"orders": [{"order_uuid": u} for u in order_uuids], "copy_count": copy_count}
        if kind == "label":
            body["format"] = page_format
        r = self.request(
            "POST", f"/v2/print/{_print_path(kind)}", json=body, expect=(200, 202), idempotent=True
        )
        return r.json()["entity"]["uuid"]

    def get_print(self, kind: str, uuid: str) -> dict:
        return self.request("GET", f"/v2/print/{_print_path(kind)}/{uuid}").json()["entity"]

    def download(self, url: str) -> bytes:
        return self.request("GET", url, expect=(200,)).content


def _print_path(kind: str) -> str:
    return {"label": "barcodes", "waybill": "orders"}[kind]


def _error_codes(body: Any) -> set[str]:
    codes = set()
    if isinstance(body, dict):
        for req in body.get("requests") or []:
            for err in req.get("errors") or []:
                if isinstance(err, dict) and err.get("code"):
                    codes.add(err["code"])
    return codes


def _tracking_number(value: Any) -> str | None:
    """``entity.cdek_number`` as the text the OMS keeps. CDEK's spec types it as an integer in the order
    entity (the published SDK parses it into ``int``) but as a string in related entities and webhooks: either
    form gives the same digits, and a missing number stays None (never the text ``"None"``)."""
    if value is None or value == "":
        return None
    return str(value)


def _create_request(order: dict) -> dict:
    for req in order.get("requests") or []:
        if req.get("type") == "CREATE":
            return req
    return {}


# -- booking --------------------------------------------------------------------------------------------------
def build_order_request(conn: psycopg.Connection, payload: dict, *, fallback_phone: str) -> dict:
    """CDEK ``POST /v2/orders`` body for an outbox ``carrier.create_shipment`` payload."""
    origin = payload["from_location_code"]
    point = conn.execute(
        "SELECT external_id FROM connectors.channel_locations WHERE system = 'cdek' AND location_code = %s AND active",
        (origin,),
    ).fetchone()
    loc = conn.execute("SELECT name, city FROM oms.locations WHERE location_code = %s", (origin,)).fetchone()
    skus = [i["sku"] for i in payload.get("items") or []]
    products = {
        r[0]: r[1:]
        for r in conn.execute(
            "SELECT sku, name, weight_g, price FROM oms.products WHERE sku = ANY(%s)", (skus,)
        ).fetchall()
    }
    cod = Decimal(str(payload.get("cod_amount") or 0)) > 0
    items = []
    for i in payload.get("items") or []:
        name, weight, price = products.get(i["sku"], (i["sku"], 100, Decimal(0)))
        items.append(
            {
                "name": name,
                "ware_key": i["sku"],
                "amount": int(i["qty"]),
                "weight": max(int(weight or 1), 1),
                "cost": float(price),
                "payment": {"value": float(price) if cod else 0},
            }
        )
    weight = int(payload.get("weight_g") or sum(it["weight"] * it["amount"] for it in items) or 100)
    method = payload.get("delivery_method") or "courier"
    service = str(payload.get("service_code") or "")
    tariff = int(service) if service.isdigit() else DEFAULT_TARIFF.get(method, 137)
    recipient = payload.get("recipient") or {}
    to = payload.get("to") or {}
    if method != "courier" and payload.get("pickup_location_code"):
        pp = conn.execute(
            "SELECT name, city FROM oms.locations WHERE location_code = %s",
            (payload["pickup_location_code"],),
        ).fetchone()
        if pp:
            to = {"city": pp[1], "address": f"{pp[0]}, {pp[1]}"}
    to_location = {
        k: v for k, v in {"city": to.get("city"), "address": to.get("address") or to.get("city")}.items() if v
    }
    body: dict[str, Any] = {
        "type": 1,
        "number": payload["shipment_number"],
        "tariff_code": tariff,
        "comment": f"OMS {payload.get('order_number')}",
        "recipient": {
            "name": recipient.get("name") or f"Покупатель {payload.get('order_number')}",
            "phones": [{"number": recipient.get("phone") or fallback_phone}],
            **({"email": recipient["email"]} if recipient.get("email") else {}),
        },
        "to_location": to_location or {"address": to.get("region") or ""},
        "packages": [{"number": f"{payload['shipment_number']}-1", "weight": weight, "items": items}],
    }
    if point:
        body["shipment_point"] = point[0]
    else:
        body["from_location"] = {
            "address": f"{loc[0]}, {loc[1]}" if loc else origin,
            "city": loc[1] if loc else None,
        }
    return body


def book_shipment(
    conn: psycopg.Connection,
    client: CdekClient,
    payload: dict,
    *,
    fallback_phone: str,
    actor: str = "connector:cdek",
) -> dict:
    """Book one shipment (idempotent: a shipment with a booking row is not booked again)."""
    sid = int(payload["shipment_id"])
    row = conn.execute(
        "SELECT carrier_uuid FROM connectors.carrier_bookings WHERE shipment_id = %s", (sid,)
    ).fetchone()
    if row:
        return {"uuid": row[0], "duplicate": True}
    state = conn.execute("SELECT state FROM oms.shipments WHERE shipment_id = %s", (sid,)).fetchone()
    if state is not None and state[0] == "cancelled":  # called back before it was booked: never book it
        return {"uuid": None, "duplicate": False, "cancelled": True}
    request = build_order_request(conn, payload, fallback_phone=fallback_phone)
    uuid, duplicate = client.create_order(request)
    with conn.transaction():
        conn.execute(
            """INSERT INTO connectors.carrier_bookings (shipment_id, carrier_code, carrier_uuid, request_state)
               VALUES (%s, %s, %s, 'ACCEPTED') ON CONFLICT (shipment_id) DO NOTHING""",
            (sid, CARRIER, uuid),
        )
        fulfillment.record_carrier_booking(conn, sid, actor=actor, carrier_shipment_id=uuid)
    return {"uuid": uuid, "duplicate": duplicate}


# -- registration, documents ----------------------------------------------------------------------------------
def sync_bookings(
    conn: psycopg.Connection,
    client: CdekClient,
    *,
    label_format: str = "A6",
    actor: str = "connector:cdek",
    limit: int = 500,
    fallback_phone: str = FALLBACK_PHONE,
) -> dict[str, int]:
    """Advance every open booking one step: registration → print requests → PDFs stored → label_printed.

    A booking CDEK no longer knows is re-created (``reconciled``, or ``given_up`` for ops); a 4xx about one
    booking or print form is kept on that booking (``errors``) and the others go on."""
    counts = {
        "registered": 0,
        "invalid": 0,
        "prints_requested": 0,
        "documents": 0,
        "labels_printed": 0,
        "reconciled": 0,
        "given_up": 0,
        "errors": 0,
    }
    pending = conn.execute(
        """SELECT b.shipment_id, b.carrier_uuid, s.shipment_number
           FROM connectors.carrier_bookings b JOIN oms.shipments s USING (shipment_id)
           WHERE b.carrier_code = %s AND b.request_state IN ('ACCEPTED', 'WAITING') AND NOT b.final
             AND s.state <> 'cancelled'  -- its deletion is the outbox's (cancel_booking)
           ORDER BY b.shipment_id LIMIT %s""",
        (CARRIER, limit),
    ).fetchall()
    for sid, uuid, shipment_number in pending:
        try:
            order = client.get_booking(uuid, shipment_number)
        except BookingNotFound as exc:
            outcome = reconcile_booking(
                conn, client, sid, reason=str(exc), fallback_phone=fallback_phone, actor=actor
            )
            counts[outcome] += 1
            continue
        except ApiError as exc:
            record_booking_error(conn, sid, str(exc))
            counts["errors"] += 1
            continue
        req = _create_request(order)
        state = req.get("state") or "ACCEPTED"
        if state == "SUCCESSFUL":
            number = _tracking_number((order.get("entity") or {}).get("cdek_number"))
            try:
                with conn.transaction():
                    conn.execute(
                        """UPDATE connectors.carrier_bookings SET request_state = 'SUCCESSFUL', tracking_number = %s,
                                  last_error = NULL, last_error_at = NULL, updated_at = now()
                           WHERE shipment_id = %s""",
                        (number, sid),
                    )
                    fulfillment.record_carrier_booking(conn, sid, actor=actor, tracking_number=number)
            except (OmsError, pg_errors.UniqueViolation) as exc:
                # e.g. a CDEK that lost its data hands out a number another shipment still holds until that
                # one is reconciled: this booking waits, the others go on
                record_booking_error(conn, sid, f"tracking number {number}: {exc}")
                counts["errors"] += 1
                continue
            counts["registered"] += 1
        elif state == "INVALID":
            errors = req.get("errors") or []
            with conn.transaction():
                conn.execute(
                    """UPDATE connectors.carrier_bookings SET request_state = 'INVALID', errors = %s, final = true,
                              updated_at = now() WHERE shipment_id = %s""",
                    (jsonb(errors), sid),
                )
                quarantine_many(
                    conn,
                    [
                        (
                            f"carrier:{CARRIER}",
                            str(sid),
                            {"shipment_id": sid, "uuid": uuid, "errors": errors},
                            "carrier refused the booking: "
                            + "; ".join(f"{e.get('code')}: {e.get('message')}" for e in errors),
                        )
                    ],
                )
            counts["invalid"] += 1
        else:  # still ACCEPTED / WAITING
            conn.execute(
                "UPDATE connectors.carrier_bookings SET request_state = %s, updated_at = now() "
                "WHERE shipment_id = %s AND request_state <> %s",
                (state, sid, state),
            )
    # print forms for registered bookings
    need = conn.execute(
        """SELECT b.shipment_id, b.carrier_uuid, b.waybill_print_uuid, b.label_print_uuid,
                  (SELECT array_agg(kind) FROM connectors.shipment_documents d WHERE d.shipment_id = b.shipment_id)
           FROM connectors.carrier_bookings b
           WHERE b.carrier_code = %s AND b.request_state = 'SUCCESSFUL'
             AND NOT (b.final AND b.last_error IS NOT NULL)  -- given up: CDEK no longer knows the booking
             AND b.cancelled_at IS NULL
             AND NOT EXISTS (SELECT 1 FROM oms.shipments s WHERE s.shipment_id = b.shipment_id
                                                            AND s.state = 'cancelled')
             AND (SELECT count(*) FROM connectors.shipment_documents d WHERE d.shipment_id = b.shipment_id) < 2
           ORDER BY b.shipment_id LIMIT %s""",
        (CARRIER, limit),
    ).fetchall()
    for sid, uuid, waybill_uuid, label_uuid, have in need:
        have = set(have or ())
        for kind, print_uuid, column in (
            ("waybill", waybill_uuid, "waybill_print_uuid"),
            ("label", label_uuid, "label_print_uuid"),
        ):
            if kind in have:
                continue
            try:
                _advance_print(conn, client, sid, uuid, kind, print_uuid, column, label_format, actor, counts)
            except ApiError as exc:
                record_booking_error(conn, sid, str(exc))
                counts["errors"] += 1
    return counts


def _advance_print(
    conn, client: CdekClient, sid: int, uuid: str, kind: str, print_uuid, column, label_format, actor, counts
) -> None:
    """One print form of one booking one step on: request it, or poll it and store the PDF once READY. A
    form CDEK no longer knows (404 not found, also for its PDF) is asked for again next run."""
    if print_uuid is None:
        print_uuid = client.request_print(
            kind, [uuid], page_format=label_format, copy_count=2 if kind == "waybill" else 1
        )
        _set_print_uuid(conn, sid, column, print_uuid)
        counts["prints_requested"] += 1
        return
    try:
        entity = client.get_print(kind, print_uuid)
        status = (entity.get("statuses") or [{}])[0].get("code")
        pdf = client.download(entity["url"]) if entity.get("url") else None
    except ApiError as exc:
        if exc.status != 404:
            raise
        _set_print_uuid(conn, sid, column, None)
        return
    if pdf is not None:
        if _store_document(conn, sid, kind, print_uuid, pdf, actor):
            counts["documents"] += 1
            counts["labels_printed"] += kind == "label"
    elif status == "INVALID":  # ask again next run
        _set_print_uuid(conn, sid, column, None)


def record_booking_error(conn: psycopg.Connection, sid: int, error: str) -> None:
    """Keep why the last call about this booking failed (ops see it; the booking is tried again next run)."""
    log.warning("CDEK booking of shipment %s: %s", sid, error)
    conn.execute(
        """UPDATE connectors.carrier_bookings SET last_error = %s, last_error_at = now(), updated_at = now()
           WHERE shipment_id = %s""",
        (error[:2000], sid),
    )


class BookingNotSentYet(ValueError):
    """The shipment's ``carrier.create_shipment`` effect is still in the outbox (pending, failing or being
    sent right now): the cancellation waits for it (the drain retries the cancel later)."""


def cancel_booking(
    conn: psycopg.Connection, client: CdekClient, payload: dict, *, actor: str = "connector:cdek"
) -> tuple[str, str | None, dict | None]:
    """Delete the CDEK order of a cancelled shipment (outbox effect ``carrier.cancel_shipment``); returns the
    drain's ``(outcome, note, result)``. Idempotent: a booking already cancelled, or one CDEK no longer knows
    (404), is done. Raises :class:`BookingNotSentYet` (retried) while the booking itself is still in the
    outbox, and ``ConnectorError`` when CDEK is unreachable or failing (retried). CDEK refusing (a 4xx: the
    parcel is already in delivery) comes back as outcome ``refused``, kept for ops (module docstring)."""
    sid = int(payload["shipment_id"])
    number = payload["shipment_number"]
    row = conn.execute(
        "SELECT carrier_uuid, cancelled_at FROM connectors.carrier_bookings WHERE shipment_id = %s", (sid,)
    ).fetchone()
    if row is None:
        sending = conn.execute(
            "SELECT state FROM oms.outbox WHERE idempotency_key = %s AND state IN ('pending', 'failed', 'in_flight')",
            (f"carrier.create_shipment:{number}",),
        ).fetchone()
        if sending is not None:
            raise BookingNotSentYet(
                f"shipment {number}: its CDEK booking is still {sending[0]} in the outbox"
            )
        return "skipped", f"shipment {number} was never booked with CDEK: nothing to cancel", None
    uuid, cancelled_at = row
    if cancelled_at is not None:
        return "sent", f"CDEK booking {uuid} of {number} was cancelled already", {"uuid": uuid}
    try:
        client.delete_order(uuid)
        note = None
    except ApiError as exc:
        if not is_not_found(exc):
            refusal = "; ".join(sorted(_error_messages(exc.body))) or str(exc)
            _cancel_refused(conn, sid, number, uuid, payload, refusal, actor)
            return "refused", f"CDEK refused to cancel booking {uuid} of {number}: {refusal}", {"uuid": uuid}
        note = f"CDEK no longer knows booking {uuid}: nothing left to cancel"
    with conn.transaction():
        conn.execute(
            """UPDATE connectors.carrier_bookings SET cancelled_at = now(), final = true, last_status_code = 'REMOVED',
                      last_status_at = now(), last_error = NULL, last_error_at = NULL, updated_at = now()
               WHERE shipment_id = %s""",
            (sid,),
        )
        _shipment_note(conn, sid, actor, f"CDEK booking {uuid} deleted" + (f" ({note})" if note else ""))
    return "sent", note, {"uuid": uuid}


def _error_messages(body: Any) -> set[str]:
    out = set()
    if isinstance(body, dict):
        for req in body.get("requests") or []:
            for err in req.get("errors") or []:
                if isinstance(err, dict):
                    out.add(f"{err.get('code')}: {err.get('message')}")
    return out


def _cancel_refused(
    conn: psycopg.Connection, sid: int, number: str, uuid: str, payload: dict, refusal: str, actor: str
) -> None:
    """CDEK will not delete the booking: ops must act (call the parcel back from CDEK, or ship the order's
    new parcel knowing the old one travels). Kept on the booking (still polled: its tracking shows where the
    parcel is), in the quarantine and in the order's timeline."""
    log.error("CDEK refused to cancel booking %s of shipment %s: %s", uuid, number, refusal)
    text = f"cancellation refused by CDEK: {refusal}"
    with conn.transaction():
        conn.execute(
            """UPDATE connectors.carrier_bookings SET last_error = %s, last_error_at = now(), updated_at = now()
               WHERE shipment_id = %s""",
            (text[:2000], sid),
        )
        quarantine_many(
            conn,
            [(f"carrier:{CARRIER}", str(sid), {**payload, "uuid": uuid}, f"shipment {number}: {text}")],
        )
        _shipment_note(conn, sid, actor, text)


def _shipment_note(conn: psycopg.Connection, sid: int, actor: str, text: str) -> None:
    """An event in the order's timeline about the shipment without a state change (from = to)."""
    conn.execute(
        """INSERT INTO oms.order_events (order_id, entity, entity_id, from_state, to_state, actor, reason)
           SELECT order_id, 'shipment', shipment_id, state, state, %s, %s FROM oms.shipments WHERE shipment_id = %s""",
        (actor, text, sid),
    )


def reconcile_booking(
    conn: psycopg.Connection,
    client: CdekClient,
    shipment_id: int,
    *,
    reason: str,
    fallback_phone: str = FALLBACK_PHONE,
    actor: str = "connector:cdek",
) -> str:
    """Book a shipment CDEK no longer knows again, under the same ``number``; ``'reconciled'`` or
    ``'given_up'``.

    The booking request is rebuilt from the shipment's ``carrier.create_shipment`` outbox payload (kept after
    delivery), so CDEK gets what it got the first time. CDEK dedupes by ``number``: if the order does exist
    under another uuid, that one is kept (``create_order`` finds it). Then, in one transaction, the booking
    row takes the new uuid and starts registration again (``ACCEPTED``, no tracking number, no print forms),
    counts the case (``reconcile_count``, ``reconciled_at``, ``reconcile_reason``, previous uuid and tracking
    number), the old print forms are dropped (their labels name a booking that is gone) and the shipment's
    carrier id is replaced and its dead tracking number cleared — the one place a tracking number is taken
    back, which ``fulfillment.record_carrier_booking`` (it never overwrites one) cannot do. The next
    ``sync_bookings`` registers it, stores the new number and prints new documents; tracking goes on from
    the shipment's current state (older carrier statuses are kept but not applied).

    Given up — the booking stops being polled (``final``), keeps the reason in ``last_error`` and is
    quarantined as ``carrier:cdek`` for ops — when there is no booking request to rebuild, CDEK refuses the
    new booking (4xx), or it was re-created ``MAX_RECONCILE`` times already. A shipment already delivered or
    returned needs no booking any more: its booking just stops being polled (also counted as given up)."""
    row = conn.execute(
        """SELECT b.carrier_uuid, b.reconcile_count, s.shipment_number, s.state, o.payload
           FROM connectors.carrier_bookings b
           JOIN oms.shipments s USING (shipment_id)
           LEFT JOIN oms.outbox o ON o.idempotency_key = 'carrier.create_shipment:' || s.shipment_number
           WHERE b.shipment_id = %s""",
        (shipment_id,),
    ).fetchone()
    if row is None:
        return "given_up"
    lost_uuid, count, number, shipment_state, payload = row
    log.warning("shipment %s (%s): %s; booking it again", shipment_id, number, reason)
    if shipment_state in (*FINAL_SHIPMENT_STATES, "cancelled"):  # nothing left to track: just stop polling
        conn.execute(
            "UPDATE connectors.carrier_bookings SET final = true, updated_at = now() WHERE shipment_id = %s",
            (shipment_id,),
        )
        return "given_up"
    if count >= MAX_RECONCILE:
        return _give_up(conn, shipment_id, lost_uuid, f"{reason}; re-created {count} times already")
    if payload is None:
        return _give_up(conn, shipment_id, lost_uuid, f"{reason}; no booking request kept to book it again")
    try:
        request = build_order_request(conn, payload, fallback_phone=fallback_phone)
        new_uuid, _duplicate = client.create_order(request)
    except ApiError as exc:
        return _give_up(conn, shipment_id, lost_uuid, f"{reason}; booking it again failed: {exc}")
    with conn.transaction():
        conn.execute(
            """UPDATE connectors.carrier_bookings SET
                      previous_carrier_uuid = carrier_uuid,
                      previous_tracking_number = coalesce(tracking_number, previous_tracking_number),
                      carrier_uuid = %s, request_state = 'ACCEPTED', tracking_number = NULL, errors = NULL,
                      waybill_print_uuid = NULL, label_print_uuid = NULL, last_status_code = NULL,
                      last_status_at = NULL, final = false, reconcile_count = reconcile_count + 1,
                      reconciled_at = now(), reconcile_reason = %s, last_error = NULL, last_error_at = NULL,
                      updated_at = now()
               WHERE shipment_id = %s""",
            (new_uuid, reason[:2000], shipment_id),
        )
        conn.execute("DELETE FROM connectors.shipment_documents WHERE shipment_id = %s", (shipment_id,))
        conn.execute(
            """UPDATE oms.shipments SET carrier_shipment_id = %s, tracking_number = NULL, updated_at = now()
               WHERE shipment_id = %s""",
            (new_uuid, shipment_id),
        )
    return "reconciled"


def _give_up(conn: psycopg.Connection, sid: int, uuid: str, reason: str) -> str:
    log.error("CDEK booking of shipment %s given up: %s", sid, reason)
    with conn.transaction():
        conn.execute(
            """UPDATE connectors.carrier_bookings SET final = true, last_error = %s, last_error_at = now(),
                      updated_at = now()
               WHERE shipment_id = %s""",
            (reason[:2000], sid),
        )
        quarantine_many(
            conn,
            [
                (
                    f"carrier:{CARRIER}",
                    str(sid),
                    {"shipment_id": sid, "uuid": uuid},
                    f"carrier booking lost and not re-created: {reason}",
                )
            ],
        )
    return "given_up"


def _set_print_uuid(conn: psycopg.Connection, sid: int, column: str, value: str | None) -> None:
    conn.execute(
        sql.SQL(
            "UPDATE connectors.carrier_bookings SET {} = %s, updated_at = now() WHERE shipment_id = %s"
        ).format(sql.Identifier(column)),
        (value, sid),
    )


def _store_document(
    conn: psycopg.Connection, sid: int, kind: str, print_uuid: str, pdf: bytes, actor: str
) -> bool:
    if not pdf.startswith(b"%PDF"):
        raise ApiError(CdekClient.api, f"download {kind} {print_uuid}", "not a PDF")
    with conn.transaction():
        row = conn.execute(
            """INSERT INTO connectors.shipment_documents (shipment_id, kind, carrier_code, print_uuid, content,
                                                         sha256, size_bytes)
               VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT (shipment_id, kind) DO NOTHING RETURNING document_id""",
            (sid, kind, CARRIER, print_uuid, pdf, hashlib.sha256(pdf).hexdigest(), len(pdf)),
        ).fetchone()
        if row and kind == "label":
            state = conn.execute("SELECT state FROM oms.shipments WHERE shipment_id = %s", (sid,)).fetchone()[
                0
            ]
            if state == "created":
                fulfillment.mark_label_printed(conn, [sid], actor=actor)
    return row is not None


def document(conn: psycopg.Connection, shipment_id: int, kind: str = "label") -> bytes | None:
    """The stored PDF of a shipment (for dashboards: ``st.download_button(data=document(...))``)."""
    row = conn.execute(
        "SELECT content FROM connectors.shipment_documents WHERE shipment_id = %s AND kind = %s",
        (shipment_id, kind),
    ).fetchone()
    return bytes(row[0]) if row else None


# -- tracking -------------------------------------------------------------------------------------------------
def _parse_cdek_time(value: str) -> datetime:
    # CDEK: 2025-03-03T08:00:00+0000
    return datetime.strptime(value, "%Y-%m-%dT%H:%M:%S%z")


@dataclass
class PollResult:
    """What :func:`poll_tracking` did: the tracking result, and the bookings it found lost or failing."""

    tracking: fulfillment.TrackingResult
    reconciled: int = 0
    given_up: int = 0
    errors: int = 0


def poll_tracking(
    conn: psycopg.Connection,
    client: CdekClient,
    *,
    actor: str = "carrier:cdek",
    limit: int = 1000,
    fallback_phone: str = FALLBACK_PHONE,
) -> PollResult:
    """Read the statuses of open, registered bookings and record them as tracking events. A booking CDEK no
    longer knows is re-created (it registers again through :func:`sync_bookings`); a 4xx about one booking
    is kept on it and the others go on."""
    rows = conn.execute(
        """SELECT b.shipment_id, b.carrier_uuid, b.tracking_number, s.shipment_number
           FROM connectors.carrier_bookings b JOIN oms.shipments s USING (shipment_id)
           WHERE b.carrier_code = %s AND b.request_state = 'SUCCESSFUL' AND NOT b.final
           ORDER BY b.shipment_id LIMIT %s""",
        (CARRIER, limit),
    ).fetchall()
    out = PollResult(fulfillment.TrackingResult())
    events: list[fulfillment.TrackingEvent] = []
    last: dict[int, tuple[str, datetime]] = {}
    for sid, uuid, tracking, shipment_number in rows:
        try:
            entity = client.get_booking(uuid, shipment_number).get("entity") or {}
        except BookingNotFound as exc:
            outcome = reconcile_booking(
                conn, client, sid, reason=str(exc), fallback_phone=fallback_phone, actor=actor
            )
            setattr(out, outcome, getattr(out, outcome) + 1)
            continue
        except ApiError as exc:
            record_booking_error(conn, sid, str(exc))
            out.errors += 1
            continue
        for st in entity.get("statuses") or []:
            try:
                at = _parse_cdek_time(st["date_time"])
            except (KeyError, ValueError):
                continue
            events.append(
                fulfillment.TrackingEvent(
                    CARRIER,
                    st["code"],
                    at,
                    tracking_number=tracking,
                    shipment_id=sid,
                    status_name=st.get("name"),
                    city=st.get("city"),
                )
            )
            if sid not in last or at >= last[sid][1]:
                last[sid] = (st["code"], at)
    if events:
        out.tracking = fulfillment.record_tracking_events(conn, events, actor=actor)
    if last:
        with conn.transaction():
            conn.execute(
                """UPDATE connectors.carrier_bookings b SET last_status_code = t.code, last_status_at = t.at,
                          final = t.code = ANY(%s) OR s.state = ANY(%s), last_error = NULL,
                          last_error_at = NULL, updated_at = now()
                   FROM unnest(%s::int8[], %s::text[], %s::timestamptz[]) AS t(id, code, at), oms.shipments s
                   WHERE b.shipment_id = t.id AND s.shipment_id = t.id""",
                (
                    list(FINAL_CODES),
                    list(FINAL_SHIPMENT_STATES),
                    list(last),
                    [v[0] for v in last.values()],
                    [v[1] for v in last.values()],
                ),
            )
    return out
