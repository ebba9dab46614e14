"""Available-to-sell out: one push per channel that declares an ATS pusher, each under its own advisory lock
(a concurrent push of the same channel skips), a channel without configuration skipped with the reason."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import psycopg

from oms_ops.channels import registry
from oms_ops.channels.ats import PushResult, push_ats
from oms_ops.connectors.config import NotConfigured
from oms_ops.services.clients import Clients


@dataclass
class PushAllResult:
    results: dict[str, PushResult] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)

    @property
    def next_due_s(self) -> float | None:
        """Seconds until the first held-back value of any channel may go (None: nothing waits)."""
        due = [r.next_due_s for r in self.results.values() if r.next_due_s is not None]
        return min(due) if due else None

    @property
    def metadata(self) -> dict[str, Any]:
        out: dict[str, Any] = {code: r.metadata() for code, r in self.results.items()}
        out.update({code: {"skipped": why} for code, why in self.skipped.items()})
        return out


def push_all(
    conn: psycopg.Connection,
    clients: Clients,
    *,
    max_items: int | None = None,
    only: str | None = None,
) -> PushAllResult:
    """Push the changed ATS values of every channel with a pusher (values from the read model), or of
    channel ``only``. ``max_items`` lowers the per-run cap of channels that declare one (APIs taking one call
    per value): the worker pushes often and little (fresh changes first), a scheduled sweep seldom and more."""
    out = PushAllResult()
    for channel in registry.with_ats():
        if only is not None and channel.code != only:
            continue
        try:
            client = clients.get(channel.system)
        except NotConfigured as exc:
            out.skipped[channel.code] = str(exc)
            continue
        cap = channel.ats.max_items
        if max_items is not None and cap is not None:
            cap = min(cap, max_items)
        res = push_ats(conn, channel, client, max_items=cap)
        out.results[channel.code] = res
        out.errors += [f"{channel.code}: {e}" for e in res.errors]
    return out
