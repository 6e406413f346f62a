"""Going on after an environment: straight into the next ungated ones, handing over
at the next gate to a promote run on that environment's work pool."""

from __future__ import annotations

from conveyor.config import Pipeline
from conveyor.release import Release, ReleaseRecord
from conveyor.timeline import Timeline
from flows.environment_steps import enter_environment
from tasks.handover import hand_over


def continue_from(
    config: Pipeline,
    pipeline_path: str,
    first: int,
    release: Release,
    record: ReleaseRecord,
    timeline: Timeline,
    auto_approve: bool,
) -> str:
    """Where the release is when this run ends: deployed everywhere, or waiting."""
    for env in config.environments[first:]:
        if env.approval is not None:
            with timeline.stage(f"hand over {env.name}"):
                handover = hand_over(pipeline_path, env, release, auto_approve)
            record.handovers.append(handover)
            where = (
                f"{release.app} {release.version} ({release.short}) waits for approval to "
                f"enter {env.name} in promote run {handover.flow_run_name} "
                f"({handover.flow_run_id}) on work pool {handover.work_pool}: "
                f"conveyor approve {handover.flow_run_name} --as NAME"
            )
            if auto_approve:
                where = (
                    f"{release.app} {release.version} goes on into {env.name} in promote run "
                    f"{handover.flow_run_name} ({handover.flow_run_id}), auto-approved"
                )
            record.notes.append(where)
            return where
        enter_environment(config, env, release, record, timeline)
    last = config.environments[-1].name
    return f"{release.app} {release.version} ({release.image}) runs in {last}"
