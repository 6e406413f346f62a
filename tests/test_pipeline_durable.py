"""Promotion that survives (issue 9), through deployments and a real process worker.

One release is shipped; ``ship`` hands it over to a ``promote`` run that suspends at
the production gate. Every worker and flow process is then killed while it waits, a
worker is started again, and the approval from ``conveyor approve`` takes it into
production. The same module goes on with what a Retry and odd answers may do.
"""

from __future__ import annotations

import datetime as dt
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import pytest

from tests.pipeline_support import (
    END_TO_END,
    ENDED,
    REPO,
    App,
    Stack,
    conveyor,
    new_app,
    pipeline_data,
    processes_of_run,
    serve,
    wait_for,
    write_pipeline,
)
from tests.pipeline_support import stack as stack  # the shared session fixture

pytestmark = END_TO_END


@dataclass
class Durable:
    app: App
    root: Path
    pipeline: Path
    ship_id: str
    promote_id: str
    digest: str
    processes_while_waiting: list[int]
    approve_output: str
    approved_at: float
    newest_run: str = ""
    newest_approved_at: float = 0.0


def _digest_of(stack: Stack, run_id: str) -> str:
    return str(stack.api.run(run_id)["parameters"]["digest"])


def _promote_of(stack: Stack, pipeline: Path, after: int = 0) -> str:
    return str(
        wait_for(
            "a promote run",
            lambda: (
                r[-1]["id"] if len(r := stack.api.runs_of(pipeline, "promote")) > after else None
            ),
            60,
        )
    )


def _wait_log(stack: Stack, run_id: str, text: str) -> str:
    """The run's first log line containing ``text`` (logs reach the server in batches)."""
    return wait_for(
        f"{text!r} in the log of {run_id}",
        lambda: next((line for line in stack.api.logs(run_id) if text in line), None),
        20,
    )


def _record(stack: Stack, run_id: str, durable: Durable) -> dict[str, Any]:
    """The newest release record of the run."""
    records = [a for a in stack.api.artifacts(run_id) if a["key"] == f"release-{durable.app.name}"]
    return max(records, key=lambda a: a["created"])


def _retry(stack: Stack, run_id: str, log: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "prefect", "flow-run", "retry", run_id],
        cwd=REPO,
        env=stack.env(),
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        timeout=60,
        check=True,
    )


@pytest.fixture(scope="module")
def durable(
    stack: Stack, docker_client: docker.DockerClient, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Durable]:
    root = tmp_path_factory.mktemp("durable")
    worker = serve(stack)
    app = new_app(stack, docker_client, root)
    try:
        data = pipeline_data(app)
        data["environments"][1]["approval"]["valid_for"] = "40s"
        pipeline = write_pipeline(root / "pipeline.yaml", data)
        ship_id = stack.api.run_deployment("ship/ship", {"pipeline": str(pipeline)})
        shipped = stack.api.wait_state(ship_id, ENDED, timeout=240)
        assert shipped["type"] == "COMPLETED", stack.api.logs(ship_id)[-20:]
        promote_id = _promote_of(stack, pipeline)
        stack.api.wait_state(promote_id, ("PAUSED", *ENDED), timeout=120)
        wait_for(
            "the promote process to exit", lambda: not processes_of_run(promote_id) or None, 30
        )
        # Every worker and flow process: the session's one worker, then a new one.
        worker.kill()
        waiting = processes_of_run(promote_id)
        serve(stack)
        name = stack.api.run(promote_id)["name"]
        approved_at = time.time()
        _, output = conveyor(
            stack, ["approve", name, "--as", "alice", "--comment", "ok"], root / "approve.log"
        )
        stack.api.wait_state(promote_id, ENDED, timeout=180)
        yield Durable(
            app,
            root,
            pipeline,
            ship_id,
            promote_id,
            _digest_of(stack, promote_id),
            waiting,
            output,
            approved_at,
        )
    finally:
        app.clean()


