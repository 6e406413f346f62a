"""Integration tests and production verification: every check runs, lands in a table
artifact and is attached to the digest; the flow decides what a failure means."""

from __future__ import annotations

from prefect.artifacts import create_table_artifact

from conveyor import verification
from conveyor.config import EnvironmentConfig, Pipeline
from conveyor.release import Release, Verification
from tasks.evidence import record_evidence
from tasks.runtime import connections, logger, pipeline_task


@pipeline_task("verify", retries=1)
def run_checks(pipeline: Pipeline, env: EnvironmentConfig, release: Release) -> Verification:
    with connections(pipeline) as c:
        results = verification.run_checks(c, env)
        for r in results:
            if not r.passed:
                logger().error("check failed in %s: %s: %s", env.name, r.name, r.detail)
        create_table_artifact(
            key=f"tests-{pipeline.app.name}-{env.name}",
            table=verification.results_rows(results),
            description=f"{env.name}: checks of {release.version} ({release.short})",
        )
        verdict = verification.verdict(env, results)
        record_evidence(c, release, "tests", env.name, verdict.model_dump(mode="json"))
    return verdict
