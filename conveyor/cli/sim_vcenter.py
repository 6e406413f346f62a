"""``conveyor sim vcenter``: the vCenter simulator (the lead mounts ``app``)."""

from __future__ import annotations

import json
import signal
import threading
from typing import Annotated

import typer

from conveyor.sim.vcenter import password_for_humans, start

app = typer.Typer(help="Local simulators of the deployment targets.")


def _launcher_args(
    hosts: int,
    agents: int,
    agent_prefix: str,
    vms: int,
    datastore_free_pct: float,
    cluster: str,
    datacenter: str,
    cluster_status: str,
    red_alarm_on: list[str],
    disconnect_host: list[str],
) -> list[str]:
    args = [
        "--hosts", str(hosts), "--agents", str(agents), "--agent-prefix", agent_prefix,
        "--vms", str(vms), "--datastore-free-pct", str(datastore_free_pct),
        "--cluster", cluster, "--datacenter", datacenter, "--cluster-status", cluster_status,
    ]  # fmt: skip
    for name in red_alarm_on:
        args += ["--red-alarm-on", name]
    for name in disconnect_host:
        args += ["--disconnect-host", name]
    return args


@app.command()
def vcenter(
    listen: Annotated[
        str, typer.Option(help="HOST:PORT, loopback only (PORT 0 = any)")
    ] = "127.0.0.1:8989",
    hosts: Annotated[int, typer.Option(help="ESXi hosts in the cluster")] = 3,
    agents: Annotated[int, typer.Option(help="DC/OS agent VMs")] = 3,
    agent_prefix: Annotated[
        str, typer.Option(help="Agent VM name prefix; guest hostname adds .example")
    ] = "production-agent-",
    vms: Annotated[int, typer.Option(help="Extra (non-agent) VMs")] = 0,
    datastore_free_pct: Annotated[float, typer.Option(help="Datastore free space, percent")] = 60.0,
    cluster: Annotated[str, typer.Option(help="Cluster name")] = "dcos-production",
    datacenter: Annotated[str, typer.Option(help="Datacenter name")] = "dc1",
    cluster_status: Annotated[str, typer.Option(help="green, yellow or red")] = "green",
    red_alarm_on: Annotated[
        list[str] | None, typer.Option(help="Inventory name with a red alarm, repeatable")
    ] = None,
    disconnect_host: Annotated[
        list[str] | None, typer.Option(help="Host shown disconnected, repeatable")
    ] = None,
) -> None:
    """Run a vCenter simulator (govmomi vcsim) shaped like production DC/OS on vSphere."""
    password, path = password_for_humans()
    args = _launcher_args(
        hosts, agents, agent_prefix, vms, datastore_free_pct, cluster, datacenter,
        cluster_status, red_alarm_on or [], disconnect_host or [],
    )  # fmt: skip
    sim = start(*args, listen=listen, password=password)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        typer.echo(json.dumps(sim.summary()))
        where = f"in {path}" if path else "from VCSIM_PASSWORD"
        typer.echo(f"login: {sim.username} (password {where}); Ctrl-C stops", err=True)
        while not stop.wait(1.0) and sim.process.poll() is None:
            pass
    finally:
        sim.stop()
