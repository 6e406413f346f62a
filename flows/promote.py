"""``promote``: a given digest into one environment, then on through the ones after it.

It checks the previous environment's evidence, waits for the approval (suspended, no
process), deploys inside the environment's deploy window, and hands over again at the
next gated environment. A rollback to an older release is asked for as one, with a
reason that is recorded with the approval.
"""

from __future__ import annotations

from prefect import flow

from conveyor.config import Pipeline
from conveyor.delivery import Entry, check_auto_approve
from conveyor.errors import ConfigError
from conveyor.release import ReleaseRecord
from conveyor.timeline import Timeline
from flows.environment_steps import enter_environment
from flows.handover import continue_from
from tasks.handover import check_placement
from tasks.pipeline_file import validate_pipeline
from tasks.push import find_release
from tasks.record import publish_record
from tasks.runtime import run_connections


def _checked(
    pipeline: str,
    environment: str,
    auto_approve: bool,
    older: bool,
    reason: str,
    break_glass: bool = False,
) -> tuple[Pipeline, int]:
    """Everything refusable is refused here, before any work."""
    config = validate_pipeline(pipeline)
    index = config.environments.index(config.environment(environment))
    if older and not reason.strip():
        raise ConfigError(pipeline, ["reason: a rollback to an older release needs a reason"])
    if break_glass and not reason.strip():
        raise ConfigError(pipeline, ["reason: a break-glass promotion needs a reason"])
    if break_glass and auto_approve:
        raise ConfigError(
            pipeline, ["break_glass: a break-glass promotion is approved by people, never auto"]
        )
    if auto_approve:
        check_auto_approve(config, pipeline, config.environments[index:])
    check_placement(config, pipeline, first=index + 1)
    return config, index


@flow(name="promote", persist_result=False)
def promote(
    digest: str,
    pipeline: str = "deployments/local.yaml",
    environment: str = "production",
    auto_approve: bool = False,
    older: bool = False,
    reason: str = "",
    break_glass: bool = False,
    started_by: str = "",
    start_token: str = "",
) -> str:
    """Take an already pushed and tested ``digest`` into ``environment`` and beyond.

    The digest must carry passing evidence from the environment before this one; the
    evidence check refuses it otherwise, however the run was started. ``older`` with a
    ``reason`` lets in a release older than the one the environment runs (a rollback).
    ``break_glass`` with a ``reason`` goes into ``environment`` inside a freeze window,
    with one approver more, marked in the record and the approval evidence.
    ``started_by`` and ``start_token`` are who started the release, as ``ship`` hands
    them over: the gate reads them from the run's parameters and refuses that person's
    approval.
    """
    config, index = _checked(pipeline, environment, auto_approve, older, reason, break_glass)
    timeline = Timeline()
    entry = Entry(
        auto=auto_approve,
        rollback_reason=reason.strip() if older else "",
        break_glass=reason.strip() if break_glass else "",
    )
    with run_connections(config):
        release = find_release(config, digest)
        record = ReleaseRecord(release=release)
        try:
            env = config.environments[index]
            enter_environment(config, env, release, record, timeline, entry)
            where = continue_from(
                config, pipeline, index + 1, release, record, timeline, auto_approve
            )
        except Exception:
            publish_record(config, record, timeline)
            raise
        publish_record(config, record, timeline)
    return where
