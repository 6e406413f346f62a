"""The Marathon deploy driver: one app on DC/OS (or plain Marathon) per environment.

A deploy PUTs the rendered definition, follows its deployment until Marathon drops it
from ``/v2/deployments`` and then until every instance runs the new version healthy.
Marathon never gives up on a deployment by itself, so the driver does: past
``deploy_timeout_s`` it reverts the deployment (``DELETE`` without force, Marathon's own
rollback) and fails naming the unhealthy tasks.
"""

from __future__ import annotations

import contextlib
import difflib
import json
import time
from collections.abc import Callable, Iterator

import httpx

from conveyor.clients.dcos import DcosClient
from conveyor.clients.marathon import EventWatch
from conveyor.clients.marathon_model import (
    LABEL_PREVIOUS,
    LABEL_VERSION,
    App,
    Definition,
    Deployment,
    DeploymentRef,
)
from conveyor.config.drivers import MarathonDriverConfig
from conveyor.drivers.base import DeployedState, DeployOutcome, Progress, no_progress
from conveyor.drivers.marathon_app import (
    assess,
    instance_of,
    load_template,
    normalise,
    overlay,
    render,
)
from conveyor.drivers.marathon_endpoints import MarathonEndpoints
from conveyor.errors import ConveyorError, DeploymentFailed, Locked, NotFound
from conveyor.preflight import Demand, PreflightReport
from conveyor.preflight.dcos import dcos_preflight
from conveyor.release import Release

Check = Callable[[], tuple[bool, str]]

TASK_EMBED = ("app.tasks", "app.lastTaskFailure")
POLL_FIRST_S = 0.1
POLL_GROWTH = 1.6
# Versions looked at when searching the previous image: each is one GET.
MAX_VERSIONS = 25


