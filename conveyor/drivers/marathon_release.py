"""The Marathon driver of a release of several services: one group per environment.

The driver's ``app_id`` is the group; each service is the member app
``<group>/<service>``, rendered from its own app template (or the driver's) and pinned
to its image digest. The release artifact's digest and version are the labels of one
more app of the group, ``<group>/conveyor-release``, with no instances: what the group
runs is read back from Marathon alone, and a service the release did not change keeps
its definition, so Marathon leaves its tasks alone (a label on every member would
restart them all). Deploy and rollback move the whole group (``marathon_group``):
every member on the new release healthy, or the group back where it was.

The record app also names the release the group ran before this one went in: that is
what ``rollback`` restores and what ``status`` reports as ``previous_digest`` (so
``conveyor gc`` keeps it). Marathon's group versions alone cannot tell it: after a
failed deploy is put back, the newest version with another release is the one that
failed. A group recorded without that label falls back to the newest such version.
"""

from __future__ import annotations

import copy
import difflib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import httpx

from conveyor.clients.dcos import DcosClient
from conveyor.clients.marathon_model import App, Group
from conveyor.config.drivers import MarathonDriverConfig
from conveyor.drivers.base import DeployedState, DeployOutcome, Progress, no_progress
from conveyor.drivers.marathon_app import instance_of, load_template, normalise, overlay, render
from conveyor.drivers.marathon_endpoints import MarathonEndpoints
from conveyor.drivers.marathon_group import Member, deploy_group, wait_live
from conveyor.errors import DeploymentFailed
from conveyor.preflight import Demand, PreflightReport
from conveyor.preflight.dcos import dcos_preflight
from conveyor.release import Release

LABEL_RELEASE = "dev.conveyor.release.digest"
LABEL_RELEASE_VERSION = "dev.conveyor.release.version"
LABEL_PREVIOUS = "dev.conveyor.release.previous"
RECORD = "conveyor-release"
# Group versions looked at when searching the release that ran before: each is one GET.
MAX_VERSIONS = 25


@dataclass(frozen=True)
class MemberSpec:
    """One service as this environment deploys it."""

    name: str
    template: Path
    depends_on: tuple[str, ...] = ()


def _is_record(app: App) -> bool:
    return app.id.rstrip("/").rsplit("/", 1)[-1] == RECORD


def _labels_of(group: Group) -> dict[str, str]:
    """The labels of the group's record app; empty without one."""
    return next((dict(app.labels) for app in group.apps if _is_record(app)), {})


def _release_of(group: Group) -> tuple[str | None, str | None]:
    """The release artifact the group's record app names; (None, None) without one."""
    labels = _labels_of(group)
    return labels.get(LABEL_RELEASE), labels.get(LABEL_RELEASE_VERSION)


def _record(release: Release, previous: str | None) -> Member:
    """The app that only carries the release's labels: no instance, nothing to run."""
    labels = {LABEL_RELEASE: release.digest, LABEL_RELEASE_VERSION: release.version}
    if previous is not None:
        labels[LABEL_PREVIOUS] = previous
    definition = {"instances": 0, "cpus": 0.01, "mem": 16, "cmd": "true", "labels": labels}
    return Member(RECORD, definition)


