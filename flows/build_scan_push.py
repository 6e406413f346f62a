"""From source to a pushed release, as ``ship`` and ``nightly`` open: build, then scan
and push side by side (a step of those flows, not a flow of its own).

The push is not a promotion: the version tag it sets names the image, while the tag
that lets a release into integration is set only after the scan passed. So the two
run at once, and a blocking finding still stops the release before any environment.

A release of several services builds each in a task run of its own (its log a stream
of its own), at most ``build_many.parallelism`` at once, each image scanned beside its
push and every Dockerfile in one trivy run beside the builds (a run's start costs
more than its scan), then records the release artifact; a blocking finding in any
member stops the release before any environment.
"""

from __future__ import annotations

from prefect.futures import PrefectFuture
from prefect.task_runners import ThreadPoolTaskRunner

from conveyor.build_many import parallelism
from conveyor.config import Pipeline
from conveyor.release import Release
from conveyor.services_release import DockerfileScan, MemberBuild, release_version
from conveyor.timeline import Timeline
from tasks.build import build_image, build_member
from tasks.evidence import attach_evidence, record_source
from tasks.push import push_image, record_release, running_members
from tasks.runtime import connections
from tasks.scan import scan_image


def build_scan_push(
    config: Pipeline, version: str | None, timeline: Timeline
) -> tuple[str, Release]:
    """The scan's summary and the pushed release."""
    if config.services:
        summary, release = _build_services(config, version, timeline)
    else:
        summary, release = _build_app(config, version, timeline)
    attach_evidence(config, release, "scan", "build", {"passed": True, "summary": summary})
    # Who changed what, kept with the image: the approval gate keeps their authors from
    # approving it, read from here since a promote worker may have no checkout of it.
    record_source(config, release)
    return summary, release


def _build_app(config: Pipeline, version: str | None, timeline: Timeline) -> tuple[str, Release]:
    with timeline.stage("build"):
        built = build_image(config, version)
    with timeline.stage("scan and push"):
        scanning = scan_image.submit(config, built)
        pushing = push_image.submit(config, built)
        pushing.wait()
        scan = scanning.result()
        release = pushing.result()
    return scan.summary, release


def _build_services(
    config: Pipeline, version: str | None, timeline: Timeline
) -> tuple[str, Release]:
    resolved, revision = release_version(config, version)
    running = running_members(config)
    names = [s.name for s in config.members]
    with connections(config) as c:
        dockerfiles = DockerfileScan.of(c)
    # A runner of its own bounds the builds: the pool starts the next build the moment
    # one ends, where polling each future's state cost a server round trip a time.
    runner: ThreadPoolTaskRunner[MemberBuild] = ThreadPoolTaskRunner(
        max_workers=parallelism(len(names))
    )
    with timeline.stage("build, scan and push"), runner:
        started: list[PrefectFuture[MemberBuild]] = [
            runner.submit(
                build_member.with_options(task_run_name=f"build {name}"),
                {
                    "pipeline": config,
                    "service": name,
                    "version": resolved,
                    "revision": revision,
                    "running": running.get(name),
                    "dockerfiles": dockerfiles,
                },
            )
            for name in names
        ]
        # Every build runs to its end before the first failure is raised.
        for f in started:
            f.wait()
        built = [f.result() for f in started]
    with timeline.stage("record release"):
        release = record_release(
            config, {b.outcome.service: b.outcome.digest for b in built}, resolved, revision
        )
    summary = "; ".join(
        f"{b.outcome.service}: {b.scan.summary}"
        if b.scan is not None
        else f"{b.outcome.service}: carried (scanned when built)"
        for b in built
    )
    return summary, release
