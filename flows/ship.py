"""``ship``: the whole path, from the source in the pipeline file to production."""

from __future__ import annotations

from prefect import flow

from conveyor.release import ReleaseRecord
from flows.delivery import enter_environment
from flows.timeline import Timeline
from tasks.build import build_image
from tasks.evidence import attach_evidence
from tasks.pipeline_file import validate_pipeline
from tasks.push import push_image
from tasks.record import publish_record
from tasks.scan import scan_image


@flow(name="ship", persist_result=False)
def ship(
    pipeline: str = "deployments/local.yaml",
    auto_approve: bool = False,
    version: str | None = None,
) -> str:
    """Build, scan and push the app, then take its digest through every environment.

    ``auto_approve`` skips the approval gates: for the local demo only, and said so
    in the log and the release record.
    """
    config = validate_pipeline(pipeline)
    timeline = Timeline()
    with timeline.stage("build"):
        built = build_image(config, version)
    with timeline.stage("scan"):
        scan = scan_image(config, built)
    with timeline.stage("push"):
        release = push_image(config, built)
    attach_evidence(config, release, "scan", "build", {"passed": True, "summary": scan.summary})
    record = ReleaseRecord(release=release, scan_summary=scan.summary)
    try:
        for env in config.environments:
            enter_environment(config, env, release, record, timeline, auto=auto_approve)
    finally:
        publish_record(config, record, timeline)
    return release.image
