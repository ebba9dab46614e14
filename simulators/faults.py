"""Switchable faults: the failure modes a connector must survive, injected on purpose and reproducibly.

Why rules with counts *and* probabilities: a demo wants background noise ("5 % of requests get a 503"),
a test wants certainty ("the next 2 list calls are rate limited"). Both draw from one seeded RNG per
simulator, so a given sequence of requests always meets the same faults.

Kinds:

===============  ============================================================================================
``rate_limit``   answer 429 with the channel's own body and headers (``Retry-After``; WB ``X-Ratelimit-*``)
``server_error`` answer ``status`` (default 500; 502/503/504 and 503 adds ``Retry-After``) with the channel's body
``timeout``      sleep ``delay`` real seconds (default 30, longer than any sane client timeout), then process
                 the request normally — a write may take effect although the client gave up
``slow``         like ``timeout`` with a short default delay (2 s): slow pages
``malformed``    in list responses, corrupt ``share`` of the records (drop a required field or make a
                 quantity non-numeric); webhooks get a corrupted order too
``duplicate``    in list responses, repeat ``share`` of the records within the page, and (cursor APIs) move
                 the cursor back one record so the last record appears on the next page again; webhooks are
                 delivered twice with the same webhook id
``out_of_order`` shuffle the records of a page (breaks any "pages are sorted" assumption)
===============  ============================================================================================

A rule matches requests whose path starts with ``path`` (any when omitted) and whose method equals
``method`` (any when omitted; webhook deliveries use method ``WEBHOOK`` and path ``webhook:<topic>``).
``count`` = fire on the next N matching requests (then the rule is spent); ``probability`` = fire with that
chance; both = fire with that chance until N firings are used up. Control endpoints under ``/_sim/`` never
meet faults.
"""

from __future__ import annotations

import copy
import random
import threading
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

FAULT_KINDS = ("rate_limit", "server_error", "timeout", "slow", "malformed", "duplicate", "out_of_order")
PRE_KINDS = ("timeout", "slow", "rate_limit", "server_error")
DATA_KINDS = ("malformed", "duplicate", "out_of_order")
_DEFAULT_DELAY = {"timeout": 30.0, "slow": 2.0}


@dataclass
class FaultRule:
    kind: str
    probability: float = 0.0
    count: int | None = None
    path: str | None = None
    method: str | None = None
    status: int | None = None  # server_error
    retry_after: float = 1.0  # rate_limit / server_error 503, seconds
    delay: float | None = None  # timeout / slow, real seconds
    share: float = 0.2  # malformed / duplicate: share of records touched (at least one)
    fired: int = 0

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {self.kind!r}; expected one of {', '.join(FAULT_KINDS)}")
        if not 0.0 <= self.probability <= 1.0:
            raise ValueError("probability must be within [0, 1]")
        if self.count is not None and self.count < 0:
            raise ValueError("count must be >= 0")
        if self.count is None and self.probability == 0.0:
            raise ValueError("a fault rule needs a count, a probability, or both")
        if not 0.0 < self.share <= 1.0:
            raise ValueError("share must be within (0, 1]")
        if self.kind == "server_error" and self.status is not None and not 400 <= self.status <= 599:
            raise ValueError("server_error status must be an HTTP error status")
        if self.method:
            self.method = self.method.upper()

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FaultRule:
        allowed = {f for f in cls.__dataclass_fields__ if f != "fired"}
        unknown = set(data) - allowed
        if unknown:
            raise ValueError(f"unknown fault fields: {', '.join(sorted(unknown))}")
        if "kind" not in data:
            raise ValueError("fault rule needs a kind")
        return cls(**data)

    @property
    def remaining(self) -> int | None:
        return None if self.count is None else max(self.count - self.fired, 0)

    @property
    def spent(self) -> bool:
        return self.count is not None and self.fired >= self.count

    @property
    def effective_delay(self) -> float:
        return self.delay if self.delay is not None else _DEFAULT_DELAY.get(self.kind, 0.0)

    def matches(self, method: str, path: str) -> bool:
        if self.spent:
            return False
        if self.method and self.method != method.upper():
            return False
        return not (self.path and not path.startswith(self.path))

    def to_dict(self) -> dict:
        d = asdict(self)
        d["remaining"] = self.remaining
        return d


