"""Is the vSphere ground under production DC/OS sound, and are the app's instances spread?

``evaluate`` and ``evaluate_placement`` are pure functions of one inventory snapshot,
so a pre-flight costs one bulk read however many objects it judges.
"""

from __future__ import annotations

import fnmatch
from collections import Counter, defaultdict
from dataclasses import dataclass

from conveyor.clients.vsphere import VSphereClient
from conveyor.clients.vsphere_inventory import Cluster, Inventory, VirtualMachine
from conveyor.config.preflight import AgentVmSelector, VSphereConfig
from conveyor.errors import PlacementViolation
from conveyor.preflight import Check, Demand, PreflightReport, Status

GIB = 2**30
__all__ = ["Demand", "check_placement", "evaluate", "evaluate_placement", "run_preflight"]


@dataclass(frozen=True)
class AgentPlacement:
    agent: str  # as Marathon names it: hostname or IP
    vm: str
    host: str  # the ESXi host's name


@dataclass(frozen=True)
class PlacementResult:
    placements: tuple[AgentPlacement, ...]
    check: Check

    @property
    def hosts(self) -> list[str]:
        return sorted({p.host for p in self.placements})

    def mapping(self) -> dict[str, AgentPlacement]:
        return {p.agent: p for p in self.placements}


def required_hosts(instances: int, min_hosts: int | None) -> int:
    """Hosts the instances must spread over; never more than there are instances."""
    wanted = min_hosts if min_hosts is not None else (2 if instances >= 2 else 1)
    return max(1, min(wanted, instances))


def _cluster_check(cluster: Cluster) -> Check:
    subject, status = f"cluster {cluster.name}", cluster.overall_status
    if status == "red":
        return Check(subject, "overall status", "fail", "red")
    if status == "green":
        return Check(subject, "overall status", "ok", "green")
    return Check(subject, "overall status", "warn", status)


def _host_checks(inv: Inventory, cluster: Cluster) -> list[Check]:
    checks = []
    for moid in cluster.hosts:
        host = inv.hosts.get(moid)
        if host is None:
            checks.append(
                Check(f"host {moid}", "state", "fail", "listed by the cluster but not readable")
            )
            continue
        problems = []
        if host.connection_state != "connected":
            problems.append(f"connection state {host.connection_state}")
        if host.power_state != "poweredOn":
            problems.append(f"power state {host.power_state}")
        if host.in_maintenance:
            problems.append("in maintenance mode")
        detail = "; ".join(problems) or "connected, powered on, not in maintenance"
        checks.append(Check(f"host {host.name}", "state", "fail" if problems else "ok", detail))
    return checks


def selector_is_empty(sel: AgentVmSelector) -> bool:
    return sel.folder is None and sel.name_pattern is None and sel.custom_attribute is None


def _selected(vm: VirtualMachine, sel: AgentVmSelector) -> bool:
    if sel.folder is not None:
        folder = "/" + sel.folder.strip("/")
        if vm.folder != folder and not vm.folder.endswith(folder):
            return False
    if sel.name_pattern is not None and not fnmatch.fnmatchcase(vm.name, sel.name_pattern):
        return False
    if sel.custom_attribute is not None:
        value = vm.attributes.get(sel.custom_attribute)
        if value is None or (
            sel.custom_attribute_value is not None and value != sel.custom_attribute_value
        ):
            return False
    return True


def agent_vms(inv: Inventory, cluster: Cluster, sel: AgentVmSelector) -> list[VirtualMachine]:
    return [vm for vm in inv.vms_on(cluster) if _selected(vm, sel)]


def _agent_checks(
    agents: list[VirtualMachine], sel: AgentVmSelector, cluster: Cluster
) -> list[Check]:
    if selector_is_empty(sel):
        return [
            Check(
                f"cluster {cluster.name}",
                "agent VMs",
                "warn",
                "no agent_vms selector (folder, name_pattern or custom_attribute); not checked",
            )
        ]
    if not agents:
        return [
            Check(
                f"cluster {cluster.name}",
                "agent VMs",
                "fail",
                f"no VM matches the selector {sel.model_dump(exclude_none=True)}",
            )
        ]
    checks = []
    for vm in agents:
        problems = []
        if vm.power_state != "poweredOn":
            problems.append(f"power state {vm.power_state}")
        if vm.tools_running != "guestToolsRunning":
            problems.append(f"VMware Tools not running ({vm.tools_running})")
        detail = "; ".join(problems) or "powered on, VMware Tools running"
        checks.append(Check(f"vm {vm.name}", "agent state", "fail" if problems else "ok", detail))
    return checks


def _headroom_checks(
    inv: Inventory, cluster: Cluster, demand: Demand, min_hosts: int | None
) -> list[Check]:
    subject = f"cluster {cluster.name}"
    usable = [h for m in cluster.hosts if (h := inv.hosts.get(m)) is not None and h.usable]
    free_cpu = sum(h.free_cores for h in usable)
    free_mem = sum(h.free_mem_mb for h in usable)
    need_cpu, need_mem = demand.instances * demand.cpus, demand.instances * demand.mem_mb
    checks = [
        Check(
            subject,
            "CPU headroom",
            "ok" if free_cpu >= need_cpu else "fail",
            f"{free_cpu:.1f} cores free on {len(usable)} usable hosts, {need_cpu:g} needed",
        ),
        Check(
            subject,
            "memory headroom",
            "ok" if free_mem >= need_mem else "fail",
            f"{free_mem:.0f} MiB free on {len(usable)} usable hosts, {need_mem:g} MiB needed",
        ),
    ]
    spread = required_hosts(demand.instances, min_hosts)
    checks.append(
        Check(
            subject,
            "hosts for spread",
            "ok" if len(usable) >= spread else "fail",
            f"{len(usable)} usable hosts, instances must spread over {spread}",
        )
    )
    return checks


