"""Marathon's group tree: groups, their dependencies and their versions.

Apps are stored flat by id in the engine; a group is the set of ids below it plus its
own fields (``GroupRecord``). Like Marathon's ``putGroup``, every change creates the
groups above what it touches (``mkdir -p``) and stamps them with the change's version;
each stamped group keeps a snapshot of itself at that version for
``/v2/groups/{id}/versions/{version}`` and for a revert (``PUT {"version": V}``).
"""

from __future__ import annotations

import copy
from typing import Any

from conveyor.sim.marathon import pathid, plan
from conveyor.sim.marathon.model import App, InvalidApp
from conveyor.sim.marathon.state import Change, GroupRecord

SAME_ID = "Groups and Applications may not have the same identifier."
# Marathon's --zk_max_versions default: it keeps this many versions of each app and group.
MAX_VERSIONS = 50


def trim_versions(versions: dict[str, Any]) -> None:
    """Drop the oldest versions beyond MAX_VERSIONS (ISO stamps sort by time)."""
    for stale in sorted(versions)[: max(0, len(versions) - MAX_VERSIONS)]:
        del versions[stale]


def _plain(app: App) -> App:
    return app


class GroupTree:
    def __init__(self) -> None:
        self.groups: dict[str, GroupRecord] = {pathid.ROOT: GroupRecord(pathid.ROOT, "")}
        self.versions: dict[str, dict[str, dict[str, Any]]] = {}
        # Bumped by every change, so the state file knows when to write.
        self.revision = 0

    def to_json(self) -> dict[str, Any]:
        return {"groups": records_json(self.groups), "versions": self.versions}

    def load(self, saved: dict[str, Any]) -> None:
        self.groups = records_from(saved.get("groups") or {}) or self.groups
        self.versions = dict(saved.get("versions") or {})

    def apply(self, change: Change, apps: dict[str, App], version: str) -> dict[str, GroupRecord]:
        """The groups after ``change`` (``apps`` is the target's apps); nothing is stored."""
        groups = copy.deepcopy(self.groups)
        for gid, record in change.groups.items():
            if record is None:
                for below in [g for g in groups if pathid.is_within(g, gid)]:
                    groups.pop(below)
            else:
                groups[gid] = copy.deepcopy(record)
        for ident in [*apps, *groups]:
            for above in pathid.ancestors(ident):
                groups.setdefault(above, GroupRecord(above, version))
        groups.setdefault(pathid.ROOT, GroupRecord(pathid.ROOT, version))
        clash = sorted(set(apps) & set(groups))
        if clash:
            raise InvalidApp([{"path": clash[0], "errors": [SAME_ID]}])
        return groups

    def commit(
        self,
        groups: dict[str, GroupRecord],
        apps: dict[str, App],
        version: str,
        changed: list[str],
        change: Change,
    ) -> None:
        """Store ``groups`` and stamp every group the change touched with ``version``."""
        touched: set[str] = set()
        for ident in [*changed, *change.groups]:
            touched.update(pathid.ancestors(ident))
            if ident in groups:
                touched.add(ident)
        self.groups = groups
        self.revision += 1
        for gid in touched:
            if gid in groups:
                groups[gid].version = version
        for gid in touched:
            if gid in groups:
                snapshot = plan.group_tree(gid, apps, groups, _plain)
                stored = self.versions.setdefault(gid, {})
                stored[version] = snapshot
                trim_versions(stored)

    def tree(self, gid: str, apps: dict[str, App], app_view: Any = _plain) -> dict[str, Any]:
        return plan.group_tree(gid, apps, self.groups, app_view)


def records_json(records: dict[str, GroupRecord]) -> dict[str, Any]:
    return {
        gid: {"version": r.version, "dependencies": r.dependencies, "enforceRole": r.enforce_role}
        for gid, r in records.items()
    }


def records_from(saved: dict[str, Any]) -> dict[str, GroupRecord]:
    return {
        gid: GroupRecord(gid, str(r["version"]), list(r["dependencies"]), bool(r["enforceRole"]))
        for gid, r in saved.items()
    }


def flatten(snapshot: dict[str, Any]) -> tuple[dict[str, App], dict[str, GroupRecord]]:
    """A group JSON (a stored version) as apps by id and groups by id."""
    apps = {str(a["id"]): a for a in snapshot.get("apps") or []}
    groups = {
        str(snapshot["id"]): GroupRecord(
            str(snapshot["id"]),
            str(snapshot.get("version", "")),
            list(snapshot.get("dependencies") or []),
            bool(snapshot.get("enforceRole", False)),
        )
    }
    for sub in snapshot.get("groups") or []:
        sub_apps, sub_groups = flatten(sub)
        apps.update(sub_apps)
        groups.update(sub_groups)
    return apps, groups


def replace_subtree(
    gid: str,
    apps_now: dict[str, App],
    groups_now: dict[str, GroupRecord],
    apps: dict[str, App],
    groups: dict[str, GroupRecord],
) -> Change:
    """The change that makes the subtree ``gid`` hold exactly ``apps`` and ``groups``."""
    change = Change()
    for app_id in apps_now:
        if pathid.is_within(app_id, gid) and app_id not in apps:
            change.apps[app_id] = None
    for app_id, app in apps.items():
        if (
            apps_now.get(app_id) is None
            or plan.needs_restart(apps_now[app_id], app)
            or (apps_now[app_id].get("instances") != app.get("instances"))
        ):
            change.apps[app_id] = app
    for group_id in groups_now:
        if pathid.is_within(group_id, gid) and group_id not in groups and group_id != gid:
            change.groups[group_id] = None
    for group_id, record in groups.items():
        change.groups[group_id] = record
    return change
