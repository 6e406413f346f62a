"""The Prefect tasks behind ``conveyor.delivery``'s steps: how a flow takes one
release into one environment (a step of the flows, not a flow of its own)."""

from __future__ import annotations

from contextlib import AbstractContextManager
from functools import partial
from typing import Any

from prefect.runtime import deployment, flow_run

from conveyor.approvals.changes import request_lines, self_approvers
from conveyor.approvals.messages import RequestFacts, decided, waiting
from conveyor.approvals.policy import identities, required_approvers
from conveyor.approvals.starter import judge_start
from conveyor.approvals.statement import BreakGlass, StartedBy
from conveyor.approvals.waiting import WaitingRequest
from conveyor.config import EnvironmentConfig, Pipeline
from conveyor.delivery import USUAL, Entry
from conveyor.delivery import enter_environment as deliver
from conveyor.drivers.base import DeployedState, DeployOutcome
from conveyor.errors import ApprovalRejected
from conveyor.release import ApprovalRecord, Release, ReleaseRecord, Verification
from conveyor.timeline import Timeline
from flows.approval_gate import auto_approve, request_approval
from tasks import deploy, evidence, lock, ordering, preflight, promote, rollback, verify
from tasks.approval_deadline import ensure_deadline_automation
from tasks.notify import ensure_reminders, notify, tag_for_reminders
from tasks.record import publish_record
from tasks.runtime import logger


def started_by(env: EnvironmentConfig, release: Release) -> StartedBy | None:
    """Who started the release (``conveyor ship --as``), from this run's parameters: ship
    checked the signed start before any work and each handover passes it on.

    A claim that does not verify here still excludes the name it gives (excluding
    only refuses more), but is recorded as not verified.
    """
    params = flow_run.parameters or {}
    name = str(params.get("started_by") or "")
    if not name:
        return None
    judged = judge_start(env, release.app, name, str(params.get("start_token") or ""))
    if isinstance(judged, str):
        logger().warning("the start of this release does not verify: %s", judged)
        return StartedBy(name=name, verified=False)
    return judged


class TaskSteps:
    """Each step is one Prefect task run (retries, logs, artifacts); the approval is the
    flow run's own suspension, the deploy window a global concurrency limit."""

    def __init__(self, pipeline: Pipeline, record: ReleaseRecord, timeline: Timeline) -> None:
        self.pipeline = pipeline
        self.record = record
        self.timeline = timeline

    def current_state(self, env: EnvironmentConfig) -> DeployedState:
        return deploy.current_state(self.pipeline, env)

    def require_proof(self, release: Release, previous: EnvironmentConfig) -> None:
        evidence.require_proof(self.pipeline, release, previous)

    def earlier_approval(self, release: Release, env: EnvironmentConfig) -> ApprovalRecord | None:
        return evidence.earlier_approval(self.pipeline, release, env)

    def approve(
        self,
        env: EnvironmentConfig,
        release: Release,
        lines: list[str],
        auto: bool,
        glass: BreakGlass | None = None,
    ) -> ApprovalRecord:
        if auto:
            return auto_approve(env, release)
        assert env.approval is not None
        running = deploy.current_state(self.pipeline, env).digest
        found = evidence.release_changes(self.pipeline, release, running)
        started = started_by(env, release)
        excluded = self_approvers(
            identities(env.approval), found.commits, started.name if started else None
        )
        lines = [*lines, *request_lines(found, excluded, env.approval.allow_self_approval)]
        if release.members:
            lines = [*lines, *evidence.member_changes(self.pipeline, release, running)]
        if started is not None:
            lines.append(started.describe())
            if started.describe() not in self.record.notes:
                self.record.notes.append(started.describe())
        if glass is not None:
            needed = required_approvers(env.approval, glass)
            lines.append(f"{glass.describe()}: {needed} approvers needed")
        facts = RequestFacts(
            app=release.app,
            version=release.version,
            digest=release.digest,
            environment=env.name,
            run_id=str(flow_run.get_id()),
            ui_url=flow_run.get_flow_run_ui_url(),
            evidence=lines,
        )
        try:
            approval = request_approval(
                env,
                release,
                lines,
                on_ask=partial(self._waiting, env, facts),
                excluded=excluded,
                glass=glass,
                started=started,
            )
        except ApprovalRejected as exc:
            notify(env.approval.notify, *decided(facts, "not approved", str(exc)))
            raise
        notify(
            env.approval.notify,
            *decided(facts, "approved", f"by {approval.approver}: {approval.comment}"),
        )
        return approval

    def _waiting(
        self, env: EnvironmentConfig, facts: RequestFacts, request: WaitingRequest
    ) -> None:
        """Before the run suspends: the release record says where and since when it waits,
        and the approvers are told (reminders come from Prefect automations meanwhile)."""
        ensure_deadline_automation(str(deployment.get_id()))
        approval = env.approval
        if approval is not None and approval.notify is not None:
            tag_for_reminders(request.run_id, request.app, request.environment)
            if approval.remind_every is not None:
                ensure_reminders(
                    request.app,
                    request.environment,
                    approval.notify,
                    approval.remind_every,
                    approval.timeout,
                )
            notify(approval.notify, *waiting(facts))
        self.record.notes.append(
            f"waits for approval to enter {request.environment} since "
            f"{request.since:%Y-%m-%d %H:%M:%S} UTC (until {request.deadline:%Y-%m-%d %H:%M:%S} "
            f"UTC; approvers: {', '.join(request.approvers)})"
        )
        publish_record(self.pipeline, self.record, self.timeline)

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

    def refuse_older(
        self, env: EnvironmentConfig, release: Release, running: DeployedState, reason: str
    ) -> None:
        ordering.refuse_older(self.pipeline, env, release, running, reason)

    def supersede_older(self, env: EnvironmentConfig, release: Release) -> None:
        ordering.supersede_older(self.pipeline, env, release)

    def deploy_window(self, env: EnvironmentConfig) -> AbstractContextManager[None]:
        return lock.deploy_window(self.pipeline, env)


def enter_environment(
    pipeline: Pipeline,
    env: EnvironmentConfig,
    release: Release,
    record: ReleaseRecord,
    timeline: Timeline,
    entry: Entry = USUAL,
) -> None:
    steps = TaskSteps(pipeline, record, timeline)
    deliver(steps, pipeline, env, release, record, timeline, entry)
