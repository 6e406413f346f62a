"""Return an environment to the release it ran before."""

from __future__ import annotations

from conveyor.config import EnvironmentConfig, Pipeline
from conveyor.drivers.base import DeployedState
from tasks.runtime import connections, logger, pipeline_task


@pipeline_task("rollback", retries=3)
def rollback(pipeline: Pipeline, env: EnvironmentConfig) -> DeployedState:
    log = logger()
    with connections(pipeline) as c:
        outcome = c.driver(env).rollback(progress=lambda msg: log.info("%s | %s", env.name, msg))
    log.warning("%s rolled back: %s", env.name, outcome.message)
    return outcome.state
