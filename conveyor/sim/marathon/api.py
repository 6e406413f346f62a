"""Marathon's REST API v2 (the subset conveyor's driver uses), per the RAML in
shared/reference (beside the checkout)/marathon-api: status codes, bodies and headers as documented."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from conveyor.sim.marathon import model
from conveyor.sim.marathon.engine import (
    AppExists,
    AppLocked,
    Engine,
    UnknownApp,
    UnknownDeployment,
    UnknownVersion,
)
from conveyor.sim.marathon.events import stream
from conveyor.sim.marathon.web import Request, Response, Router, message

APP = r"/v2/apps(?P<app_id>(/[^/]+)+?)"
# Read-only fields of AppInfo that clients echo back; Marathon ignores them on writes.
INFO_FIELDS = {
    "tasks",
    "tasksRunning",
    "tasksStaged",
    "tasksHealthy",
    "tasksUnhealthy",
    "deployments",
    "lastTaskFailure",
    "taskStats",
    "readinessCheckResults",
    "versionInfo",
    "version",
}
LOCKED = (
    "App is locked by one or more deployments. Override with the option '?force=true'. "
    "View details at '/v2/deployments/<DEPLOYMENT_ID>'."
)


def _embeds(req: Request) -> set[str]:
    return {e.split(".", 1)[-1] for e in req.query.get("embed", [])}


class MarathonApi:
    def __init__(self, engine: Engine, info: dict[str, Any], stopping: Callable[[], bool]) -> None:
        self.engine = engine
        self.info = info
        self.stopping = stopping

    def mount(self, router: Router) -> None:
        add = router.add
        add("GET", "/ping", lambda r: Response(200, "pong", content_type="text/plain"))
        add("GET", "/v2/info", lambda r: Response(200, self.info))
        add("GET", "/v2/leader", lambda r: Response(200, {"leader": self.info["leader"]}))
        add("GET", "/v2/queue/?", self.queue)
        add("DELETE", "/v2/queue(?P<app_id>(/[^/]+)+?)/delay", self.reset_delay)
        add("GET", "/v2/apps/?", self.list_apps)
        add("POST", "/v2/apps/?", self.create_app)
        add("GET", APP + "/versions/(?P<version>[^/]+)", self.get_version)
        add("GET", APP + "/versions/?", self.list_versions)
        add("GET", APP + "/tasks/?", self.app_tasks)
        add("GET", APP + "/?", self.get_app)
        add("PUT", APP + "/?", self.put_app)
        add("DELETE", APP + "/?", self.delete_app)
        add("GET", "/v2/deployments/?", self.list_deployments)
        add("DELETE", "/v2/deployments/(?P<dep_id>[^/]+)", self.delete_deployment)
        add("GET", "/v2/tasks/?", self.list_tasks)
        add("GET", "/v2/events/?", self.events)

    # --- apps -----------------------------------------------------------------

    def list_apps(self, req: Request) -> Response:
        embeds = _embeds(req)
        wanted = req.query.get("id", [""])[-1]
        with self.engine.lock:
            apps = [
                self.engine.app_json(
                    rec,
                    tasks="tasks" in embeds or "failures" in embeds,
                    failure=bool(embeds & {"lastTaskFailure", "failures"}),
                )
                for app_id, rec in sorted(self.engine.apps.items())
                if not rec.deleting and wanted in app_id
            ]
        return Response(200, {"apps": apps})

    def get_app(self, req: Request) -> Response:
        app_id = model.normalize_id(req.params["app_id"])
        with self.engine.lock:
            rec = self.engine.current(app_id)
            if rec is None:
                return message(404, f"App '{app_id}' does not exist")
            return Response(200, {"app": self.engine.app_json(rec, tasks=True, failure=True)})

    def list_versions(self, req: Request) -> Response:
        app_id = model.normalize_id(req.params["app_id"])
        with self.engine.lock:
            rec = self.engine.current(app_id)
            if rec is None:
                return message(404, f"App '{app_id}' does not exist")
            return Response(200, {"versions": sorted(rec.versions, reverse=True)})

    def get_version(self, req: Request) -> Response:
        app_id = model.normalize_id(req.params["app_id"])
        with self.engine.lock:
            rec = self.engine.current(app_id)
            if rec is None:
                return message(404, f"App '{app_id}' does not exist")
            found = rec.versions.get(req.params["version"])
        if found is None:
            return message(
                404, f"Version '{req.params['version']}' of app '{app_id}' does not exist"
            )
        return Response(200, found)

    def app_tasks(self, req: Request) -> Response:
        app_id = model.normalize_id(req.params["app_id"])
        with self.engine.lock:
            if self.engine.current(app_id) is None:
                return message(404, f"App '{app_id}' does not exist")
            return Response(200, {"tasks": [t.to_json() for t in self.engine.tasks_of(app_id)]})

    def _body(self, req: Request) -> dict[str, Any]:
        body = model.parse_json(req.body)
        if not isinstance(body, dict):
            raise model.InvalidJson([{"path": "/", "errors": ["error.expected.jsobject"]}])
        return body

    def _deployed(
        self, req: Request, dep_id: str, version: str, status: int, body: Any = None
    ) -> Response:
        return Response(
            status,
            body if body is not None else {"deploymentId": dep_id, "version": version},
            headers={"Marathon-Deployment-Id": dep_id},
        )

    def _guarded(self, req: Request, action: Callable[[], Response]) -> Response:
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
            body = {k: v for k, v in self._body(req).items() if k not in INFO_FIELDS}
            model.validate(body)
            app = model.with_defaults(body)
            dep, _ = self.engine.deploy(app, force=req.flag("force"), create_only=True)
            self._post_event(req, app)
            with self.engine.lock:
                rec = self.engine.current(app["id"])
                shown = self.engine.app_json(rec, tasks=False, failure=False) if rec else app
            return self._deployed(req, dep.id, dep.version, 201, shown)

        return self._guarded(req, run)

    def put_app(self, req: Request) -> Response:
        app_id = model.normalize_id(req.params["app_id"])

        def run() -> Response:
            body = self._body(req)
            if "version" in body and set(body) <= {"id", "version"}:
                dep = self.engine.revert(app_id, str(body["version"]), force=req.flag("force"))
                return self._deployed(req, dep.id, dep.version, 200)
            body = {k: v for k, v in body.items() if k not in INFO_FIELDS}
            partial = req.query.get("partialUpdate", ["true"])[-1].lower() != "false"
            with self.engine.lock:
                rec = self.engine.current(app_id)
                base = (
                    {k: v for k, v in rec.definition.items() if k not in INFO_FIELDS} if rec else {}
                )
            merged = {**base, **body} if partial else body
            merged["id"] = app_id
            model.validate(merged)
            app = model.with_defaults(merged)
            dep, created = self.engine.deploy(app, force=req.flag("force"))
            self._post_event(req, app)
            return self._deployed(req, dep.id, dep.version, 201 if created else 200)

        return self._guarded(req, run)

    def delete_app(self, req: Request) -> Response:
        app_id = model.normalize_id(req.params["app_id"])

        def run() -> Response:
            dep = self.engine.delete(app_id, force=req.flag("force"))
            return self._deployed(req, dep.id, dep.version, 200)

        return self._guarded(req, run)

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
            return self._deployed(req, rollback.id, rollback.version, 200)

        return self._guarded(req, run)

    def list_tasks(self, req: Request) -> Response:
        wanted = {s.lower() for s in req.query.get("status", []) + req.query.get("status[]", [])}
        states = {"running": "TASK_RUNNING", "staging": "TASK_STAGING"}
        with self.engine.lock:
            tasks = [t for app_id in sorted(self.engine.apps) for t in self.engine.tasks_of(app_id)]
            shown = [
                t.to_json()
                for t in tasks
                if not wanted or t.state in {states.get(s, "") for s in wanted}
            ]
        return Response(200, {"tasks": shown})

    def events(self, req: Request) -> Response:
        accept = req.header("accept")
        if accept and "text/event-stream" not in accept and "*/*" not in accept:
            return Response(
                405, b"HTTP method GET is not supported by this URL", content_type="text/html"
            )
        wanted = set(req.query.get("event_type", []))
        frames = stream(self.engine.bus, req.remote, wanted, self.stopping)
        return Response(200, stream=frames, content_type="text/event-stream")
