"""The Prefect tasks behind ``conveyor.delivery``'s steps: how a flow takes one
release into one environment (a step of the flows, not a flow of its own)."""

from __future__ import annotations

from typing import Any

from conveyor.config import EnvironmentConfig, Pipeline
from conveyor.delivery import enter_environment as deliver
from conveyor.drivers.base import DeployedState, DeployOutcome
from conveyor.release import ApprovalRecord, Release, ReleaseRecord, Verification
from conveyor.timeline import Timeline
from flows.approval_gate import auto_approve, request_approval
from tasks import deploy, evidence, preflight, promote, rollback, verify


class TaskSteps:
    """Each step is one Prefect task run (retries, logs, artifacts); the approval is the
    flow run's own pause."""

    def __init__(self, pipeline: Pipeline) -> None:
        self.pipeline = pipeline

    def current_state(self, env: EnvironmentConfig) -> DeployedState:
        return deploy.current_state(self.pipeline, env)

    def require_proof(self, release: Release, previous: EnvironmentConfig) -> None:
        evidence.require_proof(self.pipeline, release, previous)

    def earlier_approval(self, release: Release, env: EnvironmentConfig) -> ApprovalRecord | None:
        return evidence.earlier_approval(self.pipeline, release, env)

    def approve(
        self, env: EnvironmentConfig, release: Release, lines: list[str], auto: bool
    ) -> ApprovalRecord:
        return auto_approve(env, release) if auto else request_approval(env, release, lines)

    def attach_evidence(
        self, release: Release, kind: str, environment: str, payload: dict[str, Any]
    ) -> None:
        evidence.attach_evidence(self.pipeline, release, kind, environment, payload)

    def verify_approval(self, release: Release, env: EnvironmentConfig) -> None:
        evidence.verify_approval(self.pipeline, release, env)

    def tag_release(self, release: Release, env: EnvironmentConfig) -> None:
        promote.tag_release(self.pipeline, release, env)

    def preflight(self, env: EnvironmentConfig, release: Release) -> None:
        preflight.preflight(self.pipeline, env, release)

    def deploy(self, env: EnvironmentConfig, release: Release) -> DeployOutcome:
        return deploy.deploy(self.pipeline, env, release)

    def run_checks(self, env: EnvironmentConfig, release: Release) -> Verification:
        return verify.run_checks(self.pipeline, env, release)

    def rollback(self, env: EnvironmentConfig) -> DeployedState:
        return rollback.rollback(self.pipeline, env)


def enter_environment(
    pipeline: Pipeline,
    env: EnvironmentConfig,
    release: Release,
    record: ReleaseRecord,
    timeline: Timeline,
    auto: bool = False,
) -> None:
    deliver(TaskSteps(pipeline), pipeline, env, release, record, timeline, auto)
