"""``promote``: approval, promotion and deploy of a given digest into one environment."""

from __future__ import annotations

from prefect import flow

from conveyor.release import ReleaseRecord
from conveyor.timeline import Timeline
from flows.environment_steps import enter_environment
from tasks.pipeline_file import validate_pipeline
from tasks.push import find_release
from tasks.record import publish_record
from tasks.runtime import run_connections


@flow(name="promote", persist_result=False)
def promote(
    digest: str,
    pipeline: str = "deployments/local.yaml",
    environment: str = "production",
    auto_approve: bool = False,
) -> str:
    """Take an already pushed and tested ``digest`` into ``environment``.

    The digest must carry passing evidence from the environment before this one;
    the evidence check refuses it otherwise, however the run was started.
    """
    config = validate_pipeline(pipeline)
    env = config.environment(environment)
    timeline = Timeline()
    with run_connections(config):
        release = find_release(config, digest)
        record = ReleaseRecord(release=release)
        try:
            enter_environment(config, env, release, record, timeline, auto=auto_approve)
        finally:
            publish_record(config, record, timeline)
    return release.image