class MarathonReleaseDriver:
    def __init__(
        self,
        environment: str,
        config: MarathonDriverConfig,
        members: list[MemberSpec],
        *,
        auth: httpx.Auth | None = None,
        transport: httpx.BaseTransport | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.environment = environment
        self.config = config
        self.group_id = "/" + config.app_id.strip("/")
        self.members = members
        self._templates = {m.name: load_template(m.template) for m in members}
        self._clock, self._sleep = clock, sleep
        self.auth = auth
        self._endpoints = MarathonEndpoints.of(config, auth, transport)
        self.client = self._endpoints.marathon(sleep)
        # A stored group version never changes: its release is read once.
        self._version_releases: dict[str, str | None] = {}

    def close(self) -> None:
        self.client.close()

    def _app_id(self, name: str) -> str:
        return f"{self.group_id}/{name}"

    # --- reading ----------------------------------------------------------

    def status(self) -> DeployedState:
        group = self.client.find_group(self.group_id)
        if group is None or not group.apps:
            return DeployedState(environment=self.environment, digest=None, version=None)
        digest, version = _release_of(group)
        instances = []
        for app in (a for a in group.apps if not _is_record(a)):
            member = app.id.rsplit("/", 1)[-1]
            checked = bool(app.health_checks)
            for t in app.tasks:
                # A task of an earlier configuration runs an image this read cannot name.
                image = app.digest if t.version >= app.config_version else None
                instances.append(replace(instance_of(t, checked, image), member=member))
        return DeployedState(
            environment=self.environment,
            digest=digest,
            version=version,
            instances=tuple(instances),
            previous_digest=self._previous_digest(group, digest),
            detail={"group_id": self.group_id, "version": group.version},
        )

    def _previous_digest(self, group: Group, current: str | None) -> str | None:
        """The release ``rollback`` would restore: the one the record names as run before,
        else (a group recorded without it) the newest stored version's other release."""
        named = _labels_of(group).get(LABEL_PREVIOUS)
        if named is not None or current is None:
            return named
        found = self._previous(lambda digest: digest != current)
        return found[1] if found else None

    def _desired(self, release: Release) -> list[Member]:
        out = []
        for spec in self.members:
            app = render(
                self._templates[spec.name], self._app_id(spec.name), release.member(spec.name)
            )
            app["dependencies"] = list(spec.depends_on)
            out.append(Member(spec.name, app))
        return out

    def plan(self, release: Release) -> str:
        return "\n\n".join(self.plan_members(release).values())

    def plan_members(self, release: Release) -> dict[str, str]:
        """Service → the unified diff of its app against what Marathon holds now."""
        sections = {}
        for m in self._desired(release):
            app_id = self._app_id(m.name)
            desired = {**m.definition, "id": app_id}
            desired["dependencies"] = [self._app_id(d) for d in desired["dependencies"]]
            current = self.client.find_app(app_id)
            before = normalise(current.definition()) if current else {}
            after = overlay(before, desired) if current else desired
            if before == after:
                sections[m.name] = f"{m.name}: no changes ({app_id})"
                continue
            diff = difflib.unified_diff(
                json.dumps(before, indent=2, sort_keys=True).splitlines() if current else [],
                json.dumps(after, indent=2, sort_keys=True).splitlines(),
                fromfile=f"{app_id} running version {current.version}" if current else "/dev/null",
                tofile=f"{app_id} with {release.version} ({release.member(m.name).short})",
                lineterm="",
            )
            sections[m.name] = f"{m.name}:\n" + "\n".join(diff)
        return sections

    # --- deploying --------------------------------------------------------

    def deploy(self, release: Release, progress: Progress = no_progress) -> DeployOutcome:
        state = self.status()
        if state.runs(release):
            return DeployOutcome(
                state, False, f"{self.group_id} already runs {release.version} healthy"
            )
        progress(
            f"{self.environment}: deploying {release.version} ({release.short}) as group "
            f"{self.group_id}: " + ", ".join(f"{m.app}@{m.short}" for m in release.members)
        )
        # A rerun of a deploy of this release keeps the release named before it.
        before = state.previous_digest if state.digest == release.digest else state.digest
        try:
            result = deploy_group(
                self.client,
                self.group_id,
                [*self._desired(release), _record(release, before)],
                timeout_s=self.config.deploy_timeout_s,
                rollback_timeout_s=self.config.rollback_timeout_s,
                clock=self._clock,
                sleep=self._sleep,
            )
        except DeploymentFailed as exc:
            # The group's version says nothing to a person; the release it went back to does.
            back = self.status()
            if back.digest is None or back.digest != state.digest:
                raise
            raise DeploymentFailed(
                f"{self.environment}: {exc}: it runs {back.version} again"
            ) from exc
        return DeployOutcome(
            self.status(),
            True,
            f"{self.group_id} runs {release.version} ({release.short}) healthy at group "
            f"version {result.version}",
        )

    def _release_at(self, version: str) -> str | None:
        if version not in self._version_releases:
            group = self.client.group_version(self.group_id, version)
            self._version_releases[version] = _release_of(group)[0] if group.apps else None
        return self._version_releases[version]

    def _previous(self, wanted: Callable[[str], bool]) -> tuple[str, str] | None:
        """The newest stored group version whose release is ``wanted``: (version, release)."""
        for version in self.client.group_versions(self.group_id)[:MAX_VERSIONS]:
            digest = self._release_at(version)
            if digest is not None and wanted(digest):
                return version, digest
        return None

    def rollback(self, progress: Progress = no_progress) -> DeployOutcome:
        current = self.status()
        target = current.previous_digest
        found = None if target is None else self._previous(lambda digest: digest == target)
        if found is None:
            raise DeploymentFailed(
                f"{self.environment}: group {self.group_id} has no earlier version with "
                f"{target or 'another release'} (looked at the newest {MAX_VERSIONS}); nothing "
                "to roll back to"
            )
        version, _ = found
        progress(f"{self.environment}: rolling group {self.group_id} back to its version {version}")
        self.client.put_group(self.group_id, {"version": version}, force=True)
        group = self.client.group_version(self.group_id, version)
        ids = {a.id.rsplit("/", 1)[-1]: a.id for a in group.apps}
        stuck = wait_live(
            self.client, ids, self.config.rollback_timeout_s, self._clock, self._sleep
        )
        if stuck is not None:
            raise DeploymentFailed(
                f"{self.environment}: rollback of group {self.group_id} to {version} not live "
                f"within {self.config.rollback_timeout_s:g}s: member {stuck[0]!r}: {stuck[1]}"
            )
        state = self.status()
        return DeployOutcome(
            state, True, f"{self.group_id} rolled back to {state.version} (group version {version})"
        )

    def demand(self) -> Demand:
        """Every member's instances, at the largest member's size (the safe side)."""
        apps = [App.model_validate(t) for t in self._templates.values()]
        return Demand(
            instances=sum(a.instances for a in apps),
            cpus=max(a.cpus for a in apps),
            mem_mb=max(a.mem for a in apps),
        )

    def preflight(self, release: Release) -> PreflightReport:
        """The DC/OS cluster's pre-flight for every member; a check common to all once."""
        checks = []
        with self._endpoints.cluster() as http:
            dcos = DcosClient(http)
            group = self.client.find_group(self.group_id)
            running = {a.id: len(a.tasks) for a in group.apps} if group else {}
            for m in self._desired(release):
                app = copy.deepcopy(m.definition)
                report = dcos_preflight(self.environment, dcos, app, running.get(app["id"], 0))
                checks += [c for c in report.checks if c not in checks]
        return PreflightReport(environment=self.environment, source="dcos", checks=tuple(checks))
