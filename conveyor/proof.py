"""What a release has proven, kept with its image: the evidence each environment
attached to the digest, and approvals an earlier run recorded there."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

from conveyor import evidence
from conveyor.approvals.record import record_from_statement
from conveyor.approvals.statement import is_statement
from conveyor.config import EnvironmentConfig, Pipeline
from conveyor.connections import Connections
from conveyor.evidence import Evidence
from conveyor.release import ApprovalRecord, Release, utcnow

# Members' evidence attached at once: round trips, not CPU, so beyond the cores; few
# enough for a registry's connection limits (as ``release_set.MOUNTS``).
ATTACHES = 8


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
    member_body = body if is_statement(body) else {**body, "release": release.digest}

    def on_member(member: Release) -> str:
        return evidence.attach_evidence(
            registry, member.repository, member.digest, kind, member_body
        )

    # Members side by side: each attach is round trips to a repository of its own (the
    # one-writer lock is per image), so they wait on nothing of each other's.
    with ThreadPoolExecutor(max_workers=min(ATTACHES, len(release.members) or 1)) as pool:
        list(pool.map(on_member, release.members))
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
