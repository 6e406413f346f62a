"""Taking one release into one environment: the path every flow shares.

The order is the promotion model's: proof from the previous stage, a person's
approval where the environment asks for one, the environment's tag on the digest,
the cluster's pre-flight, the deploy, then verification with an automatic rollback
when it fails. Each step asks the real systems what they hold first, so a rerun
after a crash neither deploys nor promotes twice.
"""

from __future__ import annotations

from conveyor.config import EnvironmentConfig, Pipeline
from conveyor.errors import (
    ApprovalRejected,
    ConveyorError,
    IntegrationTestsFailed,
    RolledBack,
    VerificationFailed,
)
from conveyor.release import ApprovalRecord, Deployment, Release, ReleaseRecord
from flows.timeline import Timeline
from tasks.approval import auto_approve, request_approval
from tasks.deploy import current_state, deploy
from tasks.evidence import attach_evidence, earlier_approval, require_proof
from tasks.preflight import preflight
from tasks.promote import tag_release
from tasks.rollback import rollback
from tasks.verify import run_checks


def approval_evidence(record: ReleaseRecord) -> list[str]:
    lines = [f"scan: {record.scan_summary or 'not scanned in this run'}"]
    for v in record.verifications:
        lines.append(
            f"tests in {v.environment}: {v.passed} passed, {v.failed} failed ({v.summary})"
        )
    return lines


def _approve(
    env: EnvironmentConfig, release: Release, record: ReleaseRecord, auto: bool
) -> ApprovalRecord:
    try:
        if auto:
            return auto_approve(env, release)
        return request_approval(env, release, approval_evidence(record))
    except ApprovalRejected as exc:
        record.approvals.append(
            ApprovalRecord(environment=env.name, decision="reject", approver=None, comment=str(exc))
        )
        raise


def enter_environment(
    pipeline: Pipeline,
    env: EnvironmentConfig,
    release: Release,
    record: ReleaseRecord,
    timeline: Timeline,
    auto: bool = False,
) -> None:
    index = pipeline.environments.index(env)
    before = current_state(pipeline, env)
    already = before.runs(release)
    if index > 0:
        with timeline.stage(f"evidence {env.name}"):
            require_proof(pipeline, release, pipeline.environments[index - 1])
    if env.approval is not None and not already:
        with timeline.stage(f"approval {env.name}"):
            earlier = earlier_approval(pipeline, release, env)
            approval = earlier or _approve(env, release, record, auto)
            record.approvals.append(approval)
            if earlier is None:
                attach_evidence(
                    pipeline, release, "approval", env.name, approval.model_dump(mode="json")
                )
    with timeline.stage(f"promote {env.tag}"):
        tag_release(pipeline, release, env)
    if not already:
        with timeline.stage(f"pre-flight {env.name}"):
            preflight(pipeline, env, release)
    with timeline.stage(f"deploy {env.name}"):
        outcome = deploy(pipeline, env, release)
    record.deployments.append(Deployment(environment=env.name, changed=outcome.changed))
    # Only a release that ran here before can be restored: a failed first deploy fails
    # the run on its checks, not on "no previous release to roll back to".
    restorable = outcome.changed and before.digest is not None
    with timeline.stage(f"verify {env.name}"):
        _verify_or_roll_back(pipeline, env, release, record, restorable=restorable)


def _verify_or_roll_back(
    pipeline: Pipeline,
    env: EnvironmentConfig,
    release: Release,
    record: ReleaseRecord,
    restorable: bool,
) -> None:
    try:
        verification = run_checks(pipeline, env, release)
        record.verifications.append(verification)
        if verification.failed:
            failure = (
                IntegrationTestsFailed if env is pipeline.environments[0] else VerificationFailed
            )
            raise failure(
                f"{verification.failed} of {verification.passed + verification.failed} checks "
                f"failed in {env.name}: {verification.summary}"
            )
    except ConveyorError as exc:
        if not (env.rollback_on_failure and restorable):
            raise
        restored = rollback(pipeline, env)
        raise RolledBack(
            f"{env.name} failed verification of {release.version} ({exc}); "
            f"rolled back to {restored.version or restored.digest}"
        ) from exc
