"""The first step of every flow: the whole pipeline file is valid, or nothing runs."""

from __future__ import annotations

from conveyor.config import Pipeline, load_pipeline
from tasks.runtime import logger, pipeline_task


@pipeline_task("validate pipeline file", retries=0)
def validate_pipeline(path: str) -> Pipeline:
    pipeline = load_pipeline(path)
    logger().info(
        "pipeline %s: %s, registry %s/%s, environments %s",
        path,
        f"app {pipeline.single_app.name}"
        if pipeline.single_app
        else f"release {pipeline.release_name} of " + ", ".join(s.name for s in pipeline.members),
        pipeline.registry.host,
        pipeline.registry.repository,
        " -> ".join(e.name for e in pipeline.environments),
    )
    return pipeline
