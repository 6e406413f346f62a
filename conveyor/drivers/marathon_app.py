"""Marathon app definitions as the driver sees them: rendering, comparing, judging tasks.

Pure functions over JSON-shaped dicts, so plan, idempotency and the health verdict
share one notion of "what would change" and "what runs".
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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

LABEL_DIGEST = "conveyor.digest"
LABEL_VERSION = "conveyor.version"
LABEL_REVISION = "conveyor.revision"


def load_template(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except OSError as exc:
        raise ConfigError(str(path), [f"cannot read the app template: {exc.strerror}"]) from None
    except ValueError as exc:
        raise ConfigError(str(path), [f"the app template is not valid JSON: {exc}"]) from None
    if not isinstance(data, dict):
        raise ConfigError(str(path), ["the app template must be a JSON object (one Marathon app)"])
    return data


def render(template: dict[str, Any], app_id: str, release: Release) -> dict[str, Any]:
    """The definition ``deploy`` sends: the template, pinned to the release's digest."""
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
    app["labels"] = labels
    return app


def normalise(app: dict[str, Any]) -> dict[str, Any]:
    """The definition without what Marathon computes, fit to be diffed or sent back."""
    return {k: copy.deepcopy(v) for k, v in app.items() if k not in SERVER_MANAGED}


def _merge(current: Any, desired: Any, key: str = "") -> Any:
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


def overlay(current: dict[str, Any], desired: dict[str, Any]) -> dict[str, Any]:
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


def image_of(app: dict[str, Any]) -> str | None:
    image = ((app.get("container") or {}).get("docker") or {}).get("image")
    return str(image) if image else None


def digest_of(app: dict[str, Any]) -> str | None:
    label = (app.get("labels") or {}).get(LABEL_DIGEST)
    if label:
        return str(label)
    image = image_of(app) or ""
    return image.rsplit("@", 1)[1] if "@" in image else None


def task_healthy(task: dict[str, Any], checked: bool) -> bool:
    if task.get("state") != "TASK_RUNNING":
        return False
    results = task.get("healthCheckResults") or []
    return not checked or (bool(results) and all(r.get("alive") for r in results))


def task_problem(task: dict[str, Any]) -> str:
    where = f"task {task.get('id')} on {task.get('host')}"
    if task.get("state") != "TASK_RUNNING":
        return f"{where}: {task.get('state')}"
    causes = [
        str(r.get("lastFailureCause"))
        for r in task.get("healthCheckResults") or []
        if not r.get("alive") and r.get("lastFailureCause")
    ]
    if causes:
        return f"{where}: health check failing: {'; '.join(causes)}"
    return f"{where}: no passing health check yet"


def instance_of(task: dict[str, Any], checked: bool, digest: str | None = None) -> Instance:
    addresses = [a.get("ipAddress") for a in task.get("ipAddresses") or [] if a.get("ipAddress")]
    ports = task.get("ports") or [0]
    return Instance(
        host=str(addresses[0] if addresses else task.get("host")),
        port=int(ports[0]),
        healthy=task_healthy(task, checked),
        agent=str(task.get("host")) if task.get("host") else None,
        digest=digest,
    )


@dataclass(frozen=True)
class Rollout:
    """How far the app's tasks are from "every instance new and healthy"."""

    done: bool
    summary: str
    problems: tuple[str, ...]


def assess(app: dict[str, Any]) -> Rollout:
    """Only tasks launched for the newest configuration count.

    Marathon replaces every task launched before the app's last config change, a revert
    included (it restores the settings under a new version), so this holds after one too.
    """
    wanted = int(app.get("instances", 1))
    target = str(
        (app.get("versionInfo") or {}).get("lastConfigChangeAt") or app.get("version") or ""
    )
    checked = bool(app.get("healthChecks"))
    tasks = [t for t in app.get("tasks") or [] if isinstance(t, dict)]
    # Marathon's versions are ISO timestamps of one format: order by string is order by time.
    new = [t for t in tasks if str(t.get("version") or "") >= target]
    healthy = [t for t in new if task_healthy(t, checked)]
    problems = [task_problem(t) for t in tasks if not task_healthy(t, checked)]
    failure = app.get("lastTaskFailure") or {}
    if failure.get("message") and failure.get("version", target) >= target:
        task = f"task {failure.get('taskId')} {failure.get('state')}"
        problems.append(f"last task failure: {task}: {failure['message']}")
    # Tasks Marathon is already killing are on their way out, not instances that serve.
    old = len([t for t in tasks if t not in new and t.get("state") not in LEAVING])
    summary = f"{len(healthy)}/{wanted} instances healthy on the new version"
    if old:
        summary += f", {old} old still running"
    done = len(healthy) >= wanted and not old
    return Rollout(done=done, summary=summary, problems=tuple(problems))
