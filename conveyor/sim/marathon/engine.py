"""The deployment engine: app changes become deployments that a scheduler loop drives.

One lock guards all state. API threads change the wanted state and notify; the loop
(woken at once, or at the next due probe/backoff, at most every second when idle)
converges tasks towards it with Marathon's rolling-upgrade rules.
"""

from __future__ import annotations

import copy
import logging
import math
import threading
from datetime import UTC, datetime
from typing import Any

from conveyor.sim.marathon import persist
from conveyor.sim.marathon.events import EventBus
from conveyor.sim.marathon.faults import Faults
from conveyor.sim.marathon.groups import GroupTree
from conveyor.sim.marathon.launchqueue import queue_item
from conveyor.sim.marathon.model import App
from conveyor.sim.marathon.operations import (
    AppExists,
    AppLocked,
    Operations,
    UnknownApp,
    UnknownDeployment,
    UnknownVersion,
)
from conveyor.sim.marathon.runtime import DockerRuntime
from conveyor.sim.marathon.state import AppRecord, Cluster, Deployment, Task, monotonic
from conveyor.sim.marathon.tasks import TaskRunner

__all__ = ["AppExists", "AppLocked", "Engine", "UnknownApp", "UnknownDeployment", "UnknownVersion"]

log = logging.getLogger(__name__)

ACTIVE_TICK_S = 0.1
IDLE_TICK_S = 1.0
EXIT_POLL_S = 2.0


