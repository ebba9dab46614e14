"""The registry of actions the API runs, one entry per change a dashboard offers.

An action is a function ``(conn, actor, **args)`` registered with :func:`action`: its name (the URL path
``POST /v1/actions/<name>``), the roles that may run it, and a pydantic model of its arguments. The model is
built from the function's keyword parameters (their annotations and ``Annotated[…, Field(…)]`` limits) unless
one is given, and refuses unknown fields, so a typo in a client is an error naming the field rather than a
silently ignored argument. The API runs the function in one transaction on the OMS's own connection and
answers with what it returns (JSON-serialisable: ids, numbers, short texts).

Why a registry rather than routes: the role check, the validation, the transaction, the actor and the error
mapping are the same for every action, so they live once in :mod:`oms_ops.api.app`, and an action is only
the business call it makes.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model

from oms_ops.business_config import BusinessConfigError, load_business_config
from oms_ops.errors import ValidationFailed
from oms_ops.services import discovery, intake, orders, outbox, returns, shipping, unfillable

#: the roles of oms_ops.users: ``ops`` and ``admin`` act on orders, ``manager`` only reads
OPS = frozenset({"ops", "admin"})
ADMIN = frozenset({"admin"})


class ArgsModel(BaseModel):
    """Base of every action's argument model: unknown fields are refused, strings are stripped."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True, frozen=True)


@dataclass(frozen=True)
class Action:
    name: str
    roles: frozenset[str]
    args: type[BaseModel]
    fn: Callable[..., Any]
    summary: str

    def run(self, conn: Any, actor: str, args: BaseModel) -> Any:
        return self.fn(conn, actor, **{name: getattr(args, name) for name in type(args).model_fields})


#: every registered action by name
ACTIONS: dict[str, Action] = {}


def _model_from_signature(name: str, fn: Callable[..., Any]) -> type[BaseModel]:
    """A model of ``fn``'s parameters after ``(conn, actor)``: annotation → type, default → default."""
    hints = typing.get_type_hints(fn, include_extras=True)
    params = list(inspect.signature(fn).parameters.values())[2:]
    fields: dict[str, Any] = {}
    for p in params:
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            raise TypeError(f"action {name}: *args/**kwargs cannot be validated")
        if p.name not in hints:
            raise TypeError(f"action {name}: parameter {p.name} has no annotation")
        fields[p.name] = (hints[p.name], ... if p.default is p.empty else p.default)
    model_name = "".join(part.title() for part in name.replace(".", "_").split("_")) + "Args"
    return create_model(model_name, __base__=ArgsModel, **fields)


