"""Taking one release into one environment: the path every flow shares.

The order is the promotion model's: proof from the previous stage, a person's
approval where the environment asks for one, the cluster's pre-flight, the
environment's tag on the digest and the deploy, then verification with an automatic
rollback (and the tag back) when a check fails; a deploy that fails and that the driver
put back takes the tag back too. Each step asks the real systems what they hold first,
so a rerun after a crash neither deploys nor promotes twice.

The steps themselves are injected (``EnvironmentSteps``): the flows hand in their
Prefect tasks, a test its fakes, and the order and the verdicts live here once.
"""

from __future__ import annotations

import contextlib
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Protocol

from conveyor.approvals.freeze import active_freeze
from conveyor.approvals.record import rejected_by
from conveyor.approvals.statement import BreakGlass
from conveyor.config import EnvironmentConfig, Pipeline
from conveyor.drivers.base import DeployedState, DeployOutcome
from conveyor.errors import (
    ApprovalRejected,
    ApprovalTimedOut,
    ConfigError,
    ConveyorError,
    DeploymentFailed,
    FreezeActive,
    HealthCheckFailed,
    IntegrationTestsFailed,
    RolledBack,
    VerificationFailed,
)
from conveyor.release import (
    ApprovalRecord,
    Deployment,
    Release,
    ReleaseRecord,
    Verification,
    utcnow,
)
from conveyor.timeline import Timeline


class EnvironmentSteps(Protocol):
    """The operations ``enter_environment`` orders; each is idempotent."""

    def current_state(self, env: EnvironmentConfig) -> DeployedState: ...

    def require_proof(self, release: Release, previous: EnvironmentConfig) -> None: ...

    def earlier_approval(
        self, release: Release, env: EnvironmentConfig
    ) -> ApprovalRecord | None: ...

    def approve(
        self,
        env: EnvironmentConfig,
        release: Release,
        evidence: list[str],
        auto: bool,
        glass: BreakGlass | None = None,
    ) -> ApprovalRecord:
        """A person's approval (or the demo's automatic one); ``ApprovalRejected`` otherwise.
        ``glass``: a break-glass promotion, with the extra approver it needs in a freeze."""
        ...

    def attach_evidence(
        self, release: Release, kind: str, environment: str, payload: dict[str, Any]
    ) -> None: ...

    def verify_approval(self, release: Release, env: EnvironmentConfig) -> None:
        """The approval evidence attached to the digest verifies (signatures, bindings,
        count); ``ApprovalEvidenceInvalid`` otherwise. Asked of signed environments."""
        ...

    def tag_release(self, release: Release, env: EnvironmentConfig) -> None: ...

    def preflight(self, env: EnvironmentConfig, release: Release) -> None: ...

    def deploy(self, env: EnvironmentConfig, release: Release) -> DeployOutcome: ...

    def run_checks(self, env: EnvironmentConfig, release: Release) -> Verification: ...

    def rollback(self, env: EnvironmentConfig) -> DeployedState: ...

    def refuse_older(
        self, env: EnvironmentConfig, release: Release, running: DeployedState, reason: str
    ) -> None:
        """``OlderRelease`` if ``release`` passed the previous stage before what runs,
        unless ``reason`` asks for it as a rollback."""
        ...

    def supersede_older(self, env: EnvironmentConfig, release: Release) -> None:
        """End older releases still waiting for ``env``."""
        ...

    def deploy_window(self, env: EnvironmentConfig) -> AbstractContextManager[None]:
        """Held from the pre-flight through verification: one deploy per environment."""
        ...


def check_auto_approve(pipeline: Pipeline, source: str, envs: list[EnvironmentConfig]) -> None:
    """--auto-approve is refused before any work for a gate the pipeline file keeps closed,
    however it was asked (CLI, the UI's custom run, the API)."""
    closed = [e.name for e in envs if e.approval is not None and not e.approval.allow_auto_approve]
    if closed:
        raise ConfigError(
            source,
            [
                f"auto_approve: refused for {', '.join(closed)}: the pipeline file does not set "
                "approval.allow_auto_approve there; a person must approve"
            ],
        )


def approval_evidence(record: ReleaseRecord) -> list[str]:
    """What the approver is shown: the scan and every environment's test results so far."""
    lines = [f"scan: {record.scan_summary or 'not scanned in this run'}"]
    for v in record.verifications:
        lines.append(
            f"tests in {v.environment}: {v.passed} passed, {v.failed} failed ({v.summary})"
        )
    return lines


