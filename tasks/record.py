"""Publish the release record and the run's stage durations as Prefect artifacts."""

from __future__ import annotations

from prefect.artifacts import create_markdown_artifact, create_table_artifact

from conveyor.config import Pipeline
from conveyor.record import render_record
from conveyor.release import ReleaseRecord
from conveyor.timeline import Timeline
from tasks.runtime import pipeline_task


@pipeline_task("release record", retries=2)
def publish_record(
    pipeline: Pipeline, record: ReleaseRecord, timeline: Timeline, key_suffix: str = ""
) -> None:
    key = f"release-{pipeline.release_name}" + (f"-{key_suffix}" if key_suffix else "")
    create_markdown_artifact(
        key=key,
        markdown=render_record(record),
        description=f"{record.release.app} {record.release.version} @ {record.release.short}",
    )
    create_table_artifact(
        key=f"stage-durations-{pipeline.release_name}",
        table=list(timeline.rows),
        description="seconds per stage in this run",
    )
