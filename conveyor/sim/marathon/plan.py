"""Deployment plans as Marathon builds them (core/deployment/DeploymentPlan.scala).

A plan turns the original and the target state into steps: first stop the apps that
are gone, then start (with 0 instances) the apps that are new, then one step per
dependency layer: apps whose longest dependency chain is shortest go first, so an
app starts only after everything it depends on is deployed.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from conveyor.sim.marathon import pathid
from conveyor.sim.marathon.model import App, config_key

Action = dict[str, str]
Step = list[Action]


class CyclicDependencies(Exception):
    """The target's dependency graph has a cycle (Marathon answers 422)."""


def dependency_graph(
    apps: Mapping[str, App], group_deps: Mapping[str, Iterable[str]]
) -> dict[str, set[str]]:
    """app id -> the app ids it depends on (through app or group dependencies)."""

    def members(target: str) -> set[str]:
        if target in apps:
            return {target}
        return {a for a in apps if pathid.is_within(a, target) and target != pathid.ROOT}

    graph: dict[str, set[str]] = {app_id: set() for app_id in apps}
    for gid, deps in group_deps.items():
        dependents = {a for a in apps if pathid.is_within(a, gid)}
        for dep in deps:
            for app_id in dependents:
                graph[app_id] |= members(dep) - {app_id}
    for app_id, app in apps.items():
        for dep in app.get("dependencies") or []:
            graph[app_id] |= members(str(dep)) - {app_id}
    return graph


def layers(graph: Mapping[str, set[str]]) -> dict[str, int]:
    """Each app's longest dependency chain (1 = depends on nothing); raises on a cycle."""
    depth: dict[str, int] = {}
    visiting: set[str] = set()

    def visit(node: str) -> int:
        if node in depth:
            return depth[node]
        if node in visiting:
            raise CyclicDependencies(node)
        visiting.add(node)
        found = 1 + max((visit(d) for d in graph.get(node, ())), default=0)
        visiting.discard(node)
        depth[node] = found
        return found

    for node in sorted(graph):
        visit(node)
    return depth


def needs_restart(old: App, new: App) -> bool:
    return config_key(old) != config_key(new)


def steps(
    original: Mapping[str, App],
    target: Mapping[str, App],
    changed: Iterable[str],
    graph: Mapping[str, set[str]],
    restart: Iterable[str] = (),
) -> list[Step]:
    """The plan's steps for the ``changed`` app ids (``restart`` forces RestartApplication)."""
    changed = set(changed)
    forced = set(restart)
    stops = [{"action": "StopApplication", "app": a} for a in sorted(original) if a not in target]
    starts = [{"action": "StartApplication", "app": a} for a in sorted(target) if a not in original]
    depth = layers(graph)
    by_layer: dict[int, Step] = {}
    for app_id in sorted(a for a in changed if a in target):
        old = original.get(app_id)
        if old is None or (app_id not in forced and not needs_restart(old, target[app_id])):
            action = "ScaleApplication"
        else:
            action = "RestartApplication"
        by_layer.setdefault(depth.get(app_id, 1), []).append({"action": action, "app": app_id})
    ordered = [by_layer[k] for k in sorted(by_layer)]
    return [s for s in [stops, starts, *ordered] if s]


def affected(plan_steps: Iterable[Step]) -> list[str]:
    return sorted({a["app"] for step in plan_steps for a in step})


def group_tree(
    gid: str,
    apps: Mapping[str, App],
    groups: Mapping[str, Any],
    app_view: Any,
) -> dict[str, Any]:
    """Marathon's group JSON for ``gid``: its apps and nested groups, recursively."""
    record = groups[gid]
    return {
        "id": gid,
        "apps": [app_view(apps[a]) for a in sorted(apps) if pathid.parent(a) == gid],
        "groups": [
            group_tree(g, apps, groups, app_view)
            for g in sorted(groups)
            if g != pathid.ROOT and g != gid and pathid.parent(g) == gid
        ],
        "pods": [],
        "dependencies": list(record.dependencies),
        "version": record.version,
        "enforceRole": record.enforce_role,
    }
