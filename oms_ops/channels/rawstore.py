"""What an ingestion run reports, and the hooks tests use to simulate a crash."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from oms_ops.connectors.normalize import NormalizeResult, normalize_pending
from oms_ops.connectors.state import store_page


@dataclass
class IngestResult:
    """One run of a channel connector: what came over the wire and what the OMS made of it."""

    channel: str
    pages: int = 0
    fetched: int = 0  # records received (duplicates inside pages included)
    new_raw: int = 0  # raw rows that were new
    rejected: int = 0  # records unusable at fetch time (no id): quarantined with the page
    cursor: dict | None = None
    normalized: NormalizeResult = field(default_factory=NormalizeResult)
    notes: list[str] = field(default_factory=list)

    def metadata(self) -> dict[str, Any]:
        return {
            "pages": self.pages,
            "fetched": self.fetched,
            "new_raw": self.new_raw,
            "rejected_at_fetch": self.rejected,
            **{f"normalized_{k}": v for k, v in self.normalized.as_dict().items()},
        }


#: Called after a page was fetched and before it is stored; tests raise in it to simulate a crash there.
PageHook = Callable[[int, list], None]


@contextmanager
def fetch_ahead() -> Iterator[ThreadPoolExecutor]:
    """A one-thread pool for the next page's request, submitted as soon as the current page says where the
    next one starts and running while the current page is stored and normalised: the channel renders and
    sends while Postgres works (both are I/O for us, which releases the GIL). Only requests run ahead —
    pages are stored strictly in order, each with its cursor, and a page fetched but never stored (a crash)
    is fetched again by the next run, exactly as without the thread."""
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="fetch-ahead") as pool:
        yield pool


def iso(dt: datetime) -> str:
    return dt.isoformat().replace("+00:00", "Z")


def parse_time(value: Any) -> datetime | None:
    """An API timestamp (RFC 3339, ``Z`` or offset; a naive one is taken as UTC) or None when absent or
    unreadable — used for watermarks, where a bad value must not stop the page from being stored."""
    if not isinstance(value, str) or not value:
        return None
    try:
        dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


def store_polled_page(
    conn,
    channel: str,
    items,
    rejects,
    res: IngestResult,
    *,
    cursor_name: str,
    cursor_value: dict,
    normalize: bool,
    before_commit: Callable[[], None] | None,
) -> None:
    """A polled page into Postgres (payloads, quarantined rejects, cursor: one transaction, ``store_page``)
    and its counts into ``res`` — the step every polling connector takes after each page."""
    page = store_page(
        conn,
        channel,
        items,
        rejects=rejects,
        cursor_name=cursor_name,
        cursor_value=cursor_value,
        normalize=normalize,
        before_commit=before_commit,
    )
    res.new_raw += page.new
    res.rejected += len(rejects)
    if normalize:
        normalize_stored(conn, channel, page, res)


def normalize_stored(conn, channel: str, page, res: IngestResult) -> None:
    """Count what the page's own transaction normalised; when it could not (older rows pending, or the
    normaliser failed on it), sweep the pending rows now."""
    if page.normalized is not None:
        res.normalized.add(page.normalized)
    elif page.rows:
        res.normalized.add(normalize_pending(conn, channel))