def _datastore_checks(inv: Inventory, cluster: Cluster, min_free_pct: float) -> list[Check]:
    checks = []
    for moid in cluster.datastores:
        ds = inv.datastores.get(moid)
        if ds is None:
            continue
        subject = f"datastore {ds.name}"
        if not ds.accessible:
            checks.append(Check(subject, "free space", "fail", "not accessible"))
            continue
        detail = (
            f"{ds.free_pct:.1f}% free ({ds.free / GIB:.0f} of {ds.capacity / GIB:.0f} GiB), "
            f"threshold {min_free_pct:g}%"
        )
        checks.append(
            Check(subject, "free space", "ok" if ds.free_pct >= min_free_pct else "fail", detail)
        )
    return checks


def _alarm_checks(inv: Inventory, cluster: Cluster, agents: list[VirtualMachine]) -> list[Check]:
    watched = {cluster.moid, *cluster.hosts, *cluster.datastores, *(vm.moid for vm in agents)}
    checks = []
    for alarm in inv.alarms:
        if alarm.moid not in watched or alarm.status not in ("red", "yellow"):
            continue
        status: Status = "fail" if alarm.status == "red" else "warn"
        checks.append(
            Check(alarm.entity, "triggered alarm", status, f"{alarm.status} alarm {alarm.alarm}")
        )
    if not checks:
        checks.append(
            Check(f"cluster {cluster.name}", "triggered alarms", "ok", "none red or yellow")
        )
    return checks


def evaluate(
    inv: Inventory, cfg: VSphereConfig, environment: str, demand: Demand | None = None
) -> PreflightReport:
    """Judge one inventory snapshot; raises ``NotFound`` when the cluster is missing."""
    cluster = inv.cluster(cfg.cluster, cfg.datacenter)
    agents = agent_vms(inv, cluster, cfg.agent_vms)
    checks = [_cluster_check(cluster), *_host_checks(inv, cluster)]
    checks += _agent_checks(agents, cfg.agent_vms, cluster)
    if demand is not None:
        checks += _headroom_checks(inv, cluster, demand, cfg.min_hosts)
    checks += _datastore_checks(inv, cluster, cfg.datastore_min_free_pct)
    checks += _alarm_checks(inv, cluster, agents)
    return PreflightReport(environment=environment, source="vsphere", checks=tuple(checks))


def run_preflight(
    client: VSphereClient, cfg: VSphereConfig, environment: str, demand: Demand | None = None
) -> PreflightReport:
    """Read the inventory once and judge it. The caller decides with
    ``report.raise_for_failures(warnings_block=cfg.warnings_block)``."""
    return evaluate(client.inventory(), cfg, environment, demand)


def _vm_index(vms: list[VirtualMachine]) -> dict[str, VirtualMachine]:
    """Lookup keys for a Mesos agent: guest hostname, IPs, VM name, then short names."""
    index: dict[str, VirtualMachine] = {}
    short: defaultdict[str, list[VirtualMachine]] = defaultdict(list)
    for vm in vms:
        for key in (vm.guest_hostname.lower(), *vm.ips, vm.name.lower()):
            if key:
                index.setdefault(key, vm)
        for name in {vm.guest_hostname.lower().split(".")[0], vm.name.lower().split(".")[0]} - {""}:
            short[name].append(vm)
    for name, found in short.items():
        if len({vm.moid for vm in found}) == 1:  # an ambiguous short name maps to nothing
            index.setdefault(name, found[0])
    return index


def evaluate_placement(
    inv: Inventory, cfg: VSphereConfig, agents: list[str], min_hosts: int | None = None
) -> PlacementResult:
    """Map each instance's agent to its VM and ESXi host; raise ``PlacementViolation``
    when an agent maps to no VM or the instances share too few hosts."""
    cluster = inv.cluster(cfg.cluster, cfg.datacenter)
    index = _vm_index(inv.vms_on(cluster))
    placements, unmapped = [], []
    for agent in agents:
        key = agent.strip().lower()
        vm = index.get(key) or index.get(key.split(".")[0])
        if vm is None or vm.host is None:
            unmapped.append(agent)
            continue
        placements.append(
            AgentPlacement(
                agent, vm.name, inv.hosts[vm.host].name if vm.host in inv.hosts else vm.host
            )
        )
    if unmapped:
        raise PlacementViolation(
            f"cannot verify placement in cluster {cluster.name}: "
            f"no VM found for agent(s) {', '.join(unmapped)}"
        )
    needed = required_hosts(len(agents), min_hosts if min_hosts is not None else cfg.min_hosts)
    per_host = Counter(p.host for p in placements)
    spread = ", ".join(f"{h}: {n}" for h, n in sorted(per_host.items()))
    if len(per_host) < needed:
        raise PlacementViolation(
            f"{len(agents)} instances run on {len(per_host)} ESXi host(s) ({spread}); "
            f"at least {needed} required"
        )
    check = Check(
        f"cluster {cluster.name}",
        "instance spread",
        "ok",
        f"{len(agents)} instances on {len(per_host)} hosts ({spread}), {needed} required",
    )
    return PlacementResult(tuple(placements), check)


def check_placement(
    client: VSphereClient, cfg: VSphereConfig, agents: list[str], min_hosts: int | None = None
) -> PlacementResult:
    return evaluate_placement(client.inventory(), cfg, agents, min_hosts)