def test_ship_hands_over_and_says_where_the_release_waits(durable: Durable, stack: Stack) -> None:
    logs = stack.api.logs(durable.ship_id)
    assert any("handed over to promote run" in line for line in logs)
    record = _record(stack, durable.ship_id, durable)
    assert "waits for approval to enter production" in record["data"]
    assert "conveyor approve" in record["data"]


def test_killed_worker_then_approval_takes_the_release_into_production(
    durable: Durable, stack: Stack
) -> None:
    assert durable.processes_while_waiting == []
    assert stack.api.state(durable.promote_id)["type"] == "COMPLETED", stack.api.logs(
        durable.promote_id
    )[-20:]
    production = durable.app.current("production")
    assert production.labels["conveyor.digest"] == durable.digest
    assert any("alice approved" in line for line in stack.api.logs(durable.promote_id))


def test_retry_after_a_new_commit_never_deploys_the_unapproved_digest(
    durable: Durable, stack: Stack
) -> None:
    durable.app.commit("v2")
    before = len(stack.api.runs_of(durable.pipeline, "promote"))
    _retry(stack, durable.ship_id, durable.root / "retry-ship.log")
    stack.api.wait_state(durable.ship_id, ("SCHEDULED", "PENDING", "RUNNING"), timeout=30)
    stack.api.wait_state(durable.ship_id, ENDED, timeout=240)
    newer = _promote_of(stack, durable.pipeline, after=before)
    stack.api.wait_state(newer, ("PAUSED", *ENDED), timeout=120)
    new_digest = _digest_of(stack, newer)
    assert new_digest != durable.digest
    assert durable.app.current("production").labels["conveyor.digest"] == durable.digest
    # An answer naming the digest alice approved, not this one: refused, asked again.
    stack.api.resume_bound(newer, "approve", "alice", durable.digest, "production")
    state = stack.api.wait_state_key(
        newer, f"approval-production-{new_digest[7:19]}-2", timeout=120
    )
    assert state["type"] == "PAUSED"
    _wait_log(stack, newer, "this run promotes")
    assert durable.app.current("production").labels["conveyor.digest"] == durable.digest


def _ship_and_wait(stack: Stack, durable: Durable) -> str:
    """A new ship of the app's newest commit; returns its promote run, once it waits."""
    before = len(stack.api.runs_of(durable.pipeline, "promote"))
    ship = stack.api.run_deployment("ship/ship", {"pipeline": str(durable.pipeline)})
    assert stack.api.wait_state(ship, ENDED, timeout=240)["type"] == "COMPLETED"
    run = _promote_of(stack, durable.pipeline, after=before)
    stack.api.wait_state(run, ("PAUSED", *ENDED), timeout=120)
    return run


def _approve(stack: Stack, durable: Durable, run_id: str, log: str, *extra: str) -> float:
    name = stack.api.run(run_id)["name"]
    at = time.time()
    code, output = conveyor(stack, ["approve", name, "--as", "alice", *extra], durable.root / log)
    assert code == 0, output
    return at


def test_a_newer_release_supersedes_the_older_one_waiting(durable: Durable, stack: Stack) -> None:
    older = _promote_of(stack, durable.pipeline)  # the retried ship's, waiting since the last test
    older_digest = _digest_of(stack, older)
    durable.app.commit("v3")
    newer = _ship_and_wait(stack, durable)
    new_digest = _digest_of(stack, newer)
    ended = stack.api.wait_state(older, ENDED, timeout=30)
    assert ended["type"] == "CANCELLED"
    version = durable.app.versions[-1]
    assert ended["message"] == f"superseded by {version} ({new_digest})"
    record = _record(stack, older, durable)
    assert f"superseded by {version}" in record["data"]
    durable.newest_approved_at = _approve(
        stack, durable, newer, "approve-v3.log", "--comment", "v3"
    )
    assert stack.api.wait_state(newer, ENDED, timeout=180)["type"] == "COMPLETED"
    assert durable.app.current("production").labels["conveyor.digest"] == new_digest
    assert older_digest != new_digest
    durable.newest_run = newer


