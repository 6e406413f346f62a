"""Push the built image and name the release by its digest from then on."""

from __future__ import annotations

from conveyor import source
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
