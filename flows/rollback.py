"""``rollback``: an environment back to the release it ran before."""

from __future__ import annotations

from prefect import flow

from tasks.pipeline_file import validate_pipeline
from tasks.rollback import rollback as rollback_task
from tasks.runtime import run_connections


@flow(name="rollback", persist_result=False)
def rollback(pipeline: str = "deployments/local.yaml", environment: str = "production") -> str:
    config = validate_pipeline(pipeline)
    env = config.environment(environment)
    with run_connections(config):
        restored = rollback_task(config, env)
    if restored.digest is None:
        return "nothing ran before"
    return f"{env.name} runs {restored.version or restored.digest} again"
