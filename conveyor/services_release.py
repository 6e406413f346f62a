"""A pipeline of several services as the flows handle it: one ``Release`` whose digest
is the release artifact (``release_set``) and whose members are the services' images.

Everything that takes a release by its digest (evidence, approval bindings, the
promote run's parameter, the environment's tag) then works on the release artifact,
and what concerns each image (build, deploy, the members' tags) goes through
``Release.members``. A file with ``app:`` stays a release of one, handled by
``conveyor.source`` as before.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from conveyor.build_many import Outcome, Target, build_service
from conveyor.clients.build_context import version_of
from conveyor.clients.docker_engine import DockerEngine
from conveyor.clients.trivy import Finding, Trivy
from conveyor.config import EnvironmentConfig, Pipeline, ServiceConfig
from conveyor.connections import Connections
from conveyor.errors import NotFound
from conveyor.promotion import TagPolicy
from conveyor.release import Release
from conveyor.release_set import (
    MOUNTS,
    REF_NAME,
    RecordedRelease,
    ReleaseSet,
    SetPromotion,
    promote_set,
    record_release,
)
from conveyor.scan_policy import ScanResult, scan, scans_dockerfiles
from conveyor.source import OCI, image_labels

RELEASE_ANNOTATION = "dev.conveyor.release.name"


def release_version(pipeline: Pipeline, version: str | None) -> tuple[str, str | None]:
    """The release's version and revision, from the repository the services live in (the
    first one's); uncommitted work is told apart by time, as a single app's build is."""
    derived, revision = version_of(pipeline.members[0].context)
    if version:
        return version, revision
    if derived.endswith("-dirty"):
        derived += "." + dt.datetime.now(dt.UTC).strftime("%Y%m%d%H%M%S")
    return derived, revision


def running_members(connections: Connections) -> dict[str, str]:
    """Service → the digest the first environment runs or is rolling to (its tag on the
    release artifact), for carrying unchanged services; empty before the first release."""
    pipeline = connections.pipeline
    registry, repo = connections.registry(), pipeline.registry.repository
    digest = registry.resolve(repo, pipeline.environments[0].tag)
    if digest is None:
        return {}
    body = registry.get_manifest(repo, digest).json
    return {e["annotations"][REF_NAME]: e["digest"] for e in body.get("manifests") or []}


def service(pipeline: Pipeline, name: str) -> ServiceConfig:
    for s in pipeline.members:
        if s.name == name:
            return s
    raise NotFound(f"no service {name!r} in the pipeline file")


@dataclass(frozen=True)
class MemberBuild:
    outcome: Outcome
    scan: ScanResult | None  # None for a carried service: it was scanned when built


def build_member(
    connections: Connections,
    name: str,
    version: str,
    revision: str | None,
    running: str | None,
    logger: logging.Logger,
    dockerfiles: DockerfileScan | None = None,
) -> MemberBuild:
    """Build and push one service (or carry its running digest), scanning what was built
    beside its push; its Dockerfile's findings come from ``dockerfiles`` when given."""
    pipeline = connections.pipeline
    svc = service(pipeline, name)
    target = Target(
        registry=connections.registry(),
        host=pipeline.registry.host,
        repository=pipeline.repository_of(svc),
        version=version,
        revision=revision,
        running=running,
        policy=TagPolicy.from_config(pipeline.registry),
    )
    scanned: list[ScanResult] = []

    def scan_built(image: str, archive: Path) -> None:
        of_dockerfile = None
        if dockerfiles is not None:
            dockerfiles.begin()  # beside this image's scan
            of_dockerfile = partial(dockerfiles.findings, name)
        scanned.append(
            scan(
                connections.trivy(),
                image,
                pipeline.scan,
                dockerfile=svc.context / svc.dockerfile,
                archive=archive,
                log=logger.info,
                dockerfile_findings=of_dockerfile,
            )
        )

    engine = DockerEngine(connections.docker())
    outcome = build_service(engine, svc, target, logger, scan_built)
    return MemberBuild(outcome, scanned[0] if outcome.image is not None else None)


class DockerfileScan:
    """Every service's Dockerfile scanned in one trivy run (a run's start, compiling its
    checks, costs more than a Dockerfile's scan), begun by the first member whose image
    is scanned and running beside the builds; a release whose every member is carried
    runs none. A failed run is raised to each member waiting, and run again by the
    next that begins it (a task's retry)."""

    def __init__(self, trivy: Trivy, files: dict[str, Path]) -> None:
        self._trivy = trivy
        self._files = files
        self._lock = threading.Lock()
        self._found: Future[dict[str, list[Finding]]] | None = None

    @classmethod
    def of(cls, connections: Connections) -> DockerfileScan | None:
        """The release's shared Dockerfile scan; None when the policy scans none."""
        pipeline = connections.pipeline
        if not scans_dockerfiles(pipeline.scan):
            return None
        files = {s.name: s.context / s.dockerfile for s in pipeline.members}
        return cls(connections.trivy(), files)

    def begin(self) -> None:
        with self._lock:
            if self._found is not None and not (self._found.done() and self._found.exception()):
                return
            found = self._found = Future()
        threading.Thread(target=self._run, args=(found,), name="dockerfiles", daemon=True).start()

    def _run(self, found: Future[dict[str, list[Finding]]]) -> None:
        try:
            found.set_result(self._trivy.scan_dockerfiles(self._files))
        except BaseException as exc:
            found.set_exception(exc)

    def findings(self, service: str) -> list[Finding]:
        self.begin()
        with self._lock:
            found = self._found
        assert found is not None  # begun just above
        return found.result()[service]