class MarathonDriver:
    def __init__(
        self,
        environment: str,
        config: MarathonDriverConfig,
        *,
        auth: httpx.Auth | None = None,
        transport: httpx.BaseTransport | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.environment = environment
        self.config = config
        self.app_id = "/" + config.app_id.strip("/")
        self._template = load_template(config.app_template)
        self._clock = clock
        self._sleep = sleep
        # An app version's definition never changes: its digest is looked up once.
        self._version_digests: dict[str, str | None] = {}
        self.auth = auth
        self._endpoints = MarathonEndpoints.of(config, auth, transport)
        self.client = self._endpoints.marathon(sleep)
        self._cluster: httpx.Client | None = None

    def close(self) -> None:
        self.client.close()
        if self._cluster is not None:
            self._cluster.close()

    # --- reading ----------------------------------------------------------

    def status(self) -> DeployedState:
        app = self.client.find_app(self.app_id, TASK_EMBED)
        if app is None:
            return DeployedState(environment=self.environment, digest=None, version=None)
        return self._state(app, self._previous_digest(app))

    def _previous_digest(self, app: App) -> str | None:
        if LABEL_PREVIOUS in app.labels:
            return app.labels[LABEL_PREVIOUS]
        previous = self._previous(app)
        return previous.digest if previous else None

    def _state(self, app: App, previous_digest: str | None) -> DeployedState:
        checked = bool(app.health_checks)
        return DeployedState(
            environment=self.environment,
            digest=app.digest,
            version=app.labels.get(LABEL_VERSION),
            instances=tuple(
                instance_of(t, checked, self._task_digest(app, t.version)) for t in app.tasks
            ),
            previous_digest=previous_digest,
            detail={"app_id": self.app_id, "image": app.image or "", "version": app.version},
        )

    def _task_digest(self, app: App, version: str) -> str | None:
        """The digest a task of ``version`` runs: its own config version's, which is the
        app's unless the task was launched before the last config change (a rollout under
        way, or one stuck)."""
        if not version or version >= app.config_version:
            return app.digest
        if version not in self._version_digests:
            self._version_digests[version] = self.client.app_version(self.app_id, version).digest
        return self._version_digests[version]

    def _previous(self, app: App) -> App | None:
        """The newest stored definition of the release the app ran before this one (its
        label): after a failed deploy is put back, the newest version of another image is
        the one that failed, so versions alone cannot tell. An app deployed without the
        label falls back to the newest version of another image."""
        named = app.labels.get(LABEL_PREVIOUS)
        for version in self.client.versions(self.app_id)[:MAX_VERSIONS]:
            definition = self.client.app_version(self.app_id, version)
            if definition.digest == named if named else definition.image != app.image:
                return definition
        return None

    def _render(self, release: Release, current: App | None) -> tuple[Definition, str | None]:
        """What ``deploy`` sends for ``release`` over ``current``, and the digest it names
        as run before."""
        before = current.digest if current else None
        if current is not None and before == release.digest:
            # A rerun of a deploy of this release keeps the release named before it.
            before = self._previous_digest(current)
        return render(self._template, self.app_id, release, previous=before), before

    def plan(self, release: Release) -> str:
        current = self.client.find_app(self.app_id)
        desired, _ = self._render(release, current)
        before = normalise(current.definition()) if current else {}
        after = overlay(before, desired) if current else desired
        if before == after:
            return f"no changes: {self.app_id} already runs {release.image}"
        running = f"{self.app_id} running version {current.version}" if current else "/dev/null"
        lines = difflib.unified_diff(
            json.dumps(before, indent=2, sort_keys=True).splitlines() if current else [],
            json.dumps(after, indent=2, sort_keys=True).splitlines(),
            fromfile=running,
            tofile=f"{self.app_id} with {release.version} ({release.short})",
            lineterm="",
        )
        return "\n".join(lines)

    # --- deploying --------------------------------------------------------

    def deploy(self, release: Release, progress: Progress = no_progress) -> DeployOutcome:
        current = self.client.find_app(self.app_id, TASK_EMBED)
        desired, before = self._render(release, current)
        previous = normalise(current.definition()) if current else None
        if previous is not None and overlay(previous, desired) == previous:
            return self._settle(release, progress)
        progress(f"{self.environment}: deploying {release.image} to {self.app_id}")
        deployment = self._put(desired, progress).deployment_id
        deadline = self._clock() + self.config.deploy_timeout_s
        seen: list[App] = []
        if not self._wait_until(self._rolled_out({deployment}, seen=seen), deadline, progress):
            self._fail(release, {deployment}, previous, progress)
        # The app read that proved the rollout is the state: no second round of reads
        # delays the flow's next task.
        state = self._state(seen[-1], before)
        return DeployOutcome(
            state, True, f"{self.app_id} runs {release.version} ({release.short}) healthy"
        )

    def _settle(self, release: Release, progress: Progress) -> DeployOutcome:
        """The definition is already there: wait out its deployment or health, change nothing."""
        pending = self._deployments_of_app()
        deadline = self._clock() + self.config.deploy_timeout_s
        if pending or not self._rolled_out(set())()[0]:
            progress(f"{self.app_id} already has {release.short}; waiting until it is healthy")
            if not self._wait_until(self._rolled_out(pending), deadline, progress):
                raise self._unhealthy(
                    f"{self.app_id} has {release.image} but did not become healthy within "
                    f"{self.config.deploy_timeout_s:g}s"
                )
        return DeployOutcome(
            self.status(), False, f"{self.app_id} already runs {release.short} healthy"
        )

    def rollback(self, progress: Progress = no_progress) -> DeployOutcome:
        current = self.client.app(self.app_id)
        target = self._previous(current)
        if target is None:
            raise DeploymentFailed(
                f"{self.environment}: {self.app_id} has no earlier version with another image "
                f"(looked at the newest {MAX_VERSIONS}); nothing to roll back to"
            )
        progress(f"{self.environment}: rolling {self.app_id} back to {target.image}")
        result = self._put(normalise(target.definition()), progress)
        deadline = self._clock() + self.config.rollback_timeout_s
        if not self._wait_until(self._rolled_out({result.deployment_id}), deadline, progress):
            raise self._unhealthy(
                f"rollback of {self.app_id} to {target.image} not healthy "
                f"within {self.config.rollback_timeout_s:g}s"
            )
        return DeployOutcome(self.status(), True, f"{self.app_id} rolled back to {target.image}")

    def _unhealthy(self, message: str) -> DeploymentFailed:
        """``message`` with every problem Marathon reports for the app's tasks now."""
        app = self.client.find_app(self.app_id, TASK_EMBED)
        problems = assess(app).problems if app else ()
        return DeploymentFailed(
            f"{self.environment}: {message}" + "".join(f"\n  {p}" for p in problems)
        )

    def demand(self) -> Demand:
        """From the app template; counting every instance (not only the over-capacity of a
        rolling upgrade) keeps the check on the safe side."""
        app = App.model_validate(self._template)
        return Demand(instances=app.instances, cpus=app.cpus, mem_mb=app.mem)

    def preflight(self, release: Release) -> PreflightReport:
        """The DC/OS cluster's pre-flight for deploying ``release``; changes nothing."""
        if self._cluster is None:
            self._cluster = self._endpoints.cluster()
        current = self.client.find_app(self.app_id, TASK_EMBED)
        running = len(current.tasks) if current else 0
        desired = render(self._template, self.app_id, release)
        return dcos_preflight(self.environment, DcosClient(self._cluster), desired, running)

    # --- the pieces -------------------------------------------------------

    def _put(self, definition: Definition, progress: Progress) -> DeploymentRef:
        """PUT, waiting out a lock held by other deployments for up to ``lock_wait_s``."""
        deadline = self._clock() + self.config.lock_wait_s
        while True:
            try:
                return self.client.put_app(self.app_id, definition)
            except Locked as exc:
                holders = set(exc.holders)
                if self._clock() >= deadline:
                    if self.config.force:
                        progress(
                            f"{self.app_id} still locked by {self._describe(holders)}; forcing"
                        )
                        return self.client.put_app(self.app_id, definition, force=True)
                    raise DeploymentFailed(
                        f"{self.environment}: {self.app_id} stayed locked for "
                        f"{self.config.lock_wait_s:g}s by {self._describe(holders)}; "
                        "let it finish, cancel it in Marathon, or set force: true"
                    ) from None
                progress(f"{self.app_id} is locked by {self._describe(holders)}; waiting")
                self._wait_until(self._gone(holders), deadline, progress)

    def _deployments_of_app(self) -> set[str]:
        return {d.id for d in self.client.deployments() if d.affects(self.app_id)}

    def _describe(self, ids: set[str]) -> str:
        if not ids:
            return "a deployment"
        found = {d.id: d for d in self.client.deployments()}
        parts = []
        for i in sorted(ids):
            d = found.get(i)
            if d is None:
                parts.append(f"deployment {i}")
                continue
            actions = ", ".join(
                f"{a.action} {a.app or a.pod or ''}".strip() for a in d.current_actions
            )
            parts.append(f"deployment {i} ({actions or 'no actions'}, started {d.version})")
        return "; ".join(parts)

    def _gone(self, ids: set[str]) -> Check:
        def check() -> tuple[bool, str]:
            left = ids & {d.id for d in self.client.deployments()}
            return not left, f"waiting for deployment(s) {', '.join(sorted(left))}" if left else ""

        return check

    def _rolled_out(self, ids: set[str], seen: list[App] | None = None) -> Check:
        def check() -> tuple[bool, str]:
            left: list[Deployment] = [d for d in self.client.deployments() if d.id in ids]
            if left:
                d = left[0]
                return False, f"deployment {d.id}: step {d.current_step}/{d.total_steps}"
            app = self.client.find_app(self.app_id, TASK_EMBED)
            if app is None:
                return False, f"{self.app_id} not found"
            if seen is not None:
                seen.append(app)
            rollout = assess(app)
            return rollout.done, rollout.summary

        return check

    @contextlib.contextmanager
    def _watch(self, deadline: float) -> Iterator[EventWatch | None]:
        if not self.config.event_stream:
            yield None
            return
        with EventWatch(self.client, self.app_id, deadline) as watch:
            yield watch

    def _wait_until(self, check: Check, deadline: float, progress: Progress) -> bool:
        """Re-check on every event and on a backoff schedule; False at the deadline."""
        interval, said = POLL_FIRST_S, ""
        with self._watch(deadline) as watch:
            while True:
                done, summary = check()
                if summary and summary != said:
                    progress(summary)
                    said = summary
                remaining = deadline - self._clock()
                if done:
                    return True
                if remaining <= 0:
                    return False
                pause = min(interval, remaining)
                interval = min(interval * POLL_GROWTH, self.config.poll_max_interval_s)
                if watch is None:
                    self._sleep(pause)
                elif watch.wait(pause):
                    # Marathon may publish an event a moment before its REST state shows it:
                    # look again soon after each event, then back off.
                    interval = POLL_FIRST_S

    def _fail(
        self, release: Release, ids: set[str], previous: Definition | None, progress: Progress
    ) -> None:
        app = self.client.find_app(self.app_id, TASK_EMBED)
        problems = assess(app).problems if app else ()
        progress(
            f"{self.app_id} not healthy within {self.config.deploy_timeout_s:g}s; rolling back"
        )
        try:
            restored = self._restore(ids, previous, progress)
        except ConveyorError as exc:
            restored = f"the rollback failed too: {exc}"
        raise DeploymentFailed(
            f"{self.environment}: {release.image} did not become healthy within "
            f"{self.config.deploy_timeout_s:g}s; {restored}"
            + "".join(f"\n  {p}" for p in problems or ("no task reported a cause",))
        )

    def _restore(self, ids: set[str], previous: Definition | None, progress: Progress) -> str:
        deadline = self._clock() + self.config.rollback_timeout_s
        pending = ids & {d.id for d in self.client.deployments()}
        revert: DeploymentRef | None = None
        if pending:
            with contextlib.suppress(NotFound):  # finished meanwhile: restore by PUT below
                revert = self.client.delete_deployment(sorted(pending)[0])
        if revert is None:
            if previous is None:
                return "nothing ran before it, nothing to restore"
            revert = self._put(previous, progress)
        rid = revert.deployment_id
        if self._wait_until(self._rolled_out({rid}), deadline, progress):
            return f"rolled back (deployment {rid})"
        return f"rollback deployment {rid} still running after {self.config.rollback_timeout_s:g}s"
