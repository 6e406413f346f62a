"""``nightly_integration``: the newest source (or digest) through integration, every night.

It reports and never promotes: production only moves through ``ship`` or ``promote``
with a person's approval.
"""

from __future__ import annotations

from prefect import flow

from conveyor.release import ReleaseRecord
from flows.delivery import enter_environment
from flows.timeline import Timeline
from tasks.build import build_image
from tasks.pipeline_file import validate_pipeline
from tasks.push import newest_release, push_image
from tasks.record import publish_record
from tasks.scan import scan_image


@flow(name="nightly-integration", persist_result=False)
def nightly_integration(pipeline: str = "deployments/local.yaml", build: bool = True) -> str:
    """Build and push (or take the newest integration-ready digest), deploy to the first
    environment and run its tests."""
    config = validate_pipeline(pipeline)
    first = config.environments[0]
    timeline = Timeline()
    scan_summary = ""
    if build:
        with timeline.stage("build"):
            built = build_image(config, None)
        with timeline.stage("scan"):
            scan_summary = scan_image(config, built).summary
        with timeline.stage("push"):
            release = push_image(config, built)
    else:
        release = newest_release(config, first)
    record = ReleaseRecord(release=release, scan_summary=scan_summary)
    try:
        enter_environment(config, first, release, record, timeline)
    finally:
        publish_record(config, record, timeline, key_suffix="nightly")
    return release.image