def describe_request(env: EnvironmentConfig, release: Release, evidence: list[str]) -> str:
    """The request a person reads in the Resume form."""
    lines = [
        f"## Approve `{release.app}` {release.version} for **{env.name}**?",
        "",
        f"- image: `{release.image}`",
        f"- approvers: {', '.join(env.approval.names) if env.approval else '-'}",
        "",
        *[f"- {line}" for line in evidence],
        "",
        "Answer with decision `approve` or `reject`, your name, and a comment.",
    ]
    return "\n".join(lines)


@dataclass(frozen=True)
class Entry:
    """How a release asks into an environment, beyond the usual way: auto-approved
    (where the pipeline file allows it), as a rollback to an older release, or
    break-glass into a freeze; each reason is recorded with the approval."""

    auto: bool = False
    rollback_reason: str = ""
    break_glass: str = ""


USUAL = Entry()


def _approval(
    steps: EnvironmentSteps,
    env: EnvironmentConfig,
    release: Release,
    record: ReleaseRecord,
    entry: Entry,
    glass: BreakGlass | None,
) -> None:
    steps.supersede_older(env, release)
    # An approval an earlier run recorded was not given for overriding this freeze: a
    # break-glass is decided by the people asked now (a rerun of this run reads its own
    # answers again).
    earlier = None if glass and glass.window else steps.earlier_approval(release, env)
    if earlier is not None:
        record.approvals.append(earlier)
        return
    try:
        approval = steps.approve(env, release, approval_evidence(record), entry.auto, glass)
    except ApprovalRejected as exc:
        timed_out = isinstance(exc, ApprovalTimedOut)
        rejected = ApprovalRecord(
            environment=env.name,
            decision="timeout" if timed_out else "reject",
            approver=None if timed_out else rejected_by(exc.statement),
            comment=f"{exc} (recorded by conveyor: no person decided)" if timed_out else str(exc),
            digest=release.digest,
            statement=exc.statement,
        )
        record.approvals.append(rejected)
        # The statement holds the signed rejection (or, for a timeout, the answers that
        # had counted); a gate that made none leaves the plain record.
        payload = exc.statement or rejected.model_dump(mode="json", exclude={"statement"})
        steps.attach_evidence(release, "approval", env.name, payload)
        raise
    if entry.rollback_reason:
        comment = f"{approval.comment} (rollback: {entry.rollback_reason})".strip()
        approval = approval.model_copy(update={"comment": comment})
    record.approvals.append(approval)
    payload = approval.statement or approval.model_dump(mode="json", exclude={"statement"})
    steps.attach_evidence(release, "approval", env.name, payload)


def _break_glass(
    env: EnvironmentConfig, already: bool, reason: str, record: ReleaseRecord
) -> BreakGlass | None:
    """A freeze refuses, unless this is a break-glass promotion, which is marked.

    Outside a freeze a break-glass is marked but asks no extra approver, never refused:
    a suspended promote run executes again from the start after each answer, and a
    freeze that ends while the release waits must not turn its approval into a refusal.
    """
    frozen = active_freeze(env.freeze, utcnow()) if not already else None
    if frozen is not None and not reason.strip():
        raise FreezeActive(frozen.message(env.name))
    if already or not reason.strip():
        return None
    glass = BreakGlass(reason=reason.strip(), window=frozen.window.describe() if frozen else None)
    extra = " (one approver more than usual)" if glass.window else " (no extra approver)"
    note = f"{glass.describe()} into {env.name}{extra}"
    if note not in record.notes:
        record.notes.append(note)
    return glass


