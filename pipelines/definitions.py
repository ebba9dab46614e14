"""The Dagster code location: merges the ``defs`` of each domain package and binds the shared resources."""

import dagster as dg

from pipelines.defs import analytics, channels, operations, platform
from pipelines.resources import store_resources

defs = dg.Definitions.merge(
    platform.defs,
    channels.defs,
    operations.defs,
    analytics.defs,
    # in-process: one process per run instead of one per step — on a small machine the per-step process
    # start-up (importing Dagster and this code location) costs more than the steps themselves
    dg.Definitions(resources=store_resources(), executor=dg.in_process_executor),
)
