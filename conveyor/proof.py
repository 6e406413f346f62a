"""What a release has proven, kept with its image: the evidence each environment
attached to the digest, and approvals an earlier run recorded there."""

from __future__ import annotations

from typing import Any

from conveyor import evidence
from conveyor.approvals.record import record_from_statement
from conveyor.approvals.statement import is_statement
from conveyor.config import EnvironmentConfig, Pipeline
from conveyor.connections import Connections
from conveyor.evidence import Evidence
from conveyor.release import ApprovalRecord, Release, utcnow


def results_kind(pipeline: Pipeline, environment: str) -> str:
    """The first environment's tests are integration tests; later ones verify."""
    return "integration" if environment == pipeline.environments[0].name else "verification"


def attach(
    connections: Connections,
    release: Release,
    kind: str,
    environment: str,
    payload: dict[str, Any],
) -> str:
    """Attach ``payload`` to the release's digest; ``tests`` becomes the environment's kind.

    A release of several services gets it on every member's digest too (first, so the
    release artifact's evidence never stands without its members'); its digest is
    returned.
    """
    if kind == "tests":
        kind = results_kind(connections.pipeline, environment)
    # An in-toto Statement names its environment in its predicate; nothing is added
    # beside the four fields the format has.
    body = payload if is_statement(payload) else {**payload, "environment": environment}
    registry = connections.registry()
    for member in release.members:
        member_body = body if is_statement(body) else {**body, "release": release.digest}
        evidence.attach_evidence(registry, member.repository, member.digest, kind, member_body)
    return evidence.attach_evidence(registry, release.repository, release.digest, kind, body)


def require_proof(
    connections: Connections, release: Release, previous: EnvironmentConfig
) -> list[Evidence]:
    """The previous environment's passing results, or ``EvidenceMissing``."""
    kind = results_kind(connections.pipeline, previous.name)
    return evidence.require_evidence(
        connections.registry(),
        release.repository,
        release.digest,
        kinds=(kind,),
        environment=previous.name,
    )


def earlier_approval(
    connections: Connections, release: Release, env: EnvironmentConfig
) -> ApprovalRecord | None:
    """An approval of this digest for ``env`` that an earlier run recorded with the image.

    A rerun after a crash between approval and deploy goes on with it instead of asking
    again. Only approvers still on the environment's list count, and only within
    ``approval.valid_for`` (default the timeout): a release that comes back later is
    looked at again.
    """
    if env.approval is None:
        return None
    allowed, window = env.approval.names, env.approval.answer_validity
    found = evidence.read_evidence(
        connections.registry(), release.repository, release.digest, ("approval",)
    )
    for record in reversed(found):
        if is_statement(record.payload):
            earlier = record_from_statement(record.payload, env.approval.required)
            if (
                earlier is not None
                and earlier.environment == env.name
                and all(name in allowed for name in (earlier.approver or "").split(", "))
                and utcnow() - record.created <= window
            ):
                return earlier
            continue
        p = record.payload
        if (
            p.get("environment") == env.name
            and p.get("decision") == "approve"
            and p.get("approver") in allowed
            and utcnow() - record.created <= window
        ):
            return ApprovalRecord.model_validate(p)
    return None
