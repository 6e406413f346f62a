"""Promotion: the environment's tag on the release's digest, as a manifest copy.

No layer moves and no docker pull/tag/push: the registry already holds every byte.
"""

from __future__ import annotations

from conveyor.config import EnvironmentConfig, Pipeline
from conveyor.promotion import promote_release
from conveyor.release import Release
from tasks.runtime import connections, logger, pipeline_task


@pipeline_task("promote", retries=3)
def tag_release(pipeline: Pipeline, release: Release, env: EnvironmentConfig) -> None:
    log = logger()
    with connections(pipeline) as c:
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
