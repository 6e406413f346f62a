"""Return an environment to the release it ran before."""

from __future__ import annotations

from conveyor.config import EnvironmentConfig, Pipeline
from conveyor.drivers.base import DeployedState
from tasks.common import logger, stage
from tasks.wiring import driver_for


@stage("rollback", retries=3)
def rollback(pipeline: Pipeline, env: EnvironmentConfig) -> DeployedState:
    log = logger()
    driver = driver_for(pipeline, env)
    try:
        outcome = driver.rollback(progress=lambda msg: log.info("%s | %s", env.name, msg))
    finally:
        driver.close()
    log.warning("%s rolled back: %s", env.name, outcome.message)
    return outcome.state
