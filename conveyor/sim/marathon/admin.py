"""``/_sim``: the simulator's admin endpoints (fault switches, state dump), never authenticated."""

from __future__ import annotations

from typing import Any

from conveyor.sim.marathon import faults as faults_mod
from conveyor.sim.marathon.engine import Engine
from conveyor.sim.marathon.model import InvalidJson, parse_json
from conveyor.sim.marathon.state import monotonic
from conveyor.sim.marathon.web import Request, Response, Router, message


class AdminApi:
    def __init__(self, engine: Engine, faults: faults_mod.Faults, name: str) -> None:
        self.engine = engine
        self.faults = faults
        self.name = name

    def mount(self, router: Router) -> None:
        router.add(
            "GET", "/_sim/faults/?", lambda r: Response(200, {"faults": self.faults.to_json()})
        )
        router.add("POST", "/_sim/faults/?", self.add_fault)
        router.add("DELETE", "/_sim/faults/?", self.clear_faults)
        router.add("GET", "/_sim/state/?", self.state)

    def add_fault(self, req: Request) -> Response:
        try:
            fault = faults_mod.parse(parse_json(req.body))
        except (InvalidJson, faults_mod.BadFault) as exc:
            return message(400, str(exc))
        body: dict[str, Any] = {"id": fault.id, "kind": fault.kind}
        if fault.kind == "lock":
            assert fault.app is not None and fault.until is not None
            seconds = max(0.0, fault.until - monotonic())
            body["deploymentId"] = self.engine.hold_lock(fault.app, seconds).id
        else:
            self.faults.add(fault)
        return Response(201, body)

    def clear_faults(self, req: Request) -> Response:
        kind = req.query.get("kind", [None])[-1]
        return Response(200, {"cleared": self.faults.clear(kind)})

    def state(self, req: Request) -> Response:
        with self.engine.lock:
            apps = {
                app_id: {
                    "deleting": rec.deleting,
                    "version": rec.definition.get("version"),
                    "versions": sorted(rec.versions),
                    "failuresInRow": rec.failures_in_row,
                    "tasks": [
                        {
                            **t.to_json(),
                            "containerId": t.container_id,
                            "health": [h.__dict__ for h in t.health],
                        }
                        for t in rec.tasks.values()
                    ],
                    "lastTaskFailure": rec.last_failure,
                }
                for app_id, rec in self.engine.apps.items()
            }
            deployments = [d.to_json() for d in self.engine.deployments.values()]
            agents = [
                {
                    "id": a.id,
                    "hostname": a.hostname,
                    "usedCpus": a.used_cpus,
                    "usedMem": a.used_mem,
                    "ports": sorted(a.ports),
                    "portRange": [a.port_range.start, a.port_range.stop - 1],
                }
                for a in self.engine.cluster.agents
            ]
        return Response(
            200,
            {
                "name": self.name,
                "apps": apps,
                "deployments": deployments,
                "agents": agents,
                "faults": self.faults.to_json(),
                "eventSubscribers": self.engine.bus.subscriber_count,
            },
        )
