"""Invariant checks on the operational assets, carrying the numbers that disagree.

* ``stock_matches_ledger`` (on ``allocation``): on_hand = Σ ledger, reserved = Σ ledger = Σ active
  reservations, 0 ≤ reserved ≤ on_hand — ``check_invariants``, stock part. ERROR severity.
* ``order_lines_consistent`` (on ``shipments``): every other invariant of ``check_invariants`` (a line reserved
  at most once, shipped ≤ ordered, shipped = shipment lines = consumed reservations, returns within shipped,
  no active reservation on a closed order, states in the transition table). ERROR severity.
* ``orders_within_sla`` (on ``shipments``): open orders past their ship-by deadline. WARN.
"""

import dagster as dg

from oms_ops.invariants import check_invariants
from oms_ops.read_model import orders_past_sla
from pipelines.defs.operations.assets import allocation, shipments
from pipelines.resources import PostgresResource

STOCK_INVARIANTS = frozenset(
    {
        "stock_on_hand_equals_ledger",
        "stock_reserved_equals_ledger",
        "stock_reserved_equals_active_reservations",
        "stock_nonnegative",
    }
)
SAMPLE = 25


def _result(violations) -> dg.AssetCheckResult:
    by_name: dict[str, int] = {}
    for v in violations:
        by_name[v.invariant] = by_name.get(v.invariant, 0) + 1
    sample = [
        {"invariant": v.invariant, "key": v.key, **{k: str(n) for k, n in v.numbers.items()}}
        for v in violations[:SAMPLE]
    ]
    return dg.AssetCheckResult(
        passed=not violations,
        severity=dg.AssetCheckSeverity.ERROR,
        metadata={
            "violations": len(violations),
            "by_invariant": dg.MetadataValue.json(by_name),
            "sample": dg.MetadataValue.json(sample),
        },
    )


@dg.asset_check(
    asset=allocation, blocking=False, description="stock = ledger; reserved = active reservations."
)
def stock_matches_ledger(postgres: PostgresResource) -> dg.AssetCheckResult:
    with postgres.connection() as conn:
        found = [v for v in check_invariants(conn) if v.invariant in STOCK_INVARIANTS]
    return _result(found)


@dg.asset_check(
    asset=shipments,
    blocking=False,
    description="Lines reserved at most once, shipped ≤ ordered and = shipment lines, returns ≤ shipped.",
)
def order_lines_consistent(postgres: PostgresResource) -> dg.AssetCheckResult:
    with postgres.connection() as conn:
        found = [v for v in check_invariants(conn) if v.invariant not in STOCK_INVARIANTS]
    return _result(found)


@dg.asset_check(asset=shipments, blocking=False, description="No open order is past its ship-by deadline.")
def orders_within_sla(postgres: PostgresResource) -> dg.AssetCheckResult:
    with postgres.connection() as conn:
        info = orders_past_sla(conn)
    return dg.AssetCheckResult(
        passed=info["count"] == 0,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={
            "past_sla": info["count"],
            "by_state": dg.MetadataValue.json(info["by_state"]),
            "by_channel": dg.MetadataValue.json(info["by_channel"]),
            "oldest": dg.MetadataValue.json(info["oldest"]),
        },
    )


CHECKS = [stock_matches_ledger, order_lines_consistent, orders_within_sla]
