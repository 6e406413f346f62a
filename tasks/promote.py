"""Promotion: the environment's tag on the release's digest, as a manifest copy.

No layer moves and no docker pull/tag/push: the registry already holds every byte.
The version tag is checked too, so a rerun can never point it elsewhere.
"""

from __future__ import annotations

from conveyor.config import EnvironmentConfig, Pipeline
from conveyor.promotion import TagPolicy, promote
from conveyor.release import Release
from tasks.common import logger, stage
from tasks.wiring import manifest_locker, registry_client


@stage("promote", retries=3)
def tag_release(pipeline: Pipeline, release: Release, env: EnvironmentConfig) -> None:
    log = logger()
    policy = TagPolicy.from_config(pipeline.registry)
    locker = manifest_locker(pipeline) if env is not pipeline.environments[0] else None
    with registry_client(pipeline) as registry:
        for tag in (release.version, env.tag):
            result = promote(
                registry, release.repository, release.digest, tag, policy=policy, locker=locker
            )
            if result.changed:
                log.info(
                    "%s:%s -> %s (was %s)",
                    release.repository,
                    tag,
                    release.short,
                    result.previous or "unset",
                )
            else:
                log.info("%s:%s already at %s", release.repository, tag, release.short)
