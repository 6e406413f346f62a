"""Promotion: the environment's tag on the release's digest, as a manifest copy.

No layer moves and no docker pull/tag/push: the registry already holds every byte.
A release of several services moves the tag on every member and its release artifact,
all or nothing (``release_set.promote_set``).
"""

from __future__ import annotations

from conveyor import services_release
from conveyor.config import EnvironmentConfig, Pipeline
from conveyor.promotion import promote_release
from conveyor.release import Release
from tasks.runtime import connections, logger, pipeline_task


@pipeline_task("promote", retries=3)
def tag_release(pipeline: Pipeline, release: Release, env: EnvironmentConfig) -> None:
    log = logger()
    with connections(pipeline) as c:
        if pipeline.services:
            moved = services_release.promote(c, release, env)
            log.info(
                "%s on release %s (%s) and its %d members: moved in %s",
                env.tag,
                release.version,
                release.short,
                len(release.members),
                ", ".join(moved.changed) or "none (already there)",
            )
            return
        results = promote_release(c, release, env)
    for result in results:
        if result.changed:
            log.info(
                "%s:%s -> %s (was %s)",
                release.repository,
                result.tag,
                release.short,
                result.previous or "unset",
            )
        else:
            log.info("%s:%s already at %s", release.repository, result.tag, release.short)
