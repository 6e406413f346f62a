"""A release of several services on Marathon: one group, deployed and rolled back whole.

The members' app definitions go in one ``PUT /v2/groups/{id}`` with their
``dependencies``, so Marathon starts them in dependency order within one deployment.
The release is live once every member runs only tasks of the new group version, all
healthy. Otherwise the whole group is put back to the version it ran before (Marathon's
group versions; a first release is removed) and the error names the member that failed.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from conveyor.clients.marathon import MarathonClient
from conveyor.clients.marathon_model import App, Definition
from conveyor.errors import DeploymentFailed

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Member:
    name: str
    definition: Definition  # ``id`` relative to the group; ``dependencies`` by name


@dataclass(frozen=True)
class GroupResult:
    group_id: str
    version: str
    previous: str | None


def group_body(group_id: str, members: list[Member]) -> Definition:
    apps = []
    for m in members:
        app = {**m.definition, "id": f"{group_id.rstrip('/')}/{m.name}"}
        deps = app.get("dependencies") or []
        app["dependencies"] = [d if d.startswith("/") else f"{group_id}/{d}" for d in deps]
        apps.append(app)
    return {"id": group_id, "apps": apps}


def _unready(app: App) -> str | None:
    """Why ``app`` is not yet live at its configuration, or None when it is.

    A member the release did not change keeps its version, so each is judged against
    its own last configuration change rather than the group's version.
    """
    current = [t for t in app.tasks if t.version >= app.config_version]
    if len(current) < app.instances or len(app.tasks) > app.instances:
        return f"{len(current)} of {app.instances} tasks at the new version"
    sick = [t for t in current if not all(r.alive for r in t.health_check_results)]
    if sick or (app.health_checks and not all(t.health_check_results for t in current)):
        return "tasks not healthy"
    return None


def wait_live(
    client: MarathonClient,
    ids: dict[str, str],
    timeout_s: float,
    clock: Callable[[], float],
    sleep: Callable[[float], None],
) -> tuple[str, str] | None:
    """None once every member is live, else (member, why) at the deadline."""
    deadline = clock() + timeout_s
    delay = 0.2
    while True:
        waiting = None
        for name, app_id in ids.items():
            why = _unready(client.app(app_id, embed=("app.tasks",)))
            if why:
                waiting = (name, why)
                break
        if waiting is None:
            return None
        if clock() >= deadline:
            return waiting
        sleep(delay)
        delay = min(delay * 2, 2.0)


def deploy_group(
    client: MarathonClient,
    group_id: str,
    members: list[Member],
    *,
    timeout_s: float,
    rollback_timeout_s: float = 300,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> GroupResult:
    """Deploy ``members`` as ``group_id``; on failure the whole group returns."""
    before = client.find_group(group_id)
    previous = before.version if before and before.apps else None
    ref = client.put_group(group_id, group_body(group_id, members))
    ids = {m.name: f"{group_id.rstrip('/')}/{m.name}" for m in members}
    failed = wait_live(client, ids, timeout_s, clock, sleep)
    if failed is None:
        log.info("group %s live at %s (%d members)", group_id, ref.version, len(members))
        return GroupResult(group_id, ref.version, previous)
    name, why = failed
    log.warning("member %s failed (%s); rolling group %s back", name, why, group_id)
    if before is None or previous is None:
        client.put_group(group_id, {"apps": []}, force=True)
        outcome = "removed (it had no earlier version)"
    else:
        client.put_group(group_id, {"version": previous}, force=True)
        prior = {n: i for n, i in ids.items() if any(a.id == i for a in before.apps)}
        still = wait_live(client, prior, rollback_timeout_s, clock, sleep)
        outcome = f"back at {previous}" if still is None else f"stuck: {still[0]}: {still[1]}"
    raise DeploymentFailed(
        f"member {name!r} of group {group_id} did not become healthy within {timeout_s:g}s "
        f"({why}); the whole group is {outcome}"
    )
