"""Rate limiters measured on the *protocol* clock (real monotonic time unless a test injects a fake one).

Two shapes, because the real APIs differ:

* :class:`TokenBucket` — Wildberries (300 req/min = 5/s refill, burst 20; a 4xx response costs 10) and Ozon
  (50 req/s). Tokens may go negative when a 4xx is charged after the fact, which delays the next request,
  as WB's "each 4xx counts as 10 requests" does.
* :class:`LeakyBucket` — Shopify REST (bucket of 40 calls leaking 2/s; ``X-Shopify-Shop-Api-Call-Limit``).
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable


class TokenBucket:
    def __init__(self, capacity: float, refill_per_s: float, now: Callable[[], float]) -> None:
        self.capacity = float(capacity)
        self.refill_per_s = float(refill_per_s)
        self._now = now
        self._tokens = float(capacity)
        self._t = now()
        self._lock = threading.Lock()

    def _refill(self) -> None:
        t = self._now()
        self._tokens = min(self.capacity, self._tokens + (t - self._t) * self.refill_per_s)
        self._t = t

    def try_take(self, cost: float = 1.0) -> tuple[bool, float]:
        """Take ``cost`` tokens if available. Returns (allowed, seconds until one request would be allowed)."""
        with self._lock:
            self._refill()
            if self._tokens >= cost:
                self._tokens -= cost
                return True, 0.0
            return False, (cost - self._tokens) / self.refill_per_s

    def charge(self, cost: float) -> None:
        """Charge extra after the fact (WB: a 4xx response costs 10 requests in total)."""
        with self._lock:
            self._refill()
            self._tokens -= cost

    @property
    def remaining(self) -> int:
        with self._lock:
            self._refill()
            return max(int(math.floor(self._tokens)), 0)

    def seconds_until_full(self) -> float:
        with self._lock:
            self._refill()
            return max(self.capacity - self._tokens, 0.0) / self.refill_per_s

    def reset(self) -> None:
        with self._lock:
            self._tokens = self.capacity
            self._t = self._now()


class LeakyBucket:
    def __init__(self, capacity: int, leak_per_s: float, now: Callable[[], float]) -> None:
        self.capacity = int(capacity)
        self.leak_per_s = float(leak_per_s)
        self._now = now
        self._level = 0.0
        self._t = now()
        self._lock = threading.Lock()

    def _leak(self) -> None:
        t = self._now()
        self._level = max(0.0, self._level - (t - self._t) * self.leak_per_s)
        self._t = t

    def try_add(self) -> tuple[bool, float]:
        """Add one call. Returns (allowed, seconds until there is room again)."""
        with self._lock:
            self._leak()
            if self._level + 1 <= self.capacity:
                self._level += 1
                return True, 0.0
            return False, (self._level + 1 - self.capacity) / self.leak_per_s

    @property
    def level(self) -> int:
        with self._lock:
            self._leak()
            return int(math.ceil(self._level))

    def reset(self) -> None:
        with self._lock:
            self._level = 0.0
            self._t = self._now()
