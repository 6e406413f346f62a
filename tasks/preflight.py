"""Pre-flight: is the target cluster sound enough to take this release? Asked of the
platform through its driver (DC/OS: units, agents, resources) and of vCenter (hosts,
agent VMs, datastores, alarms), as the environment's pipeline file says; every check
lands in one table."""

from __future__ import annotations

from prefect.artifacts import create_table_artifact

from conveyor.config import EnvironmentConfig, Pipeline
from conveyor.preflight import PreflightReport
from conveyor.preflight.environment import environment_preflight, raise_for_failures, report_rows
from conveyor.release import Release
from tasks.runtime import connections, logger, pipeline_task


@pipeline_task("pre-flight", retries=3)
def preflight(
    pipeline: Pipeline, env: EnvironmentConfig, release: Release
) -> list[PreflightReport]:
    log = logger()
    with connections(pipeline) as c:
        reports = environment_preflight(c, env, release)
    rows = report_rows(reports)
    if rows:
        create_table_artifact(
            key=f"preflight-{env.name}", table=rows, description=f"pre-flight of {env.name}"
        )
    for report in reports:
        for warning in report.warnings:
            log.warning("%s pre-flight warning: %s", report.source, warning.line())
    raise_for_failures(env, reports)
    log.info("%s pre-flight: %d checks passed", env.name, sum(len(r.checks) for r in reports))
    return reports
