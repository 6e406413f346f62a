"""Recovery on the real parts: production that fails its checks goes back to the release
before it, and a run killed mid-way is finished by the next run without redoing work.

The flows run on a worker: ``ship`` hands the release over to a ``promote`` run at the
production gate, and that run is the one answered, deployed and rolled back.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import docker
import pytest

from tests.pipeline_support import (
    App,
    Stack,
    Worker,
    allow_auto_approve,
    check,
    conveyor,
    drivers,
    pipeline_data,
    port_of,
    processes_of_run,
    promote_run,
    serve,
    served_version,
    start_ship,
    wait_for,
    write_pipeline,
)
from tests.pipeline_support import app as app  # the per-test sample app
from tests.pipeline_support import stack as stack  # the shared session fixture

pytestmark = [pytest.mark.docker, pytest.mark.registry, pytest.mark.trivy, pytest.mark.prefect]
ENDED = ("FAILED", "CRASHED", "COMPLETED", "CANCELLED")


@pytest.fixture(scope="module", autouse=True)
def worker(stack: Stack) -> Worker:
    return serve(stack)  # the session's worker


def _approve_from_terminal(stack: Stack, pipeline: Path, tmp_path: Path) -> str:
    """Ship, answer the production gate with ``conveyor approve``; the promote run's
    final state type."""
    flow = start_ship(stack, pipeline, tmp_path / "ship-v1.log")
    run_id = promote_run(stack, pipeline)
    stack.api.wait_state(run_id, ("PAUSED", *ENDED), timeout=150)
    assert flow.wait(60) == 0, flow.output[-3000:]
    name = stack.api.run(run_id)["name"]
    code, out = conveyor(
        stack, ["approve", name, "--as", "alice", "--comment", "ok"], tmp_path / "approve.log"
    )
    assert code == 0 and f"answered run {name} as alice" in out, out[-2000:]
    return str(stack.api.wait_state(run_id, ENDED, timeout=180)["type"])


def test_failing_production_checks_roll_back_to_the_previous_release(
    stack: Stack, app: App, tmp_path: Path
) -> None:
    first = pipeline_data(app)
    done = _approve_from_terminal(stack, write_pipeline(tmp_path / "v1.yaml", first), tmp_path)
    assert done == "COMPLETED"
    v1 = app.versions[-1]
    v1_digest = app.current("production").labels["conveyor.digest"]

    v2 = app.commit("v2")
    # Production's checks accept only v1's /version: v2 deploys, fails them, goes back.
    production = [check("health answers", "/health", "ok"), check("old version", "/version", v1)]
    second = allow_auto_approve(pipeline_data(app, production=production, ports=drivers(first)))
    pipeline = write_pipeline(tmp_path / "v2.yaml", second)
    flow = start_ship(stack, pipeline, tmp_path / "ship-v2.log", "--auto-approve")
    # The CLI follows the promote run ship handed over to, and fails with it.
    assert flow.wait(240) != 0, flow.output[-3000:]
    run_id = stack.api.runs_of(pipeline, "promote")[-1]["id"]
    final = stack.api.wait_state(run_id, ENDED, timeout=30)
    assert final["type"] == "FAILED", final
    assert "RolledBack" in final["message"], final["message"]
    assert f"failed verification of {v2}" in final["message"]
    assert f"rolled back to {v1}" in final["message"]
    restored = app.current("production")
    assert restored.labels["conveyor.digest"] == v1_digest
    assert v1_digest in app.image_digests(restored)
    assert served_version(port_of(first, "production")) == v1
    assert app.current("integration").labels["conveyor.version"] == v2


def _integration_running(app: App, version: str) -> str | None:
    for container in app.containers("integration"):
        if container.labels.get("conveyor.version") == version and container.status == "running":
            return str(container.id)
    return None


def test_a_killed_run_is_finished_by_the_next_without_redeploying(
    stack: Stack, app: App, tmp_path: Path, docker_client: docker.DockerClient
) -> None:
    data = allow_auto_approve(pipeline_data(app))
    pipeline = write_pipeline(tmp_path / "pipeline.yaml", data)
    version = app.versions[-1]
    first = start_ship(stack, pipeline, tmp_path / "ship-1.log", "--auto-approve")
    first_id = stack.api.wait_run(pipeline)
    container_id = wait_for(
        "the integration container of the first run",
        lambda: _integration_running(app, version) if first.proc.poll() is None else "exited",
        timeout=150,
        interval=0.1,
    )
    # The run executes on the worker: kill its flow process (and the following CLI).
    for pid in processes_of_run(first_id):
        os.kill(pid, signal.SIGKILL)
    first.kill()
    assert container_id != "exited", first.output[-3000:]
    assert app.containers("production") == []

    second = start_ship(stack, pipeline, tmp_path / "ship-2.log", "--auto-approve")
    assert second.wait(240) == 0, second.output[-3000:]
    run_id = stack.api.runs_of(pipeline)[-1]["id"]
    assert run_id != first_id
    assert stack.api.state(run_id)["type"] == "COMPLETED"
    promoted = promote_run(stack, pipeline)
    assert stack.api.state(promoted)["type"] == "COMPLETED", stack.api.logs(promoted)[-20:]
    assert app.current("integration").id == container_id
    logs = stack.api.logs(run_id)
    assert any(f"integration: {version} already runs healthy" in line for line in logs)
    assert any("is already pushed" in line for line in logs)
    digest = app.current("integration").labels["conveyor.digest"]
    assert app.current("production").labels["conveyor.digest"] == digest
    assert served_version(port_of(data, "production")) == version


def test_rollback_then_promote_goes_on_with_the_recorded_approval(
    stack: Stack, app: App, tmp_path: Path
) -> None:
    """The approval travels with the image: promoting an approved digest again (here
    after a rollback) needs no second pause, and the rollback flow restores v1."""
    data = allow_auto_approve(pipeline_data(app))
    # Two files with the same content: the test finds each run by its pipeline file.
    first = write_pipeline(tmp_path / "v1.yaml", data)
    pipeline = write_pipeline(tmp_path / "pipeline.yaml", data)
    flow = start_ship(stack, first, tmp_path / "ship-v1.log", "--auto-approve")
    assert flow.wait(240) == 0, flow.output[-3000:]
    assert stack.api.state(promote_run(stack, first))["type"] == "COMPLETED"
    v1 = app.versions[-1]
    v2 = app.commit("v2")
    assert _approve_from_terminal(stack, pipeline, tmp_path) == "COMPLETED"
    v2_digest = app.current("production").labels["conveyor.digest"]
    assert served_version(port_of(data, "production")) == v2

    code, out = conveyor(
        stack, ["rollback", "production", "-p", str(pipeline)], tmp_path / "rb.log"
    )
    assert code == 0, out[-3000:]
    assert served_version(port_of(data, "production")) == v1

    code, out = conveyor(
        stack, ["promote", v2_digest, "-p", str(pipeline)], tmp_path / "pr.log", timeout=150
    )
    assert code == 0, out[-3000:]
    run_id = stack.api.runs_of(pipeline, flow="promote")[-1]["id"]
    assert "PAUSED" not in stack.api.state_types(run_id)
    logs = stack.api.logs(run_id)
    assert any("was approved for production by alice" in line for line in logs), logs
    assert served_version(port_of(data, "production")) == v2
    assert app.current("production").labels["conveyor.digest"] == v2_digest