def action(
    name: str, *, roles: set[str] | frozenset[str], args: type[BaseModel] | None = None
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register ``fn(conn, actor, **args)`` as the action ``name`` that ``roles`` may run."""

    def register(fn: Callable[..., Any]) -> Callable[..., Any]:
        if name in ACTIONS:
            raise ValueError(f"action {name!r} is registered twice")
        if not roles:
            raise ValueError(f"action {name!r}: no role may run it")
        model = args or _model_from_signature(name, fn)
        summary = (inspect.getdoc(fn) or "").split("\n\n")[0].replace("\n", " ")
        ACTIONS[name] = Action(name, frozenset(roles), model, fn, summary)
        return fn

    return register


# -- the actions ---------------------------------------------------------------------------------------------
# Each takes the OMS's connection and the actor recorded in events (``dashboard:<username>``); its keyword
# parameters are its arguments. Results are plain JSON: the dashboards word the outcome themselves.

Id = Annotated[int, Field(ge=1, le=2**63 - 1)]
Ids = Annotated[list[Id], Field(min_length=1, max_length=1000)]
Reason = Annotated[str, Field(min_length=1, max_length=500)]
Code = Annotated[str, Field(min_length=1, max_length=100)]
#: the channel of orders entered in the OMS's own call-centre form
CALLCENTRE = "callcentre"


def _accepted(res: Any) -> dict[str, Any]:
    """An ``AcceptResult`` as JSON: ``ids`` keyed by (channel, external id) becomes a list of objects."""
    return {
        "ids": [
            {"channel_code": ch, "external_id": ext, "order_id": oid} for (ch, ext), oid in res.ids.items()
        ],
        "on_hold": list(res.on_hold),
        "duplicates": [{"channel_code": ch, "external_id": ext} for ch, ext in res.duplicates],
        "quarantined": list(res.quarantined),
        "rejected": [{"external_id": ext, "reason": reason} for ext, reason in res.rejected],
    }


# -- orders ------------------------------------------------------------------------------------------------


@action("orders.release", roles=OPS)
def release_orders(conn: Any, actor: str, *, order_ids: Ids, reason: Reason = "released by ops") -> dict:
    """Release held orders back to 'new' for the allocator."""

    return {"released": orders.release(conn, order_ids, reason=reason, actor=actor)}


@action("orders.cancel", roles=OPS)
def cancel_orders(conn: Any, actor: str, *, order_ids: Ids, reason: Reason) -> dict:
    """Cancel orders (what has shipped stays shipped); reservations released, paid value refunded."""

    res = orders.cancel(conn, order_ids, reason=reason, actor=actor)
    return {
        "cancelled": res.cancelled,
        "remainder_cancelled": res.remainder_cancelled,
        "refunds": res.refunds,
    }


@action("orders.reroute", roles=OPS)
def reroute_order(
    conn: Any,
    actor: str,
    *,
    order_id: Id,
    reason: Reason = "rerouted by ops",
    exclude_locations: Annotated[list[Code], Field(max_length=200)] = [],  # noqa: B006 - pydantic copies it
) -> dict:
    """Release an order's reservations and allocate it again under the current rules, avoiding locations."""

    try:
        config = load_business_config()
    except (BusinessConfigError, OSError) as exc:
        raise ValidationFailed(f"business configuration cannot be loaded: {exc}") from exc
    res = orders.reroute_order(
        conn, order_id, config=config, actor=actor, reason=reason, exclude_locations=exclude_locations
    )
    outcome = res.by_order().get(order_id)
    if outcome is None:
        return {"outcome": None}
    return {
        "outcome": {
            "outcome": outcome.outcome,
            "locations": list(outcome.locations),
            "reason": outcome.reason,
        }
    }


# -- intake: call centre and quarantine ----------------------------------------------------------------------


@action("orders.take", roles=OPS)
def take_order(conn: Any, actor: str, *, order: dict[str, Any]) -> dict:
    """Accept one order typed into the call-centre form (the ``NormalizedOrder`` shape, channel
    ``callcentre``): validated like every channel's order, accepted or quarantined with the reason."""

    channel = order.get("channel_code", CALLCENTRE)
    if channel != CALLCENTRE:
        raise ValidationFailed(f"order.channel_code: must be {CALLCENTRE!r}, not {channel!r}")
    return _accepted(
        intake.take_orders(conn, [{**order, "channel_code": CALLCENTRE}], actor=actor, source=CALLCENTRE)
    )


@action("quarantine.replay", roles=OPS)
def replay_quarantined(conn: Any, actor: str, *, quarantine_ids: Ids) -> dict:
    """Run open quarantined orders through acceptance again, as they are."""

    return _accepted(intake.replay_orders(conn, quarantine_ids, actor=actor))


@action("quarantine.replay_fixed", roles=OPS)
def replay_fixed(conn: Any, actor: str, *, quarantine_id: Id, payload: dict[str, Any]) -> dict:
    """Accept a corrected version of one open quarantined order and close the row."""

    return _accepted(intake.replay_fixed_order(conn, quarantine_id, payload, actor=actor))


@action("quarantine.discard", roles=OPS)
def discard_quarantined(conn: Any, actor: str, *, quarantine_ids: Ids) -> dict:
    """Close open quarantine rows as 'discarded' (kept, with who did it)."""

    return {"discarded": intake.discard_quarantined(conn, quarantine_ids, actor=actor)}


# -- outbox --------------------------------------------------------------------------------------------------


@action("outbox.retry", roles=OPS)
def retry_outbox(conn: Any, actor: str, *, outbox_ids: Ids) -> dict:
    """Make failed / dead outbox effects due again (same idempotency key: never twice)."""

    return {"retried": outbox.retry_outbox(conn, outbox_ids, actor=actor)}


# -- returns -------------------------------------------------------------------------------------------------


class ReturnLineArgs(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True, frozen=True)

    line_id: Id
    qty: Annotated[int, Field(ge=1, le=100_000)]
    reason_code: Code
    reason_text: Annotated[str, Field(max_length=500)] | None = None


@action("returns.request", roles=OPS)
def request_return(
    conn: Any,
    actor: str,
    *,
    order_id: Id,
    lines: Annotated[list[ReturnLineArgs], Field(max_length=500)],
    kind: Literal["refund", "exchange"] = "refund",
    note: Annotated[str, Field(max_length=1000)] | None = None,
) -> dict:
    """Open an RMA for delivered lines of an order (refund or exchange)."""

    reqs = [returns.ReturnLineRequest(ln.line_id, ln.qty, ln.reason_code, ln.reason_text) for ln in lines]
    res = returns.request_return(conn, order_id, reqs, actor=actor, kind=kind, note=note or None)
    return {"return_id": res.return_id, "rma_number": res.rma_number, "created": res.created}


@action("returns.exchange", roles=OPS)
def exchange_return(conn: Any, actor: str, *, return_id: Id) -> dict:
    """Close an inspected exchange return with a replacement order; its id and number."""

    order_id = returns.exchange(conn, return_id, actor=actor)
    row = conn.execute("SELECT order_number FROM oms.orders WHERE order_id = %s", (order_id,)).fetchone()
    return {"order_id": order_id, "order_number": row[0] if row else None}


@action("returns.receive", roles=OPS)
def receive_return(
    conn: Any,
    actor: str,
    *,
    return_id: Id,
    location_code: Code,
    received: Annotated[dict[Id, Annotated[int, Field(ge=0, le=100_000)]], Field(max_length=500)]
    | None = None,
) -> dict:
    """A returned parcel arrived at a location (units per return line; none given: as requested)."""

    receipt = returns.ReturnReceipt(return_id, location_code, received, reference=None)
    return {"received": returns.receive_returns(conn, [receipt], actor=actor)}


@action("returns.inspect", roles=OPS)
def inspect_return(
    conn: Any,
    actor: str,
    *,
    return_id: Id,
    dispositions: Annotated[dict[Id, Literal["restock", "write_off"]], Field(min_length=1, max_length=500)],
) -> dict:
    """The verdict on a received return, per return line: restock (back into stock) or write off."""

    res = returns.inspect_returns(conn, [returns.ReturnInspection(return_id, dispositions)], actor=actor)
    return {
        "inspected": res.inspected,
        "units_restocked": res.units_restocked,
        "restocked": [{"return_id": r, "sku": sku, "units": q} for r, sku, q in res.restocked],
    }


@action("returns.refund", roles=OPS)
def refund_returns(conn: Any, actor: str, *, return_ids: Ids) -> dict:
    """Refund and close inspected returns (received units × unit price)."""

    res = returns.refund_returns(conn, return_ids, actor=actor)
    return {"refunds": {str(rid): ref for rid, ref in res.refunds.items()}}


@action("returns.cancel", roles=OPS)
def cancel_return(conn: Any, actor: str, *, return_id: Id, reason: Reason) -> dict:
    """Withdraw an RMA that has not been received; its units are returnable again."""

    returns.cancel_return(conn, return_id, reason=reason, actor=actor)
    return {"cancelled": return_id}


# -- own courier ---------------------------------------------------------------------------------------------


@action("shipping.hand_over", roles=OPS)
def hand_over(conn: Any, actor: str, *, shipment_ids: Ids) -> dict:
    """The own courier took the parcels (→ handed over: shipped)."""

    moved = shipping.hand_over(conn, shipment_ids, actor=actor)
    return {"moved": [{"shipment_id": sid, "from": a, "to": b} for sid, a, b in moved]}


@action("shipping.courier_delivered", roles=OPS)
def courier_delivered(conn: Any, actor: str, *, shipment_ids: Ids) -> dict:
    """The own courier delivered the parcels: to the customer, or to the pickup store."""

    return shipping.courier_delivered(conn, shipment_ids, actor=actor)


# -- channel mappings ----------------------------------------------------------------------------------------


@action("mappings.location", roles=OPS)
def map_location(
    conn: Any,
    actor: str,
    *,
    system: Code,
    external_id: Annotated[str, Field(min_length=1, max_length=200)],
    location_code: Code | None = None,
) -> dict:
    """Map (or, with no location, unmap) a channel's location to an OMS location."""

    return {"message": discovery.map_location(conn, system, external_id, location_code, actor)}


@action("mappings.listing", roles=OPS)
def map_listing(
    conn: Any,
    actor: str,
    *,
    channel_code: Code,
    key: Annotated[str, Field(min_length=1, max_length=200)],
    sku: Code | None = None,
) -> dict:
    """Match (or, with no SKU, unmatch) a channel's item to an OMS SKU."""

    return {"message": discovery.map_listing(conn, channel_code, key, sku, actor)}


# -- unfillable orders ---------------------------------------------------------------------------------------


@action("unfillable.clear", roles=OPS)
def clear_unfillable(conn: Any, actor: str, *, order_id: Id, reason: Reason = "cleared by ops") -> dict:
    """Keep a parked unfillable order waiting as a backorder: no auto-cancel, never parked again."""

    unfillable.clear(conn, order_id, actor=actor, reason=reason)
    return {"cleared": order_id}


# -- changing accepted orders and channel amendments ---------------------------------------------------------
# (oms_ops.services.changes: each change all or nothing, with an event; refusals name the line and limit)
from decimal import Decimal  # noqa: E402

from oms_ops.services import changes as order_changes  # noqa: E402

LineNo = Annotated[int, Field(ge=1, le=2**31 - 1)]
Qty = Annotated[int, Field(le=2**31 - 1)]  # ≤ 0 and the business limit are refused by the domain, by name
Note = Annotated[str, Field(max_length=500)]


@action("orders.change_quantity", roles=OPS)
def change_quantity(
    conn: Any, actor: str, *, order_id: Id, line_no: LineNo, qty: Qty, reason: Reason = "changed by ops"
) -> dict:
    """Set a line's quantity: an increase is reserved now or refused, a decrease frees the surplus."""

    return order_changes.change_quantity(conn, order_id, line_no, qty, actor=actor, reason=reason).as_dict()


@action("orders.add_line", roles=OPS)
def add_line(
    conn: Any,
    actor: str,
    *,
    order_id: Id,
    sku: Code,
    qty: Qty,
    unit_price: Annotated[Decimal, Field(ge=0, max_digits=12, decimal_places=2)] | None = None,
    reason: Reason = "changed by ops",
) -> dict:
    """Add a line (catalog price unless given): reserved now or refused."""

    return order_changes.add_line(
        conn, order_id, sku, qty, unit_price=unit_price, actor=actor, reason=reason
    ).as_dict()


@action("orders.remove_line", roles=OPS)
def remove_line(
    conn: Any, actor: str, *, order_id: Id, line_no: LineNo, reason: Reason = "changed by ops"
) -> dict:
    """Remove a line; its reservation goes back to stock."""

    return order_changes.remove_line(conn, order_id, line_no, actor=actor, reason=reason).as_dict()


@action("orders.change_delivery", roles=OPS)
def change_delivery(
    conn: Any,
    actor: str,
    *,
    order_id: Id,
    delivery_method: Literal["courier", "pickup_point", "store_pickup"],
    pickup_location_code: Code | None = None,
    reason: Reason = "changed by ops",
) -> dict:
    """Change the delivery method or pickup point: the order is re-routed."""

    return order_changes.change_delivery(
        conn, order_id, delivery_method, pickup_location_code, actor=actor, reason=reason
    ).as_dict()


@action("orders.change_contact", roles=OPS)
def change_contact(
    conn: Any,
    actor: str,
    *,
    order_id: Id,
    fields: Annotated[dict[str, Annotated[str, Field(max_length=1000)]], Field(min_length=1, max_length=8)],
    reason: Reason = "changed by ops",
) -> dict:
    """Change the customer's name, phone, e-mail or address (until the order ships)."""

    return order_changes.change_contact(conn, order_id, fields, actor=actor, reason=reason).as_dict()


@action("amendments.accept", roles=OPS)
def accept_amendment(conn: Any, actor: str, *, amendment_id: Id, note: Note | None = None) -> dict:
    """Apply an open channel amendment to its order (all or nothing) and close it."""

    return order_changes.accept_amendment(conn, amendment_id, actor=actor, note=note or None)


@action("amendments.reject", roles=OPS)
def reject_amendment(conn: Any, actor: str, *, amendment_id: Id, note: Note | None = None) -> dict:
    """Close an open channel amendment as rejected: the order stays as it is."""

    return order_changes.reject_amendment(conn, amendment_id, actor=actor, note=note or None)


# -- cancelling a shipment before hand-over ------------------------------------------------------------------
# (oms_ops.services.shipment_cancel: one transaction; the carrier booking is cancelled by the outbox drain)
from oms_ops.services import shipment_cancel  # noqa: E402


@action("shipments.cancel", roles=OPS)
def cancel_shipment(
    conn: Any, actor: str, *, shipment_id: Id, reason: Reason, location_code: Code | None = None
) -> dict:
    """Cancel a shipment not yet handed over: units back at the location and reserved again, or (no
    location) stock untouched and the lines open for the allocator."""

    return shipment_cancel.cancel_shipment(
        conn, shipment_id, location_code=location_code, actor=actor, reason=reason
    ).as_dict()


# -- incoming supply (oms_ops.services.supply: receipts of supplies entered in the OMS, cancellations) ----------
from oms_ops.services import supply as supply_service  # noqa: E402


def _business_config():
    try:
        return load_business_config()
    except (BusinessConfigError, OSError) as exc:
        raise ValidationFailed(f"business configuration cannot be loaded: {exc}") from exc


@action("supply.receive", roles=OPS)
def receive_supply(
    conn: Any,
    actor: str,
    *,
    supply_id: Id,
    lines: Annotated[dict[Code, Annotated[int, Field(gt=0)]], Field(max_length=500)] | None = None,
    reference: Code | None = None,
) -> dict:
    """Goods of a supply arrived (all outstanding, or ``lines``): a receipt, then the orders promised from it
    are allocated first, in promise order. WMS supplies are refused (the WMS reports them)."""

    rec, arrival = supply_service.receive(
        conn, _business_config(), supply_id, lines, reference=reference, actor=actor
    )
    out = {"applied": rec.applied, "state": rec.state, "reference": rec.reference, "received": rec.received}
    return {**out, **(arrival.metadata() if arrival else {})}


@action("supply.cancel", roles=OPS)
def cancel_supply(conn: Any, actor: str, *, supply_id: Id) -> dict:
    """Cancel an open supply; the lines it covered are promised again from what else is coming."""

    return {"cancelled": supply_service.cancel(conn, _business_config(), supply_id, actor=actor)}


# -- customer notifications (oms_ops.notifications: the SMS / e-mail log of each order) ---------------------------
from oms_ops.services import notifications as customer_notifications  # noqa: E402


@action("notifications.resend", roles=OPS)
def resend_notification(conn: Any, actor: str, *, notification_id: Id) -> dict:
    """Send a sent, delivered or failed customer notification again (a new outbox effect, new key)."""

    return customer_notifications.resend(conn, notification_id, actor=actor)


@action("notifications.opt_out", roles=OPS)
def opt_out_notifications(
    conn: Any,
    actor: str,
    *,
    order_id: Id | None = None,
    phone: Annotated[str, Field(min_length=5, max_length=40)] | None = None,
    email: Annotated[str, Field(min_length=3, max_length=254)] | None = None,
    channel: Literal["sms", "email"] | None = None,
    reason: Reason | None = None,
) -> dict:
    """Stop notifying one order, or a customer by phone or e-mail (on one channel or both)."""

    opt_out_id = customer_notifications.opt_out(
        conn, actor=actor, order_id=order_id, phone=phone, email=email, channel=channel, reason=reason
    )
    return {"opt_out_id": opt_out_id}


# -- API keys of other systems (oms_ops.services.api_keys: shown once, stored hashed, revocable) ------------------
from oms_ops.services import api_keys as api_key_service  # noqa: E402

Scope = Literal["orders:read", "orders:write", "stock:read", "customer:read"]


@action("api_keys.create", roles=ADMIN)
def create_api_key(
    conn: Any,
    actor: str,
    *,
    system: Annotated[str, Field(min_length=1, max_length=100)],
    scopes: Annotated[list[Scope], Field(min_length=1, max_length=4)],
    channel: Code | None = None,
    expires_in_days: Annotated[int, Field(ge=1, le=3650)] | None = None,
) -> dict:
    """Create an API key for another system (``system``: whose it is); the answer holds the key, shown this
    once only."""

    full, key = api_key_service.create_key(
        conn, name=system, scopes=scopes, actor=actor, channel=channel, expires_in_days=expires_in_days
    )
    return {"key": full, "key_id": key.key_id, "scopes": list(key.scopes), "expires_at": key.expires_at}


@action("api_keys.revoke", roles=ADMIN)
def revoke_api_key(
    conn: Any, actor: str, *, key_id: Annotated[str, Field(pattern=r"^[0-9a-f]{12}$")]
) -> dict:
    """Revoke an API key at once: the next request with it is refused."""

    key = api_key_service.revoke_key(conn, key_id, actor=actor)
    return {"key_id": key.key_id, "revoked_at": key.revoked_at}


# -- payment links (oms_ops.services.payments, docs/payments.md) ---------------------------------------------
from oms_ops.services import payments as payment_service  # noqa: E402


@action("payments.new_link", roles=OPS)
def new_payment_link(conn: Any, actor: str, *, order_id: Id) -> dict:
    """A new payment link for an order that still waits for its money (the first expired, was declined or
    refused); the outbox asks the payment provider for it."""
    return {"link_id": payment_service.new_link(conn, order_id, actor=actor)}
