"""From source to a pushed release, as ``ship`` and ``nightly`` open: build, then scan
and push side by side (a step of those flows, not a flow of its own).

The push is not a promotion: the version tag it sets names the image, while the tag
that lets a release into integration is set only after the scan passed. So the two
run at once, and a blocking finding still stops the release before any environment.
"""

from __future__ import annotations

from conveyor.config import Pipeline
from conveyor.release import Release
from conveyor.scan_policy import ScanResult
from conveyor.timeline import Timeline
from tasks.build import build_image
from tasks.evidence import attach_evidence, record_source
from tasks.push import push_image
from tasks.scan import scan_image


def build_scan_push(
    config: Pipeline, version: str | None, timeline: Timeline
) -> tuple[ScanResult, Release]:
    with timeline.stage("build"):
        built = build_image(config, version)
    with timeline.stage("scan and push"):
        scanning = scan_image.submit(config, built)
        pushing = push_image.submit(config, built)
        pushing.wait()
        scan = scanning.result()
        release = pushing.result()
    attach_evidence(config, release, "scan", "build", {"passed": True, "summary": scan.summary})
    # Who changed what, kept with the image: the approval gate keeps their authors from
    # approving it, read from here since a promote worker may have no checkout of it.
    record_source(config, release)
    return scan, release
