"""Marathon's REST API v2 (the subset conveyor's driver uses), per the RAML in
shared/reference (beside the checkout)/marathon-api: status codes, bodies and headers as documented."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from conveyor.sim.marathon import model, pathid
from conveyor.sim.marathon.engine import (
    AppExists,
    AppLocked,
    Engine,
    UnknownApp,
    UnknownDeployment,
    UnknownVersion,
)
from conveyor.sim.marathon.events import stream
from conveyor.sim.marathon.groups_api import GroupsApi
from conveyor.sim.marathon.model import App
from conveyor.sim.marathon.state import AppRecord, Change
from conveyor.sim.marathon.tasks_api import TasksApi
from conveyor.sim.marathon.web import Request, Response, Router, message

APP = r"/v2/apps(?P<rest>/.+)"
# Marathon 1.x embeds these in GET /v2/apps/{id} whatever ``embed`` says (AppsResource.show).
ALWAYS_EMBEDDED = {"counts", "tasks", "lastTaskFailure", "deployments"}
LOCKED = (
    "App is locked by one or more deployments. Override with the option '?force=true'. "
    "View details at '/v2/deployments/<DEPLOYMENT_ID>'."
)


def _embeds(req: Request) -> set[str]:
    return {e.split(".", 1)[-1] for e in req.query.get("embed", [])}


def _parts(req: Request) -> list[str]:
    return pathid.segments(req.params.get("rest") or "")


def _app_id(parts: list[str]) -> str:
    return pathid.canonical("/".join(parts))


class MarathonApi:
    def __init__(self, engine: Engine, info: dict[str, Any], stopping: Callable[[], bool]) -> None:
        self.engine = engine
        self.info = info
        self.stopping = stopping
        self.tasks = TasksApi(engine, self._deployed, self._guarded)

    def mount(self, router: Router) -> None:
        add = router.add
        add("GET", "/ping", lambda r: Response(200, "pong", content_type="text/plain"))
        add("GET", "/v2/info", lambda r: Response(200, self.info))
        add("GET", "/v2/leader", lambda r: Response(200, {"leader": self.info["leader"]}))
        add("GET", "/v2/queue/?", self.queue)
        add("DELETE", "/v2/queue(?P<app_id>(/[^/]+)+?)/delay", self.reset_delay)
        add("GET", "/v2/apps/?", self.list_apps)
        add("POST", "/v2/apps/?", self.create_app)
        add("PUT", "/v2/apps/?", lambda r: self.put_apps(r, allow_create=True))
        add("PATCH", "/v2/apps/?", lambda r: self.put_apps(r, allow_create=False))
        for method, handler in (
            ("GET", self._get_under_app),
            ("PUT", self._put_under_app),
            ("PATCH", self._patch_under_app),
            ("DELETE", self._delete_under_app),
            ("POST", self._post_under_app),
        ):
            add(method, APP, handler)
        add("GET", "/v2/deployments/?", self.list_deployments)
        add("DELETE", "/v2/deployments/(?P<dep_id>[^/]+)", self.delete_deployment)
        add("GET", "/v2/events/?", self.events)
        self.tasks.mount(router)
        GroupsApi(self.engine, self._deployed).mount(router, self._guarded)

    # --- /v2/apps/{id}[/...]: Jersey's {id:.+} templates, resolved by the last segments --

    def _get_under_app(self, req: Request) -> Response:
        parts = _parts(req)
        if len(parts) >= 2 and parts[-2] == "versions":
            return self.get_version(req, _app_id(parts[:-2]), parts[-1])
        if parts and parts[-1] == "versions":
            return self.list_versions(req, _app_id(parts[:-1]))
        if parts and parts[-1] == "tasks":
            return self.app_tasks(req, parts[:-1])
        if parts and parts[-1] == "*":
            return self.group_apps(req, pathid.canonical("/".join(parts[:-1])))
        return self.get_app(req, _app_id(parts))

    def _put_under_app(self, req: Request) -> Response:
        return self.put_app(req, _app_id(_parts(req)), allow_create=True)

    def _patch_under_app(self, req: Request) -> Response:
        return self.put_app(req, _app_id(_parts(req)), allow_create=False)

    def _delete_under_app(self, req: Request) -> Response:
        parts = _parts(req)
        if parts and parts[-1] == "tasks":
            return self._guarded(lambda: self.tasks.kill_app_tasks(req, _app_id(parts[:-1])))
        if len(parts) >= 2 and parts[-2] == "tasks":
            app_id, task_id = _app_id(parts[:-2]), parts[-1]
            return self._guarded(lambda: self.tasks.kill_one(req, app_id, task_id))
        return self.delete_app(req, _app_id(parts))

    def _post_under_app(self, req: Request) -> Response:
        parts = _parts(req)
        if parts and parts[-1] == "restart":
            app_id = _app_id(parts[:-1])

            def run() -> Response:
                dep = self.engine.restart(app_id, force=req.flag("force"))
                return self._deployed(dep.id, dep.version, 200)

            return self._guarded(run)
        return message(405, "Method not allowed")

    # --- apps -----------------------------------------------------------------

    def _app_view(self, req: Request, always: set[str]) -> Callable[[AppRecord], dict[str, Any]]:
        embeds = _embeds(req) | always

        def view(rec: AppRecord) -> dict[str, Any]:
            return self.engine.app_json(
                rec,
                tasks="tasks" in embeds or "failures" in embeds,
                failure=bool(embeds & {"lastTaskFailure", "failures"}),
            )

        return view

    def list_apps(self, req: Request) -> Response:
        wanted = req.query.get("id", [""])[-1].lower()
        view = self._app_view(req, set())
        with self.engine.lock:
            apps = [
                view(rec)
                for app_id, rec in sorted(self.engine.apps.items())
                if not rec.deleting and wanted in app_id.lower()
            ]
        return Response(200, {"apps": apps})

    def group_apps(self, req: Request, gid: str) -> Response:
        """GET /v2/apps/{group}/*: every app below the group, as GET /v2/apps/{id} shows it."""
        view = self._app_view(req, ALWAYS_EMBEDDED)
        with self.engine.lock:
            if gid not in self.engine.tree.groups:
                return message(404, f"Group '{gid}' does not exist")
            apps = [
                view(rec)
                for app_id, rec in sorted(self.engine.apps.items())
                if not rec.deleting and pathid.is_within(app_id, gid)
            ]
        return Response(200, {"*": apps})

    def get_app(self, req: Request, app_id: str) -> Response:
        view = self._app_view(req, ALWAYS_EMBEDDED)
        with self.engine.lock:
            rec = self.engine.current(app_id)
            if rec is None:
                return message(404, f"App '{app_id}' does not exist")
            return Response(200, {"app": view(rec)})

    def list_versions(self, req: Request, app_id: str) -> Response:
        with self.engine.lock:
            rec = self.engine.current(app_id)
            if rec is None:
                return message(404, f"App '{app_id}' does not exist")
            return Response(200, {"versions": sorted(rec.versions, reverse=True)})

    def get_version(self, req: Request, app_id: str, version: str) -> Response:
        with self.engine.lock:
            rec = self.engine.current(app_id)
            if rec is None:
                return message(404, f"App '{app_id}' does not exist")
            found = rec.versions.get(version)
        if found is None:
            return message(404, f"Version '{version}' of app '{app_id}' does not exist")
        return Response(200, found)

    def app_tasks(self, req: Request, parts: list[str]) -> Response:
        with self.engine.lock:
            if parts and parts[-1] == "*":
                gid = pathid.canonical("/".join(parts[:-1]))
                if gid not in self.engine.tree.groups:
                    return message(404, f"Group '{gid}' does not exist")
                ids = [a for a in sorted(self.engine.apps) if pathid.is_within(a, gid)]
            else:
                app_id = _app_id(parts)
                if self.engine.current(app_id) is None:
                    return message(404, f"App '{app_id}' does not exist")
                ids = [app_id]
            tasks = [t.to_json() for a in ids for t in self.engine.tasks_of(a)]
        return Response(200, {"tasks": tasks})

    def _body(self, req: Request) -> dict[str, Any]:
        body = model.parse_json(req.body)
        if not isinstance(body, dict):
            raise model.InvalidJson([{"path": "/", "errors": ["error.expected.jsobject"]}])
        return body

    @staticmethod
    def _deployed(dep_id: str, version: str, status: int, body: Any = None) -> Response:
        return Response(
            status,
            body if body is not None else {"deploymentId": dep_id, "version": version},
            headers={"Marathon-Deployment-Id": dep_id},
        )

    @staticmethod
    def _guarded(action: Callable[[], Response]) -> Response:
        """Run ``action`` and answer Marathon's error shapes for what it raises."""
        try:
            return action()
        except model.InvalidJson as exc:
            return message(400, "Invalid JSON", details=exc.details)
        except model.InvalidApp as exc:
            return message(422, "Object is not valid", details=exc.details)
        except AppLocked as exc:
            return message(409, LOCKED, deployments=[{"id": d} for d in exc.deployments])
        except AppExists as exc:
            return message(409, f"An app with id [{exc}] already exists.")
        except UnknownApp as exc:
            return message(404, f"App '{exc}' does not exist")
        except UnknownVersion as exc:
            return message(404, f"Rollback version '{exc}' does not exist")
        except UnknownDeployment as exc:
            return message(404, f"DeploymentPlan {exc} does not exist")

    def create_app(self, req: Request) -> Response:
        def run() -> Response:
            body = {k: v for k, v in self._body(req).items() if k not in model.INFO_FIELDS}
            model.validate(body)
            app = model.with_defaults(body)
            dep, _ = self.engine.deploy(app, force=req.flag("force"), create_only=True)
            self._post_event(req, app)
            with self.engine.lock:
                rec = self.engine.current(app["id"])
                shown = self.engine.app_json(rec, tasks=False, failure=False) if rec else app
            return self._deployed(dep.id, dep.version, 201, shown)

        return self._guarded(run)

    def _merged(self, req: Request, app_id: str, body: dict[str, Any], create: bool) -> App:
        """The app a PUT/PATCH asks for: partial updates merge into the stored definition."""
        body = {k: v for k, v in body.items() if k not in model.INFO_FIELDS}
        partial = req.query.get("partialUpdate", ["true"])[-1].lower() != "false"
        with self.engine.lock:
            rec = self.engine.current(app_id)
            if rec is None and not create:
                raise UnknownApp(app_id)
            base = (
                {k: v for k, v in rec.definition.items() if k not in model.INFO_FIELDS}
                if rec
                else {}
            )
        merged = {**base, **body} if partial else body
        merged["id"] = app_id
        model.validate(merged)
        return model.with_defaults(merged)

    def put_app(self, req: Request, app_id: str, allow_create: bool) -> Response:
        def run() -> Response:
            body = self._body(req)
            if "version" in body and set(body) <= {"id", "version"}:
                dep = self.engine.revert(app_id, str(body["version"]), force=req.flag("force"))
                return self._deployed(dep.id, dep.version, 200)
            app = self._merged(req, app_id, body, allow_create)
            dep, created = self.engine.deploy(app, force=req.flag("force"))
            self._post_event(req, app)
            return self._deployed(dep.id, dep.version, 201 if created else 200)

        return self._guarded(run)

    def put_apps(self, req: Request, allow_create: bool) -> Response:
        """PUT/PATCH /v2/apps with a list of app updates: one deployment for all of them."""

        def run() -> Response:
            body = model.parse_json(req.body)
            if not isinstance(body, list) or not all(isinstance(a, dict) for a in body):
                raise model.InvalidJson([{"path": "/", "errors": ["error.expected.jsarray"]}])
            change = Change()
            for i, update in enumerate(body):
                if not isinstance(update.get("id"), str):
                    raise model.InvalidApp(
                        [{"path": f"({i})/id", "errors": ["error.path.missing"]}]
                    )
                app_id = pathid.canonical(update["id"])
                change.apps[app_id] = self._merged(req, app_id, update, allow_create)
            dep = self.engine.commit(change, force=req.flag("force"))
            return self._deployed(dep.id, dep.version, 200)

        return self._guarded(run)

    def delete_app(self, req: Request, app_id: str) -> Response:

        def run() -> Response:
            dep = self.engine.delete(app_id, force=req.flag("force"))
            return self._deployed(dep.id, dep.version, 200)

        return self._guarded(run)

    def _post_event(self, req: Request, app: dict[str, Any]) -> None:
        self.engine.bus.publish(
            "api_post_event", clientIp=req.remote, uri=req.path, appDefinition=app
        )

    # --- launch queue -------------------------------------------------------------

    def queue(self, req: Request) -> Response:
        with self.engine.lock:
            return Response(200, {"queue": self.engine.queue()})

    def reset_delay(self, req: Request) -> Response:
        app_id = model.normalize_id(req.params["app_id"])
        if self.engine.reset_delay(app_id):
            return Response(204)
        return message(404, f"There is no delay for the app '{app_id}'")

    # --- deployments, tasks, events ------------------------------------------------

    def list_deployments(self, req: Request) -> Response:
        with self.engine.lock:
            deps = sorted(self.engine.deployments.values(), key=lambda d: d.version)
            return Response(200, [d.to_json(self.engine.readiness_results(d)) for d in deps])

    def delete_deployment(self, req: Request) -> Response:
        def run() -> Response:
            rollback = self.engine.cancel(req.params["dep_id"], force=req.flag("force"))
            if rollback is None:
                return Response(202)
            return self._deployed(rollback.id, rollback.version, 200)

        return self._guarded(run)

    def events(self, req: Request) -> Response:
        accept = req.header("accept")
        if accept and "text/event-stream" not in accept and "*/*" not in accept:
            return Response(
                405, b"HTTP method GET is not supported by this URL", content_type="text/html"
            )
        wanted = set(req.query.get("event_type", []))
        frames = stream(self.engine.bus, req.remote, wanted, self.stopping)
        return Response(200, stream=frames, content_type="text/event-stream")
