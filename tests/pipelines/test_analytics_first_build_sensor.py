"""The first marts build is requested as soon as an order has shipped, once."""

import dagster as dg

from pipelines.defs.analytics.schedules import analytics_first_build_sensor
from pipelines.resources import PostgresResource
from tests.core import factories


def test_first_build_waits_for_a_shipment_then_fires_once(conn, db_url):
    resources = {"postgres": PostgresResource(database_url=db_url)}
    with dg.build_sensor_context(resources=resources) as ctx:
        result = analytics_first_build_sensor(ctx)
        assert isinstance(result, dg.SkipReason) and "no shipment" in result.skip_message
    factories.world(conn)
    factories.shipped_order(conn)
    with dg.build_sensor_context(resources=resources) as ctx:
        requests = analytics_first_build_sensor(ctx)
        assert {r.job_name for r in requests} == {"analytics_dbt_build"}  # start-up builds the ops views
        assert all(r.run_key == "first-build" for r in requests)
        assert ctx.cursor == "done"
    with dg.build_sensor_context(resources=resources, cursor="done") as ctx:
        assert isinstance(analytics_first_build_sensor(ctx), dg.SkipReason)
