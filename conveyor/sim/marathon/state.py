"""In-memory state of the simulated cluster: agents, apps, tasks and deployments.

Everything here is guarded by the engine's one lock; nothing survives a restart,
like a Marathon whose ZooKeeper was wiped.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from conveyor.sim.marathon.model import App, new_id, now_iso

if TYPE_CHECKING:
    from conveyor.sim.marathon.readiness import Readiness

REACHABLE_ADDRESS = "127.0.0.1"


@dataclass
class HealthResult:
    """One health check's record for one task, in Marathon's ``Health`` shape."""

    alive: bool | None = None
    consecutive_failures: int = 0
    first_success: str | None = None
    last_success: str | None = None
    last_failure: str | None = None
    last_failure_cause: str | None = None
    next_probe_at: float = 0.0
    in_flight: bool = False

    def to_json(self, task: Task) -> dict[str, Any]:
        return {
            "alive": bool(self.alive),
            "consecutiveFailures": self.consecutive_failures,
            "firstSuccess": self.first_success,
            "lastSuccess": self.last_success,
            "lastFailure": self.last_failure,
            "lastFailureCause": self.last_failure_cause,
            "instanceId": task.instance_id,
            "taskId": task.id,
        }


@dataclass
class Agent:
    """A simulated Mesos agent: its hostname is reported, 127.0.0.1 is where tasks really are."""

    id: str
    hostname: str
    cpus: float
    mem: float
    disk: float = 100_000.0
    used_cpus: float = 0.0
    used_mem: float = 0.0
    ports: set[int] = field(default_factory=set)

    def fits(self, cpus: float, mem: float) -> bool:
        return self.cpus - self.used_cpus >= cpus - 1e-9 and self.mem - self.used_mem >= mem - 1e-9


@dataclass
class Task:
    id: str
    instance_id: str
    app_id: str
    version: str
    definition: App
    agent: Agent
    ports: list[int]
    staged_at: str = field(default_factory=now_iso)
    started_at: str | None = None
    state: str = "TASK_STAGING"
    container_id: str | None = None
    started_mono: float = 0.0
    health: list[HealthResult] = field(default_factory=list)
    ever_healthy: bool = False
    # The deployment that launched the task; its readiness check reports to that one.
    deployment_id: str | None = None
    readiness: Readiness | None = None

    @property
    def running(self) -> bool:
        return self.state == "TASK_RUNNING"

    @property
    def healthy(self) -> bool:
        return self.running and all(h.alive for h in self.health)

    @property
    def ready(self) -> bool:
        """Passed its readiness check, or has none to pass."""
        return self.readiness is None or self.readiness.ready

    @property
    def unhealthy(self) -> bool:
        return self.running and any(h.alive is False for h in self.health)

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "id": self.id,
            "appId": self.app_id,
            "host": self.agent.hostname,
            "slaveId": self.agent.id,
            "ports": list(self.ports),
            "servicePorts": [],
            # The agent hostname is simulated; every task really listens on 127.0.0.1.
            "ipAddresses": [{"ipAddress": REACHABLE_ADDRESS, "protocol": "IPv4"}],
            "stagedAt": self.staged_at,
            "startedAt": self.started_at,
            "version": self.version,
            "state": self.state,
            "role": "*",
            "localVolumes": [],
        }
        if self.definition.get("healthChecks"):
            body["healthCheckResults"] = [
                h.to_json(self) for h in self.health if h.alive is not None
            ]
        return body


@dataclass
class Deployment:
    id: str
    version: str
    app_id: str
    action: str
    original: App | None
    target: App | None
    steps: list[list[dict[str, str]]]
    current_step: int = 1
    fake_until: float | None = None

    def to_json(self, readiness: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        """``readiness``: readinessCheckResults of the tasks this deployment launched."""
        index = min(self.current_step, len(self.steps)) - 1
        return {
            "id": self.id,
            "version": self.version,
            "affectedApps": [self.app_id],
            "affectedPods": [],
            "steps": [{"actions": actions} for actions in self.steps],
            "currentActions": [
                {**a, "readinessCheckResults": readiness or []} for a in self.steps[index]
            ],
            "currentStep": self.current_step,
            "totalSteps": len(self.steps),
        }

    def plan_json(self) -> dict[str, Any]:
        """The ``plan`` object of deployment events."""
        return {
            "id": self.id,
            "version": self.version,
            "original": {"id": "/", "apps": [self.original] if self.original else []},
            "target": {"id": "/", "apps": [self.target] if self.target else []},
            "steps": [{"actions": actions} for actions in self.steps],
        }


@dataclass
class AppRecord:
    definition: App
    versions: dict[str, App] = field(default_factory=dict)
    tasks: dict[str, Task] = field(default_factory=dict)
    last_failure: dict[str, Any] | None = None
    failures_in_row: int = 0
    launch_not_before: float = 0.0
    deleting: bool = False

    def backoff(self, now: float) -> None:
        """Delay the next launch like Marathon's backoffSeconds * backoffFactor^n, capped."""
        d = self.definition
        delay = float(d["backoffSeconds"]) * float(d["backoffFactor"]) ** self.failures_in_row
        self.failures_in_row += 1
        self.launch_not_before = now + min(delay, float(d["maxLaunchDelaySeconds"]))


