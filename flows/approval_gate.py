"""The manual gate: the flow run pauses until a person on the allowlist decides.

Prefect pauses flow runs, not tasks, so the gate runs in the flow itself. The pause
is Prefect's own (``pause_flow_run(wait_for_input=...)``), so the UI's Resume form,
``conveyor approve`` and ``POST /api/flow_runs/{id}/resume`` all answer it. A timeout is a rejection, and the run fails with that reason rather than lingering
as Paused (Prefect #11414).
"""

from __future__ import annotations

import math
import time
from typing import Literal

from prefect.exceptions import FlowPauseTimeout
from prefect.flow_runs import pause_flow_run
from prefect.input import RunInput
from prefect.runtime import flow_run
from pydantic import Field

from conveyor.config import EnvironmentConfig
from conveyor.delivery import describe_request
from conveyor.errors import ApprovalRejected
from conveyor.release import ApprovalRecord, Release
from tasks.runtime import logger

# Prefect checks for a resume every ``poll_interval`` seconds (10 by default). Half a
# second keeps the approval-to-next-task latency under a second even when the answer
# comes right after a check; the cost is one read of one flow run per half second of
# waiting, which a Prefect server serves in about a millisecond.
POLL_INTERVAL_S = 0.5


class ApprovalInput(RunInput):
    """The Resume form a person fills in, in the UI or through ``conveyor approve``."""

    decision: Literal["approve", "reject"] = Field(
        description="approve lets the release into the environment; reject ends the run"
    )
    approver: str = Field(description="your name, as on the environment's approvers list")
    comment: str = Field(default="", description="why (required to reject)")


def _ask(description: str, remaining_s: float, attempt: int, env: str) -> ApprovalInput:
    # Prefect types poll_interval as int but only sleeps it, so half a second works.
    answer: ApprovalInput = pause_flow_run(  # type: ignore[call-overload]
        wait_for_input=ApprovalInput.with_initial_data(description=description, decision="approve"),
        timeout=max(1, math.ceil(remaining_s)),
        poll_interval=POLL_INTERVAL_S,
        key=f"approval-{env}-{attempt}",
    )
    return answer


def request_approval(
    env: EnvironmentConfig, release: Release, evidence: list[str]
) -> ApprovalRecord:
    """Pause until an allowlisted person decides; return the approval or raise ``ApprovalRejected``."""
    if env.approval is None:
        raise ValueError(f"environment {env.name} has no approval gate")
    log = logger()
    description = describe_request(env, release, evidence)
    deadline = time.monotonic() + env.approval.timeout.total_seconds()
    run_id = str(flow_run.get_id() or "")
    for attempt in range(1, 1000):
        remaining = deadline - time.monotonic()
        try:
            if remaining <= 0:
                raise FlowPauseTimeout("approval deadline passed")
            answer = _ask(description, remaining, attempt, env.name)
        except FlowPauseTimeout:
            raise ApprovalRejected(
                f"no decision for {env.name} within {env.approval.timeout}: a timeout counts as a rejection"
            ) from None
        if answer.approver not in env.approval.names:
            log.warning(
                "refused a %s from %r: not on the approvers list of %s (%s); still waiting for a valid answer",
                answer.decision,
                answer.approver,
                env.name,
                ", ".join(env.approval.names),
            )
            continue
        if answer.decision == "reject":
            raise ApprovalRejected(
                f"{answer.approver} rejected {release.version} for {env.name}: {answer.comment or 'no reason given'}"
            )
        log.info(
            "%s approved %s for %s: %s", answer.approver, release.version, env.name, answer.comment
        )
        return ApprovalRecord(
            environment=env.name,
            decision="approve",
            approver=answer.approver,
            comment=answer.comment,
            flow_run_id=run_id,
        )
    raise ApprovalRejected(f"too many refused answers for {env.name}")


def auto_approve(env: EnvironmentConfig, release: Release) -> ApprovalRecord:
    """Demo only: nobody looked at this release. Said loudly in the log and the record."""
    logger().warning(
        "AUTO-APPROVED %s for %s WITHOUT A PERSON (--auto-approve is for the local demo only)",
        release.version,
        env.name,
    )
    return ApprovalRecord(
        environment=env.name,
        decision="approve",
        approver=None,
        comment="AUTO-APPROVED for the demo: no person reviewed this release",
        flow_run_id=str(flow_run.get_id() or ""),
    )
