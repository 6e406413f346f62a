"""``ship``: the whole path, from the source in the pipeline file to production."""

from __future__ import annotations

from prefect import flow

from conveyor.release import ReleaseRecord
from conveyor.timeline import Timeline
from flows.build_scan_push import build_scan_push
from flows.environment_steps import enter_environment
from tasks.pipeline_file import validate_pipeline
from tasks.record import publish_record
from tasks.runtime import run_connections


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
    with run_connections(config):
        scan, release = build_scan_push(config, version, timeline)
        record = ReleaseRecord(release=release, scan_summary=scan.summary)
        try:
            for env in config.environments:
                enter_environment(config, env, release, record, timeline, auto=auto_approve)
        finally:
            publish_record(config, record, timeline)
    return release.image
