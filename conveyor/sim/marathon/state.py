"""In-memory state of the simulated cluster: agents, apps, tasks and deployments.

Everything here is guarded by the engine's one lock; nothing survives a restart,
like a Marathon whose ZooKeeper was wiped.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from conveyor.net import port_free
from conveyor.sim.marathon.launchqueue import LaunchStats
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
    """A simulated Mesos agent: its hostname is reported, 127.0.0.1 is where tasks really are.
    Each agent offers its own slice of the simulator's port range, since all of them
    share one real host; so what /mesos/master/slaves lists is what can really be had."""

    id: str
    hostname: str
    cpus: float
    mem: float
    port_range: range = range(0)
    disk: float = 100_000.0
    used_cpus: float = 0.0
    used_mem: float = 0.0
    ports: set[int] = field(default_factory=set)
    next_port: int = 0

    def decline(self, cpus: float, mem: float) -> str | None:
        """Why this agent's offer cannot take a task (the funnel's first reason), or None."""
        if self.cpus - self.used_cpus < cpus - 1e-9:
            return "InsufficientCpus"
        if self.mem - self.used_mem < mem - 1e-9:
            return "InsufficientMemory"
        return None

    def take_ports(self, wanted: list[int]) -> list[int] | None:
        """Host ports for ``wanted`` (0 = any of the range), or None when they are not free."""
        chosen: list[int] = []
        span, cursor = len(self.port_range), 0
        for port in wanted:
            if port:
                if port not in self.port_range or port in self.ports or port in chosen:
                    return None
                if not port_is_free(port):
                    return None
                chosen.append(port)
                continue
            found = None
            while found is None and cursor < span:
                offset = (self.next_port - self.port_range.start + cursor) % span
                candidate, cursor = self.port_range.start + offset, cursor + 1
                mine = candidate in self.ports or candidate in chosen or candidate in wanted
                if not mine and port_is_free(candidate):
                    found = candidate
            if found is None:
                return None
            chosen.append(found)
        dynamic = [p for p, w in zip(chosen, wanted, strict=True) if not w]
        if dynamic:
            # Rotate so a just-freed port is not reused at once (stale probes).
            self.next_port = dynamic[-1] + 1
        return chosen


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
class GroupRecord:
    """A group's own fields; its apps and subgroups are the ids below it."""

    id: str
    version: str
    dependencies: list[str] = field(default_factory=list)
    enforce_role: bool = False


@dataclass
class Change:
    """One change of the group tree: app id -> new definition (None removes it), group id
    -> its new fields (None removes it with everything below); ``restart`` replaces every
    task of those apps even where the definition is unchanged."""

    apps: dict[str, App | None] = field(default_factory=dict)
    groups: dict[str, GroupRecord | None] = field(default_factory=dict)
    restart: set[str] = field(default_factory=set)


@dataclass
class Deployment:
    """One plan: ``original``/``target`` hold the affected apps before and after (an app
    missing from ``target`` is being stopped, one missing from ``original`` is new)."""

    id: str
    version: str
    steps: list[list[dict[str, str]]]
    original: dict[str, App] = field(default_factory=dict)
    target: dict[str, App] = field(default_factory=dict)
    groups_before: dict[str, GroupRecord] = field(default_factory=dict)
    groups_after: dict[str, GroupRecord] = field(default_factory=dict)
    current_step: int = 1
    fake_until: float | None = None

    @property
    def apps(self) -> list[str]:
        return sorted({a["app"] for step in self.steps for a in step})

    def current_actions(self) -> list[dict[str, str]]:
        if not self.steps:
            return []
        return self.steps[min(self.current_step, len(self.steps)) - 1]

    def to_json(self, readiness: dict[str, list[dict[str, Any]]] | None = None) -> dict[str, Any]:
        """``readiness``: app id -> readinessCheckResults of the tasks this deployment launched."""
        return {
            "id": self.id,
            "version": self.version,
            "affectedApps": self.apps,
            "affectedPods": [],
            "steps": [{"actions": actions} for actions in self.steps],
            "currentActions": [
                {**a, "readinessCheckResults": (readiness or {}).get(a["app"], [])}
                for a in self.current_actions()
            ],
            "currentStep": min(self.current_step, len(self.steps)),
            "totalSteps": len(self.steps),
        }

    def plan_json(self) -> dict[str, Any]:
        """The ``plan`` object of deployment events."""
        return {
            "id": self.id,
            "version": self.version,
            "original": {"id": "/", "apps": list(self.original.values())},
            "target": {"id": "/", "apps": list(self.target.values())},
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
    launch: LaunchStats = field(default_factory=LaunchStats)

    def backoff(self, now: float) -> None:
        """Delay the next launch like Marathon's backoffSeconds * backoffFactor^n, capped."""
        d = self.definition
        delay = float(d["backoffSeconds"]) * float(d["backoffFactor"]) ** self.failures_in_row
        self.failures_in_row += 1
        self.launch_not_before = now + min(delay, float(d["maxLaunchDelaySeconds"]))


def port_is_free(port: int) -> bool:
    """True when nothing on this host listens on 127.0.0.1:port (other tools share the host)."""
    return port_free(REACHABLE_ADDRESS, port)


class Cluster:
    """Agents, each with its slice of the port range (all containers bind on one real host)."""

    def __init__(
        self,
        name: str,
        agents: int,
        cpus: float,
        mem: float,
        ports: range,
        framework_id: str | None = None,
    ) -> None:
        """``framework_id``: the one a restarted simulator registered with before."""
        self.name = name
        self.framework_id = framework_id or f"{new_id()}-0000"
        share = len(ports) // agents
        self.agents = [
            Agent(
                id=f"{self.framework_id[:36]}-S{i}",
                hostname=f"{name}-agent-{i + 1}.example",
                cpus=cpus,
                mem=mem,
                port_range=range(ports.start + i * share, ports.start + (i + 1) * share),
            )
            for i in range(agents)
        ]
        self.port_range = ports

    def allocate(
        self, cpus: float, mem: float, wanted_ports: list[int]
    ) -> tuple[Agent, list[int]] | dict[str, str]:
        """Place one task on the agent with most free CPU; when no offer fits, each agent's
        reason for declining (agent id -> NoOfferMatchReason)."""
        declined: dict[str, str] = {}
        for agent in sorted(self.agents, key=lambda a: (a.used_cpus - a.cpus, a.id)):
            reason = agent.decline(cpus, mem)
            ports = None if reason else agent.take_ports(wanted_ports)
            if ports is None:
                declined[agent.id] = reason or "InsufficientPorts"
                continue
            agent.used_cpus += cpus
            agent.used_mem += mem
            agent.ports.update(ports)
            return agent, ports
        return declined

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
