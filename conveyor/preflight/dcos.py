"""DC/OS cluster pre-flight: is the cluster fit to take this deploy right now?

Three questions, each answered with checks a person can act on: which DC/OS runs,
whether every system unit is healthy (a failing unit is named with its own output),
and whether the active agents have room for the instances the deploy will add,
including the extra ones Marathon's upgradeStrategy launches during a rolling upgrade:
CPU and memory, and the host ports of the app's port definitions (Mesos agents offer
the port ranges of their ``ports`` resource less what tasks use; a fixed port, with
``requirePorts``, fits an agent only where it is offered and free).
"""

from __future__ import annotations

import math
import re
from typing import Any

from conveyor.clients.dcos import Agent, DcosClient, Unit
from conveyor.preflight import Check, PreflightReport

# Marathon's defaults when the definition leaves them out.
DEFAULT_CPUS = 1.0
DEFAULT_MEM = 128.0
DEFAULT_OVER_CAPACITY = 1.0
RANGE = re.compile(r"(\d+)\s*-\s*(\d+)")
# Float slack: 0.1 cpus free must fit one 0.1-cpus instance.
EPSILON = 1e-9


def instances_needed(app: dict[str, Any], running: int) -> tuple[int, str]:
    """How many instances must find room, and why, for ``app`` with ``running`` tasks now."""
    wanted = int(app.get("instances", 1))
    if running == 0:
        return wanted, f"{wanted} new"
    over = (app.get("upgradeStrategy") or {}).get("maximumOverCapacity", DEFAULT_OVER_CAPACITY)
    extra = math.ceil(wanted * float(over))
    more = max(wanted - running, 0)
    return more + extra, f"{more} more + {extra} over-capacity during the upgrade"


def _fits(cpus_free: float, mem_free: float, cpus: float, mem: float) -> int:
    by_cpu = math.floor(cpus_free / cpus + EPSILON) if cpus > 0 else 10**6
    by_mem = math.floor(mem_free / mem + EPSILON) if mem > 0 else 10**6
    return max(min(by_cpu, by_mem), 0)


def resource_checks(agents: list[Agent], app: dict[str, Any], running: int) -> list[Check]:
    cpus = float(app.get("cpus", DEFAULT_CPUS))
    mem = float(app.get("mem", DEFAULT_MEM))
    need, why = instances_needed(app, running)
    active = [a for a in agents if a.active]
    checks = [
        Check(
            "cluster",
            "active agents",
            "ok" if active else "fail",
            f"{len(active)} of {len(agents)} agents active",
        )
    ]
    free = [(a.name, a.free("cpus"), a.free("mem")) for a in active]
    room = sum(_fits(c, m, cpus, mem) for _, c, m in free)
    per_agent = ", ".join(f"{name} {c:g} cpus {m:g} MiB" for name, c, m in free) or "none"
    detail = (
        f"need room for {need} instances ({why}) of {cpus:g} cpus and {mem:g} MiB; "
        f"active agents fit {room} (free: {per_agent})"
    )
    if room >= need:
        checks.append(Check("cluster", "resources", "ok", detail))
        return checks
    short = []
    missing_cpus = need * cpus - sum(c for _, c, _ in free)
    missing_mem = need * mem - sum(m for _, _, m in free)
    if missing_cpus > EPSILON:
        short.append(f"{missing_cpus:g} cpus")
    if missing_mem > EPSILON:
        short.append(f"{missing_mem:g} MiB")
    missing = " and ".join(short) or "room on a single agent (free resources are fragmented)"
    checks.append(Check("cluster", "resources", "fail", f"{detail}; missing {missing}"))
    return checks


def unit_checks(units: list[Unit]) -> list[Check]:
    # DC/OS health: 0 is healthy, anything else is not.
    sick = [u for u in units if u.health != 0]
    checks = [
        Check(
            f"unit {u.id or u.name}",
            "health",
            "fail",
            (u.output or u.description or f"health {u.health}").strip(),
        )
        for u in sick
    ]
    if not units:
        checks.append(Check("cluster", "system units", "fail", "the cluster reported no units"))
    elif not sick:
        checks.append(Check("cluster", "system units", "ok", f"all {len(units)} units healthy"))
    return checks


def dcos_preflight(
    environment: str, dcos: DcosClient, app: dict[str, Any], running: int
) -> PreflightReport:
    """Read the cluster and judge it for deploying ``app`` (``running`` tasks exist now)."""
    version = dcos.version()
    checks = [
        Check(
            "cluster",
            "DC/OS version",
            "ok" if version.version else "warn",
            version.version or "the cluster did not say its version",
        )
    ]
    checks += unit_checks(dcos.units())
    agents = dcos.agents()
    checks += resource_checks(agents, app, running)
    checks += port_checks(agents, app, running)
    return PreflightReport(environment=environment, source="dcos", checks=tuple(checks))


def port_ranges(text: str | None) -> list[range]:
    """Mesos's range notation ``[31000-31099, 31200-31200]`` as ranges."""
    return [range(int(a), int(b) + 1) for a, b in RANGE.findall(str(text or ""))]


def host_ports(app: dict[str, Any]) -> list[int]:
    """Host ports one instance takes on its agent: 0 for any, a number for a fixed one."""
    networks = app.get("networks") or [{"mode": "host"}]
    if all((n or {}).get("mode", "container") == "host" for n in networks):
        defs = app.get("portDefinitions")
        defs = [{"port": 0}] if defs is None else defs
        fixed = bool(app.get("requirePorts"))
        return [int(pd.get("port", 0)) if fixed else 0 for pd in defs]
    container = app.get("container") or {}
    mappings = container.get("portMappings") or (container.get("docker") or {}).get("portMappings")
    bridge = any((n or {}).get("mode") == "container/bridge" for n in networks)
    default = 0 if bridge else None
    wanted = [pm.get("hostPort", default) for pm in mappings or []]
    return [int(p) for p in wanted if p is not None]


def _port_room(agent: Agent, wanted: list[int]) -> tuple[int, str]:
    """How many instances the agent's free ports take, and what is in the way."""
    offered = port_ranges(agent.resources.ports)
    used = {p for r in port_ranges(agent.used_resources.ports) for p in r}
    free = sum(len(r) for r in offered) - len(used)
    fixed = [p for p in wanted if p]
    for port in fixed:
        if not any(port in r for r in offered):
            return 0, f"port {port} not offered"
        if port in used:
            return 0, f"port {port} taken"
    dynamic = len(wanted) - len(fixed)
    if dynamic and free - len(fixed) < dynamic:
        return 0, f"{free} free ports"
    if fixed:
        # A fixed port is one agent's once: one instance per agent at most.
        return 1, f"{free} free ports"
    return (free // dynamic if dynamic else 10**6), f"{free} free ports"


def port_checks(agents: list[Agent], app: dict[str, Any], running: int) -> list[Check]:
    wanted = host_ports(app)
    if not wanted:
        return []
    need, why = instances_needed(app, running)
    active = [a for a in agents if a.active]
    rooms = [(a.name, *_port_room(a, wanted)) for a in active]
    room = sum(fit for _, fit, _ in rooms)
    fixed = [p for p in wanted if p]
    kind = f"fixed {', '.join(map(str, fixed))}" if fixed else "any"
    per_agent = ", ".join(f"{name} {what}" for name, _, what in rooms) or "none"
    detail = (
        f"need {len(wanted)} host ports ({kind}) for each of {need} instances ({why}); "
        f"active agents fit {room} ({per_agent})"
    )
    return [Check("cluster", "host ports", "ok" if room >= need else "fail", detail)]
