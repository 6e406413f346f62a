"""``/v2/groups``: Marathon's GroupsResource (api/v2/GroupsResource.scala, GroupApiService).

A group update (POST creates, PUT creates or updates) carries ``apps`` (the group's
apps, replacing the ones it had), ``groups`` (nested updates, replacing the subgroups),
``dependencies``, or instead ``scaleBy`` or ``version`` (a revert to a stored version).
Every change is one deployment whose steps follow the dependencies.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from typing import Any

from conveyor.sim.marathon import model, pathid
from conveyor.sim.marathon.engine import Engine
from conveyor.sim.marathon.groups import flatten, replace_subtree
from conveyor.sim.marathon.state import Change, GroupRecord
from conveyor.sim.marathon.web import Request, Response, Router, message

GROUP_FIELDS = {"id", "apps", "groups", "dependencies", "scaleBy", "version", "enforceRole", "pods"}
INFO_EMBEDS = {"counts", "tasks", "deployments", "lastTaskFailure", "taskStats", "readiness"}


def unknown_group(gid: str) -> Response:
    return message(404, f"Group '{gid}' does not exist")


def _invalid(path: str, errors: list[str]) -> model.InvalidApp:
    return model.InvalidApp([{"path": path, "errors": errors}])


def _prefixed(exc: model.InvalidApp, prefix: str) -> model.InvalidApp:
    return model.InvalidApp(
        [{**d, "path": prefix + (d["path"] if d["path"] != "/" else "")} for d in exc.details]
    )


class Structure:
    """A group update body turned into apps and groups (ids resolved, apps validated)."""

    def __init__(self, groups_now: dict[str, GroupRecord]) -> None:
        self.groups_now = groups_now
        self.apps: dict[str, model.App] = {}
        self.groups: dict[str, GroupRecord] = {}
        self.replaced_apps: set[str] = set()
        self.replaced_groups: set[str] = set()

    def read(self, body: Any, gid: str, path: str, existing: GroupRecord | None) -> None:
        if not isinstance(body, dict):
            raise model.InvalidJson([{"path": path or "/", "errors": ["error.expected.jsobject"]}])
        deps = body.get("dependencies")
        if deps is None:
            deps = existing.dependencies if existing else []
        elif not isinstance(deps, list) or not all(isinstance(d, str) for d in deps):
            raise model.InvalidJson(
                [{"path": f"{path}/dependencies", "errors": ["error.expected.jsarray"]}]
            )
        record = GroupRecord(gid, "", [pathid.canonical(d, gid) for d in deps])
        record.enforce_role = bool(
            body.get("enforceRole", existing.enforce_role if existing else False)
        )
        self.groups[gid] = record
        if body.get("apps") is not None:
            self.replaced_apps.add(gid)
            for i, raw in enumerate(body["apps"] if isinstance(body["apps"], list) else [None]):
                self._app(raw, gid, f"{path}/apps({i})")
        if body.get("groups") is not None:
            self.replaced_groups.add(gid)
            for i, raw in enumerate(body["groups"] if isinstance(body["groups"], list) else [None]):
                sub_path = f"{path}/groups({i})"
                raw_id = raw.get("id") if isinstance(raw, dict) else None
                if not isinstance(raw_id, str):
                    raise _invalid(f"{sub_path}/id", ["error.path.missing"])
                problems = pathid.errors(raw_id, base=gid)
                if problems:
                    raise _invalid(f"{sub_path}/id", problems)
                sub_id = pathid.canonical(raw_id, gid)
                self.read(raw, sub_id, sub_path, self.groups_now.get(sub_id))

    def _app(self, raw: Any, gid: str, path: str) -> None:
        if not isinstance(raw, dict):
            raise model.InvalidJson([{"path": path, "errors": ["error.expected.jsobject"]}])
        raw_id = raw.get("id")
        if not isinstance(raw_id, str):
            raise _invalid(f"{path}/id", ["error.path.missing"])
        problems = pathid.errors(raw_id, base=gid)
        if problems:
            raise _invalid(f"{path}/id", problems)
        app = {k: v for k, v in raw.items() if k not in model.INFO_FIELDS}
        app["id"] = pathid.canonical(raw_id, gid)
        try:
            model.validate(app)
        except model.InvalidApp as exc:
            raise _prefixed(exc, path) from None
        self.apps[app["id"]] = model.with_defaults(app)


class GroupsApi:
    def __init__(self, engine: Engine, deployed: Callable[[str, str, int], Response]) -> None:
        self.engine = engine
        self.deployed = deployed

    def mount(self, router: Router, guarded: Callable[[Callable[[], Response]], Response]) -> None:
        for method, handler in (
            ("GET", self.get),
            ("POST", self.create),
            ("PUT", self.update),
            ("PATCH", self.patch),
            ("DELETE", self.delete),
        ):
            router.add(method, r"/v2/groups(?P<rest>/.*)?", self._wrap(handler, guarded))

    @staticmethod
    def _wrap(
        handler: Callable[[Request, list[str]], Response],
        guarded: Callable[[Callable[[], Response]], Response],
    ) -> Callable[[Request], Response]:
        def run(req: Request) -> Response:
            return guarded(lambda: handler(req, pathid.segments(req.params.get("rest") or "")))

        return run

    # --- reads ----------------------------------------------------------------------

    def _app_view(self, embeds: set[str]) -> Callable[[model.App], dict[str, Any]]:
        wanted = {e.rsplit(".", 1)[-1] for e in embeds if e.startswith("group.apps.")}

        def view(app: model.App) -> dict[str, Any]:
            rec = self.engine.apps.get(app["id"])
            if rec is None or not wanted & INFO_EMBEDS:
                return copy.deepcopy(app)
            body = self.engine.app_json(
                rec, tasks="tasks" in wanted, failure="lastTaskFailure" in wanted
            )
            if "counts" not in wanted:
                for key in ("tasksStaged", "tasksRunning", "tasksHealthy", "tasksUnhealthy"):
                    body.pop(key, None)
            if "deployments" not in wanted:
                body.pop("deployments", None)
            return body

        return view

    def get(self, req: Request, parts: list[str]) -> Response:
        embeds = set(req.query.get("embed", [])) or {"group.apps", "group.groups", "group.pods"}
        with self.engine.lock:
            if parts and parts[-1] == "apps":
                gid = pathid.canonical("/".join(parts[:-1]))
                if gid not in self.engine.tree.groups:
                    return unknown_group(gid)
                view = self._app_view(embeds)
                live = self.engine.live_apps()
                return Response(
                    200, [view(live[a]) for a in sorted(live) if pathid.is_within(a, gid)]
                )
            if (parts and parts[-1] == "versions") or (len(parts) >= 2 and parts[-2] == "versions"):
                return self._versions(parts)
            gid = pathid.canonical("/".join(parts))
            if gid not in self.engine.tree.groups:
                return unknown_group(gid)
            body = self.engine.tree.tree(gid, self.engine.live_apps(), self._app_view(embeds))
        return Response(200, _trimmed(body, embeds))

    def _versions(self, parts: list[str]) -> Response:
        listing = parts[-1] == "versions"
        gid = pathid.canonical("/".join(parts[:-1] if listing else parts[:-2]))
        if gid not in self.engine.tree.groups:
            return unknown_group(gid)
        stored = self.engine.tree.versions.get(gid, {})
        if listing:
            return Response(200, sorted(stored, reverse=True))
        found = stored.get(parts[-1])
        if found is None:
            return message(404, f"Group '{gid}' does not exist in version {parts[-1]}")
        return Response(200, found)

    # --- writes ---------------------------------------------------------------------

    def _body(self, req: Request) -> dict[str, Any]:
        body = model.parse_json(req.body)
        if not isinstance(body, dict):
            raise model.InvalidJson([{"path": "/", "errors": ["error.expected.jsobject"]}])
        return body

    def _target(self, req: Request, parts: list[str], body: dict[str, Any]) -> tuple[str, str]:
        base_raw = "/" + "/".join(parts)
        problems = pathid.errors(base_raw, need_segment=False)
        if problems:
            raise _invalid("/id", problems)
        base = pathid.canonical(base_raw)
        raw_id = body.get("id")
        if raw_id is None:
            return base, base
        if not isinstance(raw_id, str) or pathid.errors(raw_id, need_segment=False):
            raise _invalid(
                "/id", pathid.errors(str(raw_id), need_segment=False) or ["error.expected.jsstring"]
            )
        return base, pathid.canonical(raw_id, base)

    def create(self, req: Request, parts: list[str]) -> Response:
        body = self._body(req)
        _, gid = self._target(req, parts, body)
        with self.engine.lock:
            if gid in self.engine.tree.groups and gid != pathid.ROOT:
                return message(
                    409, f"Group {gid} is already created. Use PUT to change this group."
                )
            if gid in self.engine.live_apps():
                return message(409, f"An app with the path {gid} already exists.")
            dep = self.engine.commit(self._structure_change(body, gid), force=req.flag("force"))
        return self.deployed(dep.id, dep.version, 201)

    def update(self, req: Request, parts: list[str]) -> Response:
        body = self._body(req)
        _, gid = self._target(req, parts, body)
        with self.engine.lock:
            if body.get("version") is not None:
                change = self._revert(gid, str(body["version"]))
            elif body.get("scaleBy") is not None:
                change = self._scale(gid, body["scaleBy"])
            else:
                change = self._structure_change(body, gid)
            dry_run = req.flag("dryRun")
            dep = self.engine.commit(change, force=req.flag("force"), dry_run=dry_run)
        if dry_run:
            return Response(200, {"steps": [{"actions": step} for step in dep.steps]})
        return self.deployed(dep.id, dep.version, 200)

    def _structure_change(self, body: dict[str, Any], gid: str) -> Change:
        tree = self.engine.tree
        structure = Structure(tree.groups)
        structure.read(body, gid, "", tree.groups.get(gid))
        live = self.engine.live_apps()
        change = Change()
        for group_id in structure.replaced_groups:
            for below in tree.groups:
                if (
                    pathid.parent(below) == group_id
                    and below != group_id
                    and below not in structure.groups
                ):
                    change.groups[below] = None
                    for app_id in live:
                        if pathid.is_within(app_id, below):
                            change.apps[app_id] = None
        for group_id in structure.replaced_apps:
            for app_id in live:
                if pathid.parent(app_id) == group_id and app_id not in structure.apps:
                    change.apps[app_id] = None
        for app_id, app in structure.apps.items():
            old = live.get(app_id)
            if (
                old is None
                or model.config_key(old) != model.config_key(app)
                or old["instances"] != app["instances"]
            ):
                change.apps[app_id] = app
        change.groups.update(structure.groups)
        return change

    def _scale(self, gid: str, factor: Any) -> Change:
        if isinstance(factor, bool) or not isinstance(factor, int | float) or factor < 0:
            raise _invalid("/scaleBy", ["got an invalid scale factor, expected a number >= 0"])
        if gid not in self.engine.tree.groups:
            raise model.InvalidApp([{"path": "/id", "errors": [f"Group '{gid}' does not exist"]}])
        change = Change()
        for app_id, app in self.engine.live_apps().items():
            if pathid.is_within(app_id, gid):
                scaled = copy.deepcopy(app)
                scaled["instances"] = math.ceil(int(app["instances"]) * float(factor))
                change.apps[app_id] = scaled
        return change

    def _revert(self, gid: str, version: str) -> Change:
        snapshot = self.engine.tree.versions.get(gid, {}).get(version)
        if snapshot is None:
            raise model.InvalidApp(
                [
                    {
                        "path": "/version",
                        "errors": [f"Group {gid} not available in version {version}"],
                    }
                ]
            )
        apps, groups = flatten(snapshot)
        return replace_subtree(gid, self.engine.live_apps(), self.engine.tree.groups, apps, groups)

    def patch(self, req: Request, parts: list[str]) -> Response:
        body = self._body(req)
        gid = pathid.canonical("/".join(parts))
        if len(pathid.segments(gid)) != 1:
            raise _invalid("/", ["Path needs to be top-level"])
        with self.engine.lock:
            record = self.engine.tree.groups.get(gid)
            if record is None:
                return unknown_group(gid)
            if "enforceRole" in body:
                record.enforce_role = bool(body["enforceRole"])
        return Response(200, {})

    def delete(self, req: Request, parts: list[str]) -> Response:
        gid = pathid.canonical("/".join(parts))
        with self.engine.lock:
            if gid not in self.engine.tree.groups:
                return unknown_group(gid)
            change = Change(
                apps={a: None for a in self.engine.live_apps() if pathid.is_within(a, gid)},
                groups={} if gid == pathid.ROOT else {gid: None},
            )
            if gid == pathid.ROOT:
                change.groups = {
                    g: None for g in self.engine.tree.groups if pathid.parent(g) == gid and g != gid
                }
            dep = self.engine.commit(change, force=req.flag("force"))
        return self.deployed(dep.id, dep.version, 200)


def _trimmed(body: dict[str, Any], embeds: set[str]) -> dict[str, Any]:
    """Drop what ``embed`` did not ask for (apps and groups are embedded by default)."""
    if not any(e == "group.apps" or e.startswith("group.apps.") for e in embeds):
        body.pop("apps", None)
    if "group.pods" not in embeds:
        body.pop("pods", None)
    if "group.groups" not in embeds:
        body.pop("groups", None)
    else:
        body["groups"] = [_trimmed(g, embeds) for g in body.get("groups", [])]
    return body
