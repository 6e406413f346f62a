"""Flow runs seen from the CLI: start a deployment, follow its logs, find waiting approvals.

The pipeline commands run nothing in this process: they start the deployment a worker
executes (the durable path a team uses) and follow the run's logs from the server.
Logs are printed as text, and a log line's traceback is cut to its first line: the
full one stays in the run's logs in the UI.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any
from uuid import UUID

from conveyor.errors import ConveyorError

# promote's gate stores each approval request as a flow run input under this prefix and
# the run's pause key (see flows/approval_gate.py).
REQUEST_PREFIX = "conveyor-request-"
POLL_S = 1.0
# How long an ended or paused run's last log lines are waited for, and how often asked.
LAST_LOGS_S = 2.0
LAST_LOGS_POLL_S = 0.2
TRACEBACK = "Traceback (most recent call last)"
# Prefect keys a pause's inputs by the pause's state name: suspend_flow_run's, then
# pause_flow_run's ("suspended-KEY-response").
PAUSE_KINDS = ("suspended", "paused")


class DeploymentMissing(ConveyorError):
    """The deployment a command starts is not registered on the server."""


@dataclass(frozen=True)
class Waiting:
    """One approval request, as ``conveyor approvals --json`` prints it."""

    run_id: str
    run_name: str
    state: str
    app: str | None
    version: str | None
    digest: str | None
    environment: str | None
    since: str
    deadline: str | None
    approvers: list[str]
    pause_key: str | None
    # "1 of 2: alice approved; waiting for one more", and the pause keys whose answers counted.
    progress: str = ""
    counted: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _iso(value: dt.datetime | None) -> str | None:
    return value.astimezone(dt.UTC).isoformat() if value is not None else None


def _read_input(client: Any, run_id: UUID, key: str) -> str | None:
    """A flow run input's JSON text, None when the run has none under ``key``."""
    from prefect.exceptions import ObjectNotFound, PrefectHTTPStatusError

    try:
        return str(client.read_flow_run_input(run_id, key))
    except ObjectNotFound:
        return None
    except PrefectHTTPStatusError as exc:
        if exc.response.status_code == 404:
            return None
        raise


def form_saved(client: Any, run: Any) -> bool:
    """Whether a pause that waits for input can take an answer yet.

    Prefect 3.9 sets the Suspended state before it saves the form's schema, and the
    server refuses an answer in between ("Run input schema not found"): such a run is
    not waiting for anyone yet.
    """
    keyset = run.state.state_details.run_input_keyset
    return not keyset or _read_input(client, run.id, keyset["schema"]) is not None


def _request(client: Any, run: Any, key: str | None) -> dict[str, Any]:
    raw = _read_input(client, run.id, REQUEST_PREFIX + key) if key else None
    if raw is None:
        return {}
    try:
        data = json.loads(raw)
    except (TypeError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def waiting(client: Any) -> list[Waiting]:
    """Every Paused or Suspended run (both are Prefect's PAUSED type), oldest first."""
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterState,
        FlowRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType
    from prefect.client.schemas.sorting import FlowRunSort

    flt = FlowRunFilter(
        state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.PAUSED]))
    )
    runs = client.read_flow_runs(flow_run_filter=flt, sort=FlowRunSort.START_TIME_ASC, limit=200)
    found = []
    for run in runs:
        details = run.state.state_details
        if not form_saved(client, run):
            continue
        req = _request(client, run, details.pause_key)
        params = run.parameters or {}
        found.append(
            Waiting(
                run_id=str(run.id),
                run_name=run.name,
                state=run.state.name,
                app=req.get("app"),
                version=req.get("version"),
                digest=req.get("digest", params.get("digest")),
                environment=req.get("environment", params.get("environment")),
                since=req.get("since") or _iso(run.state.timestamp) or "",
                deadline=req.get("deadline") or _iso(details.pause_timeout),
                approvers=list(req.get("approvers", [])),
                pause_key=details.pause_key,
                progress=str(req.get("progress") or ""),
                counted=[str(k) for k in req.get("counted") or []],
            )
        )
    return found


class NotTaken(ConveyorError):
    """An answer the server did not take: someone answered first, or the request ended."""


def answer(client: Any, request: Waiting, run_input: dict[str, Any]) -> None:
    """Resume the waiting run with ``run_input``, or raise ``NotTaken`` saying why not.

    The server checks that the run still waits, moves it on and stores the answer in one
    transaction, so of two people answering at once one answer is taken. Prefect's own
    ``resume_flow_run`` returns quietly when the server aborts because the run no longer
    waits: both would be told they had answered. Here the other is told whose answer was
    taken instead."""
    from prefect.client.schemas.objects import StateType
    from prefect.client.schemas.responses import SetStateStatus
    from prefect.exceptions import PrefectHTTPStatusError

    try:
        response = client.resume_flow_run(UUID(request.run_id), run_input=run_input)
    except PrefectHTTPStatusError as exc:
        if exc.response.status_code != 409:  # the answer's key, stored meanwhile
            raise
        raise NotTaken(_taken_instead(client, request)) from None
    if response.status == SetStateStatus.ACCEPT:
        return
    if response.status == SetStateStatus.ABORT:
        raise NotTaken(_taken_instead(client, request))
    if response.state is not None and response.state.type == StateType.FAILED:
        raise NotTaken(f"run {request.run_name} can no longer be answered: its approval timed out")
    raise NotTaken(f"the server refused the answer: {response.details.reason}")


