"""The engine's API operations: every app or group change is one ``Change`` committed to
the group tree as a new version, with the deployment plan that brings the tasks there."""

from __future__ import annotations

import copy
import threading
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

from conveyor.sim.marathon import pathid, plan
from conveyor.sim.marathon.events import EventBus
from conveyor.sim.marathon.faults import Faults
from conveyor.sim.marathon.groups import GroupTree, trim_versions
from conveyor.sim.marathon.launchqueue import LaunchStats
from conveyor.sim.marathon.model import App, InvalidApp, config_key, new_id
from conveyor.sim.marathon.state import AppRecord, Change, Deployment, Task, monotonic
from conveyor.sim.marathon.tasks import TaskRunner


class UnknownApp(Exception):
    pass


class UnknownDeployment(Exception):
    pass


class UnknownVersion(Exception):
    pass


class AppLocked(Exception):
    def __init__(self, deployments: list[str]) -> None:
        self.deployments = deployments
        super().__init__("locked")


class AppExists(Exception):
    pass


def _versioned(original: App | None, app: App, version: str, restart: bool) -> App:
    """``app`` stamped with ``version``; a scale-only change keeps its lastConfigChangeAt
    (so no task restarts), a restart or a config change starts a new one."""
    target = {k: v for k, v in copy.deepcopy(app).items() if k not in ("version", "versionInfo")}
    same_config = (
        original is not None and not restart and config_key(original) == config_key(target)
    )
    config_at = (
        original["versionInfo"]["lastConfigChangeAt"] if same_config and original else version
    )
    target["version"] = version
    target["versionInfo"] = {"lastScalingAt": version, "lastConfigChangeAt": config_at}
    return target


