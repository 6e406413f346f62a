"""The release record as a person reads it: where a digest went, what it passed and
who let it through."""

from __future__ import annotations

from conveyor.release import ReleaseRecord


def render_record(record: ReleaseRecord) -> str:
    r = record.release
    lines = [
        f"# Release {r.app} {r.version}",
        "",
        f"- image: `{r.image}`",
        f"- revision: `{r.revision or '-'}`",
        f"- scan: {record.scan_summary or '-'}",
        *[f"- **{note}**" for note in record.notes],
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
    if record.handovers:
        lines += [
            "",
            "## Handed over",
            "",
            "| environment | promote run | deployment | work pool | at |",
            "|---|---|---|---|---|",
            *[
                f"| {h.environment} | {h.flow_run_name} (`{h.flow_run_id}`) | {h.deployment} | {h.work_pool} | {h.at:%Y-%m-%d %H:%M:%S} |"
                for h in record.handovers
            ],
        ]
    return "\n".join(lines)