def _pause_inputs(pause_key: str | None, part: str) -> list[str]:
    """The keys a pause's ``part`` (description, response, schema) may be stored under."""
    return [f"{kind}-{pause_key}-{part}" for kind in PAUSE_KINDS]


def _answer_of(raw: str) -> str:
    """'alice (approve)': who gave a stored answer, and what."""
    first = json.loads(raw)
    return f"{first.get('approver', '?')} ({first.get('decision', '?')})"


def _taken_instead(client: Any, request: Waiting) -> str:
    for key in _pause_inputs(request.pause_key, "response"):
        raw = _read_input(client, UUID(request.run_id), key)
        if raw is not None:
            return (
                f"run {request.run_name} was answered first, by {_answer_of(raw)}: your answer "
                "was not taken; `conveyor approvals` shows whether it asks again"
            )
    return no_longer_waiting(client, UUID(request.run_id)) or (
        f"run {request.run_name} is gone: your answer was not taken"
    )


def no_longer_waiting(client: Any, run_id: UUID) -> str | None:
    """Why the run ``run_id`` takes no answer now, with the last answer it took; None when
    the server has no such run."""
    from prefect.exceptions import ObjectNotFound

    try:
        run = client.read_flow_run(run_id)
    except ObjectNotFound:
        return None
    answers = [
        found
        for kind in PAUSE_KINDS
        for found in client.filter_flow_run_input(run_id, f"{kind}-", 200, set())
        if found.key.endswith("-response")
    ]
    last = max(answers, key=lambda found: found.created, default=None)
    took = f"; the last answer it took: {_answer_of(last.value)}" if last else ""
    state = run.state.name if run.state is not None else "without a state"
    return f"run {run.name} waits for no answer now (it is {state}){took}: nothing was answered"


def description(client: Any, run_id: str, pause_key: str | None) -> str:
    """The markdown the approval form shows, or a note when the pause has none."""
    for key in _pause_inputs(pause_key, "description"):
        raw = _read_input(client, UUID(run_id), key)
        if raw is None:
            continue
        try:
            return str(json.loads(raw))
        except (TypeError, ValueError):
            return str(raw)
    return "(no description: a pause without an approval form)"


def find_deployment(client: Any, name: str) -> Any:
    """The deployment ``flow/deployment``, or ``DeploymentMissing`` saying how to register it."""
    from prefect.exceptions import ObjectNotFound

    try:
        return client.read_deployment_by_name(name)
    except ObjectNotFound:
        raise DeploymentMissing(
            f"deployment {name} is not registered on {client.api_url}: run `conveyor up` "
            "(it registers prefect.yaml's deployments), or `prefect deploy --all`"
        ) from None


def start(client: Any, deployment: Any, parameters: dict[str, Any], tags: list[str]) -> Any:
    """A new run of ``deployment``; a worker of its pool picks it up."""
    return client.create_flow_run_from_deployment(deployment.id, parameters=parameters, tags=tags)


def _noise(message: str) -> bool:
    """Prefect's line after every task that went well: the terminal needs the others."""
    return message == "Finished in state Completed()"


def log_line(message: str) -> str:
    """A log message as the terminal shows it: a traceback cut to the line before it."""
    head, _, _ = message.partition(TRACEBACK)
    return head.rstrip() or message.splitlines()[0]


def _closing(entry: Any) -> str | None:
    """The state named by the engine's last line of a run that ended in its process: the
    flow's own (no task run) "Finished in state NAME(...)" line."""
    head, found, rest = str(entry.message).partition("Finished in state ")
    if entry.task_run_id is not None or head or not found:
        return None
    return rest.partition("(")[0]


def follow(
    client: Any,
    run_id: UUID,
    emit: Callable[[str], None],
    *,
    stop_on_pause: bool = True,
    timeout_s: float = 6 * 3600,
) -> Any:
    """Print the run's logs until it ends (or waits for an approval); return its last state."""
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
    from prefect.client.schemas.sorting import LogSort

    seen, closed = 0, set()
    flt = LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run_id]))
    deadline = time.monotonic() + timeout_s
    settled_at: float | None = None
    while True:
        run = client.read_flow_run(run_id)
        logs = client.read_logs(log_filter=flt, sort=LogSort.TIMESTAMP_ASC, offset=seen, limit=200)
        for entry in logs:
            closed.add(_closing(entry))
            if not _noise(entry.message):
                emit(log_line(entry.message))
        seen += len(logs)
        state = run.state
        final = state is not None and state.is_final()
        if len(logs) < 200 and (
            final or (stop_on_pause and state is not None and state.is_paused())
        ):
            # Workers send logs in batches, and the last may land just after the state: an
            # ended run's last line is the engine's closing one, so wait for that (a run the
            # server ended, or one paused in its process, has none: a bounded wait, then).
            settled_at = settled_at or time.monotonic()
            if state.name in closed or time.monotonic() - settled_at >= LAST_LOGS_S:
                return state
            time.sleep(LAST_LOGS_POLL_S)
            continue
        if time.monotonic() > deadline:
            return state
        if len(logs) < 200:
            time.sleep(POLL_S)
