"""The whole operational flow in-process against the embedded Postgres and the simulators over HTTP:
orders from every channel → ingested → allocated → shipped with a label PDF → delivered; one returned and
refunded (announced to the WMS, received and inspected from the WMS's receipt feed); the invariants hold at the
end — all through the real Dagster jobs of pipelines/defs."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import dagster as dg
import pytest

from oms_ops.channels import callcentre
from oms_ops.connectors import cdek
from oms_ops.invariants import check_invariants
from oms_ops.services import returns as returns_service
from pipelines.defs import channels, operations
from pipelines.defs.channels.resources import ChannelConnectorsResource
from pipelines.resources import PostgresResource
from simulators import start_simulators
from simulators.callcentre import generate_callcentre_orders

MSK = timezone(timedelta(hours=3))
OPTIONS = {
    "wildberries": {"rate_limit": False},
    # customers' own return requests are tested in tests/connectors/test_channel_returns.py; here one return
    # opened by ops is followed through the warehouse to the refund
    "shopify": {"rate_limit": False, "return_share": 0.0},
    "ozon": {"rps_limit": None},
    "pos": {"rate_per_store": 0.03},
    "wms": {"transit_scale": 0.01},  # a returned parcel is back within 1.2 simulated hours
}


def _defs(db_url: str, manifest: str) -> dg.Definitions:
    """The domains' own assets, checks, jobs and sensors, with test resources (fast retries, no pacing)."""
    parts = (channels.defs, operations.defs)
    return dg.Definitions(
        assets=[a for d in parts for a in d.assets or ()],
        asset_checks=[c for d in parts for c in d.asset_checks or ()],
        jobs=[j for d in parts for j in d.jobs or ()],
        sensors=[s for d in parts for s in d.sensors or ()],
        resources={
            "postgres": PostgresResource(database_url=db_url),
            "channels": ChannelConnectorsResource(
                manifest_path=manifest,
                pace_requests=False,
                retry_attempts=3,
                backoff_base_seconds=0.01,
                read_timeout_seconds=10,
            ),
        },
    )


def _run(defs: dg.Definitions, job: str, instance) -> dg.ExecuteInProcessResult:
    result = defs.resolve_job_def(job).execute_in_process(instance=instance)
    assert result.success, job
    return result


def _materialization(result, asset: str) -> dict:
    """The metadata of ``asset``'s materialisation in a job run, as plain values."""
    (mat,) = result.asset_materializations_for_node(asset)
    return {k: getattr(v, "value", v) for k, v in mat.metadata.items()}


def _checks(result) -> dict[str, bool]:
    return {
        f"{e.asset_key.to_user_string()}:{e.check_name}": e.passed
        for e in result.get_asset_check_evaluations()
    }


def _next_pos_close(start: datetime) -> float:
    """Seconds until 23:05 Moscow time at least 16 h after ``start`` (POS files are written at 23:00)."""
    local = start.astimezone(MSK)
    target = local.replace(hour=23, minute=5, second=0, microsecond=0)
    while target - local < timedelta(hours=16):
        target += timedelta(days=1)
    return (target - local).total_seconds()