def test_an_older_release_is_refused_unless_asked_as_a_rollback(
    durable: Durable, stack: Stack
) -> None:
    params = {"digest": durable.digest, "pipeline": str(durable.pipeline)}
    refused = stack.api.run_deployment("promote/promote", params)
    state = stack.api.wait_state(refused, ENDED, timeout=120)
    assert state["type"] == "FAILED"
    line = _wait_log(stack, refused, "refusing")
    assert durable.app.versions[0] in line and durable.app.versions[-1] in line, line
    # valid_for is 40 s: until alice's approval of this digest, recorded with the image
    # when her answer's run went on, is older than that, the rollback reuses it and asks
    # nobody (as any rerun would), so this test passed or not by how fast those before
    # it ran (it failed alone, 3 runs of 3).
    ended = dt.datetime.fromisoformat(stack.api.run(durable.promote_id)["end_time"]).timestamp()
    time.sleep(max(0.0, ended + 41 - time.time()))
    rollback = stack.api.run_deployment(
        "promote/promote", {**params, "older": True, "reason": "v3 breaks checkout"}
    )
    stack.api.wait_state(rollback, ("PAUSED", *ENDED), timeout=120)
    _approve(stack, durable, rollback, "approve-rollback.log", "--comment", "go back")
    assert stack.api.wait_state(rollback, ENDED, timeout=180)["type"] == "COMPLETED"
    assert durable.app.current("production").labels["conveyor.digest"] == durable.digest
    record = _record(stack, rollback, durable)
    assert "rollback: v3 breaks checkout" in record["data"]


def test_retry_of_a_promote_run_refuses_the_stale_replayed_answer(
    durable: Durable, stack: Stack
) -> None:
    run = durable.newest_run
    digest = _digest_of(stack, run)
    # valid_for is 40 s: alice's answer to this run, and the approval evidence the run
    # recorded with the image before it ended (seconds after the answer, once the worker
    # re-executed it), must both be older than that.
    ended = dt.datetime.fromisoformat(stack.api.run(run)["end_time"]).timestamp()
    time.sleep(max(0.0, max(durable.newest_approved_at, ended) + 41 - time.time()))
    _retry(stack, run, durable.root / "retry-promote.log")
    stack.api.wait_state(run, ("SCHEDULED", "PENDING", "RUNNING", "PAUSED"), timeout=30)
    state = stack.api.wait_state_key(run, f"approval-production-{digest[7:19]}-2", timeout=120)
    assert state["type"] == "PAUSED", stack.api.logs(run)[-10:]
    _wait_log(stack, run, "longer than the")
    assert durable.app.current("production").labels["conveyor.digest"] == durable.digest


def test_auto_approve_is_refused_where_the_file_does_not_allow_it(
    durable: Durable, stack: Stack
) -> None:
    run = stack.api.run_deployment(
        "promote/promote",
        {"digest": durable.digest, "pipeline": str(durable.pipeline), "auto_approve": True},
    )
    state = stack.api.wait_state(run, ENDED, timeout=120)
    assert state["type"] == "FAILED"
    assert "approval.allow_auto_approve" in (state["message"] or "") or any(
        "approval.allow_auto_approve" in line for line in stack.api.logs(run)
    )
    names = {t["name"].rsplit("-", 1)[0] for t in stack.api.task_runs(run)}
    assert "read environment" not in names


def test_an_unknown_work_pool_is_one_clear_line(durable: Durable, stack: Stack) -> None:
    data: dict[str, Any] = pipeline_data(durable.app)
    data["environments"][1]["runs_on"] = {"work_pool": "on-premises"}
    pipeline = write_pipeline(durable.root / "pool.yaml", data)
    run = stack.api.run_deployment("ship/ship", {"pipeline": str(pipeline)})
    state = stack.api.wait_state(run, ENDED, timeout=120)
    assert state["type"] == "FAILED"
    line = _wait_log(stack, run, "work pool 'on-premises' does not exist")
    assert re.search(
        r"environments\[1\]\.runs_on\.work_pool: work pool 'on-premises' does not exist", line
    ), line
    # Refused before any work: no build ran.
    names = {t["name"].rsplit("-", 1)[0] for t in stack.api.task_runs(run)}
    assert "build" not in names, names
