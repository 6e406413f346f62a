"""Return an environment to the release it ran before."""

from __future__ import annotations

from contextlib import closing

from conveyor.config import EnvironmentConfig, Pipeline
from conveyor.drivers.base import DeployedState
from tasks.common import logger, stage
from tasks.wiring import driver_for


@stage("rollback", retries=3)
def rollback(pipeline: Pipeline, env: EnvironmentConfig) -> DeployedState:
    log = logger()
    with closing(driver_for(pipeline, env)) as driver:
        outcome = driver.rollback(progress=lambda msg: log.info("%s | %s", env.name, msg))
    log.warning("%s rolled back: %s", env.name, outcome.message)
    return outcome.state
