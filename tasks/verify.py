"""Integration tests and production verification: every check runs and lands in a table
artifact; the delivery attaches the verdict to the digest and decides what a failure means."""

from __future__ import annotations

from prefect.artifacts import create_table_artifact

from conveyor import verification
from conveyor.config import EnvironmentConfig, Pipeline
from conveyor.release import Release, Verification
from tasks.runtime import connections, logger, pipeline_task


@pipeline_task("verify", retries=1)
def run_checks(pipeline: Pipeline, env: EnvironmentConfig, release: Release) -> Verification:
    with connections(pipeline) as c:
        results = verification.run_checks(c, env, release)
        for r in results:
            if not r.passed:
                logger().error("check failed in %s: %s: %s", env.name, r.name, r.detail)
        create_table_artifact(
            key=f"tests-{pipeline.release_name}-{env.name}",
            table=verification.results_rows(results),
            description=f"{env.name}: checks of {release.version} ({release.short})",
        )
    # The delivery attaches the verdict as evidence in a step of its own: an outside
    # system failing to record it must not look like, or repeat, a failed check.
    return verification.verdict(env, results)
