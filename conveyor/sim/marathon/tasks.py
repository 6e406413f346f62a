"""Task lifecycle: launch, kill, exit and health bookkeeping on top of the Docker runtime.

All methods with a leading underscore run under the engine's lock; Docker calls are
made by worker threads outside it so the API never waits on the Engine API.
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from conveyor.sim.marathon import health, readiness
from conveyor.sim.marathon.events import EventBus
from conveyor.sim.marathon.faults import Faults
from conveyor.sim.marathon.model import App, new_id, now_iso
from conveyor.sim.marathon.runtime import DockerRuntime, LaunchFailed
from conveyor.sim.marathon.state import AppRecord, Cluster, HealthResult, Task, monotonic

log = logging.getLogger(__name__)

MIN_PROBE_INTERVAL_S = 0.2
DEFAULT_KILL_GRACE_S = 3.0


def task_env(app: App, task: Task) -> dict[str, str]:
    """The environment Marathon gives a task (app env plus its port and identity variables)."""
    env = {k: v for k, v in (app.get("env") or {}).items() if isinstance(v, str)}
    ports = [str(p) for p in task.ports]
    for i, port in enumerate(ports):
        env[f"PORT{i}"] = port
    if ports:
        env["PORT"] = ports[0]
        env["PORTS"] = ",".join(ports)
    for pd, port in zip(app.get("portDefinitions") or [], ports, strict=False):
        if pd.get("name"):
            env["PORT_" + pd["name"].upper().replace("-", "_")] = port
    image = ((app.get("container") or {}).get("docker") or {}).get("image", "")
    env.update(
        {
            "HOST": task.agent.hostname,
            "MARATHON_APP_ID": app["id"],
            "MARATHON_APP_VERSION": str(app["version"]),
            "MARATHON_APP_DOCKER_IMAGE": image,
            "MARATHON_APP_RESOURCE_CPUS": str(app["cpus"]),
            "MARATHON_APP_RESOURCE_MEM": str(app["mem"]),
            "MESOS_TASK_ID": task.id,
        }
    )
    return env


class TaskRunner:
    def __init__(
        self,
        lock: threading.Condition,
        cluster: Cluster,
        runtime: DockerRuntime,
        bus: EventBus,
        faults: Faults,
        apps: dict[str, AppRecord],
    ) -> None:
        self.lock = lock
        self.cluster = cluster
        self.runtime = runtime
        self.bus = bus
        self.faults = faults
        self.apps = apps
        self.by_container: dict[str, Task] = {}
        self._exiting: set[str] = set()
        self._pool = ThreadPoolExecutor(max_workers=6, thread_name_prefix="sim-task")
        # Kills get their own workers: old tasks stop together, never queued behind launches.
        self._killers = ThreadPoolExecutor(max_workers=8, thread_name_prefix="sim-kill")
        self.closing = False
        self.prober = health.Prober()

    def close(self) -> None:
        """Stop probing and wait for in-flight Docker calls, so none creates a container
        after the final sweep (the daemon finishes a create even if we exit)."""
        with self.lock:
            self.closing = True
        self.prober.close()
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._killers.shutdown(wait=True, cancel_futures=True)

    # --- events ------------------------------------------------------------

    def _status(self, task: Task, state: str, message: str = "") -> None:
        self.bus.publish(
            "status_update_event",
            slaveId=task.agent.id,
            taskId=task.id,
            instanceId=task.instance_id,
            taskStatus=state,
            message=message,
            appId=task.app_id,
            host=task.agent.hostname,
            ipAddresses=[{"ipAddress": "127.0.0.1", "protocol": "IPv4"}],
            ports=task.ports,
            version=task.version,
        )

    # --- launch --------------------------------------------------------------

    def _launch(self, rec: AppRecord, app: App, deployment_id: str | None = None) -> bool:
        """Stage one task of ``app``; False when no agent has the resources (wait for offers).
        A task launched by a deployment must pass the app's readiness check for it."""
        defs = app.get("portDefinitions") or []
        # requirePorts makes the definitions' port numbers the host ports, as in Marathon.
        wanted = [int(pd["port"]) if app.get("requirePorts") else 0 for pd in defs]
        offer = self.cluster.allocate(float(app["cpus"]), float(app["mem"]), wanted)
        if isinstance(offer, dict):
            rec.launch.offers(offer, used=False, now=monotonic())
            return False
        agent, ports = offer
        rec.launch.offers({}, used=True, now=monotonic())
        instance_id = f"{app['id'].strip('/').replace('/', '_')}.instance-{new_id()}"
        task = Task(
            id=f"{instance_id}._app.1",
            instance_id=instance_id,
            app_id=app["id"],
            version=str(app["version"]),
            definition=app,
            agent=agent,
            ports=ports,
            deployment_id=deployment_id,
        )
        task.health = [HealthResult() for _ in app.get("healthChecks") or []]
        if deployment_id is not None:
            task.readiness = readiness.for_task(app, ports)
        rec.tasks[task.id] = task
        self._status(task, "TASK_STAGING")
        self._pool.submit(self._start_container, task, task_env(app, task))
        return True

    def _start_container(self, task: Task, env: dict[str, str]) -> None:
        try:
            cid = self.runtime.launch(task.id, task.definition, env)
        except LaunchFailed as exc:
            with self.lock:
                self._finish(task, "TASK_FAILED", str(exc), failed=True)
            return
        with self.lock:
            task.container_id = cid
            self.by_container[cid] = task
            if self.closing:
                return
            if task.state == "TASK_KILLING":
                self._killers.submit(self._stop_container, task)
                return
            now = monotonic()
            task.state = "TASK_RUNNING"
            task.started_at = now_iso()
            task.started_mono = now
            checks = task.definition.get("healthChecks") or []
            for check, result in zip(checks, task.health, strict=True):
                result.next_probe_at = now + health.first_probe_after(check, MIN_PROBE_INTERVAL_S)
            self._status(task, "TASK_RUNNING")
            self.lock.notify_all()

    # --- kill and exit -------------------------------------------------------

    def _kill(self, task: Task) -> None:
        if task.state == "TASK_KILLING":
            return
        staging = task.container_id is None
        task.state = "TASK_KILLING"
        self._status(task, "TASK_KILLING")
        if not staging and not self.closing:
            self._killers.submit(self._stop_container, task)

    def _stop_container(self, task: Task) -> None:
        """Like a Mesos agent: TASK_KILLED once the process is gone; the container's
        removal is housekeeping that no deployment step waits for."""
        grace = task.definition.get("taskKillGracePeriodSeconds")
        if task.container_id:
            self.runtime.stop(
                task.container_id, DEFAULT_KILL_GRACE_S if grace is None else float(grace)
            )
        with self.lock:
            self._finish(task, "TASK_KILLED", "", failed=False)
        if task.container_id:
            self.runtime.remove(task.container_id)

    def on_exit(self, container_id: str) -> None:
        """A container of ours died (docker event or poll): judge it outside the lock."""
        with self.lock:
            task = self.by_container.get(container_id)
            if self.closing or task is None or task.state == "TASK_KILLING":
                return
            if container_id in self._exiting:
                return
            self._exiting.add(container_id)
        self._pool.submit(self._judge_exit, task, container_id)

    def _judge_exit(self, task: Task, container_id: str) -> None:
        failed, message = self.runtime.exit_reason(container_id)
        with self.lock:
            self._exiting.discard(container_id)
            if task.state != "TASK_KILLING":
                self._finish(
                    task, "TASK_FAILED" if failed else "TASK_FINISHED", message, failed=True
                )

    def _finish(self, task: Task, state: str, message: str, failed: bool) -> None:
        """Forget a task in a terminal state; failures feed lastTaskFailure and backoff."""
        rec = self.apps.get(task.app_id)
        if task.container_id:
            self.by_container.pop(task.container_id, None)
        if rec is None or rec.tasks.pop(task.id, None) is None:
            return
        self.cluster.release(task)
        task.state = state
        self._status(task, state, message)
        if failed:
            rec.last_failure = {
                "appId": task.app_id,
                "host": task.agent.hostname,
                "message": message,
                "state": state,
                "taskId": task.id,
                "instanceId": task.instance_id,
                "timestamp": now_iso(),
                "version": task.version,
                "slaveId": task.agent.id,
            }
            rec.backoff(monotonic())
        self.lock.notify_all()

    # --- health ----------------------------------------------------------------

    def _schedule_probes(self, task: Task, now: float) -> float:
        """Start the probes that are due; returns when the next one is."""
        checks: list[dict[str, Any]] = task.definition.get("healthChecks") or []
        next_due = float("inf")
        for check, result in zip(checks, task.health, strict=True):
            if not result.in_flight and now >= result.next_probe_at:
                result.in_flight = True
                result.next_probe_at = now + max(
                    float(check["intervalSeconds"]), MIN_PROBE_INTERVAL_S
                )
                self.prober.submit(self._probe, task, check, result)
            next_due = min(next_due, result.next_probe_at)
        ready = task.readiness
        if ready is not None and not ready.ready:
            if not ready.in_flight and now >= ready.next_probe_at:
                ready.in_flight = True
                self.prober.submit(self._probe_readiness, task, ready)
            next_due = min(next_due, max(ready.next_probe_at, now + MIN_PROBE_INTERVAL_S))
        return next_due

    def _probe_readiness(self, task: Task, ready: readiness.Readiness) -> None:
        response = readiness.probe(ready)
        with self.lock:
            ready.in_flight = False
            if task.running and readiness.record(ready, response, monotonic()):
                self.lock.notify_all()

    def _probe(self, task: Task, check: dict[str, Any], result: HealthResult) -> None:
        cause = self.faults.health_failure(task.app_id, task.id)
        if cause is None:
            cause = health.run_probe(check, task)
        with self.lock:
            result.in_flight = False
            if not task.running:
                return
            verdict = health.record(result, check, task, cause, monotonic())
            if verdict.changed:
                self._health_events(task, check, result)
            if verdict.kill:
                self._task_event(
                    "unhealthy_instance_kill_event",
                    task,
                    version=task.version,
                    reason=cause,
                    host=task.agent.hostname,
                    slaveId=task.agent.id,
                )
                rec = self.apps.get(task.app_id)
                if rec is not None:
                    rec.backoff(monotonic())
                self._kill(task)
            self.lock.notify_all()

    def _task_event(self, kind: str, task: Task, **fields: Any) -> None:
        self.bus.publish(
            kind, appId=task.app_id, taskId=task.id, instanceId=task.instance_id, **fields
        )

    def _health_events(self, task: Task, check: dict[str, Any], result: HealthResult) -> None:
        self._task_event(
            "health_status_changed_event",
            task,
            version=task.version,
            alive=bool(result.alive),
        )
        self.bus.publish(
            "instance_health_changed_event",
            instanceId=task.instance_id,
            runSpecId=task.app_id,
            runSpecVersion=task.version,
            healthy=task.healthy,
        )
        if not result.alive:
            self._task_event("failed_health_check_event", task, healthCheck=check)
