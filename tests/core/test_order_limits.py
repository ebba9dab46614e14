"""Quantity limits per channel (``limits.by_channel``): checked at acceptance — the order is quarantined with
every line over the limit named — and by ``check_order_limits`` for order changes; refused at load time for
an unknown channel."""

from __future__ import annotations

import copy
from decimal import Decimal

import pytest
import yaml

from oms_ops.business_config import (
    DEFAULT_PATH,
    BusinessConfigError,
    check_order_limits,
    load_business_config,
    parse_business_config,
    use_order_limits,
)
from oms_ops.errors import ValidationFailed
from oms_ops.orders import accept_orders
from tests.core.test_alloc_support import order_dict, seed_reference

LIMITS = load_business_config().limits


def limits(by_channel):
    return type(LIMITS).model_validate({**LIMITS.model_dump(), "by_channel": by_channel})


OZON = limits({"ozon": {"max_line_quantity": 50, "max_order_quantity": 80}})


def test_every_line_over_the_channels_limit_and_the_order_total_are_named():
    lines = [
        (1, "MUG", 60, Decimal(400), None),
        (2, "KETTLE", 10, Decimal(1500), None),
        {"sku": "TEA", "qty": 51},
    ]
    with pytest.raises(ValidationFailed) as exc:
        check_order_limits("ozon", lines, limits=OZON)
    assert exc.value.problems == [
        "line 1 (MUG): 60 units, more than limits.by_channel.ozon.max_line_quantity (50)",
        "line 3 (TEA): 51 units, more than limits.by_channel.ozon.max_line_quantity (50)",
        "order: 121 units in 3 lines, more than limits.by_channel.ozon.max_order_quantity (80)",
    ]
    check_order_limits("ozon", [{"line_no": 1, "sku": "MUG", "qty": 50}], limits=OZON)
    # another channel: only the global line limit applies
    check_order_limits("webstore", [(1, "MUG", 60, Decimal(400), None)], limits=OZON)
    with pytest.raises(
        ValidationFailed, match=r"line 1 \(MUG\): 10001 units, more than limits.max_line_quantity"
    ):
        check_order_limits("webstore", [(1, "MUG", 10_001, Decimal(1), None)], limits=OZON)


def test_a_channel_limit_above_the_global_one_does_not_loosen_it():
    loose = limits({"ozon": {"max_line_quantity": 20_000}})
    with pytest.raises(ValidationFailed, match=r"more than limits.max_line_quantity \(10000\)"):
        check_order_limits("ozon", [(1, "MUG", 10_001, Decimal(1), None)], limits=loose)


@pytest.fixture
def ozon_limits():
    use_order_limits(OZON)
    yield
    use_order_limits(None)


def test_acceptance_quarantines_an_order_over_its_channels_limits(conn, ozon_limits):
    seed_reference(conn, load_business_config(), {"MUG": 400, "KETTLE": 1500})
    over = order_dict([("MUG", 60), ("KETTLE", 30)], channel="ozon", region="Москва")
    fine = order_dict([("MUG", 50), ("KETTLE", 30)], channel="ozon", region="Москва")
    web = order_dict([("MUG", 60)], channel="webstore")
    res = accept_orders(conn, [over, fine, web], actor="test")
    assert len(res.accepted) == 2
    assert res.rejected == [
        (
            over["external_id"],
            "line 1 (MUG): 60 units, more than limits.by_channel.ozon.max_line_quantity (50); "
            "order: 90 units in 2 lines, more than limits.by_channel.ozon.max_order_quantity (80)",
        )
    ]
    reason = conn.execute(
        "SELECT reason FROM raw.quarantine WHERE external_id = %s", (over["external_id"],)
    ).fetchone()[0]
    assert "limits.by_channel.ozon.max_line_quantity (50)" in reason
    assert (
        conn.execute(
            "SELECT count(*) FROM oms.orders WHERE external_id = %s", (over["external_id"],)
        ).fetchone()[0]
        == 0
    )


def test_the_sample_limits_and_an_unknown_channel():
    sample = load_business_config().limits.by_channel
    assert sample["ozon"].max_line_quantity == 100 and sample["webstore"].max_order_quantity == 1000
    data = yaml.safe_load(DEFAULT_PATH.read_text(encoding="utf-8"))
    data["limits"]["by_channel"]["aliexpress"] = {"max_line_quantity": 5}
    data["limits"]["by_channel"]["ozon"] = {"max_order_quantity": 0}
    with pytest.raises(BusinessConfigError) as exc:
        parse_business_config(copy.deepcopy(data))
    problems = exc.value.problems
    assert any(p.startswith("limits.by_channel.ozon.max_order_quantity:") for p in problems), problems
    with pytest.raises(BusinessConfigError, match="limits.by_channel.aliexpress: unknown channel"):
        del data["limits"]["by_channel"]["ozon"]
        parse_business_config(data)
