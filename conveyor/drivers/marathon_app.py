"""Marathon app definitions as the driver sees them: rendering, comparing, judging tasks.

Pure functions, so plan, idempotency and the health verdict share one notion of
"what would change" and "what runs": definitions (what is sent) are JSON, what
Marathon answers is read through the typed models of ``clients.marathon_model``.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from pathlib import Path

from conveyor.clients.marathon_model import (
    LABEL_DIGEST,
    LABEL_PREVIOUS,
    LABEL_REVISION,
    LABEL_VERSION,
    App,
    Definition,
    Task,
)
from conveyor.drivers.base import Instance
from conveyor.errors import ConfigError
from conveyor.release import Release

# Fields Marathon computes; a definition sent back must not carry them.
SERVER_MANAGED = frozenset(
    {
        "version",
        "versionInfo",
        "tasks",
        "tasksStaged",
        "tasksRunning",
        "tasksHealthy",
        "tasksUnhealthy",
        "deployments",
        "lastTaskFailure",
        "readinessCheckResults",
        "taskStats",
        "tasksStats",
    }
)
# Marathon's partial update replaces these top-level fields whole instead of merging.
ATOMIC_FIELDS = frozenset({"labels", "env", "constraints", "args", "cmd", "secrets", "fetch"})
# A 0 here asks Marathon to pick the port; the picked one is not a change.
DYNAMIC_PORT_KEYS = frozenset({"port", "servicePort", "hostPort"})

LEAVING = frozenset({"TASK_KILLING", "TASK_KILLED", "TASK_FINISHED", "TASK_FAILED", "TASK_GONE"})


def load_template(path: Path) -> Definition:
    try:
        data = json.loads(path.read_text())
    except OSError as exc:
        raise ConfigError(str(path), [f"cannot read the app template: {exc.strerror}"]) from None
    except ValueError as exc:
        raise ConfigError(str(path), [f"the app template is not valid JSON: {exc}"]) from None
    if not isinstance(data, dict):
        raise ConfigError(str(path), ["the app template must be a JSON object (one Marathon app)"])
    return data


def render(
    template: Definition, app_id: str, release: Release, *, previous: str | None = None
) -> Definition:
    """The definition ``deploy`` sends: the template, pinned to the release's digest, and
    naming ``previous``, the digest the app ran before, when there was one."""
    app = copy.deepcopy(template)
    app["id"] = "/" + app_id.strip("/")
    container = app.setdefault("container", {"type": "DOCKER"})
    container.setdefault("docker", {})["image"] = release.image
    labels = {str(k): str(v) for k, v in (app.get("labels") or {}).items()}
    labels[LABEL_DIGEST] = release.digest
    labels[LABEL_VERSION] = release.version
    if release.revision:
        labels[LABEL_REVISION] = release.revision
    else:
        labels.pop(LABEL_REVISION, None)
    if previous:
        labels[LABEL_PREVIOUS] = previous
    else:
        labels.pop(LABEL_PREVIOUS, None)
    app["labels"] = labels
    return app


def normalise(app: Definition) -> Definition:
    """The definition without what Marathon computes, fit to be diffed or sent back."""
    return {k: copy.deepcopy(v) for k, v in app.items() if k not in SERVER_MANAGED}


def _merge(current: object, desired: object, key: str = "") -> object:
    if key in DYNAMIC_PORT_KEYS and desired == 0 and isinstance(current, int):
        return current
    if isinstance(current, dict) and isinstance(desired, dict):
        merged = dict(current)
        for k, v in desired.items():
            merged[k] = _merge(current.get(k), v, k)
        return merged
    if isinstance(current, list) and isinstance(desired, list) and len(current) == len(desired):
        return [_merge(c, d) for c, d in zip(current, desired, strict=True)]
    return copy.deepcopy(desired)


def overlay(current: Definition, desired: Definition) -> Definition:
    """What Marathon will hold after a partial-update PUT of ``desired`` over ``current``.

    Nested fields ``desired`` leaves out keep the values (and defaults) Marathon filled
    in, so only real changes differ; labels and env are replaced whole, as Marathon does.
    """
    result = dict(current)
    for key, value in desired.items():
        result[key] = (
            copy.deepcopy(value) if key in ATOMIC_FIELDS else _merge(current.get(key), value, key)
        )
    return result


def task_healthy(task: Task, checked: bool) -> bool:
    if task.state != "TASK_RUNNING":
        return False
    results = task.health_check_results
    return not checked or (bool(results) and all(r.alive for r in results))


def task_problem(task: Task) -> str:
    where = f"task {task.id} on {task.host}"
    if task.state != "TASK_RUNNING":
        return f"{where}: {task.state}"
    causes = [
        r.last_failure_cause
        for r in task.health_check_results
        if not r.alive and r.last_failure_cause
    ]
    if causes:
        return f"{where}: health check failing: {'; '.join(causes)}"
    return f"{where}: no passing health check yet"


def instance_of(task: Task, checked: bool, digest: str | None = None) -> Instance:
    addresses = [a.ip_address for a in task.ip_addresses if a.ip_address]
    return Instance(
        host=str(addresses[0] if addresses else task.host),
        port=task.ports[0] if task.ports else 0,
        healthy=task_healthy(task, checked),
        agent=task.host or None,
        digest=digest,
    )


@dataclass(frozen=True)
class Rollout:
    """How far the app's tasks are from "every instance new and healthy"."""

    done: bool
    summary: str
    problems: tuple[str, ...]


def assess(app: App) -> Rollout:
    """Only tasks launched for the newest configuration count.

    Marathon replaces every task launched before the app's last config change, a revert
    included (it restores the settings under a new version), so this holds after one too.
    """
    target = app.config_version
    checked = bool(app.health_checks)
    # Marathon's versions are ISO timestamps of one format: order by string is order by time.
    new = [t for t in app.tasks if t.version >= target]
    healthy = [t for t in new if task_healthy(t, checked)]
    problems = [task_problem(t) for t in app.tasks if not task_healthy(t, checked)]
    failure = app.last_task_failure
    if failure and failure.message and (failure.version or target) >= target:
        problems.append(
            f"last task failure: task {failure.task_id} {failure.state}: {failure.message}"
        )
    # Tasks Marathon is already killing are on their way out, not instances that serve.
    old = len([t for t in app.tasks if t not in new and t.state not in LEAVING])
    summary = f"{len(healthy)}/{app.instances} instances healthy on the new version"
    if old:
        summary += f", {old} old still running"
    done = len(healthy) >= app.instances and not old
    return Rollout(done=done, summary=summary, problems=tuple(problems))