class Operations:
    """Mixed into ``Engine``, which owns these attributes."""

    lock: threading.Condition
    apps: dict[str, AppRecord]
    deployments: dict[str, Deployment]
    tree: GroupTree
    runner: TaskRunner
    bus: EventBus
    faults: Faults
    _last_version: datetime

    def _next_version(self) -> str:
        """ISO timestamp, strictly increasing even for changes within one millisecond."""
        now = datetime.now(UTC)
        if now <= self._last_version:
            now = self._last_version + timedelta(milliseconds=1)
        self._last_version = now
        return now.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"

    def locks_on(self, app_id: str) -> list[Deployment]:
        return [d for d in self.deployments.values() if app_id in d.apps]

    def _take_locks(self, app_ids: Iterable[str], force: bool) -> None:
        held = {d.id: d for a in app_ids for d in self.locks_on(a)}
        if held and not force:
            raise AppLocked(sorted(held))
        for dep in held.values():
            self._end(dep, failed="Deployment was canceled by a forced change")

    def current(self, app_id: str) -> AppRecord | None:
        rec = self.apps.get(app_id)
        return None if rec is None or rec.deleting else rec

    def live_apps(self) -> dict[str, App]:
        return {a: r.definition for a, r in self.apps.items() if not r.deleting}

    def deploy(self, app: App, force: bool, create_only: bool = False) -> tuple[Deployment, bool]:
        """Store ``app`` (validated, defaults applied) as a new version and start its deployment."""
        with self.lock:
            app_id = app["id"]
            if create_only and self.current(app_id) is not None:
                raise AppExists(app_id)
            created = self.current(app_id) is None
            return self.commit(Change(apps={app_id: app}), force), created

    def delete(self, app_id: str, force: bool) -> Deployment:
        with self.lock:
            if self.current(app_id) is None:
                raise UnknownApp(app_id)
            return self.commit(Change(apps={app_id: None}), force)

    def revert(self, app_id: str, version: str, force: bool) -> Deployment:
        """PUT with only ``version``: Marathon redeploys that stored version."""
        with self.lock:
            rec = self.current(app_id)
            if rec is None or version not in rec.versions:
                raise UnknownVersion(version)
            return self.commit(Change(apps={app_id: rec.versions[version]}), force)

    def restart(self, app_id: str, force: bool) -> Deployment:
        """POST /v2/apps/{id}/restart: same definition, every task replaced (rolling)."""
        with self.lock:
            rec = self.current(app_id)
            if rec is None:
                raise UnknownApp(app_id)
            return self.commit(Change(apps={app_id: rec.definition}, restart={app_id}), force)

    def kill(self, tasks: list[Task], scale: bool, force: bool) -> Deployment | None:
        """Kill ``tasks``; with ``scale`` their apps shrink by as many (a deployment),
        without it Marathon replaces them."""
        with self.lock:
            dep = None
            if scale:
                shrink: dict[str, App] = {}
                for task in tasks:
                    app = shrink.get(task.app_id) or copy.deepcopy(
                        self.apps[task.app_id].definition
                    )
                    app["instances"] = max(0, int(app["instances"]) - 1)
                    shrink[task.app_id] = app
                dep = self.commit(Change(apps=dict(shrink)), force)
            for task in tasks:
                self.runner._kill(task)
            self.lock.notify_all()
            return dep

    def cancel(self, deployment_id: str, force: bool) -> Deployment | None:
        """DELETE /v2/deployments/{id}: cancel; without force also deploy the previous state."""
        with self.lock:
            dep = self.deployments.get(deployment_id)
            if dep is None:
                raise UnknownDeployment(deployment_id)
            self._end(dep, failed="Deployment was canceled")
            if force or dep.fake_until is not None:
                return None
            before, after = dep.groups_before, dep.groups_after
            back = Change(
                apps={a: dep.original.get(a) for a in dep.apps},
                groups={
                    g: before.get(g)
                    for g in set(before) | set(after)
                    if before.get(g) != after.get(g)
                },
            )
            return self.commit(back, force=True)

    def hold_lock(self, app_id: str, seconds: float) -> Deployment:
        """Fault: a fake deployment that locks ``app_id`` for ``seconds``."""
        with self.lock:
            dep = Deployment(
                id=new_id(),
                version=self._next_version(),
                steps=[[{"action": "RestartApplication", "app": app_id}]],
                fake_until=monotonic() + seconds,
            )
            self.deployments[dep.id] = dep
            return dep

    def commit(self, change: Change, force: bool, dry_run: bool = False) -> Deployment:
        """Apply ``change`` to the group tree as one new version and start its plan
        (``dry_run``: only the plan, nothing changes)."""
        with self.lock:
            version = self._next_version()
            before = self.live_apps()
            target = dict(before)
            for app_id, app in change.apps.items():
                if app is None:
                    target.pop(app_id, None)
                else:
                    target[app_id] = app
            groups = self.tree.apply(change, target, version)
            graph = plan.dependency_graph(target, {g: r.dependencies for g, r in groups.items()})
            try:
                plan.layers(graph)
            except plan.CyclicDependencies:
                raise InvalidApp(
                    [{"path": "/", "errors": ["Dependency graph has cyclic dependencies."]}]
                ) from None
            changed = [a for a in change.apps if a in before or a in target]
            if not dry_run:
                self._take_locks(changed, force)
            for app_id in changed:
                if app_id in target:
                    target[app_id] = _versioned(
                        before.get(app_id), target[app_id], version, app_id in change.restart
                    )
            steps = plan.steps(before, target, changed, graph, change.restart)
            dep = Deployment(
                id=new_id(),
                version=version,
                steps=steps,
                original={a: before[a] for a in changed if a in before},
                target={a: target[a] for a in changed if a in target},
                groups_before=self.tree.groups,
                groups_after=groups,
            )
            if dry_run:
                return dep
            self._store(dep, changed)
            self.tree.commit(groups, target, version, changed, change)
            self._begin(dep)
            # Marathon signals the group tree's change apart from the deployment's progress.
            scope = pathid.common_parent([*changed, *change.groups])
            self.bus.publish("group_change_success", groupId=scope, version=version)
            return dep

    def _store(self, dep: Deployment, changed: list[str]) -> None:
        for app_id in changed:
            rec = self.apps.get(app_id)
            app = dep.target.get(app_id)
            if app is None:
                if rec is not None:
                    rec.deleting = True
                continue
            if rec is None:
                rec = self.apps[app_id] = AppRecord(definition=app)
            rec.definition, rec.deleting = app, False
            rec.versions[str(app["version"])] = app
            trim_versions(rec.versions)
            rec.failures_in_row, rec.launch_not_before = 0, 0.0
            rec.launch = LaunchStats()

    # --- deployment bookkeeping ----------------------------------------------------

    def _begin(self, dep: Deployment) -> None:
        self.deployments[dep.id] = dep
        self.bus.publish(
            "deployment_info", plan=dep.plan_json(), currentStep={"actions": dep.current_actions()}
        )
        self.lock.notify_all()

    def _end(self, dep: Deployment, failed: str | None = None) -> None:
        if self.deployments.pop(dep.id, None) is None or dep.fake_until is not None:
            return
        if failed:
            self.bus.publish("deployment_failed", id=dep.id, plan=dep.plan_json(), reason=failed)
        else:
            self.bus.publish("deployment_success", id=dep.id, plan=dep.plan_json())
