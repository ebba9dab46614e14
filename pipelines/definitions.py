"""The Dagster code location: merges the ``defs`` of each domain package and binds the shared resources."""

import dagster as dg

from pipelines.defs import analytics, platform
from pipelines.resources import store_resources

defs = dg.Definitions.merge(
    platform.defs,
    analytics.defs,
    dg.Definitions(resources=store_resources()),
)