class Engine(Operations):
    def __init__(
        self,
        cluster: Cluster,
        runtime: DockerRuntime,
        bus: EventBus,
        faults: Faults,
        store: persist.StateFile | None = None,
    ) -> None:
        self.lock = threading.Condition(threading.RLock())
        self.cluster = cluster
        self.runtime = runtime
        self.bus = bus
        self.faults = faults
        self.apps: dict[str, AppRecord] = {}
        self.deployments: dict[str, Deployment] = {}
        self.tree = GroupTree()
        self.runner = TaskRunner(self.lock, cluster, runtime, bus, faults, self.apps)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_version = datetime.fromtimestamp(0, UTC)
        self.store = store

    # --- lifecycle -------------------------------------------------------------

    def start(self) -> None:
        saved = self.store.load() if self.store else None
        if saved is None:
            self.runtime.remove_all()
        else:
            with self.lock:
                orphans = persist.restore(self, saved)
                versions = [v for rec in self.apps.values() for v in rec.versions]
                if versions:
                    self._last_version = datetime.fromisoformat(
                        max(versions).replace("Z", "+00:00")
                    )
            for cid in orphans:
                self.runtime.remove(cid)
        self.runtime.watch_exits(self.runner.on_exit)
        self._thread = threading.Thread(target=self._loop, name="sim-scheduler", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        with self.lock:
            self.lock.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self.runner.close()
        if self.store is None:
            self.runtime.remove_all()
            return
        # Like Marathon's tasks, the containers outlive the scheduler: the next start adopts them.
        self.runtime.stop_watching()
        with self.lock:
            self.store.write(persist.snapshot(self), persist.fingerprint(self))

    def _action_done(self, action: dict[str, str], converged: dict[str, bool]) -> bool:
        app_id = action["app"]
        if action["action"] == "StartApplication":
            return True
        if action["action"] == "StopApplication":
            return app_id not in self.apps
        return converged.get(app_id, False) and not self.faults.hangs(app_id)

    def _advance(self, dep: Deployment, converged: dict[str, bool]) -> None:
        """Finish the current step once all its actions are done, then go on to the next."""
        while True:
            if not dep.steps:
                self._end(dep)
                return
            actions = dep.current_actions()
            if not all(self._action_done(a, converged) for a in actions):
                return
            self.bus.publish(
                "deployment_step_success", plan=dep.plan_json(), currentStep={"actions": actions}
            )
            if dep.current_step >= len(dep.steps):
                self._end(dep)
                return
            dep.current_step += 1
            self.bus.publish(
                "deployment_info",
                plan=dep.plan_json(),
                currentStep={"actions": dep.current_actions()},
            )

    # --- the scheduler loop ------------------------------------------------------

    def _loop(self) -> None:
        last_poll = 0.0
        while not self._stop.is_set():
            now = monotonic()
            if now - last_poll >= EXIT_POLL_S:
                last_poll = now
                self._poll_exits()
            with self.lock:
                try:
                    wake_at = self._tick(monotonic())
                except Exception:
                    log.exception("scheduler tick failed")
                    wake_at = monotonic() + IDLE_TICK_S
                pending = self._pending_state()
                if pending is None and not self._stop.is_set():
                    self.lock.wait(min(max(wake_at - monotonic(), 0.02), IDLE_TICK_S))
            if pending is not None:
                # Written outside the lock (fsync), then straight to the next tick.
                self._write_state(*pending)

    def _pending_state(self) -> tuple[bytes, Any] | None:
        """The state file's new content when the tick changed what it holds."""
        if self.store is None:
            return None
        mark = persist.fingerprint(self)
        return None if not self.store.changed(mark) else (persist.snapshot(self), mark)

    def _write_state(self, payload: bytes, mark: Any) -> None:
        assert self.store is not None
        try:
            self.store.write(payload, mark)
        except OSError as exc:
            log.error("cannot write %s: %s", self.store.path, exc)

    def _poll_exits(self) -> None:
        """Safety net for docker 'die' events that were missed."""
        try:
            for cid in self.runtime.exited_containers():
                self.runner.on_exit(cid)
        except Exception as exc:  # the daemon may be briefly away; retry next poll
            log.warning("cannot list containers: %s", exc)

    def _phases(self) -> tuple[dict[str, Deployment], set[str]]:
        """The apps whose step runs or ran (with their deployment), and the apps held back
        because their step comes later."""
        running: dict[str, Deployment] = {}
        held: set[str] = set()
        for dep in self.deployments.values():
            if dep.fake_until is not None:
                continue
            for number, step in enumerate(dep.steps, start=1):
                for action in step:
                    if action["action"] == "StartApplication":
                        continue
                    if number <= dep.current_step:
                        running[action["app"]] = dep
                    else:
                        held.add(action["app"])
        return running, held - set(running)

    def _tick(self, now: float) -> float:
        wake_at = now + IDLE_TICK_S
        for fake in list(self.deployments.values()):
            if fake.fake_until is not None:
                if now >= fake.fake_until:
                    self._end(fake)
                else:
                    wake_at = min(wake_at, fake.fake_until)
        running, held = self._phases()
        converged: dict[str, bool] = {}
        for app_id, rec in list(self.apps.items()):
            if rec.deleting:
                if self._stop_all(rec) and not rec.tasks:
                    del self.apps[app_id]
                    self.bus.publish("app_terminated_event", appId=app_id)
            elif app_id not in held:
                converged[app_id] = self._converge(rec, rec.definition, now, running.get(app_id))
            if rec.launch.left:
                wake_at = min(wake_at, max(rec.launch_not_before, rec.launch.next_offer_at))
            for task in list(rec.tasks.values()):
                if task.running:
                    wake_at = min(wake_at, self.runner._schedule_probes(task, now))
        for dep in list(self.deployments.values()):
            if dep.fake_until is None:
                wake_at = min(wake_at, now + ACTIVE_TICK_S)
                self._advance(dep, converged)
        return wake_at

    def _stop_all(self, rec: AppRecord) -> bool:
        for task in list(rec.tasks.values()):
            self.runner._kill(task)
        return not rec.tasks

    def _converge(self, rec: AppRecord, target: App, now: float, dep: Deployment | None) -> bool:
        """One step of Marathon's task replacement; True when only healthy new tasks remain
        (and ready: a task launched by ``dep`` counts once its readiness check passed)."""
        steady = dep is None
        n = int(target["instances"])
        # Like Marathon's TaskReplaceActor: a task launched before the last config change is
        # old even when its settings match (a revert restores the settings under a new
        # version, so it replaces every task, as Marathon does).
        config_at = str(target["versionInfo"]["lastConfigChangeAt"])
        alive = [t for t in rec.tasks.values() if t.state != "TASK_KILLING"]
        new = [t for t in alive if steady or t.version >= config_at]
        old = [t for t in alive if t not in new]
        surplus = sorted(new, key=lambda t: t.staged_at, reverse=True)[: max(0, len(new) - n)]
        for task in surplus:
            self.runner._kill(task)
        new = [t for t in new if t not in surplus]
        has_checks = bool(target.get("healthChecks"))
        ready = [t for t in new if (t.healthy if has_checks else t.running) and t.ready]
        strategy = target["upgradeStrategy"]
        min_healthy = math.ceil(n * float(strategy["minimumHealthCapacity"]))
        max_capacity = int(n * (1 + float(strategy["maximumOverCapacity"])))
        contributing = [t for t in old if t.running and not t.unhealthy]
        kills = [t for t in old if t not in contributing]
        allowed = max(0, len(contributing) + len(ready) - min_healthy)
        kills += sorted(contributing, key=lambda t: t.staged_at, reverse=True)[:allowed]
        remaining_old = len(old) - len(kills)
        room = max(0, min(n - len(new), max_capacity - remaining_old - len(new)))
        if room == 0 and not kills and old and len(ready) == len(new) and len(new) < n:
            # minimumHealthCapacity 1 with no over-capacity would deadlock: Marathon kills one.
            kills.append(old[0])
            room = 1
        for task in kills:
            self.runner._kill(task)
        launched, dep_id = 0, None if dep is None else dep.id
        if now >= max(rec.launch_not_before, rec.launch.next_offer_at):
            while launched < room and self.runner._launch(rec, target, dep_id):
                launched += 1
        rec.launch.waiting(room - launched)
        # Like Marathon, a step ends only once killed tasks are really gone.
        return not old and len(rec.tasks) == len(ready) == n

    # --- views -----------------------------------------------------------------------

    def queue(self) -> list[dict[str, Any]]:
        """``/v2/queue``: apps with instances left to launch (waiting for offers or backoff)."""
        now = monotonic()
        return [
            queue_item(copy.deepcopy(rec.definition), rec.launch, rec.launch_not_before - now)
            for _, rec in sorted(self.apps.items())
            if rec.launch.left and not rec.deleting
        ]

    def reset_delay(self, app_id: str) -> bool:
        """DELETE /v2/queue/{app}/delay: launch at once; False when the app has no delay."""
        with self.lock:
            rec = self.current(app_id)
            if rec is None or rec.launch_not_before <= monotonic():
                return False
            rec.launch_not_before = 0.0
            self.lock.notify_all()
            return True

    def readiness_results(self, dep: Deployment) -> dict[str, list[dict[str, Any]]]:
        """App id -> readinessCheckResults of the tasks ``dep`` launched that were checked."""
        return {
            app_id: [
                t.readiness.to_json(t)
                for t in self.tasks_of(app_id)
                if t.deployment_id == dep.id and t.readiness is not None and t.readiness.probed
            ]
            for app_id in dep.apps
        }

    def tasks_of(self, app_id: str) -> list[Task]:
        rec = self.apps.get(app_id)
        return sorted(rec.tasks.values(), key=lambda t: t.staged_at) if rec else []

    def app_json(self, rec: AppRecord, tasks: bool, failure: bool) -> dict[str, Any]:
        body = copy.deepcopy(rec.definition)
        all_tasks = sorted(rec.tasks.values(), key=lambda t: t.staged_at)
        has_checks = bool(rec.definition.get("healthChecks"))
        body.update(
            tasksStaged=sum(t.state == "TASK_STAGING" for t in all_tasks),
            tasksRunning=sum(t.running for t in all_tasks),
            # Like Marathon: without health checks a task is neither healthy nor unhealthy.
            tasksHealthy=sum(t.healthy for t in all_tasks) if has_checks else 0,
            tasksUnhealthy=sum(t.unhealthy for t in all_tasks),
            deployments=[{"id": d.id} for d in self.locks_on(rec.definition["id"])],
        )
        if tasks:
            body["tasks"] = [t.to_json() for t in all_tasks]
        if failure and rec.last_failure:
            body["lastTaskFailure"] = rec.last_failure
        return body
