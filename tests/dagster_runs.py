"""Runs recorded by a real Dagster instance, configured by the repository's dagster.yaml, in a Postgres
database of the test: the health figures read what Dagster itself writes (run status, the will-retry tag
that ``run_retries`` sets when a run fails).

* :func:`fail_in_a_step` — a run whose op raises (``STEP_FAILURE``): with ``retry_on_asset_or_op_failure:
  false`` Dagster will not retry it;
* :func:`fail_before_start` — a run failed by the run coordinator before any step ran, as when the code
  server is unreachable: retried;
* :func:`enqueue` — a run put in the queue, as a schedule's submission does.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import dagster as dg
from dagster import DagsterEvent, DagsterInstance

from oms_ops.platform.stack import REPO_ROOT, dagster_storage_url


@dg.op
def _boom() -> None:
    raise RuntimeError("the op failed")


@dg.job
def failing_job() -> None:
    _boom()


@dg.op
def _fine() -> None:
    return None


@dg.job
def waiting_job() -> None:
    _fine()


@contextmanager
def dagster_instance(database_url: str, home: Path, monkeypatch) -> Iterator[DagsterInstance]:
    """The instance `oms up` configures: the repository's dagster.yaml in ``home``, its storage the database
    of ``database_url`` (given as the ``postgresql+psycopg2://`` URL of OMS_DAGSTER_STORAGE_URL)."""
    home.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(REPO_ROOT / "dagster.yaml", home / "dagster.yaml")
    monkeypatch.setenv("OMS_DAGSTER_STORAGE_URL", dagster_storage_url(database_url, database_url))
    instance = DagsterInstance.from_config(str(home))
    try:
        yield instance
    finally:
        instance.dispose()


def fail_in_a_step(instance: DagsterInstance) -> str:
    result = failing_job.execute_in_process(instance=instance, raise_on_error=False)
    assert not result.success
    return result.run_id


def fail_before_start(instance: DagsterInstance) -> str:
    run = instance.create_run_for_job(job_def=waiting_job)
    instance.report_run_failed(run)
    return run.run_id


def enqueue(instance: DagsterInstance) -> str:
    """A run put in the queue the way the QueuedRunCoordinator does (the enqueued event), its origin this
    module (a queued run must say where its code is)."""
    from dagster._core.remote_origin import (
        InProcessCodeLocationOrigin,
        RemoteJobOrigin,
        RemoteRepositoryOrigin,
    )
    from dagster._core.types.loadable_target_origin import LoadableTargetOrigin

    location = InProcessCodeLocationOrigin(LoadableTargetOrigin(python_file=__file__))
    origin = RemoteJobOrigin(RemoteRepositoryOrigin(location, "__repository__"), waiting_job.name)
    run = instance.create_run_for_job(job_def=waiting_job, remote_job_origin=origin)
    instance.report_dagster_event(DagsterEvent.job_enqueue(run), run_id=run.run_id)
    return run.run_id
