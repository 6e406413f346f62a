"""Recovery on the real parts: production that fails its checks goes back to the release
before it, and a run killed mid-way is finished by the next run without redoing work.

The flows run on a worker: ``ship`` hands the release over to a ``promote`` run at the
production gate, and that run is the one answered, deployed and rolled back. The two
rollback tests share one app and its first approved release.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import docker

from tests.pipeline_support import (
    END_TO_END,
    ENDED,
    App,
    Released,
    Stack,
    allow_auto_approve,
    check,
    conveyor,
    drivers,
    pipeline_data,
    port_of,
    processes_of_run,
    promote_run,
    released_fixture,
    served_version,
    start_ship,
    wait_for,
    write_pipeline,
)
from tests.pipeline_support import app as app  # the per-test sample app
from tests.pipeline_support import stack as stack  # the shared session fixture
from tests.pipeline_support import worker as worker  # the session's worker, autouse

pytestmark = END_TO_END


def _approve_from_terminal(stack: Stack, pipeline: Path, logs: Path) -> str:
    """Ship, answer the production gate with ``conveyor approve``; the promote run's
    final state type."""
    flow = start_ship(stack, pipeline, logs / f"ship-{pipeline.stem}.log")
    run_id = promote_run(stack, pipeline)
    stack.api.wait_state(run_id, ("PAUSED", *ENDED), timeout=150)
    assert flow.wait(60) == 0, flow.output[-3000:]
    name = stack.api.run(run_id)["name"]
    code, out = conveyor(
        stack,
        ["approve", name, "--as", "alice", "--comment", "ok"],
        logs / f"approve-{pipeline.stem}.log",
    )
    assert code == 0 and f"answered run {name} as alice" in out, out[-2000:]
    return str(stack.api.wait_state(run_id, ENDED, timeout=180)["type"])


def _first_approved_from_terminal(stack: Stack, app: App, root: Path) -> dict[str, Any]:
    """The first release, approved from the terminal into production; its pipeline data."""
    first = pipeline_data(app)
    done = _approve_from_terminal(stack, write_pipeline(root / "v1.yaml", first), root)
    assert done == "COMPLETED"
    return first


released = released_fixture(_first_approved_from_terminal)


def test_failing_production_checks_roll_back_to_the_previous_release(
    stack: Stack, released: Released
) -> None:
    app, root = released.app, released.root
    before = app.current("production")
    v1, v1_digest = before.labels["conveyor.version"], before.labels["conveyor.digest"]

    v2 = app.commit("fails-production")
    # Production's checks accept only v1's /version: v2 deploys, fails them, goes back.
    production = [check("health answers", "/health", "ok"), check("old version", "/version", v1)]
    second = allow_auto_approve(
        pipeline_data(app, production=production, ports=drivers(released.first))
    )
    # Next to the first file: a pipeline file may build only inside its own folder tree.
    pipeline = write_pipeline(root / "fails-production.yaml", second)
    flow = start_ship(stack, pipeline, root / "ship-fails-production.log", "--auto-approve")
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
    assert served_version(port_of(released.first, "production")) == v1
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
    stack: Stack, released: Released
) -> None:
    """The approval travels with the image: promoting an approved digest again (here
    after a rollback) needs no second pause, and the rollback flow restores the release
    production ran before."""
    app, root = released.app, released.root
    port = port_of(released.first, "production")
    before = app.current("production").labels["conveyor.version"]
    newer = app.commit("approved-again")
    pipeline = write_pipeline(
        root / "approved-again.yaml", pipeline_data(app, ports=drivers(released.first))
    )
    assert _approve_from_terminal(stack, pipeline, root) == "COMPLETED"
    digest = app.current("production").labels["conveyor.digest"]
    assert served_version(port) == newer

    code, out = conveyor(stack, ["rollback", "production", "-p", str(pipeline)], root / "rb.log")
    assert code == 0, out[-3000:]
    assert served_version(port) == before

    code, out = conveyor(
        stack, ["promote", digest, "-p", str(pipeline)], root / "pr.log", timeout=150
    )
    assert code == 0, out[-3000:]
    run_id = stack.api.runs_of(pipeline, flow="promote")[-1]["id"]
    assert "PAUSED" not in stack.api.state_types(run_id)
    logs = stack.api.logs(run_id)
    assert any("was approved for production by alice" in line for line in logs), logs
    assert served_version(port) == newer
    assert app.current("production").labels["conveyor.digest"] == digest
