"""Errors raised by the domain operations.

Every error carries *all* the problems found, not the first one: an operation checks everything before it
changes anything (the whole transaction rolls back on raise), so ops see in one message what to fix.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass


class OmsError(Exception):
    """Base class of every domain error."""


class NotFound(OmsError):
    """Referenced rows do not exist. ``entity`` and ``ids`` name them all."""

    def __init__(self, entity: str, ids: Iterable[object]):
        self.entity = entity
        self.ids = sorted(ids, key=str)
        super().__init__(f"{entity} not found: {', '.join(map(str, self.ids))}")


class ValidationFailed(OmsError):
    """Input or current state does not allow the operation. ``problems`` lists every reason."""

    def __init__(self, problems: Sequence[str] | str):
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("; ".join(self.problems))


class IllegalTransition(OmsError):
    """One or more state changes are not in the transition table; nothing was changed.

    ``refused`` holds ``(entity, entity_id, from_state, to_state)`` for every refused change, so a batch
    caller can tell exactly which rows blocked it.
    """

    def __init__(self, refused: Sequence[tuple[str, int, str, str]]):
        self.refused = list(refused)
        parts = [f"{e} {i}: {f} -> {t}" for e, i, f, t in self.refused]
        super().__init__("illegal transition(s) refused: " + "; ".join(parts))


@dataclass(frozen=True)
class Shortfall:
    """One line an operation could not serve from stock: what was asked, what there was, and where.

    ``held`` words what ``available`` counts ("available" free stock, "reserved" units held for the line),
    ``action`` the verb of the operation (reserve, ship, release), so the message reads as ops speak.
    """

    sku: str
    requested: int
    available: int
    location: str | None
    line_id: int | None = None
    order_id: int | None = None
    action: str = "reserve"
    held: str = "available"

    def __str__(self) -> str:
        subject = f"line {self.line_id} ({self.sku})" if self.line_id is not None else self.sku
        if self.order_id is not None:
            subject = f"order {self.order_id} {subject}"
        where = f" at {self.location}" if self.location else ""
        return f"{subject}{where}: {self.action} {self.requested}, only {self.available} {self.held}"


class InsufficientStock(ValidationFailed):
    """An operation was refused for stock. ``shortfalls`` names every affected line (SKU, quantity asked,
    quantity available, location) — all of them, not the first — and ``problems`` holds their messages
    (plus any other problem found in the same check, in the order found)."""

    def __init__(self, shortfalls: Sequence[Shortfall], problems: Sequence[str] | None = None):
        self.shortfalls = list(shortfalls)
        super().__init__(list(problems) if problems is not None else [str(s) for s in self.shortfalls])


class ChangeRefused(ValidationFailed):
    """A change to an accepted order (``oms_ops.changes``) was refused and nothing changed. ``problems``
    names every line and limit at fault (``order 12 line 2: quantity 20000 is more than
    limits.max_line_quantity (10000)``); ``order_id`` is the order asked about."""

    def __init__(self, order_id: int, problems: Sequence[str] | str):
        self.order_id = order_id
        super().__init__(problems)


class AmendmentNotOpen(ValidationFailed):
    """An order amendment was asked to be accepted or rejected but is no longer open (or does not exist)."""

    def __init__(self, amendment_id: int, state: str | None):
        self.amendment_id = amendment_id
        self.state = state
        super().__init__(
            f"amendment {amendment_id} not found" if state is None else f"amendment {amendment_id} is {state}"
        )
