"""A plain snapshot of the vCenter inventory, built from one PropertyCollector read.

The checks work on these frozen records, never on pyVmomi objects, so they cannot
trigger a hidden SOAP call by reading an attribute.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from conveyor.errors import NotFound


@dataclass(frozen=True)
class Alarm:
    moid: str  # the alarmed object's
    entity: str  # "host esx-01"
    alarm: str  # the alarm's managed object id
    status: str  # "red" / "yellow"


@dataclass(frozen=True)
class Host:
    moid: str
    name: str
    parent: str
    connection_state: str
    power_state: str
    in_maintenance: bool
    cpu_cores: int
    cpu_mhz: int
    cpu_used_mhz: int
    mem_bytes: int
    mem_used_mb: int

    @property
    def usable(self) -> bool:
        return (
            self.connection_state == "connected"
            and self.power_state == "poweredOn"
            and not self.in_maintenance
        )

    @property
    def free_cores(self) -> float:
        return (
            max(self.cpu_cores * self.cpu_mhz - self.cpu_used_mhz, 0) / self.cpu_mhz
            if self.cpu_mhz
            else 0.0
        )

    @property
    def free_mem_mb(self) -> float:
        return max(self.mem_bytes / 2**20 - self.mem_used_mb, 0)


@dataclass(frozen=True)
class VirtualMachine:
    moid: str
    name: str
    folder: str  # inventory path of its folder: "/dc1/vm/dcos-agents"
    host: str | None  # the ESXi host's moid
    power_state: str
    tools_running: str
    guest_hostname: str
    ips: tuple[str, ...]
    attributes: dict[str, str] = field(default_factory=dict)
    template: bool = False


@dataclass(frozen=True)
class Datastore:
    moid: str
    name: str
    capacity: int
    free: int
    accessible: bool

    @property
    def free_pct(self) -> float:
        return 100.0 * self.free / self.capacity if self.capacity else 0.0


@dataclass(frozen=True)
class Cluster:
    moid: str
    name: str
    path: str  # "/dc1/host/dcos-production"
    overall_status: str
    hosts: tuple[str, ...]
    datastores: tuple[str, ...]


@dataclass(frozen=True)
class Inventory:
    clusters: tuple[Cluster, ...]
    hosts: dict[str, Host]
    vms: tuple[VirtualMachine, ...]
    datastores: dict[str, Datastore]
    alarms: tuple[Alarm, ...]

    def cluster(self, name: str, datacenter: str | None = None) -> Cluster:
        found = [
            c
            for c in self.clusters
            if c.name == name and (datacenter is None or c.path.startswith(f"/{datacenter}/"))
        ]
        if len(found) != 1:
            known = ", ".join(c.path for c in self.clusters) or "none"
            what = "no" if not found else "more than one"
            raise NotFound(
                f"vCenter: {what} cluster named {name!r} (clusters: {known}); set datacenter"
            )
        return found[0]

    def vms_on(self, cluster: Cluster) -> list[VirtualMachine]:
        hosts = set(cluster.hosts)
        return [vm for vm in self.vms if vm.host in hosts and not vm.template]


def _moid(obj: Any) -> str:
    return str(obj._moId)


def _paths(parents: dict[str, tuple[str, str | None]]) -> dict[str, str]:
    """Inventory path of every folder and datacenter, from (name, parent) pairs."""
    out: dict[str, str] = {}

    def path(moid: str, depth: int = 0) -> str:
        if moid in out:
            return out[moid]
        name, parent = parents[moid]
        if parent is None:
            # The root folder is the inventory's "/", it lends no name to paths.
            return ""
        # A container view leaves out its container (the root): parents it lacks are "/".
        above = path(parent, depth + 1) if parent in parents and depth < 64 else ""
        out[moid] = f"{above}/{name}"
        return out[moid]

    for moid in parents:
        path(moid)
    return out


def _ips(props: dict[str, Any]) -> tuple[str, ...]:
    # Only the primary address: guest.net would multiply the bulk read's size for the
    # rare agent that advertises a secondary IP to Mesos.
    return (str(props["guest.ipAddress"]),) if props.get("guest.ipAddress") else ()


def _host(moid: str, p: dict[str, Any]) -> Host:
    return Host(
        moid=moid,
        name=p.get("name", moid),
        parent=_moid(p["parent"]) if p.get("parent") else "",
        connection_state=str(p.get("runtime.connectionState", "unknown")),
        power_state=str(p.get("runtime.powerState", "unknown")),
        in_maintenance=bool(p.get("runtime.inMaintenanceMode", False)),
        cpu_cores=int(p.get("summary.hardware.numCpuCores") or 0),
        cpu_mhz=int(p.get("summary.hardware.cpuMhz") or 0),
        cpu_used_mhz=int(p.get("summary.quickStats.overallCpuUsage") or 0),
        mem_bytes=int(p.get("summary.hardware.memorySize") or 0),
        mem_used_mb=int(p.get("summary.quickStats.overallMemoryUsage") or 0),
    )


def _vm(
    moid: str, p: dict[str, Any], paths: dict[str, str], fields: dict[int, str]
) -> VirtualMachine:
    parent = _moid(p["parent"]) if p.get("parent") else ""
    return VirtualMachine(
        moid=moid,
        name=p.get("name", moid),
        folder=paths.get(parent, ""),
        host=_moid(p["runtime.host"]) if p.get("runtime.host") else None,
        power_state=str(p.get("runtime.powerState", "unknown")),
        tools_running=str(p.get("guest.toolsRunningStatus") or "unknown"),
        guest_hostname=str(p.get("guest.hostName") or ""),
        ips=_ips(p),
        attributes={
            fields.get(v.key, str(v.key)): str(v.value) for v in p.get("customValue") or []
        },
        template=bool(p.get("config.template", False)),
    )


def _cluster_path(p: dict[str, Any], moid: str, paths: dict[str, str]) -> str:
    folder = paths.get(_moid(p["parent"]), "") if p.get("parent") else ""
    return f"{folder}/{p.get('name', moid)}"


_KINDS = {
    "ClusterComputeResource": "cluster",
    "HostSystem": "host",
    "VirtualMachine": "vm",
    "Datastore": "datastore",
}


def parse_inventory(objects: list[Any]) -> Inventory:
    """Turn RetrievePropertiesEx's ObjectContent list into an ``Inventory``."""
    by_type: dict[str, dict[str, dict[str, Any]]] = {}
    for oc in objects:
        props = {p.name: p.val for p in oc.propSet or []}
        by_type.setdefault(oc.obj._wsdlName, {})[_moid(oc.obj)] = props
    parents = {
        m: (p.get("name", m), _moid(p["parent"]) if p.get("parent") else None)
        for kind in ("Folder", "Datacenter")
        for m, p in by_type.get(kind, {}).items()
    }
    paths = _paths(parents)
    fields = {
        f.key: f.name
        for m in by_type.get("CustomFieldsManager", {}).values()
        for f in m.get("field") or []
    }
    names: dict[str, str] = {}
    alarms: list[Alarm] = []
    for kind, label in _KINDS.items():
        for moid, p in by_type.get(kind, {}).items():
            names[moid] = f"{label} {p.get('name', moid)}"
            alarms.extend(
                Alarm(moid, names[moid], _moid(a.alarm), str(a.overallStatus))
                for a in p.get("triggeredAlarmState") or []
            )
    clusters = tuple(
        Cluster(
            moid=m,
            name=p.get("name", m),
            path=_cluster_path(p, m, paths),
            overall_status=str(p.get("overallStatus", "gray")),
            hosts=tuple(_moid(h) for h in p.get("host") or []),
            datastores=tuple(_moid(d) for d in p.get("datastore") or []),
        )
        for m, p in by_type.get("ClusterComputeResource", {}).items()
    )
    return Inventory(
        clusters=clusters,
        hosts={m: _host(m, p) for m, p in by_type.get("HostSystem", {}).items()},
        vms=tuple(_vm(m, p, paths, fields) for m, p in by_type.get("VirtualMachine", {}).items()),
        datastores={
            m: Datastore(
                m,
                p.get("name", m),
                int(p.get("summary.capacity") or 0),
                int(p.get("summary.freeSpace") or 0),
                bool(p.get("summary.accessible", False)),
            )
            for m, p in by_type.get("Datastore", {}).items()
        },
        alarms=tuple(alarms),
    )


__all__ = [
    "Alarm",
    "Cluster",
    "Datastore",
    "Host",
    "Inventory",
    "VirtualMachine",
    "parse_inventory",
]
