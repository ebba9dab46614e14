"""Analytics: dbt models on ClickHouse (and live views on Postgres)."""

import dagster as dg

from pipelines.defs.analytics.assets import oms_dbt_assets
from pipelines.defs.analytics.schedules import analytics_schedule

defs = dg.Definitions(assets=[oms_dbt_assets], schedules=[analytics_schedule])
