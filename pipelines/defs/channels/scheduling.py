"""Schedule helper shared by the channel and operations domains: one run per tick, never two at once.

Every tick's run carries ``run_key = <schedule>:<tick time>``, so a tick evaluated twice (daemon restart,
replay) launches one run; a tick that finds the previous run of the same job still going is skipped with a
reason instead of stacking runs behind a slow API.
"""

import dagster as dg
from dagster import DagsterRunStatus, RunsFilter

ACTIVE = [
    DagsterRunStatus.QUEUED,
    DagsterRunStatus.NOT_STARTED,
    DagsterRunStatus.STARTING,
    DagsterRunStatus.STARTED,
]


def every(
    job, cron: str, *, name: str | None = None, description: str | None = None
) -> dg.ScheduleDefinition:
    schedule_name = name or f"{job.name}_schedule"

    @dg.schedule(
        name=schedule_name,
        job=job,
        cron_schedule=cron,
        execution_timezone="UTC",
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description=description,
    )
    def _schedule(context: dg.ScheduleEvaluationContext):
        running = context.instance.get_runs(filters=RunsFilter(job_name=job.name, statuses=ACTIVE), limit=1)
        if running:
            return dg.SkipReason(f"{job.name} run {running[0].run_id} is still in progress")
        tick = context.scheduled_execution_time
        return dg.RunRequest(
            run_key=f"{schedule_name}:{tick.isoformat() if tick else 'manual'}",
            tags={"oms/schedule": schedule_name},
        )

    return _schedule
