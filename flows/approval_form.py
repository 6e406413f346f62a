"""The Resume form of an approval request, and the suspension that shows it.

The form is what the UI renders and what ``conveyor approve`` fills in: a decision, a
name, the digest and environment it is about (prefilled, so an answer meant for
another release is refused), a comment and, where the gate takes only signed
answers, the signed line ``conveyor approve --print`` makes.
"""

from __future__ import annotations

from typing import Literal

from prefect.flow_runs import suspend_flow_run
from prefect.input import RunInput
from pydantic import Field

from conveyor.approvals.waiting import MAX_COMMENT, WaitingRequest
from conveyor.config import EnvironmentConfig
from conveyor.release import Release
from tasks.runtime import logger


class ApprovalInput(RunInput):
    """The Resume form. The decision has no default: a person picks approve or reject."""

    decision: Literal["approve", "reject"] = Field(
        description="approve lets this digest into the environment; reject ends the run"
    )
    approver: str = Field(description="your name, as on the environment's approvers list")
    digest: str = Field(description="the digest you decide about (prefilled: this release's)")
    environment: str = Field(description="the environment you decide about (prefilled)")
    comment: str = Field(
        default="",
        max_length=MAX_COMMENT,
        description=f"why (required to reject); at most {MAX_COMMENT:,} characters",
    )
    signature: str = Field(
        default="",
        description="for a gate that needs signed answers: the line `conveyor approve … --print` prints",
    )


def describe_request(
    env: EnvironmentConfig, release: Release, evidence: list[str], request: WaitingRequest
) -> str:
    lines = [
        f"## Approve `{release.app}` {release.version} for **{env.name}**?",
        "",
        f"- digest: `{release.digest}` (the form names it; an answer naming another is refused)",
        f"- image: `{release.image}`",
        f"- asked at {request.since:%Y-%m-%d %H:%M:%S} UTC; no decision by "
        f"{request.deadline:%Y-%m-%d %H:%M:%S} UTC counts as a rejection",
        f"- approvers: {', '.join(request.approvers)}",
        *([f"- **{request.progress}**"] if request.progress else []),
        "",
        *[f"- {line}" for line in evidence],
        "",
        f"Pick `approve` or `reject`, give your name and a comment (at most {MAX_COMMENT:,} "
        "characters).",
    ]
    return "\n".join(lines)


def suspend(
    env: EnvironmentConfig,
    release: Release,
    evidence: list[str],
    request: WaitingRequest,
    timeout_s: int,
) -> None:
    """Suspend the run under the request's pause key with the Resume form; the process exits."""
    logger().info(
        "waiting for a decision on %s (%s) for %s until %s UTC; no process waits meanwhile",
        release.version,
        release.digest,
        env.name,
        f"{request.deadline:%Y-%m-%d %H:%M:%S}",
    )
    form = ApprovalInput.with_initial_data(
        description=describe_request(env, release, evidence, request),
        digest=release.digest,
        environment=env.name,
    )
    suspend_flow_run(wait_for_input=form, timeout=max(1, timeout_s), key=request.pause_key)
