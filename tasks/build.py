"""Build the app's image on the Docker Engine, the build log streamed into Prefect's."""

from __future__ import annotations

import datetime as dt

from conveyor.clients.build_context import version_of
from conveyor.clients.docker_engine import BuiltImage, DockerEngine, connect
from conveyor.config import Pipeline
from tasks.common import logger, stage


def local_tag(pipeline: Pipeline, version: str) -> str:
    return f"{pipeline.registry.host}/{pipeline.registry.repository}:{version}"


def source_version(pipeline: Pipeline, version: str | None) -> tuple[str, str | None]:
    """The version to build; a dirty tree's builds are told apart by their time.

    Version tags are immutable in the registry, so two different builds of uncommitted
    work must not share one.
    """
    derived, revision = version_of(pipeline.app.context)
    if version:
        return version, revision
    if derived.endswith("-dirty"):
        derived += "." + dt.datetime.now(dt.UTC).strftime("%Y%m%d%H%M%S")
    return derived, revision


@stage("build", retries=2)
def build_image(pipeline: Pipeline, version: str | None) -> BuiltImage:
    log = logger()
    app = pipeline.app
    resolved = source_version(pipeline, version)
    tag = local_tag(pipeline, resolved[0])
    log.info("building %s from %s", tag, app.context)
    client = connect()
    try:
        built = DockerEngine(client).build(
            context=app.context,
            dockerfile=app.dockerfile,
            tag=tag,
            build_args={"VERSION": resolved[0], **app.build_args},
            log=lambda line: log.info("build | %s", line),
            source_version=resolved,
        )
    finally:
        client.close()
    log.info("built %s as %s", tag, built.id)
    return built
