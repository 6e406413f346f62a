"""`conveyor ship | nightly | promote | rollback`: start a deployment and follow its run.

Nothing runs in this process: each command starts the deployment prefect.yaml declares
(``conveyor up`` registers them and runs a worker), prints the run's logs until it
ends, and for ``ship`` and ``promote`` then follows the promote runs it handed the
release to, until each ends or waits for an approval, and prints how to answer.
"""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import SecretStr
from rich.console import Console
from rich.text import Text

from conveyor.cli import runs
from conveyor.cli.errors import EXIT_FAILED, boundary, check_server
from conveyor.cli.sign_answer import signed_start
from conveyor.config import Pipeline, SecretRef, load_pipeline
from conveyor.connections import Connections

console = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False)

PipelineOpt = Annotated[
    Path,
    typer.Option(
        "--pipeline",
        "-p",
        help="the pipeline file; a relative path is read in the worker's checkout",
        envvar="CONVEYOR_PIPELINE",
    ),
]
DEFAULT_PIPELINE = Path("deployments/local.yaml")
# How long ship waits for the promote run it started to reach its gate or its end.
HANDOVER_WAIT_S = 120
# tasks/handover.py starts each promote run under the key handover-<run id>-<env>-<digest>.
HANDOVER_KEY = "handover-"


def connections(pipeline: Pipeline) -> Connections:
    """What a command talks to, built as a flow run builds it; Prefect Secret blocks are
    read as the flows read them."""
    return Connections(pipeline, resolve_secret=_resolve_secret)


def _resolve_secret(ref: SecretRef) -> SecretStr:
    # Imported when a secret is first needed: Prefect's import costs a command that
    # needs none (`conveyor verify` of an open registry) seconds.
    from tasks.runtime import resolve_secret

    return resolve_secret(ref)


def _emit(line: str) -> None:
    console.print(Text(line))


def _handovers(client: Any, after: dt.datetime, seen: set[str]) -> list[Any]:
    """promote runs created since ``after`` that a run in ``seen`` handed over to, not
    followed yet. The handover's idempotency key names the run that started it: other
    ships of the same pipeline file at the same time hand over runs of their own."""
    from prefect.client.schemas.filters import FlowFilter, FlowFilterName
    from prefect.client.schemas.sorting import FlowRunSort

    found = client.read_flow_runs(
        flow_filter=FlowFilter(name=FlowFilterName(any_=["promote"])),
        sort=FlowRunSort.EXPECTED_START_TIME_DESC,
        limit=200,
    )
    prefixes = tuple(f"{HANDOVER_KEY}{parent}-" for parent in seen)
    return [
        r
        for r in reversed(found)
        if r.created
        and r.created >= after
        and str(r.id) not in seen
        and (r.idempotency_key or "").startswith(prefixes)
    ]


def _run(deployment: str, parameters: dict[str, Any], follow_handovers: bool) -> None:
    from prefect import get_client

    with boundary():
        # The pipeline file is checked as `conveyor validate` does before the server is
        # asked anything; the flow checks it again where it runs, since a worker may
        # see another checkout or other settings.
        load_pipeline(Path(parameters["pipeline"]))
        check_server()
        with get_client(sync_client=True) as client:
            found = runs.find_deployment(client, deployment)
            run = runs.start(client, found, parameters, tags=["conveyor-cli"])
            started = run.created or dt.datetime.now(dt.UTC)
            _emit(f"started {deployment} run {run.name} ({run.id}); following its logs")
            state = runs.follow(client, run.id, _emit)
            _settled(client, run, state)
            if follow_handovers and state is not None and state.is_completed():
                _follow_handovers(client, started, {str(run.id)})


def _follow_handovers(client: Any, after: dt.datetime, seen: set[str]) -> None:
    deadline = time.monotonic() + HANDOVER_WAIT_S
    while time.monotonic() < deadline:
        pending = _handovers(client, after, seen)
        if not pending:
            return
        for run in pending:
            seen.add(str(run.id))
            _emit(f"the release goes on in run {run.name} ({run.id})")
            _settled(client, run, runs.follow(client, run.id, _emit))


