"""Integration tests and production verification: health, HTTP checks, the test
command and, where vCenter is configured, the spread of instances over ESXi hosts."""

from __future__ import annotations

from contextlib import closing

import httpx
from prefect.artifacts import create_table_artifact

from conveyor.config import EnvironmentConfig, Pipeline
from conveyor.probe import CheckResult, run_http_checks, run_test_command, wait_healthy
from conveyor.release import Release, Verification
from tasks.common import logger, stage
from tasks.evidence import record_evidence
from tasks.placement import placement_result
from tasks.wiring import driver_for


def _checks(pipeline: Pipeline, env: EnvironmentConfig, urls: list[str]) -> list[CheckResult]:
    results: list[CheckResult] = []
    with httpx.Client(timeout=10) as http:
        wait_healthy(
            http,
            urls,
            env.health.path,
            env.health.expect_status,
            env.health.timeout_s,
            env.health.interval_s,
        )
        for url in urls:
            for result in run_http_checks(http, url, env.tests.http):
                name = result.name if len(urls) == 1 else f"{result.name} @ {url}"
                results.append(CheckResult(name, result.passed, result.detail, result.duration_s))
    if env.tests.command:
        results.append(run_test_command(env.tests.command, urls, env.tests.command_timeout_s))
    return results


@stage("verify", retries=1)
def run_checks(pipeline: Pipeline, env: EnvironmentConfig, release: Release) -> Verification:
    """Every check runs and is reported; the caller decides what a failure means."""
    with closing(driver_for(pipeline, env)) as driver:
        state = driver.status()
    urls = [i.url for i in state.instances]
    results = _checks(pipeline, env, urls)
    placement = placement_result(pipeline, env, state)
    if placement is not None:
        results.append(placement)
    failed = [r for r in results if not r.passed]
    for r in failed:
        logger().error("check failed in %s: %s: %s", env.name, r.name, r.detail)
    create_table_artifact(
        key=f"tests-{pipeline.app.name}-{env.name}",
        table=[
            {
                "check": r.name,
                "result": "passed" if r.passed else "FAILED",
                "detail": r.detail,
                "seconds": round(r.duration_s, 2),
            }
            for r in results
        ],
        description=f"{env.name}: checks of {release.version} ({release.short})",
    )
    summary = ", ".join(f"{r.name}: {'ok' if r.passed else 'FAILED'}" for r in results)
    verification = Verification(
        environment=env.name, passed=len(results) - len(failed), failed=len(failed), summary=summary
    )
    record_evidence(pipeline, release, "tests", env.name, verification.model_dump(mode="json"))
    return verification
