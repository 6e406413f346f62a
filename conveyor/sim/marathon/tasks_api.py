"""Tasks: ``GET /v2/tasks``, ``POST /v2/tasks/delete`` and the kills under
``/v2/apps/{id}/tasks`` (api/v2/TasksResource.scala, AppTasksResource.scala).

Without ``scale`` a killed task is replaced, as Marathon does; with ``scale=true`` the
app shrinks by the tasks killed, as one deployment.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from conveyor.sim.marathon import model
from conveyor.sim.marathon.engine import Engine, UnknownApp
from conveyor.sim.marathon.state import Task
from conveyor.sim.marathon.web import Request, Response, Router, message

STATES = {"running": "TASK_RUNNING", "staging": "TASK_STAGING"}
SCALE_AND_WIPE = "You cannot use scale and wipe at the same time."


def instance_of(task_id: str) -> str:
    """The instance id in a task id (``<app>.instance-<uuid>._app.<n>`` or ``<app>.<uuid>``)."""
    return task_id.split("._app.", 1)[0]


class TasksApi:
    def __init__(
        self,
        engine: Engine,
        deployed: Callable[[str, str, int], Response],
        guarded: Callable[[Callable[[], Response]], Response],
    ) -> None:
        self.engine = engine
        self.deployed = deployed
        self.guarded = guarded

    def mount(self, router: Router) -> None:
        router.add("GET", "/v2/tasks/?", self.list_tasks)
        router.add("POST", "/v2/tasks/delete/?", lambda r: self.guarded(lambda: self.delete(r)))

    def list_tasks(self, req: Request) -> Response:
        wanted = {s.lower() for s in req.query.get("status", []) + req.query.get("status[]", [])}
        states = {STATES.get(s, "") for s in wanted}
        with self.engine.lock:
            tasks = [t for app_id in sorted(self.engine.apps) for t in self.engine.tasks_of(app_id)]
            shown = [t.to_json() for t in tasks if not wanted or t.state in states]
        return Response(200, {"tasks": shown})

    def _kill(self, req: Request, tasks: list[Task]) -> Response | None:
        """Kill ``tasks``: the deployment's answer with ``scale``, else None (caller answers)."""
        scale = req.flag("scale")
        if scale and req.flag("wipe"):
            return message(400, SCALE_AND_WIPE)
        dep = self.engine.kill(tasks, scale=scale, force=req.flag("force"))
        if dep is not None:
            return self.deployed(dep.id, dep.version, 200)
        return None

    def _app_tasks(self, app_id: str) -> list[Task]:
        if self.engine.current(app_id) is None:
            raise UnknownApp(app_id)
        return [t for t in self.engine.tasks_of(app_id) if t.state != "TASK_KILLING"]

    def kill_app_tasks(self, req: Request, app_id: str) -> Response:
        """DELETE /v2/apps/{id}/tasks[?host=H&scale=true]: every task (on host H)."""
        host = req.query.get("host", [None])[-1]
        with self.engine.lock:
            tasks = [
                t
                for t in self._app_tasks(app_id)
                if host is None or host in ("*", t.agent.hostname)
            ]
            shown = [t.to_json() for t in tasks]
            answer = self._kill(req, tasks)
        return answer or Response(200, {"tasks": shown})

    def kill_one(self, req: Request, app_id: str, task_id: str) -> Response:
        """DELETE /v2/apps/{id}/tasks/{taskId}[?scale=true]."""
        with self.engine.lock:
            tasks = [t for t in self._app_tasks(app_id) if t.instance_id == instance_of(task_id)]
            if not tasks:
                return message(404, f"Task '{task_id}' does not exist")
            shown = tasks[0].to_json()
            answer = self._kill(req, tasks)
        return answer or Response(200, {"task": shown})

    def delete(self, req: Request) -> Response:
        """POST /v2/tasks/delete with ``{"ids": [...]}``: unknown ids are ignored."""
        body: Any = model.parse_json(req.body)
        ids = body.get("ids") if isinstance(body, dict) else None
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
            raise model.InvalidJson([{"path": "/ids", "errors": ["error.expected.jsarray"]}])
        instances = {instance_of(i) for i in ids}
        with self.engine.lock:
            tasks = [
                t
                for app_id in sorted(self.engine.apps)
                for t in self.engine.tasks_of(app_id)
                if t.instance_id in instances and t.state != "TASK_KILLING"
            ]
            shown = [t.to_json() for t in tasks]
            answer = self._kill(req, tasks)
        return answer or Response(200, {"tasks": shown})
