"""How ``conveyor approve`` reads the run's next ask on a real Prefect server: an answer
that counted toward N of M, or one the run refused."""

from __future__ import annotations

import json
from typing import Any
from uuid import UUID

import pytest
import typer
from prefect import flow, get_client
from prefect.settings import PREFECT_API_URL, temporary_settings
from prefect.states import Cancelled, Suspended

from conveyor.approvals.waiting import REQUEST_PREFIX
from conveyor.cli import runs
from conveyor.cli.approvals import _report_outcome
from tests.approval_support import waiting_request
from tests.pipeline_support import Stack
from tests.pipeline_support import stack as stack  # the shared session fixture

pytestmark = pytest.mark.prefect


@flow(name="promote")
def promote() -> None:
    pass


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
    stack: Stack, capsys: pytest.CaptureFixture[str]
) -> None:
    with (
        temporary_settings({PREFECT_API_URL: stack.prefect.api_url}),
        get_client(sync_client=True) as client,
    ):
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
