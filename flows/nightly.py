"""``nightly_integration``: the newest source (or digest) through integration, every night.

It reports and never promotes: production only moves through ``ship`` or ``promote``
with a person's approval.
"""

from __future__ import annotations

from prefect import flow

from conveyor.release import ReleaseRecord
from conveyor.timeline import Timeline
from flows.build_scan_push import build_scan_push
from flows.environment_steps import enter_environment
from tasks.pipeline_file import validate_pipeline
from tasks.push import newest_release
from tasks.record import publish_record
from tasks.runtime import run_connections


@flow(name="nightly-integration", persist_result=False)
def nightly_integration(pipeline: str = "deployments/local.yaml", build: bool = True) -> str:
    """Build and push (or take the newest integration-ready digest), deploy to the first
    environment and run its tests."""
    config = validate_pipeline(pipeline)
    first = config.environments[0]
    timeline = Timeline()
    scan_summary = ""
    with run_connections(config):
        if build:
            scan_summary, release = build_scan_push(config, None, timeline)
        else:
            release = newest_release(config, first)
        record = ReleaseRecord(release=release, scan_summary=scan_summary)
        try:
            enter_environment(config, first, release, record, timeline)
        finally:
            publish_record(config, record, timeline, key_suffix="nightly")
    return release.image