def enter_environment(
    steps: EnvironmentSteps,
    pipeline: Pipeline,
    env: EnvironmentConfig,
    release: Release,
    record: ReleaseRecord,
    timeline: Timeline,
    entry: Entry = USUAL,
) -> None:
    """Proof, order and approval outside the deploy window (a wait for a person holds
    no lock); inside it the state is read again, since another run may have deployed.

    ``break_glass`` (its reason) lets a release into a freeze with one approver more."""
    index = pipeline.environments.index(env)
    before = steps.current_state(env)
    already = before.runs(release)
    glass = _break_glass(env, already, entry.break_glass, record)
    if index > 0:
        with timeline.stage(f"evidence {env.name}"):
            steps.require_proof(release, pipeline.environments[index - 1])
    if not already:
        steps.refuse_older(env, release, before, entry.rollback_reason)
        if env.approval is not None:
            with timeline.stage(f"approval {env.name}"):
                _approval(steps, env, release, record, entry, glass)
        if env.approval is not None and env.approval.identity == "signed":
            # What anyone can check later is checked before the first change: approval
            # evidence in the registry that does not verify stops the release, whoever
            # wrote it.
            with timeline.stage(f"approval evidence {env.name}"):
                steps.verify_approval(release, env)
    with steps.deploy_window(env):
        before = steps.current_state(env)
        already = before.runs(release)
        if not already:
            steps.refuse_older(env, release, before, entry.rollback_reason)
            with timeline.stage(f"pre-flight {env.name}"):
                steps.preflight(env, release)
        # The tag names what the environment runs or is rolling to: it moves once the
        # pre-flight has passed, right before the deploy, and returns with a rollback.
        with timeline.stage(f"promote {env.tag}"):
            steps.tag_release(release, env)
        with timeline.stage(f"deploy {env.name}"):
            outcome = _deploy(steps, env, release, before)
        record.deployments.append(Deployment(environment=env.name, changed=outcome.changed))
        # Only a release that ran here before can be restored: a failed first deploy
        # fails the run on its checks, not on "no previous release to roll back to".
        restorable = outcome.changed and before.digest is not None
        with timeline.stage(f"verify {env.name}"):
            _verify_or_roll_back(steps, pipeline, env, release, record, restorable=restorable)


def _as_running(release: Release, state: DeployedState) -> Release:
    """``release`` renamed to what ``state`` runs, for putting the tag back on it (a
    release of several services is read back from its artifact by the tag step)."""
    return release.model_copy(
        update={"digest": state.digest, "version": state.version, "revision": None}
    )


def _deploy(
    steps: EnvironmentSteps, env: EnvironmentConfig, release: Release, before: DeployedState
) -> DeployOutcome:
    """The deploy. One that fails is put back by the driver (a Marathon group to its
    version before, a container never switched): the tag, moved just before, then
    returns to the release that runs again, as after a rollback."""
    try:
        return steps.deploy(env, release)
    except DeploymentFailed:
        with contextlib.suppress(ConveyorError):
            # The deploy's failure is what the run ends on, not a read or a tag after it.
            after = steps.current_state(env)
            if before.digest is not None and after.digest == before.digest and after.version:
                steps.tag_release(_as_running(release, after), env)
        raise


def _checked(
    steps: EnvironmentSteps, env: EnvironmentConfig, release: Release
) -> Verification | ConveyorError:
    """The checks' verdict, or the check that could not pass (no healthy instance).

    Any other error is an outside system failing while the checks ran: it says nothing
    about the release, so it propagates and the run ends as an error, not a failure.
    """
    try:
        return steps.run_checks(env, release)
    except (HealthCheckFailed, VerificationFailed) as exc:
        return exc


def _verify_or_roll_back(
    steps: EnvironmentSteps,
    pipeline: Pipeline,
    env: EnvironmentConfig,
    release: Release,
    record: ReleaseRecord,
    restorable: bool,
) -> None:
    """Only failed checks roll back. Once the checks have passed, an error recording their
    evidence (retried by its step) ends the run as an error and production stays on the
    healthy release; the next run finds it deployed and records the evidence then."""
    verification = _checked(steps, env, release)
    if isinstance(verification, Verification):
        record.verifications.append(verification)
        payload = verification.model_dump(mode="json")
        if not verification.failed:
            steps.attach_evidence(release, "tests", env.name, payload)
            return
        with contextlib.suppress(ConveyorError):
            # Kept when the registry takes it; the rollback does not wait for it.
            steps.attach_evidence(release, "tests", env.name, payload)
        failure = IntegrationTestsFailed if env is pipeline.environments[0] else VerificationFailed
        failed_check: ConveyorError = failure(
            f"{verification.failed} of {verification.passed + verification.failed} checks "
            f"failed in {env.name}: {verification.summary}"
        )
    else:
        failed_check = verification
    if not (env.rollback_on_failure and restorable):
        raise failed_check
    restored = steps.rollback(env)
    if restored.digest is not None and restored.version is not None:
        steps.tag_release(_as_running(release, restored), env)
    raise RolledBack(
        f"{env.name} failed verification of {release.version} ({failed_check}); "
        f"rolled back to {restored.version or restored.digest}"
    ) from failed_check
