"""`conveyor approvals | approve | reject`: answer approval gates from a terminal.

Prefect 3.9 has no CLI to resume a paused or suspended run; these commands use the same
API call as the UI's Resume form (``POST /api/flow_runs/{id}/resume`` with
``run_input``). The answer names the digest and environment of the request it answers,
so the flow can refuse an answer meant for another release.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any
from uuid import UUID

import typer
from rich.console import Console
from rich.markdown import Markdown
from rich.table import Table
from rich.text import Text

from conveyor.cli import runs
from conveyor.cli.errors import EXIT_FAILED, EXIT_INPUT, boundary, check_server
from conveyor.cli.sign_answer import signed_token

console = Console()
err = Console(stderr=True, highlight=False)


def _fail(message: str, code: int) -> typer.Exit:
    err.print(Text(message), soft_wrap=True)
    return typer.Exit(code)


def _find(client: Any, ref: str) -> runs.Waiting:
    waiting = runs.waiting(client)
    try:
        wanted = UUID(ref)
    except ValueError:
        matches = [w for w in waiting if w.run_name == ref or w.run_id.startswith(ref)]
    else:
        matches = [w for w in waiting if w.run_id == str(wanted)]
        # Someone answered first, or the request ended: say so rather than "no match".
        why = None if matches else runs.no_longer_waiting(client, wanted)
        if why is not None:
            raise _fail(why, EXIT_FAILED)
    if len(matches) != 1:
        raise _fail(
            f"no single waiting run matches {ref!r} ({len(matches)} found); see `conveyor approvals`",
            EXIT_INPUT,
        )
    return matches[0]


def _table(waiting: list[runs.Waiting], asks: list[str]) -> Table:
    table = Table(title="waiting for approval")
    for col in ("run", "name", "digest", "environment", "since", "deadline", "waits for"):
        table.add_column(col, overflow="fold")
    for w, ask in zip(waiting, asks, strict=True):
        table.add_row(
            w.run_id,
            w.run_name,
            (w.digest or "-")[:19],
            w.environment or "-",
            w.since[:19],
            (w.deadline or "-")[:19],
            ask.splitlines()[0].lstrip("# ") if ask else "-",
        )
    return table


def list_approvals(
    as_json: Annotated[bool, typer.Option("--json", help="print a JSON list for scripts")] = False,
) -> None:
    """List the runs that wait for an approval (paused or suspended)."""
    from prefect import get_client

    with boundary():
        check_server()
        with get_client(sync_client=True) as client:
            waiting = runs.waiting(client)
            if as_json:
                typer.echo(json.dumps([w.to_json() for w in waiting], indent=2))
                return
            if not waiting:
                console.print("no flow run waits for an approval")
                return
            asks = [runs.description(client, w.run_id, w.pause_key) for w in waiting]
            console.print(_table(waiting, asks))
            for w, ask in zip(waiting, asks, strict=True):
                console.rule(f"{w.run_name} ({w.run_id})")
                console.print(Markdown(ask))
                console.print(
                    Text(f"conveyor approve {w.run_id} --as NAME   (or reject ... --reason TEXT)")
                )


@dataclass(frozen=True)
class Signing:
    """How to sign an answer (``--key``, ``--sign``), and whether only to print it."""

    key: Path | None = None
    agent: bool = False
    print_only: bool = False

    @property
    def wanted(self) -> bool:
        return self.key is not None or self.agent or self.print_only


def _signature(
    request: runs.Waiting, decision: str, approver: str, comment: str, how: Signing
) -> str:
    if not (request.app and request.digest and request.environment):
        raise _fail(f"run {request.run_name} has no approval request to sign", EXIT_INPUT)
    waiting = {
        "app": request.app,
        "environment": request.environment,
        "digest": request.digest,
        "run_id": request.run_id,
    }
    return signed_token(
        waiting,
        decision="approve" if decision == "approve" else "reject",
        approver=approver,
        comment=comment,
        key=how.key,
    )


def _resume(
    ref: str,
    decision: str,
    approver: str,
    comment: str,
    digest: str | None,
    how: Signing = Signing(),
) -> None:
    from prefect import get_client

    with boundary():
        check_server()
        with get_client(sync_client=True) as client:
            request = _find(client, ref)
            if digest is not None and request.digest and digest != request.digest:
                raise _fail(
                    f"run {request.run_name} asks about {request.digest}, not {digest}: "
                    "nothing was answered",
                    EXIT_INPUT,
                )
            answer = {"decision": decision, "approver": approver, "comment": comment}
            if request.app is not None:
                # A request stored by the durable gate: its form binds the answer to the
                # digest and environment. An older pause's form has no such fields, and
                # the server refuses fields a form does not declare.
                answer["digest"] = request.digest or ""
                answer["environment"] = request.environment or ""
            if how.wanted:
                answer["signature"] = _signature(request, decision, approver, comment, how)
                if how.print_only:
                    # For the UI's Resume form: paste it into the signature field.
                    print(answer["signature"])
                    return
            try:
                runs.answer(client, request, answer)
            except runs.NotTaken as exc:
                raise _fail(str(exc), EXIT_FAILED) from None
            _report_outcome(client, request, approver)


def _report_outcome(client: Any, request: runs.Waiting, approver: str) -> None:
    """The flow, not the CLI, judges the answer: watch for the run asking again.

    A resumed run is scheduled for a worker at once, before the flow has read the
    answer, so only a new pause (refused) or an end decides. 30 s covers the resume
    latency measured on a loaded 2-core machine (median 11.8 s, at most 18.8 s).
    """
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        state = client.read_flow_run(UUID(request.run_id)).state
        if state and state.is_paused() and state.state_details.pause_key != request.pause_key:
            asks = next((w for w in runs.waiting(client) if w.run_id == request.run_id), None)
            if asks is not None and request.pause_key in asks.counted:
                # N of M: the answer counted and the run asks the others.
                console.print(
                    Text(f"answered run {request.run_name} as {approver}: {asks.progress}")
                )
                return
            raise _fail(
                f"refused: the run did not accept the answer of {approver} and still waits; "
                f"its log says why (conveyor approvals lists it again)",
                EXIT_FAILED,
            )
        if state and state.is_final():
            console.print(
                Text(f"answered run {request.run_name} as {approver}; it ended {state.name}")
            )
            return
        time.sleep(0.25)
    console.print(Text(f"answered run {request.run_name} as {approver}; a worker goes on with it"))


DigestOpt = Annotated[
    str | None,
    typer.Option(help="the digest you reviewed; refused if the run asks about another"),
]


KeyOpt = Annotated[
    Path | None,
    typer.Option(
        "--key",
        help="sign the answer with this SSH key (a private key, or a .pub held by ssh-agent)",
    ),
]
RunArg = Annotated[str, typer.Argument(help="flow run id, id prefix or name")]
AsOpt = Annotated[str, typer.Option("--as", help="your name, as on the approvers list")]
SignOpt = Annotated[bool, typer.Option("--sign", help="sign with the key in ssh-agent")]
PrintOpt = Annotated[
    bool,
    typer.Option(
        "--print", help="print the signed answer for the UI's signature field; answer nothing"
    ),
]


def approve(
    run: RunArg,
    as_: AsOpt,
    comment: Annotated[str, typer.Option(help="why")] = "",
    digest: DigestOpt = None,
    key: KeyOpt = None,
    sign: SignOpt = False,
    print_only: PrintOpt = False,
) -> None:
    """Approve the release a run waits on (signed with --key or --sign where it must be)."""
    _resume(run, "approve", as_, comment, digest, Signing(key, sign, print_only))


def reject(
    run: RunArg,
    as_: AsOpt,
    reason: Annotated[str, typer.Option(help="why it must not go on")],
    digest: DigestOpt = None,
    key: KeyOpt = None,
    sign: SignOpt = False,
    print_only: PrintOpt = False,
) -> None:
    """Reject the release a run waits on; the run ends Failed with the reason."""
    _resume(run, "reject", as_, reason, digest, Signing(key, sign, print_only))
