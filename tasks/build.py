"""Build the app's image on the Docker Engine, the build log streamed into Prefect's
(a release of several services: one task run per service)."""

from __future__ import annotations

from prefect.artifacts import create_table_artifact

from conveyor import services_release, source
from conveyor.clients.docker_engine import BuiltImage
from conveyor.config import Pipeline
from conveyor.scan_policy import enforce, findings_table
from conveyor.services_release import DockerfileScan, MemberBuild
from tasks.runtime import connections, logger, pipeline_task


@pipeline_task("build", retries=2)
def build_image(pipeline: Pipeline, version: str | None) -> BuiltImage:
    log = logger()
    with connections(pipeline) as c:
        built = source.build(c, version, log.info)
    log.info("built %s as %s", source.local_tag(pipeline, built.version), built.id)
    return built


@pipeline_task("build service", retries=2)
def build_member(
    pipeline: Pipeline,
    service: str,
    version: str,
    revision: str | None,
    running: str | None,
    dockerfiles: DockerfileScan | None = None,
) -> MemberBuild:
    """One service of a release: built, pushed and scanned (or carried), its log its own;
    ``dockerfiles`` is the release's one Dockerfile scan, shared by its members."""
    log = logger()
    with connections(pipeline) as c:
        built = services_release.build_member(
            c, service, version, revision, running, log, dockerfiles
        )
    if built.scan is not None:
        for warning in built.scan.warnings:
            log.warning("scan: %s", warning)
        create_table_artifact(
            key=f"scan-{pipeline.release_name}-{service}",
            table=findings_table(built.scan)
            or [{"verdict": "-", "id": "no findings", "severity": "-"}],
            description=f"Trivy findings for {service} {version}: {built.scan.summary}",
        )
        enforce(built.scan)
    return built
