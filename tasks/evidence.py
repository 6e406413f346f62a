"""Evidence kept with the image: what passed where, attached to the digest itself."""

from __future__ import annotations

from typing import Any

from conveyor import evidence
from conveyor.config import EnvironmentConfig, Pipeline
from conveyor.release import Release
from tasks.common import logger, stage
from tasks.wiring import registry_client


def test_kind(pipeline: Pipeline, environment: str) -> str:
    return "integration" if environment == pipeline.environments[0].name else "verification"


@stage("attach evidence", retries=3)
def attach_evidence(
    pipeline: Pipeline, release: Release, kind: str, environment: str, payload: dict[str, Any]
) -> str:
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
