"""``conveyor sim marathon``: the Marathon/DC/OS simulator (the lead mounts ``app``)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from conveyor.sim.marathon.persist import BadStateFile
from conveyor.sim.marathon.server import run, settings_from

app = typer.Typer(help="Local simulators of the deployment targets.")


@app.callback()
def simulators() -> None:
    """Keeps ``marathon`` a subcommand, as it is once mounted under ``conveyor sim``."""


def _ports(text: str) -> range:
    low, _, high = text.partition("-")
    return range(int(low), int(high or low) + 1)


@app.command()
def marathon(
    listen: Annotated[
        str, typer.Option(help="HOST:PORT, loopback only (PORT 0 = any)")
    ] = "127.0.0.1:8080",
    dcos: Annotated[
        bool, typer.Option(help="Serve DC/OS around Marathon (/service/marathon)")
    ] = False,
    service_account: Annotated[
        list[str] | None, typer.Option(help="NAME=PUBLIC_KEY_FILE, repeatable (with --dcos)")
    ] = None,
    ports: Annotated[str, typer.Option(help="Host port range for tasks")] = "31000-31999",
    agents: Annotated[int, typer.Option(help="Number of simulated agents")] = 1,
    agent_cpus: Annotated[float, typer.Option(help="CPUs per agent")] = 4.0,
    agent_mem: Annotated[float, typer.Option(help="Memory (MB) per agent")] = 8192.0,
    name: Annotated[
        str, typer.Option(help="Instance name (agent hostnames, container labels)")
    ] = "marathon",
    basic_auth: Annotated[str | None, typer.Option(help="USER:PASSWORD_FILE for /v2")] = None,
    docker_config: Annotated[
        Path | None, typer.Option(help="docker config.json with registry auths")
    ] = None,
    state_dir: Annotated[
        Path | None,
        typer.Option(help="Keep apps, versions and deployments here across restarts"),
    ] = None,
) -> None:
    """Run a Marathon API simulator whose tasks are real containers on the Docker Engine."""
    try:
        settings = settings_from(
            listen=listen,
            dcos=dcos,
            service_accounts=service_account or [],
            ports=_ports(ports),
            agents=agents,
            agent_cpus=agent_cpus,
            agent_mem=agent_mem,
            name=name,
            basic_auth=basic_auth,
            docker_config=docker_config,
            state_dir=state_dir,
        )
    except (ValueError, OSError) as exc:
        raise typer.BadParameter(str(exc)) from None
    try:
        code = run(settings)
    except BadStateFile as exc:
        raise typer.BadParameter(str(exc), param_hint="--state-dir") from None
    raise typer.Exit(code)
