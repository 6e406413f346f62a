"""The Trivy gate: findings go to a table artifact before the policy decides."""

from __future__ import annotations

from prefect.artifacts import create_table_artifact

from conveyor.clients.docker_engine import BuiltImage
from conveyor.config import Pipeline
from conveyor.scan_policy import ScanResult, enforce, findings_table, scan
from tasks.runtime import connections, logger, pipeline_task


@pipeline_task("scan", retries=1)
def scan_image(pipeline: Pipeline, built: BuiltImage) -> ScanResult:
    log = logger()
    with connections(pipeline) as c:
        result = scan(
            c.trivy(),
            built.id,
            pipeline.scan,
            dockerfile=pipeline.app.context / pipeline.app.dockerfile,
            log=log.info,
        )
    for warning in result.warnings:
        log.warning("scan: %s", warning)
    create_table_artifact(
        key=f"scan-{pipeline.app.name}",
        table=findings_table(result) or [{"verdict": "-", "id": "no findings", "severity": "-"}],
        description=f"Trivy findings for {built.version}: {result.summary}",
    )
    return enforce(result)