def _settled(client: Any, run: Any, state: Any) -> None:
    """Say where the run stands; a waiting run gets the exact command that answers it."""
    if state is not None and state.is_paused():
        request = next((w for w in runs.waiting(client) if w.run_id == str(run.id)), None)
        where = (
            f"{request.app} {request.version} ({request.digest}) waits for approval for "
            f"{request.environment} until {request.deadline}"
            if request and request.app
            else f"run {run.name} waits for approval"
        )
        _emit(where)
        _emit(f"  approve: conveyor approve {run.id} --as YOUR_NAME --comment TEXT")
        _emit(f"  reject:  conveyor reject {run.id} --as YOUR_NAME --reason TEXT")
        return
    if state is None or not state.is_completed():
        name = state.name if state is not None else "unknown"
        message = runs.log_line(state.message or "") if state is not None else ""
        err.print(Text(f"run {run.name} ended {name}: {message}"), soft_wrap=True)
        raise typer.Exit(EXIT_FAILED)
    _emit(f"run {run.name} completed")


def ship(
    pipeline: PipelineOpt = DEFAULT_PIPELINE,
    auto_approve: Annotated[
        bool, typer.Option(help="DEMO ONLY: approve gates the pipeline file allows it for")
    ] = False,
    version: Annotated[
        str | None, typer.Option(help="override the version derived from git")
    ] = None,
    as_: Annotated[
        str | None,
        typer.Option("--as", help="you, who start it: you may then not approve it (recorded)"),
    ] = None,
    key: Annotated[
        Path | None,
        typer.Option(help="sign the start with this SSH key (where gates take signed answers)"),
    ] = None,
    sign: Annotated[
        bool, typer.Option("--sign", help="sign the start with ssh-agent's key")
    ] = False,
) -> None:
    """Build, scan and push the app through the ship deployment; follow it to its gate."""
    if auto_approve:
        err.print(
            "[bold yellow on red] --auto-approve: NO PERSON WILL REVIEW THIS RELEASE. "
            "For the local demo only. [/]"
        )
    params: dict[str, Any] = {"pipeline": str(pipeline), "auto_approve": auto_approve}
    if version is not None:
        params["version"] = version
    if (key is not None or sign) and not as_:
        err.print("--key and --sign sign a start: name yourself with --as NAME", markup=False)
        raise typer.Exit(2)
    if as_:
        params["started_by"] = as_
        if key is not None or sign:
            with boundary():
                app = load_pipeline(pipeline).release_name
                params["start_token"] = signed_start(app, as_, key)
    _run("ship/ship", params, follow_handovers=True)


def nightly(
    pipeline: PipelineOpt = DEFAULT_PIPELINE,
    build: Annotated[
        bool, typer.Option(help="build from source, or take the newest integration-ready digest")
    ] = True,
) -> None:
    """The nightly integration run, now: integration and its tests, never production."""
    params = {"pipeline": str(pipeline), "build": build}
    _run("nightly-integration/nightly-integration", params, follow_handovers=False)


def promote(
    digest: Annotated[str, typer.Argument(help="sha256:... of a pushed and tested release")],
    pipeline: PipelineOpt = DEFAULT_PIPELINE,
    environment: Annotated[
        str, typer.Option("--to", help="the environment to promote into")
    ] = "production",
    deployment: Annotated[
        str, typer.Option(help="the promote deployment (the environment's runs_on.deployment)")
    ] = "promote",
    older: Annotated[
        bool,
        typer.Option(help="a rollback: let in a release older than the one the environment runs"),
    ] = False,
    reason: Annotated[
        str,
        typer.Option(help="why (required with --older and --break-glass; recorded)"),
    ] = "",
    break_glass: Annotated[
        bool,
        typer.Option(
            "--break-glass",
            help="go into a frozen environment anyway: one approver more, marked in the record",
        ),
    ] = False,
) -> None:
    """Approval, promotion and deploy of a given digest (the run waits for approval)."""
    for flag, wanted in (("--older", older), ("--break-glass", break_glass)):
        if wanted and not reason.strip():
            err.print(f"{flag} needs --reason TEXT: it is recorded with why", markup=False)
            raise typer.Exit(2)
    params: dict[str, Any] = {
        "digest": digest,
        "pipeline": str(pipeline),
        "environment": environment,
    }
    if older or break_glass:
        params["reason"] = reason
    if older:
        params["older"] = True
    if break_glass:
        params["break_glass"] = True
    _run(f"promote/{deployment}", params, follow_handovers=True)


def rollback(
    environment: Annotated[str, typer.Argument(help="the environment to roll back")] = "production",
    pipeline: PipelineOpt = DEFAULT_PIPELINE,
) -> None:
    """Return an environment to the release it ran before."""
    params = {"pipeline": str(pipeline), "environment": environment}
    _run("rollback/rollback", params, follow_handovers=False)


def register(app: typer.Typer) -> None:
    for command in (ship, nightly, promote, rollback):
        app.command()(command)
