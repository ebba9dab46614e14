"""Asset checks of the channel feeds: ingestion freshness, quarantine growth and the normaliser's backlog,
with the numbers."""

import dagster as dg

from oms_ops.channels.base import Channel, ChannelChecks
from oms_ops.read_model import feed_freshness, normalisation_backlog, quarantine_summary
from oms_ops.services import supply as supply_service
from pipelines.defs.channels.assets import (
    ORDER_ASSETS,
    ORDER_CHANNELS,
    STOCK_ASSETS,
    STOCK_FEEDS,
    wms_inbound_supply,
)
from pipelines.resources import PostgresResource

#: the WMS stock feeds' thresholds
STOCK_CHECKS = ChannelChecks()


def _freshness_check(asset: dg.AssetsDefinition, feed: str, max_age: int | None) -> dg.AssetChecksDefinition:
    @dg.asset_check(
        asset=asset,
        name="ingestion_is_fresh",
        blocking=False,
        description=f"The {feed} feed succeeded within {max_age} s (None: on demand, never stale).",
    )
    def _check(postgres: PostgresResource) -> dg.AssetCheckResult:
        with postgres.connection() as conn:
            info = feed_freshness(conn, feed)
        age = info["age_seconds"]
        passed = max_age is None or (age is not None and age <= max_age)
        return dg.AssetCheckResult(
            passed=passed,
            severity=dg.AssetCheckSeverity.WARN,
            metadata={
                "feed": feed,
                "age_seconds": age if age is not None else -1,
                "max_age_seconds": max_age or -1,
                "last_success_at": info["last_success_at"] or "never",
                "last_error": info["last_error"] or "",
            },
        )

    return _check


def _quarantine_check(asset: dg.AssetsDefinition, channel: Channel) -> dg.AssetChecksDefinition:
    sources = channel.sources
    limit = channel.checks.quarantine_per_hour

    @dg.asset_check(
        asset=asset,
        name="quarantine_not_growing",
        blocking=False,
        description=f"At most {limit} new open quarantine rows of source(s) {', '.join(sources)} per hour.",
    )
    def _check(postgres: PostgresResource) -> dg.AssetCheckResult:
        with postgres.connection() as conn:
            rows = [r for r in quarantine_summary(conn) if r["source"] in sources]
        numbers = {
            "open": sum(int(r["open_rows"]) for r in rows),
            "new_last_hour": sum(int(r["new_last_hour"]) for r in rows),
        }
        recent = numbers["new_last_hour"]
        return dg.AssetCheckResult(
            passed=recent <= limit,
            severity=dg.AssetCheckSeverity.WARN,
            metadata={"source": ", ".join(sources), **numbers, "threshold": limit},
        )

    return _check


def _backlog_check(asset: dg.AssetsDefinition, channel: Channel) -> dg.AssetChecksDefinition:
    max_wait = channel.checks.max_queue_wait_seconds

    @dg.asset_check(
        asset=asset,
        name="normalisation_not_stuck",
        blocking=False,
        description=f"No {channel.code} payload waits in the normaliser's queue longer than {max_wait} s.",
    )
    def _check(postgres: PostgresResource) -> dg.AssetCheckResult:
        with postgres.connection() as conn:
            numbers = normalisation_backlog(conn, channel.code)
        return dg.AssetCheckResult(
            passed=numbers["oldest_wait_seconds"] <= max_wait,
            severity=dg.AssetCheckSeverity.WARN,
            metadata={"channel": channel.code, **numbers, "max_wait_seconds": max_wait},
        )

    return _check


def _channel_of(asset: dg.AssetsDefinition) -> Channel:
    return ORDER_CHANNELS[asset.key.path[-1]]


CHECKS = [
    *[_freshness_check(a, _channel_of(a).code, _channel_of(a).checks.max_age_seconds) for a in ORDER_ASSETS],
    *[_quarantine_check(a, _channel_of(a)) for a in ORDER_ASSETS],
    *[_backlog_check(a, _channel_of(a)) for a in ORDER_ASSETS],
    *[_freshness_check(a, STOCK_FEEDS[a.key.path[-1]], STOCK_CHECKS.max_age_seconds) for a in STOCK_ASSETS],
]


@dg.asset_check(
    asset=wms_inbound_supply,
    name="promises_within_supply",
    blocking=False,
    description="No supply is promised to waiting lines beyond what it still brings, and no closed supply "
    "still carries promises (docs/allocation.md, 'Incoming supply and promise dates').",
)
def promises_within_supply(postgres: PostgresResource) -> dg.AssetCheckResult:
    with postgres.connection() as conn:
        bad = supply_service.overpromised(conn)
    # a receipt between two computations shows here for a moment: the next one (seconds later) fixes it
    return dg.AssetCheckResult(
        passed=not bad,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={"overpromised_lines": len(bad), "first": dg.MetadataValue.json(bad[:20])},
    )


CHECKS.append(promises_within_supply)
