"""Errors raised by the domain operations.

Every error carries *all* the problems found, not the first one: an operation checks everything before it
changes anything (the whole transaction rolls back on raise), so ops see in one message what to fix.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence


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
