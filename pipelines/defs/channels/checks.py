"""Asset checks of the channel feeds: ingestion freshness, quarantine growth and the normaliser's backlog,
with the numbers."""

import dagster as dg

from oms_ops.connectors.flow import feed_freshness, normalisation_backlog, quarantine_growth
from pipelines.defs.channels.assets import ORDER_ASSETS, ORDER_FEEDS, STOCK_ASSETS, STOCK_FEEDS
from pipelines.resources import PostgresResource

#: a polled feed older than this is stale (POS files arrive once a day)
MAX_AGE_SECONDS = {"offline": 26 * 3600, "callcentre": None}
DEFAULT_MAX_AGE_SECONDS = 15 * 60
#: more new quarantine rows than this in an hour is worth a look
QUARANTINE_PER_HOUR = 50
QUARANTINE_SOURCE = {"offline": "pos"}
#: a payload queued for normalisation longer than this is stuck (the assets normalise every minute; POS
#: files are normalised as they are read)
MAX_QUEUE_WAIT_SECONDS = 15 * 60


def _freshness_check(asset: dg.AssetsDefinition, feed: str) -> dg.AssetChecksDefinition:
    max_age = MAX_AGE_SECONDS.get(feed, DEFAULT_MAX_AGE_SECONDS)

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


def _quarantine_check(asset: dg.AssetsDefinition, feed: str) -> dg.AssetChecksDefinition:
    source = QUARANTINE_SOURCE.get(feed, feed)

    @dg.asset_check(
        asset=asset,
        name="quarantine_not_growing",
        blocking=False,
        description=f"At most {QUARANTINE_PER_HOUR} new open quarantine rows of source {source!r} per hour.",
    )
    def _check(postgres: PostgresResource) -> dg.AssetCheckResult:
        with postgres.connection() as conn:
            numbers = quarantine_growth(conn, source)
            if source != feed:
                other = quarantine_growth(conn, feed)
                numbers = {k: numbers[k] + other[k] for k in numbers}
        recent = numbers["new_last_60_min"]
        return dg.AssetCheckResult(
            passed=recent <= QUARANTINE_PER_HOUR,
            severity=dg.AssetCheckSeverity.WARN,
            metadata={"source": source, **numbers, "threshold": QUARANTINE_PER_HOUR},
        )

    return _check


def _backlog_check(asset: dg.AssetsDefinition, feed: str) -> dg.AssetChecksDefinition:
    @dg.asset_check(
        asset=asset,
        name="normalisation_not_stuck",
        blocking=False,
        description=f"No {feed} payload waits in the normaliser's queue longer than {MAX_QUEUE_WAIT_SECONDS} s.",
    )
    def _check(postgres: PostgresResource) -> dg.AssetCheckResult:
        with postgres.connection() as conn:
            numbers = normalisation_backlog(conn, feed)
        return dg.AssetCheckResult(
            passed=numbers["oldest_wait_seconds"] <= MAX_QUEUE_WAIT_SECONDS,
            severity=dg.AssetCheckSeverity.WARN,
            metadata={"channel": feed, **numbers, "max_wait_seconds": MAX_QUEUE_WAIT_SECONDS},
        )

    return _check


CHECKS = [
    *[_freshness_check(a, ORDER_FEEDS[a.key.path[-1]]) for a in ORDER_ASSETS],
    *[_quarantine_check(a, ORDER_FEEDS[a.key.path[-1]]) for a in ORDER_ASSETS],
    *[_backlog_check(a, ORDER_FEEDS[a.key.path[-1]]) for a in ORDER_ASSETS],
    *[_freshness_check(a, STOCK_FEEDS[a.key.path[-1]]) for a in STOCK_ASSETS],
]
