"""The release record: what a person reads to know where a digest went and why."""

from __future__ import annotations

from prefect.artifacts import create_markdown_artifact, create_table_artifact

from conveyor.config import Pipeline
from conveyor.release import ReleaseRecord
from flows.timeline import Timeline
from tasks.common import stage


def render_record(record: ReleaseRecord) -> str:
    r = record.release
    lines = [
        f"# Release {r.app} {r.version}",
        "",
        f"- image: `{r.image}`",
        f"- revision: `{r.revision or '-'}`",
        f"- scan: {record.scan_summary or '-'}",
        "",
        "## Environments",
        "",
        "| environment | deployed at | changed |",
        "|---|---|---|",
        *[
            f"| {d.environment} | {d.at:%Y-%m-%d %H:%M:%S} UTC | {'yes' if d.changed else 'already there'} |"
            for d in record.deployments
        ],
        "",
        "## Verification",
        "",
        "| environment | at | passed | failed | summary |",
        "|---|---|---|---|---|",
        *[
            f"| {v.environment} | {v.at:%Y-%m-%d %H:%M:%S} | {v.passed} | {v.failed} | {v.summary} |"
            for v in record.verifications
        ],
        "",
        "## Approvals",
        "",
        "| environment | decision | approver | comment | at |",
        "|---|---|---|---|---|",
        *[
            f"| {a.environment} | {a.decision} | {a.approver or '(nobody)'} | {a.comment} | {a.at:%Y-%m-%d %H:%M:%S} |"
            for a in record.approvals
        ],
    ]
    return "\n".join(lines)


@stage("release record", retries=2)
def publish_record(
    pipeline: Pipeline, record: ReleaseRecord, timeline: Timeline, key_suffix: str = ""
) -> None:
    key = f"release-{pipeline.app.name}" + (f"-{key_suffix}" if key_suffix else "")
    create_markdown_artifact(
        key=key,
        markdown=render_record(record),
        description=f"{record.release.app} {record.release.version} @ {record.release.short}",
    )
    create_table_artifact(
        key=f"stage-durations-{pipeline.app.name}",
        table=list(timeline.rows),
        description="seconds per stage in this run",
    )
