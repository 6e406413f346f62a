"""vSphere pre-flight at 1,000 VMs: the bulk read against a naive per-object loop.

Starts conveyor's vCenter simulator (50 hosts, 1,000 VMs), then in the same run
measures round trips and wall time of ``run_preflight`` (median of several) and of a
loop that reads each host's and VM's properties object by object, as code written
with pyVmomi's attribute access does. Prints the figures; asserts nothing.

    PYTHONPATH=. python bench/vsphere_preflight.py [--runs 5] [--vms 1000] [--hosts 50]
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

from pyVmomi import vim

from conveyor.clients.vsphere import VSphereClient
from conveyor.config.base import SecretRef
from conveyor.config.preflight import AgentVmSelector, VSphereConfig
from conveyor.preflight.vsphere import Demand, run_preflight
from conveyor.sim import vcenter


def naive_read(client: VSphereClient) -> int:
    """Every host and VM read through attribute access: one SOAP call per property."""
    content = client.content
    kinds = [vim.HostSystem, vim.VirtualMachine]
    view = content.viewManager.CreateContainerView(content.rootFolder, kinds, True)
    seen = 0
    try:
        for obj in view.view:
            if isinstance(obj, vim.HostSystem):
                _ = (obj.name, obj.runtime.connectionState, obj.summary.quickStats.overallCpuUsage)
            else:
                _ = (obj.name, obj.runtime.powerState, obj.guest.toolsRunningStatus)
            seen += 1
    finally:
        view.DestroyView()
    return seen


def measure(client: VSphereClient, fn: Any) -> tuple[float, int]:
    before = client.round_trips
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started, client.round_trips - before


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--vms", type=int, default=1000)
    parser.add_argument("--hosts", type=int, default=50)
    args = parser.parse_args()
    with vcenter.start("--hosts", str(args.hosts), "--vms", str(args.vms)) as sim:
        cfg = VSphereConfig(
            url=sim.url, username=sim.username, password=SecretRef(env="VCSIM_PASSWORD"),
            thumbprint=sim.thumbprint_sha256, cluster=sim.cluster,
            agent_vms=AgentVmSelector(name_pattern="production-agent-*"),
        )  # fmt: skip
        bulk: list[tuple[float, int]] = []
        for _ in range(args.runs):
            # A fresh session each run, so the container view's creation is counted too.
            with VSphereClient.from_config(cfg, sim.password) as client:
                bulk.append(
                    measure(
                        client, lambda c=client: run_preflight(c, cfg, "bench", Demand(3, 1, 1024))
                    )
                )
        with VSphereClient.from_config(cfg, sim.password) as client:
            naive_s, naive_trips = measure(client, lambda: naive_read(client))
    bulk_s = statistics.median(s for s, _ in bulk)
    bulk_trips = max(t for _, t in bulk)
    print(f"inventory       : {args.hosts} hosts, {sim.virtual_machines} VMs")
    print(
        f"bulk pre-flight : median {bulk_s:.3f} s over {args.runs} runs, {bulk_trips} round trips"
    )
    print("  target        : <= 2 s, <= 3 round trips")
    print(f"naive loop      : {naive_s:.3f} s, {naive_trips} round trips (fewer properties)")
    speed, trips = naive_s / bulk_s, naive_trips / max(bulk_trips, 1)
    print(f"ratio           : {speed:.1f}x faster, {trips:.0f}x fewer round trips")


if __name__ == "__main__":
    main()
