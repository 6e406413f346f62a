"""Push the built image and name the release by its digest from then on."""

from __future__ import annotations

from conveyor import services_release, source
from conveyor.clients.docker_engine import BuiltImage
from conveyor.config import EnvironmentConfig, Pipeline
from conveyor.release import Release
from tasks.runtime import connections, logger, pipeline_task


@pipeline_task("push", retries=3)
def push_image(pipeline: Pipeline, built: BuiltImage) -> Release:
    """Push under the immutable version tag; a rerun finds it pushed and goes on."""
    with connections(pipeline) as c:
        return source.push(c, built, logger().info)


@pipeline_task("find release", retries=3)
def find_release(pipeline: Pipeline, digest: str) -> Release:
    """The release a pushed digest is, read back from the image's own labels."""
    with connections(pipeline) as c:
        return source.find_release(c, digest)


@pipeline_task("newest release", retries=3)
def newest_release(pipeline: Pipeline, env: EnvironmentConfig) -> Release:
    with connections(pipeline) as c:
        return source.newest_release(c, env)


@pipeline_task("record release", retries=3)
def record_release(
    pipeline: Pipeline, digests: dict[str, str], version: str, revision: str | None
) -> Release:
    """The release artifact listing every service's digest, in the registry."""
    with connections(pipeline) as c:
        release = services_release.record(c, digests, version, revision)
    logger().info(
        "release %s %s recorded as %s/%s@%s: %s",
        release.app,
        release.version,
        release.registry,
        release.repository,
        release.digest,
        ", ".join(f"{m.app}@{m.digest}" for m in release.members),
    )
    return release


@pipeline_task("members running first", retries=3)
def running_members(pipeline: Pipeline) -> dict[str, str]:
    with connections(pipeline) as c:
        return services_release.running_members(c)
