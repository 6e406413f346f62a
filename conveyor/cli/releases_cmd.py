"""`conveyor releases [--json]`: per environment, what runs, what waits, what was superseded.

What runs is read from the cluster (the driver's status), who approved it from the
approval evidence in the registry; what waits and what was superseded from the Prefect
server (the promote runs). The cluster, not the server, is the truth of what runs.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from conveyor.cli import runs
from conveyor.cli.errors import boundary, check_server
from conveyor.cli.pipeline_cmds import DEFAULT_PIPELINE, PipelineOpt, connections
from conveyor.config import EnvironmentConfig, Pipeline, load_pipeline
from conveyor.connections import Connections
from conveyor.evidence import read_evidence

console = Console(highlight=False, soft_wrap=True)
SUPERSEDED = "superseded by"
LAST_SUPERSEDED = 5


def _approved_by(conns: Connections, pipeline: Pipeline, env: str, digest: str) -> Any:
    """Who approved ``digest`` for ``env`` (the latest approving record), or None."""
    records = read_evidence(conns.registry(), pipeline.registry.repository, digest, ["approval"])
    approving = [e for e in records if e.environment == env and e.passed]
    if not approving:
        return None
    fields = approving[-1].fields
    return fields.get("approvers") or fields.get("approver"), approving[-1].created.isoformat()


def _running(conns: Connections, pipeline: Pipeline, env: EnvironmentConfig) -> Any:
    state = conns.driver(env).status()
    if state.digest is None:
        return None
    approved = _approved_by(conns, pipeline, env.name, state.digest)
    since = state.detail.get("version") or (approved[1] if approved else None)
    return {
        "version": state.version,
        "digest": state.digest,
        "since": since,
        "approved_by": approved[0] if approved else None,
        "healthy": state.healthy,
        "instances": len(state.instances),
    }


def _superseded(client: Any, env: str) -> list[dict[str, Any]]:
    from prefect.client.schemas.filters import (
        FlowFilter,
        FlowFilterName,
        FlowRunFilter,
        FlowRunFilterState,
        FlowRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType
    from prefect.client.schemas.sorting import FlowRunSort

    found = client.read_flow_runs(
        flow_filter=FlowFilter(name=FlowFilterName(any_=["promote"])),
        flow_run_filter=FlowRunFilter(
            state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.CANCELLED]))
        ),
        sort=FlowRunSort.END_TIME_DESC,
        limit=50,
    )
    out = []
    for run in found:
        params = run.parameters or {}
        message = (run.state.message or "") if run.state else ""
        if params.get("environment") != env or SUPERSEDED not in message:
            continue
        out.append(
            {
                "run_id": str(run.id),
                "run_name": run.name,
                "digest": params.get("digest"),
                "reason": message,
                "at": run.state.timestamp.isoformat() if run.state else None,
            }
        )
    return out[:LAST_SUPERSEDED]


def collect(pipeline: Pipeline, client: Any) -> dict[str, dict[str, Any]]:
    waiting = runs.waiting(client)
    found: dict[str, dict[str, Any]] = {}
    with connections(pipeline) as conns:
        for env in pipeline.environments:
            found[env.name] = {
                "running": _running(conns, pipeline, env),
                "waiting": [
                    w.to_json()
                    for w in waiting
                    if w.environment == env.name and w.app in (None, pipeline.release_name)
                ],
                "superseded": _superseded(client, env.name),
            }
    return found


def _print(found: dict[str, dict[str, Any]]) -> None:
    table = Table(title="releases")
    for col in ("environment", "runs now", "since", "approved by", "waiting", "superseded"):
        table.add_column(col, overflow="fold")
    for name, entry in found.items():
        running = entry["running"]
        now = f"{running['version']} ({running['digest'][:19]})" if running else "nothing"
        approvers = running and running["approved_by"]
        table.add_row(
            name,
            now,
            (running or {}).get("since") or "-",
            ", ".join(approvers) if isinstance(approvers, list) else str(approvers or "-"),
            "\n".join(f"{w['version']} ({w['run_name']})" for w in entry["waiting"]) or "-",
            "\n".join(f"{s['digest'][:19]}: {s['reason']}" for s in entry["superseded"]) or "-",
        )
    console.print(table)


def releases(
    pipeline: PipelineOpt = DEFAULT_PIPELINE,
    as_json: Annotated[
        bool, typer.Option("--json", help="print a JSON object for scripts")
    ] = False,
) -> None:
    """Per environment: the release it runs (read from the cluster), those waiting for it,
    and the last ones superseded."""
    from prefect import get_client

    with boundary():
        config = load_pipeline(pipeline)
        check_server()
        with get_client(sync_client=True) as client:
            found = collect(config, client)
        if as_json:
            typer.echo(json.dumps(found, indent=2))
            return
        if not found:
            console.print(Text("the pipeline file names no environment"))
            return
        _print(found)
