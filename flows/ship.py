"""``ship``: the source through build, scan, push and every environment without a gate.

At the first gated environment it hands the release over to a ``promote`` run there
(not awaited) and ends Completed, saying where the release waits.
"""

from __future__ import annotations

from prefect import flow

from conveyor.approvals.starter import start_problems
from conveyor.delivery import check_auto_approve
from conveyor.errors import ConfigError
from conveyor.release import ReleaseRecord
from conveyor.timeline import Timeline
from flows.build_scan_push import build_scan_push
from flows.handover import continue_from
from tasks.handover import check_placement
from tasks.pipeline_file import validate_pipeline
from tasks.record import publish_record
from tasks.runtime import run_connections


@flow(name="ship", persist_result=False)
def ship(
    pipeline: str = "deployments/local.yaml",
    auto_approve: bool = False,
    version: str | None = None,
    started_by: str = "",
    start_token: str = "",
) -> str:
    """Build, scan and push the app, then take its digest as far as the first gate.

    ``auto_approve`` is honoured only where the pipeline file allows it (the demo's).
    ``started_by`` names the person who starts it (signed in ``start_token`` where a
    gate takes only signed answers); they may not approve it, and the handovers pass
    it on to the gates.
    """
    config = validate_pipeline(pipeline)
    problems = start_problems(config, started_by, start_token)
    if problems:
        raise ConfigError(pipeline, problems)
    if auto_approve:
        check_auto_approve(config, pipeline, config.environments)
    check_placement(config, pipeline)
    timeline = Timeline()
    with run_connections(config):
        scan_summary, release = build_scan_push(config, version, timeline)
        record = ReleaseRecord(release=release, scan_summary=scan_summary)
        try:
            where = continue_from(config, pipeline, 0, release, record, timeline, auto_approve)
        except Exception:
            publish_record(config, record, timeline)
            raise
        publish_record(config, record, timeline)
    return where
