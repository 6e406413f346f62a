"""Deploy through the environment's driver; progress goes to the run's log."""

from __future__ import annotations

from conveyor.config import EnvironmentConfig, Pipeline
from conveyor.drivers.base import DeployedState, DeployOutcome
from conveyor.release import Release
from tasks.runtime import connections, logger, pipeline_task


@pipeline_task("read environment", retries=3)
def current_state(pipeline: Pipeline, env: EnvironmentConfig) -> DeployedState:
    with connections(pipeline) as c:
        state = c.driver(env).status()
    logger().info(
        "%s runs %s (%d instances, %s)",
        env.name,
        state.version or state.digest or "nothing",
        len(state.instances),
        "healthy" if state.healthy else "not healthy",
    )
    return state


@pipeline_task("deploy", retries=3)
def deploy(pipeline: Pipeline, env: EnvironmentConfig, release: Release) -> DeployOutcome:
    log = logger()
    with connections(pipeline) as c:
        outcome = c.driver(env).deploy(
            release, progress=lambda msg: log.info("%s | %s", env.name, msg)
        )
    log.info("%s: %s", env.name, outcome.message)
    return outcome
