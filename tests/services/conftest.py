"""Data for the shipping use-case tests: the sample business configuration, real allocation decisions.

``world`` builds a small shop with orders for every shipping case — courier (two lines, one marketplace),
pickup point, click & collect at a store, a till sale, an order split over two warehouses and a partially
allocated one — accepted through ``accept_orders`` and allocated by ``allocate_batch``, so carriers,
tariffs and handovers come from real decisions. ``twins`` builds that world once and clones the database,
so two paths can be run on identical data.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from oms_ops.allocation import allocate_batch
from oms_ops.db import connect
from tests.core.test_alloc_support import NOW, place, receive, sample_config, seed_reference
from tests.fixtures.postgres import create_db, drop_db

SKUS = {"KETTLE": 1500, "MUG": 400, "TEA": 250, "LAMP": 2000, "VASE": 900}
T0 = datetime(2025, 11, 26, 3, 0, tzinfo=UTC)


def build_world(conn) -> dict[str, int]:
    """Reference data, stock and allocated orders; returns order ids by case name."""
    cfg = sample_config()
    seed_reference(conn, cfg, SKUS)
    receive(conn, "WH-MSK-POD", {"KETTLE": 20, "MUG": 20, "TEA": 20})
    receive(conn, "WH-SPB-SHU", {"LAMP": 5, "MUG": 5})
    receive(conn, "WH-KZN", {"LAMP": 2})
    receive(conn, "ST-MSK-1", {"KETTLE": 10, "MUG": 10})
    cases = [
        ("courier", dict(lines=[("KETTLE", 1), ("MUG", 2)])),
        ("marketplace", dict(lines=[("TEA", 3)], channel="ozon")),
        ("pickup_point", dict(lines=[("KETTLE", 1)], method="pickup_point", pickup="PP-MSK-1", region=None)),
        ("click_collect", dict(lines=[("MUG", 1)], method="store_pickup", pickup="ST-MSK-1", region=None)),
        (
            "till",
            dict(
                lines=[("KETTLE", 2)],
                channel="offline",
                method="store_pickup",
                pickup="ST-MSK-1",
                region=None,
            ),
        ),
        ("split", dict(lines=[("KETTLE", 1), ("LAMP", 1)])),
        # default rule, above 15 000 RUB: ships what Kazan has, VASE (no stock anywhere) waits
        ("partial", dict(lines=[("LAMP", 2), ("VASE", 1)], region="Казань", price=5000)),
    ]
    ids = {}
    for n, (name, kw) in enumerate(cases):
        lines = kw.pop("lines")
        ids[name] = place(conn, lines, placed_at=T0 + timedelta(minutes=n), **kw)
    allocate_batch(conn, config=cfg, now=NOW)
    return ids


@pytest.fixture
def world(conn) -> dict[str, int]:
    return build_world(conn)


@pytest.fixture
def twins(pg_admin_url, pg_template_url):
    """Two databases with the same allocated world: ``(url_a, url_b, ids)``."""
    name_a, url_a = create_db(pg_admin_url)
    with connect(url_a) as c:
        ids = build_world(c)
    name_b, url_b = create_db(pg_admin_url, template=name_a)
    yield url_a, url_b, ids
    drop_db(pg_admin_url, name_b)
    drop_db(pg_admin_url, name_a)