def _member(connections: Connections, svc: ServiceConfig, digest: str) -> Release:
    pipeline = connections.pipeline
    repo = pipeline.repository_of(svc)
    labels = image_labels(connections.registry(), repo, digest)
    return Release(
        app=svc.name,
        registry=pipeline.registry.host,
        repository=repo,
        digest=digest,
        version=labels.get(f"{OCI}.version", digest[7:19]),
        revision=labels.get(f"{OCI}.revision"),
    )


def _members(connections: Connections, digests: dict[str, str]) -> tuple[Release, ...]:
    """The file's services at ``digests``, in its order, their labels read side by side
    (a manifest and a config read each, waiting on no other member's)."""
    pipeline = connections.pipeline
    with ThreadPoolExecutor(max_workers=min(MOUNTS, len(pipeline.members))) as pool:
        return tuple(pool.map(lambda s: _member(connections, s, digests[s.name]), pipeline.members))


def _as_release(recorded: RecordedRelease) -> Release:
    s = recorded.release
    return Release(
        app=s.name,
        registry=s.registry,
        repository=s.repository,
        digest=recorded.digest,
        version=s.version,
        revision=s.revision,
        members=s.members,
    )


def _as_recorded(release: Release) -> RecordedRelease:
    """``_as_release`` the other way: the artifact a release of several services is."""
    as_set = ReleaseSet(
        name=release.app,
        registry=release.registry,
        repository=release.repository,
        version=release.version,
        revision=release.revision,
        members=release.members,
    )
    return RecordedRelease(as_set, release.digest)


def record(
    connections: Connections, digests: dict[str, str], version: str, revision: str | None
) -> Release:
    """The release artifact of these member digests, recorded in the registry."""
    pipeline = connections.pipeline
    members = _members(connections, digests)
    release_set = ReleaseSet(
        name=pipeline.release_name,
        registry=pipeline.registry.host,
        repository=pipeline.registry.repository,
        version=version,
        revision=revision,
        members=members,
    )
    return _as_release(record_release(connections.registry(), release_set))


def find_release(connections: Connections, digest: str) -> Release:
    """The release the artifact at ``digest`` is, members in the file's dependency order."""
    pipeline = connections.pipeline
    body = connections.registry().get_manifest(pipeline.registry.repository, digest).json
    listed = {e["annotations"][REF_NAME]: e["digest"] for e in body.get("manifests") or []}
    wanted = [s.name for s in pipeline.members]
    if sorted(listed) != sorted(wanted):
        raise NotFound(
            f"{pipeline.registry.repository}@{digest} lists {', '.join(sorted(listed)) or 'nothing'}, "
            f"not the services of this pipeline file ({', '.join(wanted)})"
        )
    notes = body.get("annotations") or {}
    return Release(
        app=notes.get(RELEASE_ANNOTATION, pipeline.release_name),
        registry=pipeline.registry.host,
        repository=pipeline.registry.repository,
        digest=digest,
        version=notes.get(f"{OCI}.version", digest[7:19]),
        revision=notes.get(f"{OCI}.revision"),
        members=_members(connections, listed),
    )


def promote(connections: Connections, release: Release, env: EnvironmentConfig) -> SetPromotion:
    """``env``'s tag on every member and the release artifact, all or nothing. The members
    are read back from the artifact itself, so a tag put back after a rollback moves
    with exactly the images that release lists."""
    found = _as_recorded(find_release(connections, release.digest))
    policy = TagPolicy.from_config(connections.pipeline.registry)
    return promote_set(connections.registry(), found, env.tag, policy=policy)


def member_changes(release: Release, running: Release | None) -> list[str]:
    """One line per member: the version it goes from and to, for the approval request."""
    lines = []
    for m in release.members:
        before = None
        if running is not None:
            before = next((r for r in running.members if r.app == m.app), None)
        if before is None:
            lines.append(f"{m.app}: new at {m.version} ({m.short})")
        elif before.digest == m.digest:
            lines.append(f"{m.app}: unchanged at {m.version} ({m.short})")
        else:
            lines.append(f"{m.app}: {before.version} ({before.short}) -> {m.version} ({m.short})")
    return lines
