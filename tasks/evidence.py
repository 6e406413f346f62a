"""Evidence kept with the image: what passed where, attached to the digest itself."""

from __future__ import annotations

from typing import Any

from conveyor import evidence
from conveyor.config import EnvironmentConfig, Pipeline
from conveyor.release import ApprovalRecord, Release, utcnow
from tasks.common import logger, stage
from tasks.wiring import registry_client


def test_kind(pipeline: Pipeline, environment: str) -> str:
    return "integration" if environment == pipeline.environments[0].name else "verification"


def record_evidence(
    pipeline: Pipeline, release: Release, kind: str, environment: str, payload: dict[str, Any]
) -> str:
    """Attach ``payload`` to the release's digest; for steps that record their own results."""
    if kind == "tests":
        kind = test_kind(pipeline, environment)
    with registry_client(pipeline) as registry:
        digest = evidence.attach_evidence(
            registry,
            release.repository,
            release.digest,
            kind,
            {**payload, "environment": environment},
        )
    logger().info(
        "attached %s evidence of %s to %s as %s", kind, environment, release.short, digest[:19]
    )
    return digest


@stage("attach evidence", retries=3)
def attach_evidence(
    pipeline: Pipeline, release: Release, kind: str, environment: str, payload: dict[str, Any]
) -> str:
    return record_evidence(pipeline, release, kind, environment, payload)


@stage("evidence check", retries=3)
def require_proof(pipeline: Pipeline, release: Release, previous: EnvironmentConfig) -> None:
    """Refuse a digest the previous environment has not passed, however the run started."""
    kind = test_kind(pipeline, previous.name)
    with registry_client(pipeline) as registry:
        found = evidence.require_evidence(
            registry, release.repository, release.digest, kinds=(kind,), environment=previous.name
        )
    logger().info(
        "%s passed %s: %s",
        release.short,
        previous.name,
        "; ".join(f"{e.kind} at {e.created:%Y-%m-%d %H:%M}" for e in found),
    )


@stage("earlier approval", retries=3)
def earlier_approval(
    pipeline: Pipeline, release: Release, env: EnvironmentConfig
) -> ApprovalRecord | None:
    """An approval of this digest for ``env`` that an earlier run recorded with the image.

    A rerun after a crash between approval and deploy goes on with it instead of asking
    again. Only approvers still on the environment's list count, and only within the
    approval timeout: a release that comes back later is looked at again.
    """
    if env.approval is None:
        return None
    allowed, window = env.approval.names, env.approval.timeout
    with registry_client(pipeline) as registry:
        found = evidence.read_evidence(registry, release.repository, release.digest, ("approval",))
    for record in reversed(found):
        p = record.payload
        if (
            p.get("environment") == env.name
            and p.get("decision") == "approve"
            and p.get("approver") in allowed
            and utcnow() - record.created <= window
        ):
            logger().info(
                "%s was approved for %s by %s at %s",
                release.short,
                env.name,
                p["approver"],
                p.get("at"),
            )
            return ApprovalRecord.model_validate(p)
    return None
