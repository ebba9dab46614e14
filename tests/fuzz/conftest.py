"""Fixtures of the fuzz suite: one database per module (examples reset it), hypothesis settings, a tally.

The example count is bounded so the suite stays in ``make test`` (about a minute for the package):
``OMS_FUZZ_EXAMPLES`` (default 30) examples per property, derandomized — the same examples on every run, so
CI is reproducible. A longer hunt: ``OMS_FUZZ_EXAMPLES=5000 uv run pytest tests/fuzz`` (random examples,
hypothesis prints the seed of a failure). The outcome of every example is tallied per channel and written to
``test-artifacts/fuzz/<module>.json`` (and printed with ``-s``).
"""

from __future__ import annotations

import json
import os
from collections import Counter, defaultdict
from pathlib import Path

import psycopg
import pytest
from hypothesis import HealthCheck, settings
from psycopg import sql

from oms_ops.business_config import load_business_config, sync_reference_data
from oms_ops.db import connect
from tests.fixtures.postgres import create_db, drop_db

EXAMPLES = int(os.environ.get("OMS_FUZZ_EXAMPLES", "30"))
LONG_RUN = "OMS_FUZZ_EXAMPLES" in os.environ

FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=not LONG_RUN,
    database=None,
    print_blob=True,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.large_base_example,
        HealthCheck.filter_too_much,
    ],
)
#: pure properties (no database) afford more examples
FUZZ_PURE = settings(FUZZ, max_examples=EXAMPLES * 4)

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "fuzz"

#: the tables an example writes, children first (everything else — channels, locations — is shared by the module)
EXAMPLE_TABLES = (
    "raw.quarantine",
    "raw.pending_orders",
    "oms.order_events",
    "oms.order_lines",
    "oms.outbox",
    "oms.orders",
    "raw.channel_orders",
    "connectors.webhook_receipts",
    "connectors.processed_files",
    "connectors.cursors",
    "connectors.feed_status",
)


@pytest.fixture(scope="module")
def fuzz_url(pg_admin_url, pg_template_url):
    """One migrated database for the whole module, with the business configuration's channels and
    locations and the POS store mapping (``S1`` → ``ST-MSK-1``)."""
    name, url = create_db(pg_admin_url)
    with connect(url) as conn:
        sync_reference_data(conn, load_business_config())
        conn.execute(
            "INSERT INTO connectors.channel_locations (system, location_code, external_id) VALUES ('pos', 'ST-MSK-1', 'S1')"
        )
    yield url
    drop_db(pg_admin_url, name)


@pytest.fixture(scope="module")
def fuzz_conn(fuzz_url):
    with connect(fuzz_url) as conn:
        yield conn


def reset(conn: psycopg.Connection) -> None:
    """Empty what an example wrote (DELETE: on a few rows much faster than TRUNCATE; the append-only event
    log refuses DELETE, so it is truncated)."""
    with conn.transaction():
        for table in EXAMPLE_TABLES:
            verb = "TRUNCATE" if table == "oms.order_events" else "DELETE FROM"
            conn.execute(sql.SQL(verb + " {}").format(sql.Identifier(*table.split("."))))


class Tally:
    """Outcomes per channel: how many examples ran and what became of the payloads."""

    def __init__(self) -> None:
        self.counts: dict[str, Counter] = defaultdict(Counter)

    def add(self, channel: str, outcome: str, n: int = 1) -> None:
        self.counts[channel][outcome] += n

    def as_dict(self) -> dict[str, dict[str, int]]:
        return {k: dict(sorted(v.items())) for k, v in sorted(self.counts.items())}


@pytest.fixture(scope="module")
def tally(request):
    t = Tally()
    yield t
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    name = request.module.__name__.rsplit(".", 1)[-1]
    body = {"examples_per_property": EXAMPLES, "derandomized": not LONG_RUN, "outcomes": t.as_dict()}
    (ARTIFACTS / f"{name}.json").write_text(json.dumps(body, indent=2, ensure_ascii=False))
    print(f"\n[fuzz] {name}: {json.dumps(body['outcomes'], ensure_ascii=False)}")