def port_is_free(port: int) -> bool:
    """True when nothing on this host listens on 127.0.0.1:port (other tools share the host)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((REACHABLE_ADDRESS, port))
        except OSError:
            return False
    return True


class Cluster:
    """Agents and the port range they share (all containers bind on one real host)."""

    def __init__(self, name: str, agents: int, cpus: float, mem: float, ports: range) -> None:
        self.name = name
        self.framework_id = f"{new_id()}-0000"
        self.agents = [
            Agent(
                id=f"{self.framework_id[:36]}-S{i}",
                hostname=f"{name}-agent-{i + 1}.example",
                cpus=cpus,
                mem=mem,
            )
            for i in range(agents)
        ]
        self.port_range = ports
        self._next_port = ports.start

    def used_ports(self) -> set[int]:
        return set().union(*(a.ports for a in self.agents))

    def _take_ports(self, count: int) -> list[int] | None:
        used, taken = self.used_ports(), []
        span = len(self.port_range)
        for offset in range(span):
            port = self.port_range.start + (self._next_port - self.port_range.start + offset) % span
            if port not in used and port not in taken and port_is_free(port):
                taken.append(port)
                if len(taken) == count:
                    # Rotate so a just-freed port is not reused at once (stale probes).
                    self._next_port = port + 1
                    return taken
        return None

    def allocate(self, cpus: float, mem: float, port_count: int) -> tuple[Agent, list[int]] | None:
        """Place one task on the agent with most free CPU; None when no offer fits."""
        candidates = sorted(
            (a for a in self.agents if a.fits(cpus, mem)),
            key=lambda a: (a.used_cpus - a.cpus, a.id),
        )
        if not candidates:
            return None
        ports = self._take_ports(port_count)
        if ports is None:
            return None
        agent = candidates[0]
        agent.used_cpus += cpus
        agent.used_mem += mem
        agent.ports.update(ports)
        return agent, ports

    def release(self, task: Task) -> None:
        task.agent.used_cpus = max(0.0, task.agent.used_cpus - float(task.definition["cpus"]))
        task.agent.used_mem = max(0.0, task.agent.used_mem - float(task.definition["mem"]))
        task.agent.ports.difference_update(task.ports)


def ranges_text(ports: Iterable[int]) -> str:
    """Mesos's port-range notation: ``[31000-31002, 31005-31005]``."""
    runs: list[list[int]] = []
    for port in sorted(ports):
        if runs and port == runs[-1][1] + 1:
            runs[-1][1] = port
        else:
            runs.append([port, port])
    return "[" + ", ".join(f"{a}-{b}" for a, b in runs) + "]"


def monotonic() -> float:
    return time.monotonic()
