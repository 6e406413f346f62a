"""How ``conveyor approve`` answers on a real Prefect server: two people answering one
request at once (one answer is taken, the other is told whose), and how it reads the
run's next ask: an answer that counted toward N of M, or one the run refused."""

from __future__ import annotations

import contextvars
import json
import secrets
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from uuid import UUID

import pytest
import typer
from prefect import flow, get_client
from prefect.input import keyset_from_base_key
from prefect.settings import PREFECT_API_URL, temporary_settings
from prefect.states import Cancelled, Suspended

from conveyor.approvals.waiting import REQUEST_PREFIX
from conveyor.cli import runs
from conveyor.cli.approvals import _find, _report_outcome
from flows.approval_form import ApprovalInput
from tests.approval_support import waiting_request
from tests.pipeline_support import Stack
from tests.pipeline_support import stack as stack  # the shared session fixture

pytestmark = pytest.mark.prefect


@flow(name="promote")
def promote() -> None:
    pass


@pytest.fixture
def client(stack: Stack) -> Iterator[Any]:
    """A client of the shared server; the API URL stays set while the test runs, so every
    Prefect client it makes talks to that server too."""
    with (
        temporary_settings({PREFECT_API_URL: stack.prefect.api_url}),
        get_client(sync_client=True) as client,
    ):
        yield client


def _asked_again(client: Any, counted: tuple[str, ...]) -> runs.Waiting:
    """A run that was asked under key -1 and now waits under key -2, as the gate leaves it."""
    run = client.create_flow_run(promote)
    request = waiting_request(
        str(run.id),
        approvers=("alice", "bob"),
        pause_key="approval-production-aaaaaaaaaaaa-2",
        progress="1 of 2: alice approved; waiting for one more",
        counted=counted,
    )
    key = request.pause_key
    client.create_flow_run_input(run.id, REQUEST_PREFIX + key, json.dumps(request.to_json()))
    client.set_flow_run_state(run.id, Suspended(timeout_seconds=600, pause_key=key), force=True)
    answered = runs.Waiting(
        run_id=str(run.id),
        run_name=run.name,
        state="Suspended",
        app="shop",
        version="1.2.0",
        digest=request.digest,
        environment="production",
        since=request.since.isoformat(),
        deadline=None,
        approvers=["alice", "bob"],
        pause_key="approval-production-aaaaaaaaaaaa-1",
    )
    return answered


def test_approve_reports_a_counted_answer_and_a_refused_one(
    client: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    answered = _asked_again(client, counted=("approval-production-aaaaaaaaaaaa-1",))
    refused = _asked_again(client, counted=())
    try:
        _report_outcome(client, answered, "alice")
        out = " ".join(capsys.readouterr().out.split())  # rich wraps at the width
        assert "as alice: 1 of 2: alice approved; waiting for one more" in out
        with pytest.raises(typer.Exit) as raised:
            _report_outcome(client, refused, "mallory")
    finally:
        # Other modules list every waiting run of the shared server.
        for run in (answered, refused):
            client.set_flow_run_state(UUID(run.run_id), Cancelled(), force=True)
    assert raised.value.exit_code != 0
    assert "refused: the run did not accept the answer of mallory" in capsys.readouterr().err


def _waiting_with_its_form(client: Any) -> runs.Waiting:
    """A run suspended at a gate as ``suspend_flow_run`` leaves it: request, form, keyset;
    of a deployment (the server reschedules a resumed suspended run through it), one that
    no worker serves, so it stays where the answer leaves it."""
    deployment = client.create_deployment(
        flow_id=client.create_flow(promote), name=f"answers-{secrets.token_hex(4)}"
    )
    run = client.create_flow_run_from_deployment(deployment)
    key = "approval-production-bbbbbbbbbbbb-1"
    request = waiting_request(str(run.id), approvers=("alice", "bob"), pause_key=key)
    client.create_flow_run_input(run.id, REQUEST_PREFIX + key, json.dumps(request.to_json()))
    keyset = keyset_from_base_key(f"suspended-{key}")
    ApprovalInput.save(keyset, flow_run_id=run.id)
    state = Suspended(timeout_seconds=600, pause_key=key)
    state.state_details.run_input_keyset = keyset
    client.set_flow_run_state(run.id, state, force=True)
    return next(w for w in runs.waiting(client) if w.run_id == str(run.id))


def test_two_people_answering_at_once_one_is_taken_and_the_other_told_whose(
    client: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    request = _waiting_with_its_form(client)
    decisions = {"alice": "approve", "bob": "reject"}
    both = threading.Barrier(2)

    def answer_as(name: str) -> str | None:
        form = {
            "decision": decisions[name],
            "approver": name,
            "digest": request.digest or "",
            "environment": "production",
            "comment": "at once",
        }
        with get_client(sync_client=True) as own:
            both.wait(timeout=30)
            try:
                runs.answer(own, request, form)
            except runs.NotTaken as exc:
                return str(exc)
        return None

    try:
        # Each thread runs in a copy of this context: the API URL is a context setting.
        contexts = {name: contextvars.copy_context() for name in decisions}
        with ThreadPoolExecutor(2) as pool:
            refusals = pool.map(lambda n: contexts[n].run(answer_as, n), decisions)
            said = dict(zip(decisions, refusals, strict=True))
        taken = [name for name, refusal in said.items() if refusal is None]
        assert len(taken) == 1, said
        (winner,) = taken
        (loser,) = set(decisions) - {winner}
        assert f"answered first, by {winner} ({decisions[winner]})" in str(said[loser])
        stored = client.read_flow_run_input(
            UUID(request.run_id), f"suspended-{request.pause_key}-response"
        )
        assert json.loads(stored)["approver"] == winner
        # Later, too, an answer to a request already answered is not taken.
        with pytest.raises(runs.NotTaken, match=f"answered first, by {winner}"):
            runs.answer(client, request, {"decision": "approve", "approver": "carol"})
        # And `conveyor approve RUN` started after that says so, not "no match".
        with pytest.raises(typer.Exit) as raised:
            _find(client, request.run_id)
        assert raised.value.exit_code == 1
        err = " ".join(capsys.readouterr().err.split())
        assert f"the last answer it took: {winner} ({decisions[winner]})" in err
    finally:
        client.set_flow_run_state(UUID(request.run_id), Cancelled(), force=True)
