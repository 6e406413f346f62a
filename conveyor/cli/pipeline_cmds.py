"""`conveyor ship | nightly | promote | rollback | preflight | plan | gc`."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from conveyor.config import Pipeline, load_pipeline
from conveyor.connections import Connections

console = Console()
err = Console(stderr=True)

PipelineOpt = Annotated[
    Path, typer.Option("--pipeline", "-p", help="the pipeline file", envvar="CONVEYOR_PIPELINE")
]
DEFAULT_PIPELINE = Path("deployments/local.yaml")


# Each command checks the pipeline file as `conveyor validate` does before it asks the
# server anything; the flow checks it again where it runs, since a worker may see
# another checkout or other settings.


def connections(pipeline: Pipeline) -> Connections:
    """What a command talks to, built as a flow run builds it; Prefect Secret blocks are
    read as the flows read them."""
    from tasks.runtime import resolve_secret

    return Connections(pipeline, resolve_secret=resolve_secret)


def need_server() -> None:
    """Flows and approvals need a Prefect server that others can see: without one,
    Prefect would fall back to a throw-away in-process server."""
    if not os.environ.get("PREFECT_API_URL"):
        err.print(
            "[red]no Prefect server:[/] PREFECT_API_URL is not set and the local stack's "
            "server is not running. Run `conveyor up`, or point PREFECT_API_URL at your server."
        )
        raise typer.Exit(2)


def ship(
    pipeline: PipelineOpt = DEFAULT_PIPELINE,
    auto_approve: Annotated[
        bool, typer.Option(help="DEMO ONLY: approve every gate without a person")
    ] = False,
    version: Annotated[
        str | None, typer.Option(help="override the version derived from git")
    ] = None,
) -> None:
    """Build, scan, push and take the app through every environment."""
    load_pipeline(pipeline)
    need_server()
    from flows.ship import ship as ship_flow

    if auto_approve:
        err.print(
            "[bold yellow on red] --auto-approve: NO PERSON WILL REVIEW THIS RELEASE. "
            "For the local demo only. [/]"
        )
    image = ship_flow(pipeline=str(pipeline), auto_approve=auto_approve, version=version)
    console.print(f"[green]shipped[/] {image}")


def nightly(
    pipeline: PipelineOpt = DEFAULT_PIPELINE,
    build: Annotated[
        bool, typer.Option(help="build from source, or take the newest integration-ready digest")
    ] = True,
) -> None:
    """The nightly integration run, now: integration and its tests, never production."""
    load_pipeline(pipeline)
    need_server()
    from flows.nightly import nightly_integration

    console.print(
        f"[green]integration passed[/] {nightly_integration(pipeline=str(pipeline), build=build)}"
    )


def promote(
    digest: Annotated[str, typer.Argument(help="sha256:... of a pushed and tested release")],
    pipeline: PipelineOpt = DEFAULT_PIPELINE,
    environment: Annotated[
        str, typer.Option("--to", help="the environment to promote into")
    ] = "production",
) -> None:
    """Approval, promotion and deploy of a given digest (the run pauses for approval)."""
    load_pipeline(pipeline)
    need_server()
    from flows.promote import promote as promote_flow

    console.print(
        f"[green]promoted[/] {promote_flow(digest=digest, pipeline=str(pipeline), environment=environment)}"
    )


def rollback(
    environment: Annotated[str, typer.Argument(help="the environment to roll back")] = "production",
    pipeline: PipelineOpt = DEFAULT_PIPELINE,
) -> None:
    """Return an environment to the release it ran before."""
    load_pipeline(pipeline)
    need_server()
    from flows.rollback import rollback as rollback_flow

    console.print(rollback_flow(pipeline=str(pipeline), environment=environment))


def register(app: typer.Typer) -> None:
    for command in (ship, nightly, promote, rollback):
        app.command()(command)
