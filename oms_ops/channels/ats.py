"""Available-to-sell (ATS) pushed back to the channels that declare an ATS pusher (``Channel.ats``).

ATS per (channel, location, SKU) = ``on_hand − reserved − safety stock`` (never below 0), over the locations
of the channel's pool (business config ``ats_pool``) that the channel knows (``connectors.channel_locations``)
for the SKUs it lists (``connectors.channel_listings``) — defined once, by the read model's view
``ops_ats_targets`` (``oms_ops.read_model.ats_targets``), from the synced business configuration.

Only values that changed since the last successful push are sent (``connectors.ats_push_state``); each
channel module's pusher batches them to its API's limits and verifies them from the answer, e.g.:

* **Ozon** ``/v2/products/stocks``: ≤ 100 pairs per request; each pair is accepted at most once per 30 s —
  an item answered ``TOO_MANY_REQUESTS`` (inside a 200) is marked ``throttled`` and pushed again by a later
  run once 30 s have passed. ``updated: true`` is the proof (status ``pushed``, verified).
* **Wildberries** ``PUT /api/v3/stocks/{warehouseId}``: per warehouse, ≤ 1000 items. A 204 proves nothing
  (misnamed fields are ignored silently), so the amounts are read back with ``POST /api/v3/stocks/{id}`` and
  compared: equal → verified; different → ``failed``; read-back impossible → ``unverified`` (pushed, no proof).
  Items listed in a 409 are ``failed``.
* **Web store** GraphQL ``inventorySetQuantities``: ≤ 250 values per call, all or nothing per call;
  ``quantityAfterChange`` of each change is the proof (a value the store already held has no change:
  ``unverified``).

Failed items are retried with back-off (1 min × 2^attempts, capped at 1 h). ATS is not sent through the outbox:
it is state (an absolute number per key), not an event — a later value supersedes an earlier one, so the
state table coalesces changes and a re-push is always safe.
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import Iterable
from dataclasses import astuple, dataclass, field
from datetime import UTC, datetime

import psycopg

from oms_ops import read_model
from oms_ops.channels.base import Channel

log = logging.getLogger("oms.channels.ats")
#: a value the channel refused for its rate ("TOO_MANY_REQUESTS") is tried again after this many seconds
THROTTLE_RETRY_S = 30
#: what a pusher returns per item: (item, status, verified, error)
Outcome = tuple["AtsItem", str, bool, str | None]


@dataclass(frozen=True)
class AtsItem:
    channel: str
    location: str
    sku: str
    qty: int
    external_location: str  # warehouse id / Shopify location id
    offer_id: str | None = None
    product_id: int | None = None
    chrt_id: int | None = None
    inventory_item_id: int | None = None


@dataclass
class PushResult:
    channel: str
    considered: int = 0
    changed: int = 0
    pushed: int = 0
    verified: int = 0
    unverified: int = 0
    throttled: int = 0
    failed: int = 0
    requests: int = 0
    #: changed values held back (a key's window or a retry not open yet)
    waiting: int = 0
    #: seconds until the first held-back value may go (None: nothing waits)
    next_due_s: float | None = None
    batch_sizes: list[int] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def metadata(self) -> dict:
        return {
            k: getattr(self, k)
            for k in (
                "considered",
                "changed",
                "pushed",
                "verified",
                "unverified",
                "throttled",
                "failed",
                "requests",
                "waiting",
            )
        }


def desired_ats(conn: psycopg.Connection, channel: str) -> list[AtsItem]:
    """ATS for every listed SKU at every mapped location of the channel's pool: the read model's
    ``ops_ats_targets`` (the one definition of available-to-sell, shared with the Operations page)."""
    return [AtsItem(*astuple(t)) for t in read_model.ats_targets(conn, channel)]


def changed_items(
    conn: psycopg.Connection, items: list[AtsItem], *, key_interval_s: float | None = None
) -> tuple[list[AtsItem], list[float]]:
    """Items whose value differs from the last successful push, or that are due for a retry; and, for each
    changed value that must wait (a retry not due yet, or a key pushed less than ``key_interval_s`` ago), the
    seconds until it is due — the worker wakes exactly then instead of at its next sweep."""
    if not items:
        return [], []
    state = {
        (r[0], r[1]): (r[2], r[3], r[4], r[5])
        for r in conn.execute(
            """SELECT location_code, sku, pushed_qty, status,
                      extract(epoch FROM next_attempt_at - now()),
                      extract(epoch FROM pushed_at - now()) + coalesce(%s, 0)
               FROM connectors.ats_push_state WHERE channel_code = %s""",
            (key_interval_s, items[0].channel),
        ).fetchall()
    }
    out: list[AtsItem] = []
    wait: list[float] = []
    for it in items:
        prev = state.get((it.location, it.sku))
        if prev is None:
            out.append(it)
            continue
        pushed_qty, status, retry_in, window_in = prev
        if status in ("pushed", "unverified"):
            if pushed_qty == it.qty:
                continue
            if key_interval_s and window_in is not None and window_in > 0:
                wait.append(float(window_in))  # the API would refuse it now: send it when the window opens
                continue
            out.append(it)
        elif retry_in is None or retry_in <= 0:
            out.append(it)
        else:
            wait.append(float(retry_in))
    return out, wait


def freshest_first(conn: psycopg.Connection, items: list[AtsItem]) -> list[AtsItem]:
    """Items ordered by how recently their stock moved, newest first: when a channel takes fewer values per
    run than have changed (one call per value), a sale or a receipt that just happened goes out before an
    old backlog — that window is where overselling happens."""
    moved = {
        (r[0], r[1]): r[2]
        for r in conn.execute(
            """SELECT s.location_code, s.sku, s.updated_at FROM oms.stock s
               JOIN unnest(%s::text[], %s::text[]) AS k(loc, sku) ON s.location_code = k.loc AND s.sku = k.sku""",
            ([it.location for it in items], [it.sku for it in items]),
        ).fetchall()
    }
    return sorted(
        items,
        key=lambda it: moved.get((it.location, it.sku)) or datetime.min.replace(tzinfo=UTC),
        reverse=True,
    )


def _record(
    conn: psycopg.Connection, channel: str, outcomes: Iterable[tuple[AtsItem, str, bool, str | None]]
) -> None:
    """Upsert push outcomes ``(item, status, verified, error)`` in one statement."""
    rows = list(outcomes)
    if not rows:
        return
    with conn.transaction():
        conn.execute(
            """INSERT INTO connectors.ats_push_state AS a (channel_code, location_code, sku, desired_qty, pushed_qty,
                       status, verified, attempts, next_attempt_at, last_error, pushed_at, updated_at)
               SELECT %s, t.loc, t.sku, t.qty,
                      CASE WHEN t.status IN ('pushed', 'unverified') THEN t.qty END,
                      t.status, t.verified, CASE WHEN t.status IN ('pushed', 'unverified') THEN 0 ELSE 1 END,
                      CASE t.status WHEN 'throttled' THEN now() + make_interval(secs => %s)
                                    WHEN 'failed' THEN now() + interval '1 minute' END,
                      t.err, CASE WHEN t.status IN ('pushed', 'unverified') THEN now() END, now()
               FROM unnest(%s::text[], %s::text[], %s::int[], %s::text[], %s::bool[], %s::text[])
                    AS t(loc, sku, qty, status, verified, err)
               ON CONFLICT (channel_code, location_code, sku) DO UPDATE SET
                   desired_qty = excluded.desired_qty,
                   pushed_qty = CASE WHEN excluded.status IN ('pushed', 'unverified') THEN excluded.desired_qty
                                     ELSE a.pushed_qty END,
                   status = excluded.status, verified = excluded.verified,
                   attempts = CASE WHEN excluded.status IN ('pushed', 'unverified') THEN 0 ELSE a.attempts + 1 END,
                   next_attempt_at = CASE excluded.status
                       WHEN 'throttled' THEN least(now() + make_interval(secs => %s),
                                                   greatest(now() + interval '1 second',
                                                            coalesce(a.pushed_at, now()) + make_interval(secs => %s)))
                       WHEN 'failed' THEN now() + make_interval(secs => least(3600, 60 * power(2, a.attempts))) END,
                   last_error = excluded.last_error,
                   pushed_at = CASE WHEN excluded.status IN ('pushed', 'unverified') THEN now() ELSE a.pushed_at END,
                   updated_at = now()""",
            (
                channel,
                THROTTLE_RETRY_S,
                [r[0].location for r in rows],
                [r[0].sku for r in rows],
                [r[0].qty for r in rows],
                [r[1] for r in rows],
                [r[2] for r in rows],
                [r[3] for r in rows],
                THROTTLE_RETRY_S,
                THROTTLE_RETRY_S,
            ),
        )


def _lock_key(channel: str) -> int:
    return zlib.crc32(f"ats:{channel}".encode())


def push_ats(
    conn: psycopg.Connection,
    channel: Channel,
    client,
    *,
    max_items: int | None = None,
) -> PushResult:
    """Compute, diff and push one channel's ATS (at most ``max_items`` changed values per run, default the
    channel's own cap, for APIs that take one call per value; the rest go next run, freshest first).
    Concurrent runs for the same channel: the second skips."""
    if channel.ats is None:
        raise ValueError(f"channel {channel.code!r} has no ATS pusher")
    code = channel.code
    max_items = channel.ats.max_items if max_items is None else max_items
    res = PushResult(code)
    got = conn.execute("SELECT pg_try_advisory_lock(%s)", (_lock_key(code),)).fetchone()[0]
    if not got:
        res.errors.append("another ATS push for this channel is running")
        return res
    try:
        items = desired_ats(conn, code)
        res.considered = len(items)
        todo, waits = changed_items(conn, items, key_interval_s=channel.ats.key_interval_s)
        res.changed = len(todo)
        res.waiting = len(waits)
        res.next_due_s = min(waits) if waits else None
        if max_items is not None and len(todo) > max_items:
            todo = freshest_first(conn, todo)[:max_items]
            res.next_due_s = 0.0  # more changed values than one run takes: go again at once
        if not todo:
            return res
        outcomes = channel.ats.push(client, todo, res)
        _record(conn, code, outcomes)
        for _, status, verified, _ in outcomes:
            if status in ("pushed", "unverified"):
                res.pushed += 1
            res.verified += verified
            res.unverified += status == "unverified"
            res.throttled += status == "throttled"
            res.failed += status == "failed"
    finally:
        conn.execute("SELECT pg_advisory_unlock(%s)", (_lock_key(code),))
    return res
