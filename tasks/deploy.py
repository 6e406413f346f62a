"""Deploy through the environment's driver; progress goes to the run's log."""

from __future__ import annotations

from contextlib import closing

from conveyor.config import EnvironmentConfig, Pipeline
from conveyor.drivers.base import DeployedState, DeployOutcome
from conveyor.release import Release
from tasks.common import logger, stage
from tasks.wiring import driver_for


@stage("read environment", retries=3)
def current_state(pipeline: Pipeline, env: EnvironmentConfig) -> DeployedState:
    with closing(driver_for(pipeline, env)) as driver:
        state = driver.status()
    logger().info(
        "%s runs %s (%d instances, %s)",
        env.name,
        state.version or state.digest or "nothing",
        len(state.instances),
        "healthy" if state.healthy else "not healthy",
    )
    return state


@stage("deploy", retries=3)
def deploy(pipeline: Pipeline, env: EnvironmentConfig, release: Release) -> DeployOutcome:
    log = logger()
    with closing(driver_for(pipeline, env)) as driver:
        outcome = driver.deploy(release, progress=lambda msg: log.info("%s | %s", env.name, msg))
    log.info("%s: %s", env.name, outcome.message)
    return outcome
