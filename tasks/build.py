"""Build the app's image on the Docker Engine, the build log streamed into Prefect's."""

from __future__ import annotations

from conveyor import source
from conveyor.clients.docker_engine import BuiltImage
from conveyor.config import Pipeline
from tasks.runtime import connections, logger, pipeline_task


@pipeline_task("build", retries=2)
def build_image(pipeline: Pipeline, version: str | None) -> BuiltImage:
    log = logger()
    with connections(pipeline) as c:
        built = source.build(c, version, log.info)
    log.info("built %s as %s", source.local_tag(pipeline, built.version), built.id)
    return built