@dataclass
class FaultSet:
    """The faults that fired for one request, plus the RNG to apply data faults deterministically."""

    rules: list[FaultRule] = field(default_factory=list)
    rng: random.Random = field(default_factory=lambda: random.Random(0))

    def get(self, kind: str) -> FaultRule | None:
        return next((r for r in self.rules if r.kind == kind), None)

    def __bool__(self) -> bool:
        return bool(self.rules)

    @property
    def kinds(self) -> list[str]:
        return [r.kind for r in self.rules]

    def _pick(self, n: int, share: float) -> list[int]:
        k = max(1, round(n * share))
        return sorted(self.rng.sample(range(n), min(k, n)))

    def apply_records(
        self,
        records: list[dict],
        malform: Callable[[dict, random.Random], None] | None = None,
    ) -> list[dict]:
        """Return a copy of ``records`` with the data faults applied (the simulator's state is untouched)."""
        out = [copy.deepcopy(r) for r in records]
        if not out:
            return out
        rule = self.get("malformed")
        if rule and malform:
            for i in self._pick(len(out), rule.share):
                malform(out[i], self.rng)
        rule = self.get("duplicate")
        if rule:
            for offset, i in enumerate(self._pick(len(out), rule.share)):
                out.insert(i + offset + 1, copy.deepcopy(out[i + offset]))
        if self.get("out_of_order") and len(out) > 1:
            original = list(out)
            for _ in range(10):  # identical records cannot be reordered visibly; don't loop forever
                self.rng.shuffle(out)
                if out != original:
                    break
        return out


class FaultInjector:
    """Per-simulator rule set with its own seeded RNG."""

    def __init__(self, seed: int, name: str, rules: Iterable[FaultRule | dict] = ()) -> None:
        self._lock = threading.Lock()
        self._rng = random.Random(f"faults:{seed}:{name}")
        self._seed = seed
        self._name = name
        self._rules: list[FaultRule] = []
        self.set(rules)

    @staticmethod
    def _coerce(rule: FaultRule | dict) -> FaultRule:
        return rule if isinstance(rule, FaultRule) else FaultRule.from_dict(dict(rule))

    def set(self, rules: Iterable[FaultRule | dict]) -> None:
        """Replace all rules (and reseed, so a test that sets rules gets the same draws every run)."""
        parsed = [self._coerce(r) for r in rules]
        with self._lock:
            self._rules = parsed
            self._rng = random.Random(f"faults:{self._seed}:{self._name}")

    def add(self, rule: FaultRule | dict) -> FaultRule:
        parsed = self._coerce(rule)
        with self._lock:
            self._rules.append(parsed)
        return parsed

    def clear(self) -> None:
        self.set([])

    @property
    def rules(self) -> list[FaultRule]:
        with self._lock:
            return list(self._rules)

    def draw(self, method: str, path: str) -> FaultSet:
        """Decide which rules fire for this request (at most one rule per kind)."""
        fired: list[FaultRule] = []
        with self._lock:
            for rule in self._rules:
                if not rule.matches(method, path) or any(f.kind == rule.kind for f in fired):
                    continue
                hit = True if rule.probability == 0.0 else self._rng.random() < rule.probability
                if hit:
                    rule.fired += 1
                    fired.append(rule)
            sub = random.Random(self._rng.getrandbits(64)) if fired else random.Random(0)
        return FaultSet(fired, sub)

    def snapshot(self) -> list[dict]:
        with self._lock:
            return [r.to_dict() for r in self._rules]
