"""Simulated time shared by every simulator of one stack.

Why a clock of our own: order arrivals, cancellations, carrier statuses and end-of-day POS files all happen
in *simulated* time. In a demo the clock runs faster than real time (``speed=60`` gives one simulated hour
per real minute); in tests it stands still and moves only when the test says so, which makes every
time-dependent behaviour deterministic (no test ever waits for the wall clock).

Protocol limits (rate limits, token lifetimes, the Ozon 30-second stock throttle) are *not* measured on this
clock: they are about how fast a client talks to the server, so they use real monotonic time (see
``SimContext.protocol_time``); tests inject a fake protocol clock to exercise them deterministically.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

#: Default start of simulated time for manual clocks: a Monday, 08:00 Moscow time. Fixed so the same seed gives
#: the same orders with the same timestamps.
DEFAULT_EPOCH = datetime(2025, 3, 3, 5, 0, 0, tzinfo=UTC)


class SimClock:
    """Simulated UTC time: ``start + elapsed_real × speed + manual advances``.

    * ``manual=True`` freezes the clock; only :meth:`advance` moves it (tests).
    * ``manual=False`` runs at ``speed`` × real time and can still be pushed forward with :meth:`advance`.

    Thread-safe: the clock is read by several uvicorn server threads and the background ticker.
    """

    def __init__(
        self,
        start: datetime | None = None,
        speed: float = 1.0,
        *,
        manual: bool = False,
        wall: Callable[[], float] = time.monotonic,
    ) -> None:
        if speed < 0:
            raise ValueError("speed must be >= 0")
        if start is None:
            start = DEFAULT_EPOCH if manual else datetime.now(UTC).replace(microsecond=0)
        if start.tzinfo is None:
            raise ValueError("start must be timezone-aware")
        self._lock = threading.Lock()
        self._start = start.astimezone(UTC)
        self._speed = float(speed)
        self._manual = manual
        self._wall = wall
        self._wall0 = wall()
        self._offset = 0.0  # simulated seconds accumulated before the last rebase + manual advances

    @property
    def start(self) -> datetime:
        return self._start

    @property
    def speed(self) -> float:
        return self._speed

    @property
    def manual(self) -> bool:
        return self._manual

    def _elapsed_locked(self) -> float:
        if self._manual:
            return self._offset
        return self._offset + (self._wall() - self._wall0) * self._speed

    def elapsed(self) -> float:
        """Simulated seconds since :attr:`start`."""
        with self._lock:
            return self._elapsed_locked()

    def now(self) -> datetime:
        """Current simulated time (timezone-aware, UTC)."""
        return self._start + timedelta(seconds=self.elapsed())

    def advance(self, seconds: float) -> datetime:
        """Move simulated time forward by ``seconds`` (never backwards: time that went by stays gone)."""
        if seconds < 0:
            raise ValueError("the simulated clock cannot go backwards")
        with self._lock:
            self._offset += float(seconds)
            return self._start + timedelta(seconds=self._elapsed_locked())

    def advance_to(self, when: datetime) -> datetime:
        """Move forward to ``when`` (no-op if it is already past)."""
        delta = (when - self.now()).total_seconds()
        return self.advance(max(delta, 0.0))

    def set_speed(self, speed: float) -> None:
        """Change the speed from now on (rebases so time already elapsed is kept)."""
        if speed < 0:
            raise ValueError("speed must be >= 0")
        with self._lock:
            self._offset = self._elapsed_locked()
            self._wall0 = self._wall()
            self._speed = float(speed)

    def describe(self) -> dict:
        return {
            "start": iso_z(self._start),
            "now": iso_z(self.now()),
            "speed": self._speed,
            "manual": self._manual,
        }


def iso_z(dt: datetime, *, ms: bool = False) -> str:
    """RFC 3339 in UTC with a ``Z`` suffix (Ozon, WB and our own control endpoints use this form)."""
    dt = dt.astimezone(UTC)
    if ms:
        return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"
    return dt.strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_rfc3339(value: str) -> datetime:
    """Parse ``2025-03-03T10:00:00Z`` / ``…+03:00`` / fractional seconds; naive values are taken as UTC."""
    if not isinstance(value, str) or not value:
        raise ValueError("empty timestamp")
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    dt = datetime.fromisoformat(text)
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.astimezone(UTC)
