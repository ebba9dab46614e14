"""Postgres connections for the domain code.

Connections are ``autocommit=True``; every business operation opens its own ``with conn.transaction():``
block, so no session is ever left idle in a transaction.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

import psycopg
from psycopg import errors

T = TypeVar("T")


class RetryTransaction(Exception):
    """Raised by an operation that cannot finish without breaking the lock order (what it must lock depends
    on figures that changed under it); :func:`run_in_transaction` runs it again from the start."""


#: Errors after which the whole transaction can simply be run again.
RETRYABLE = (errors.DeadlockDetected, errors.SerializationFailure, errors.LockNotAvailable, RetryTransaction)


def connect(url: str, **kwargs) -> psycopg.Connection:
    """Open an autocommit connection (the caller owns transactions)."""
    return psycopg.connect(url, autocommit=True, **kwargs)


def run_in_transaction(
    conn: psycopg.Connection, fn: Callable[[psycopg.Connection], T], *, attempts: int = 8
) -> T:
    """Run ``fn(conn)`` inside one transaction, retrying deadlocks and serialization failures.

    Deadlocks should not happen (rows are locked in a fixed order) but concurrent WMS snapshots,
    cancellations and allocations must never surface one to a caller, so the whole unit is retried
    with a short randomised back-off.
    """
    import random

    for attempt in range(1, attempts + 1):
        try:
            with conn.transaction():
                return fn(conn)
        except RETRYABLE:
            if attempt == attempts:
                raise
            time.sleep(min(0.5, 0.01 * 2**attempt) * (0.5 + random.random()))
    raise AssertionError("unreachable")
