"""Runs of one stack as outsiders touch them (issue 13): a forced state change of a
waiting promote run, and the CLI of one ship beside other ships of the same file.

Through the session's Prefect server, registry and a process worker; the release goes
straight to a gated production (no integration), so the run waits within a minute.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest

from conveyor.cli.pipeline_cmds import _handovers
from conveyor.cli.prefect_setup import prefect_client
from tests.pipeline_support import (
    END_TO_END,
    App,
    Stack,
    Worker,
    conveyor,
    environment,
    new_app,
    pipeline_data,
    promote_run,
    served,
    start_ship,
    write_pipeline,
)
from tests.pipeline_support import stack as stack  # the shared session fixture

pytestmark = END_TO_END
ENDED = ("COMPLETED", "FAILED", "CRASHED", "CANCELLED")


def _production_only(app: App) -> dict[str, Any]:
    data = pipeline_data(app)
    health = [{"name": "health answers", "path": "/health", "expect_body_contains": "ok"}]
    data["environments"] = [environment("production", "production-ready", health, "10m")]
    return data


@pytest.fixture(scope="module")
def waiting(
    stack: Stack, docker_client: docker.DockerClient, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[App, Path, str, Worker]]:
    """A promote run suspended at production's gate, served by a worker."""
    root = tmp_path_factory.mktemp("boundaries")
    app = new_app(stack, docker_client, root)
    with served(stack, root) as worker:
        try:
            pipeline = write_pipeline(root / "pipeline.yaml", _production_only(app))
            ship = start_ship(stack, pipeline, root / "ship.log")
            run_id = promote_run(stack, pipeline, timeout=180)
            stack.api.wait_state(run_id, ("PAUSED", *ENDED), timeout=120)
            ship.wait(60)
            yield app, pipeline, run_id, worker
        finally:
            app.clean()


def _force(stack: Stack, run_id: str, state_type: str) -> None:
    body = {"state": {"type": state_type, "name": state_type.title()}, "force": True}
    response = stack.api.http.post(f"/flow_runs/{run_id}/set_state", json=body)
    response.raise_for_status()


def test_a_forced_reschedule_of_a_waiting_run_asks_again_without_a_traceback(
    stack: Stack, waiting: tuple[App, Path, str, Worker]
) -> None:
    app, _, run_id, _ = waiting
    first = stack.api.state(run_id)
    assert first["type"] == "PAUSED", first
    key = first["state_details"]["pause_key"]
    _force(stack, run_id, "SCHEDULED")
    # The worker executes it again; the gate finds its fired key unanswered and asks
    # again under the next one, with no process left waiting.
    again = stack.api.wait_state_key(run_id, key[: key.rindex("-") + 1] + "2", timeout=120)
    assert again["type"] == "PAUSED", again
    logs = "\n".join(stack.api.logs(run_id))
    assert "ValidationError" not in logs and "Traceback" not in logs, logs[-3000:]
    assert app.containers("production") == []


def test_a_forced_running_state_is_refused_in_one_line_when_answered(
    stack: Stack, waiting: tuple[App, Path, str, Worker], tmp_path: Path
) -> None:
    app, _, run_id, _ = waiting
    _force(stack, run_id, "RUNNING")
    code, output = conveyor(
        stack, ["approve", run_id, "--as", "alice", "--comment", "ok"], tmp_path / "approve.log"
    )
    lines = [line for line in output.splitlines() if line.strip()]
    assert code != 0 and "Traceback" not in output and "ValidationError" not in output, output
    assert len(lines) <= 2, output
    assert app.containers("production") == []


def test_the_cli_follows_only_the_promote_runs_its_own_run_handed_over_to(
    stack: Stack,
) -> None:
    """Eight ships of one pipeline file at once: each CLI followed all eight promote
    runs (the filter was the file), so every CLI ended only with the last of them."""
    before = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=5)
    flow_id = stack.api._post("/flows/", {"name": "promote"})["id"]
    ship_a, ship_b = "11111111-1111-4111-8111-111111111111", "22222222-2222-4222-8222-222222222222"

    def promote_of(parent: str) -> str:
        run = stack.api._post(
            "/flow_runs/",
            {
                "flow_id": flow_id,
                "parameters": {"pipeline": "same.yaml"},
                "idempotency_key": f"handover-{parent}-production-sha256:{'ab' * 32}",
                "state": {"type": "COMPLETED", "name": "Completed"},
            },
        )
        return str(run["id"])

    mine, theirs = promote_of(ship_a), promote_of(ship_b)
    chained = promote_of(mine)
    with prefect_client(stack.prefect.api_url) as client:
        first = [str(r.id) for r in _handovers(client, before, {ship_a})]
        then = [str(r.id) for r in _handovers(client, before, {ship_a, mine})]
    assert first == [mine]
    assert then == [chained] and theirs not in then