@pytest.mark.timeout(300)
def test_orders_from_every_channel_flow_to_delivery_and_a_return_is_refunded(db_url, tmp_path):
    start = datetime.now(UTC).replace(microsecond=0)
    with (
        start_simulators(
            seed=5,
            manual=True,
            start=start,
            rate=0.03,
            n_skus=60,
            state_dir=tmp_path / "sim",
            options=OPTIONS,
        ) as stack,
        dg.instance_for_test() as instance,
    ):
        manifest = stack.write_manifest(tmp_path / "sim" / "simulators.json")
        defs = _defs(db_url, str(manifest))
        pg = PostgresResource(database_url=db_url)

        # mappings, products and stock from the simulated world
        _run(defs, "channel_seed", instance)

        # a day of orders; the stores close at 23:00 and drop their sales files
        stack.advance(_next_pos_close(start))
        with pg.connection() as conn:
            callcentre.submit_orders(
                conn, generate_callcentre_orders(5, 12, catalog=stack.catalog, start=start)
            )
        ingest = _run(defs, "ingest_and_allocate", instance)
        assert _checks(ingest)["allocation:stock_matches_ledger"]
        with pg.connection() as conn:
            by_channel = dict(
                conn.execute("SELECT channel_code, count(*) FROM oms.orders GROUP BY 1").fetchall()
            )
            assert set(by_channel) == {"ozon", "wildberries", "webstore", "offline", "callcentre"}, by_channel
            allocated = conn.execute(
                "SELECT count(*) FROM oms.orders WHERE allocated_at IS NOT NULL"
            ).fetchone()[0]
            assert allocated > 0

        # ship, book with CDEK, register, print: three fulfilment runs with the carrier's clock moving between
        fulfil = _run(defs, "fulfilment", instance)
        assert _checks(fulfil)["shipments:order_lines_consistent"]
        for _ in range(2):
            stack.advance(10)
            _run(defs, "fulfilment", instance)
        with pg.connection() as conn:
            labelled = [
                r[0]
                for r in conn.execute(
                    "SELECT shipment_id FROM connectors.shipment_documents WHERE kind = 'label'"
                ).fetchall()
            ]
            assert labelled, "no label PDF stored"
            assert cdek.document(conn, labelled[0]).startswith(b"%PDF")

        # a fortnight later the carrier has delivered
        stack.advance(14 * 24 * 3600)
        _run(defs, "tracking_and_returns", instance)
        with pg.connection() as conn:
            delivered = conn.execute(
                """SELECT o.order_id, o.channel_code FROM oms.orders o WHERE o.state = 'delivered'
                   AND EXISTS (SELECT 1 FROM connectors.shipment_documents d JOIN oms.shipments s USING (shipment_id)
                               WHERE s.order_id = o.order_id AND d.kind = 'label')
                   ORDER BY o.order_id"""
            ).fetchall()
            assert delivered, "nothing delivered"

            # the customer sends one back: ops open the return (as the lookup page does)
            order_id = delivered[0][0]
            conn.execute("UPDATE oms.orders SET payment_status = 'paid' WHERE order_id = %s", (order_id,))
            line_id = conn.execute(
                "SELECT line_id FROM oms.order_lines WHERE order_id = %s AND qty_shipped > 0 "
                "ORDER BY line_id LIMIT 1",
                (order_id,),
            ).fetchone()[0]
            rma = returns_service.request_return(conn, order_id, [(line_id, 1, "changed_mind")], actor="ops")
            shipped_from = conn.execute(
                "SELECT location_code FROM oms.shipments WHERE order_id = %s LIMIT 1", (order_id,)
            ).fetchone()[0]

        # the returns job tells the warehouse to expect the parcel …
        announce = _run(defs, "tracking_and_returns", instance)
        assert _materialization(announce, "returns")["returns_announced"] == 1
        expected = stack["wms"].returns[rma.rma_number]
        assert expected["status"] == "expected"
        with pg.connection() as conn:
            assert (
                conn.execute(
                    "SELECT external_id FROM connectors.channel_locations WHERE system = 'wms' AND location_code = %s",
                    (shipped_from,),
                ).fetchone()[0]
                == expected["warehouse"]
            )

        # … the parcel travels back (transit compressed as in the demo), the warehouse receives it and reports
        # it in its receipt feed; the next run receives, inspects (by the reported condition) and refunds it
        stack.advance(2 * 3600)
        assert stack["wms"].returns[rma.rma_number]["status"] == "received"
        (receipt,) = [r for r in stack["wms"].return_receipts if r["rma"] == rma.rma_number]
        final = _run(defs, "tracking_and_returns", instance)
        synced = _materialization(final, "returns")["wms_receipts"]
        assert (synced["received"], synced["inspected"], synced["quarantined"]) == (1, 1, 0), synced
        with pg.connection() as conn:
            assert conn.execute(
                "SELECT state, location_code FROM oms.returns WHERE return_id = %s", (rma.return_id,)
            ).fetchone() == ("closed", shipped_from)
            disposition = {"resellable": "restock", "damaged": "write_off"}[receipt["lines"][0]["condition"]]
            assert conn.execute(
                "SELECT qty_received, disposition FROM oms.return_lines WHERE return_id = %s",
                (rma.return_id,),
            ).fetchone() == (1, disposition)
            refund = conn.execute(
                "SELECT state, amount FROM oms.refunds WHERE return_id = %s", (rma.return_id,)
            ).fetchone()
            assert refund[0] == "succeeded" and refund[1] > 0
            assert conn.execute(
                "SELECT payment_status FROM oms.orders WHERE order_id = %s", (order_id,)
            ).fetchone()[0] in ("partially_refunded", "refunded")
            assert check_invariants(conn) == []

        # the ATS push and a last look at every invariant check
        ats = _run(defs, "ats_push", instance)
        assert ats.asset_materializations_for_node("ats_pushes")
        last = _run(defs, "fulfilment", instance)
        checks = {**_checks(final), **_checks(last)}
        assert checks["shipments:order_lines_consistent"], checks
        assert _checks(_run(defs, "ingest_and_allocate", instance))["allocation:stock_matches_ledger"]
