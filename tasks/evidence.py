"""Evidence kept with the image: what passed where, attached to the digest itself."""

from __future__ import annotations

from typing import Any

from conveyor import proof, services_release
from conveyor.approvals import changes
from conveyor.approvals.changes import Changes, source_payload
from conveyor.approvals.verify import require_verified_approval
from conveyor.clients.git_history import history
from conveyor.config import EnvironmentConfig, Pipeline
from conveyor.connections import Connections
from conveyor.errors import NotFound
from conveyor.evidence import read_evidence
from conveyor.release import ApprovalRecord, Release
from tasks.runtime import connections, logger, pipeline_task


def record_evidence(
    c: Connections, release: Release, kind: str, environment: str, payload: dict[str, Any]
) -> str:
    """Attach ``payload`` to the release's digest; for steps that record their own results."""
    digest = proof.attach(c, release, kind, environment, payload)
    logger().info(
        "attached %s evidence of %s to %s as %s",
        proof.results_kind(c.pipeline, environment) if kind == "tests" else kind,
        environment,
        release.short,
        digest[:19],
    )
    return digest


@pipeline_task("attach evidence", retries=3)
def attach_evidence(
    pipeline: Pipeline, release: Release, kind: str, environment: str, payload: dict[str, Any]
) -> str:
    with connections(pipeline) as c:
        return record_evidence(c, release, kind, environment, payload)


@pipeline_task("record source", retries=3)
def record_source(pipeline: Pipeline, release: Release) -> str | None:
    """The build's commit and its history (authors, committers) as ``source`` evidence."""
    if release.revision is None:
        logger().info("%s was built outside git: no history to record", release.short)
        return None
    commits = history(pipeline.members[0].context, release.revision)
    with connections(pipeline) as c:
        return record_evidence(
            c, release, "source", "build", source_payload(commits, release.revision)
        )


@pipeline_task("changes since the running release", retries=3)
def release_changes(pipeline: Pipeline, release: Release, running_digest: str | None) -> Changes:
    """What this release changes against the one the environment runs, from the history
    each build recorded: the request shows it, and its authors may not approve it."""
    with connections(pipeline) as c:
        registry, repo = c.registry(), release.repository

        def source(digest: str) -> dict[str, Any] | None:
            found = read_evidence(registry, repo, digest, ("source",))
            return found[-1].payload if found else None

        this = source(release.digest)
        running = source(running_digest) if running_digest else None
    return changes.release_changes(this, running)


@pipeline_task("member changes", retries=3)
def member_changes(pipeline: Pipeline, release: Release, running_digest: str | None) -> list[str]:
    """Each service's version change against the release the environment runs."""
    running = None
    with connections(pipeline) as c:
        if running_digest is not None:
            try:
                running = services_release.find_release(c, running_digest)
            except NotFound:
                logger().warning("what runs (%s) is no release artifact here", running_digest)
    return [f"service {line}" for line in services_release.member_changes(release, running)]


@pipeline_task("approval evidence", retries=3)
def verify_approval(pipeline: Pipeline, release: Release, env: EnvironmentConfig) -> None:
    """Refuse a deploy whose approval evidence in the registry does not verify."""
    if env.approval is None:
        return
    with connections(pipeline) as c:
        items = read_evidence(c.registry(), release.repository, release.digest, ("approval",))
    check = require_verified_approval(items, release.digest, env.name, env.approval)
    logger().info(
        "the approval of %s for %s verifies: %s", release.short, env.name, "; ".join(check.lines)
    )


@pipeline_task("evidence check", retries=3)
def require_proof(pipeline: Pipeline, release: Release, previous: EnvironmentConfig) -> None:
    """Refuse a digest the previous environment has not passed, however the run started."""
    with connections(pipeline) as c:
        found = proof.require_proof(c, release, previous)
    logger().info(
        "%s passed %s: %s",
        release.short,
        previous.name,
        "; ".join(f"{e.kind} at {e.created:%Y-%m-%d %H:%M}" for e in found),
    )


@pipeline_task("earlier approval", retries=3)
def earlier_approval(
    pipeline: Pipeline, release: Release, env: EnvironmentConfig
) -> ApprovalRecord | None:
    """An approval of this digest for ``env`` that an earlier run recorded with the image."""
    with connections(pipeline) as c:
        found = proof.earlier_approval(c, release, env)
    if found is not None:
        logger().info(
            "%s was approved for %s by %s at %s", release.short, env.name, found.approver, found.at
        )
    return found
