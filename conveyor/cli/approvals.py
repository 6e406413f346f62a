"""`conveyor approvals | approve | reject`: answer paused approval gates from a terminal.

Prefect 3.9 has no CLI to resume a paused run; these commands use the same API call
as the UI's Resume form (``POST /api/flow_runs/{id}/resume`` with ``run_input``).
"""

from __future__ import annotations

import json
import time
from typing import Annotated, Any
from uuid import UUID

import typer
from rich.console import Console
from rich.markdown import Markdown
from rich.table import Table

from conveyor.cli.pipeline_cmds import need_server

console = Console()
err = Console(stderr=True)


def _paused_runs(client: Any) -> list[Any]:
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterState,
        FlowRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType

    flt = FlowRunFilter(
        state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.PAUSED]))
    )
    return list(client.read_flow_runs(flow_run_filter=flt, limit=200))


def _description(client: Any, run: Any) -> str:
    from prefect.input.run_input import keyset_from_paused_state

    try:
        keyset = keyset_from_paused_state(run.state)
        raw = client.read_flow_run_input(run.id, keyset["description"])
    except Exception:
        return "(no description: a pause without an approval form)"
    try:
        return str(json.loads(raw))
    except (TypeError, ValueError):
        return str(raw)


def _find_run(client: Any, ref: str) -> Any:
    try:
        return client.read_flow_run(UUID(ref))
    except ValueError:
        pass
    matches = [r for r in _paused_runs(client) if r.name == ref or str(r.id).startswith(ref)]
    if len(matches) != 1:
        err.print(
            f"[red]no single paused run matches {ref!r}[/] ({len(matches)} found); see `conveyor approvals`"
        )
        raise typer.Exit(2)
    return matches[0]


def list_approvals() -> None:
    """List paused flow runs and what each waits for."""
    from prefect import get_client

    need_server()
    with get_client(sync_client=True) as client:
        runs = _paused_runs(client)
        if not runs:
            console.print("no flow run waits for an approval")
            return
        table = Table(title="waiting for approval")
        for col in ("run", "name", "paused since", "times out", "waits for"):
            table.add_column(col, overflow="fold")
        descriptions = []
        for run in runs:
            timeout = run.state.state_details.pause_timeout
            description = _description(client, run)
            descriptions.append((run, description))
            table.add_row(
                str(run.id),
                run.name,
                str(run.state.timestamp)[:19],
                str(timeout)[:19] if timeout else "-",
                description.splitlines()[0].lstrip("# "),
            )
        console.print(table)
        for run, description in descriptions:
            console.rule(f"{run.name} ({run.id})")
            console.print(Markdown(description))


def _resume(ref: str, run_input: dict[str, str]) -> None:
    need_server()
    from prefect import get_client
    from prefect.exceptions import FlowPauseTimeout
    from prefect.flow_runs import resume_flow_run

    with get_client(sync_client=True) as client:
        run = _find_run(client, ref)
        if not run.state or not run.state.is_paused():
            err.print(
                f"[red]run {run.name} is not paused[/] (state: {run.state.name if run.state else '?'})"
            )
            raise typer.Exit(2)
        old_key = run.state.state_details.pause_key
        try:
            resume_flow_run(run.id, run_input=run_input)
        except FlowPauseTimeout:
            err.print(f"[red]run {run.name} can no longer be resumed: its approval timed out[/]")
            raise typer.Exit(1) from None
        except RuntimeError as exc:
            err.print(f"[red]the server refused the answer:[/] {exc}")
            raise typer.Exit(1) from None
        _report_outcome(client, run, old_key, run_input["approver"])


def _report_outcome(client: Any, run: Any, old_key: str | None, approver: str) -> None:
    """The flow, not the CLI, judges the allowlist: watch for it pausing again.

    A resumed run is Running at once, before the flow has even read the answer, so
    only a new pause (refused) or an end (a rejection) decides early.
    """
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        state = client.read_flow_run(run.id).state
        if state and state.is_paused() and state.state_details.pause_key != old_key:
            err.print(
                f"[yellow]refused:[/] {approver} is not on the approvers list; the run still waits"
            )
            raise typer.Exit(1)
        if state and state.is_final():
            break
        time.sleep(0.25)
    console.print(f"answered run {run.name} as {approver}")


def approve(
    run: Annotated[str, typer.Argument(help="flow run id, id prefix or name")],
    as_: Annotated[str, typer.Option("--as", help="your name, as on the approvers list")],
    comment: Annotated[str, typer.Option(help="why")] = "",
) -> None:
    """Approve the release a paused run waits on."""
    _resume(run, {"decision": "approve", "approver": as_, "comment": comment})


def reject(
    run: Annotated[str, typer.Argument(help="flow run id, id prefix or name")],
    as_: Annotated[str, typer.Option("--as", help="your name, as on the approvers list")],
    reason: Annotated[str, typer.Option(help="why it must not go on")],
) -> None:
    """Reject the release a paused run waits on; the run ends Failed with the reason."""
    _resume(run, {"decision": "reject", "approver": as_, "comment": reason})
