"""State that survives a restart, as Marathon keeps its own in ZooKeeper.

With ``--state-dir`` the simulator writes its apps (with every stored version), their
tasks, its deployments and its framework id to ``marathon-state.json`` there: after each
scheduler tick that changed any of them, atomically (a temporary file, fsync, rename),
so a crash leaves the previous state or the new one, never half of one. Groups and
other run specs join as further top-level keys.

On start it adopts what it finds, like a Marathon failing over: a task whose container
(found by its ``conveyor.sim.task`` label) still runs is the same task again; one whose
container exited is judged as an exit; one whose container vanished is TASK_LOST and
replaced; containers of this instance that no task claims are removed. Tasks are left
running when a simulator with a state folder stops.
"""

from __future__ import annotations

import json
import logging
import os
import time
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from conveyor.sim.marathon import readiness
from conveyor.sim.marathon.groups import records_from, records_json
from conveyor.sim.marathon.model import now_iso
from conveyor.sim.marathon.state import AppRecord, Deployment, HealthResult, Task, monotonic

if TYPE_CHECKING:
    from conveyor.sim.marathon.engine import Engine

log = logging.getLogger(__name__)

FILE_NAME = "marathon-state.json"
FORMAT = 2  # 2: deployments over many apps, and the group tree
LOST_MESSAGE = "Reconciliation: Task is unknown to the agent"


class BadStateFile(ValueError):
    """The state folder holds a file this simulator cannot read; it is left untouched."""


class StateFile:
    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.path = directory / FILE_NAME
        self._written: Any = None

    def load(self) -> dict[str, Any] | None:
        try:
            state = json.loads(self.path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise BadStateFile(f"{self.path}: not a simulator state file ({exc})") from None
        if not isinstance(state, dict) or state.get("format") != FORMAT:
            raise BadStateFile(f"{self.path}: unknown state format {state.get('format')!r}")
        return state

    def changed(self, fingerprint: Any) -> bool:
        return bool(fingerprint != self._written)

    def write(self, payload: bytes, fingerprint: Any) -> None:
        tmp = self.path.with_name(f".{FILE_NAME}.{os.getpid()}.tmp")
        with open(tmp, "wb") as f:
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
        fd = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        self._written = fingerprint


def fingerprint(engine: Engine) -> Any:
    """What the file holds, cheaply: equal fingerprints need no new write."""
    return (
        tuple(
            (
                app_id,
                rec.definition.get("version"),
                rec.deleting,
                len(rec.versions),
                (rec.last_failure or {}).get("timestamp"),
                tuple((t.id, t.state, t.container_id, t.ready) for t in rec.tasks.values()),
            )
            for app_id, rec in engine.apps.items()
        ),
        tuple((d.id, d.current_step) for d in engine.deployments.values() if d.fake_until is None),
        engine.tree.revision,
    )


def _task(task: Task) -> dict[str, Any]:
    return {
        "id": task.id,
        "instanceId": task.instance_id,
        "version": task.version,
        "agentId": task.agent.id,
        "ports": task.ports,
        "stagedAt": task.staged_at,
        "startedAt": task.started_at,
        "state": task.state,
        "containerId": task.container_id,
        "deploymentId": task.deployment_id,
        "ready": task.ready,
    }


def snapshot(engine: Engine) -> bytes:
    """The state file's content (call under the engine's lock)."""
    apps = {
        app_id: {
            "definition": rec.definition,
            "versions": rec.versions,
            "deleting": rec.deleting,
            "lastTaskFailure": rec.last_failure,
            "tasks": [_task(t) for t in rec.tasks.values()],
        }
        for app_id, rec in engine.apps.items()
    }
    deployments = [
        {
            "id": d.id,
            "version": d.version,
            "original": d.original,
            "target": d.target,
            "groupsBefore": records_json(d.groups_before),
            "groupsAfter": records_json(d.groups_after),
            "steps": d.steps,
            "currentStep": d.current_step,
        }
        for d in engine.deployments.values()
        if d.fake_until is None
    ]
    state = {
        "format": FORMAT,
        "frameworkId": engine.cluster.framework_id,
        "savedAt": now_iso(),
        "apps": apps,
        "deployments": deployments,
        "groups": engine.tree.to_json(),
    }
    return json.dumps(state, separators=(",", ":")).encode()


def _epoch(stamp: str | None) -> float | None:
    return (
        None if stamp is None else datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
    )


def _adopt_task(
    engine: Engine, rec: AppRecord, saved: dict[str, Any], container: tuple[str, str] | None
) -> str | None:
    """Rebuild one saved task on its container; the reason it is gone otherwise."""
    agent = next((a for a in engine.cluster.agents if a.id == saved["agentId"]), None)
    if agent is None:
        return "its agent is no longer part of the cluster"
    if container is None:
        return LOST_MESSAGE
    definition = rec.versions.get(saved["version"], rec.definition)
    task = Task(
        id=saved["id"],
        instance_id=saved["instanceId"],
        app_id=definition["id"],
        version=saved["version"],
        definition=definition,
        agent=agent,
        ports=list(saved["ports"]),
        staged_at=saved["stagedAt"],
        started_at=saved["startedAt"] or now_iso(),
        state="TASK_RUNNING",
        container_id=container[0],
        deployment_id=saved.get("deploymentId"),
    )
    started = _epoch(task.started_at) or time.time()
    task.started_mono = monotonic() - max(0.0, time.time() - started)
    task.health = [HealthResult() for _ in definition.get("healthChecks") or []]
    if task.deployment_id in engine.deployments and not saved.get("ready", True):
        task.readiness = readiness.for_task(definition, task.ports)
    agent.used_cpus += float(definition["cpus"])
    agent.used_mem += float(definition["mem"])
    agent.ports.update(task.ports)
    rec.tasks[task.id] = task
    engine.runner.by_container[container[0]] = task
    if container[1] != "running":
        # Exited while the simulator was down: judged by its exit code, as any exit.
        engine.runner.on_exit(container[0])
    elif saved["state"] == "TASK_KILLING":
        # A kill the last run did not finish.
        engine.runner._kill(task)
    return None


def restore(engine: Engine, state: dict[str, Any]) -> list[str]:
    """Load ``state`` into ``engine`` and adopt running containers; returns the container
    ids no task claims (to be removed). Call before the scheduler starts."""
    found = engine.runtime.containers_by_task()
    claimed: set[str] = set()
    for app_id, saved in state.get("apps", {}).items():
        rec = AppRecord(
            definition=saved["definition"],
            versions=dict(saved["versions"]),
            last_failure=saved.get("lastTaskFailure"),
            deleting=bool(saved.get("deleting")),
        )
        engine.apps[app_id] = rec
    engine.tree.load(state.get("groups") or {})
    for saved in state.get("deployments", []):
        dep = Deployment(
            id=saved["id"],
            version=saved["version"],
            original=dict(saved.get("original") or {}),
            target=dict(saved.get("target") or {}),
            groups_before=records_from(saved.get("groupsBefore") or {}),
            groups_after=records_from(saved.get("groupsAfter") or {}),
            steps=saved["steps"],
            current_step=int(saved["currentStep"]),
        )
        engine.deployments[dep.id] = dep
    for app_id, saved in state.get("apps", {}).items():
        rec = engine.apps[app_id]
        for task in saved.get("tasks", []):
            container = found.get(task["id"])
            gone = _adopt_task(engine, rec, task, container)
            if container is not None and gone is None:
                claimed.add(container[0])
            elif gone is not None:
                _lost(engine, rec, task, gone)
    return [cid for cid, _ in found.values() if cid not in claimed]


def _lost(engine: Engine, rec: AppRecord, saved: dict[str, Any], message: str) -> None:
    """A task whose container vanished while the simulator was down: TASK_LOST, replaced."""
    log.info("task %s is lost: %s", saved["id"], message)
    rec.last_failure = {
        "appId": rec.definition["id"],
        "host": next(
            (a.hostname for a in engine.cluster.agents if a.id == saved["agentId"]), "unknown"
        ),
        "message": message,
        "state": "TASK_LOST",
        "taskId": saved["id"],
        "instanceId": saved["instanceId"],
        "timestamp": now_iso(),
        "version": saved["version"],
        "slaveId": saved["agentId"],
    }
    engine.bus.publish(
        "status_update_event",
        slaveId=saved["agentId"],
        taskId=saved["id"],
        instanceId=saved["instanceId"],
        taskStatus="TASK_LOST",
        message=message,
        appId=rec.definition["id"],
        host=rec.last_failure["host"],
        ipAddresses=[],
        ports=saved["ports"],
        version=saved["version"],
    )
