"""Two promote runs for one environment at once, and a request nobody answers (issue 9),
on a worker, with production on the Marathon simulator.

Two releases are shipped with auto-approval into production. The first promote run's
Marathon deployment is held (the simulator's ``hang_deployment`` fault) until the second
run is seen waiting for the deploy window, so the two runs really contend; the
simulator's event stream then shows their deployments one after the other, each inside
its run's window. The older release, asked for again as a rollback on a gate of 5 s
that nobody answers, shows the deadline recorded by the automation path.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import pytest

from conveyor.approvals.waiting import EXPIRED_MESSAGE
from tasks.approval_deadline import PAUSE_EXPIRED
from tests.durable_support import (
    ENDED,
    DeploymentHistory,
    deployment_history,
    docker_config,
    evidence_of,
    logged_at,
    newest_record,
    states_of,
    timed_logs,
)
from tests.marathon_support import Sim, fast_template, run_sim
from tests.pipeline_support import (
    END_TO_END,
    App,
    Stack,
    allow_auto_approve,
    kept_app,
    pipeline_data,
    promote_run,
    served,
    wait_for,
    write_pipeline,
)
from tests.pipeline_support import stack as stack  # the shared session fixture

pytestmark = END_TO_END
HOLDING = "holding the deploy window of production"
WAITING = "waiting for the deploy window of production"
RELEASED = "released the deploy window of production"


@dataclass
class Contended:
    app: App
    root: Path
    sim: Sim
    history: DeploymentHistory
    data: dict[str, Any]
    runs: list[str]  # the promote runs of v1 and v2
    digests: list[str]
    b_waited_at: dt.datetime


def _data(app: App, sim: Sim, root: Path) -> dict[str, Any]:
    data = allow_auto_approve(pipeline_data(app))
    data["environments"][1]["driver"] = {
        "kind": "marathon",
        "url": sim.url,
        "app_id": f"/{app.name}",
        "app_template": str(fast_template(root)),
        "deploy_timeout_s": 240,
        "rollback_timeout_s": 60,
    }
    return data


def _ship(stack: Stack, pipeline: Path, after: int) -> str:
    """Ship auto-approved; the promote run it hands over to."""
    ship = stack.api.run_deployment("ship/ship", {"pipeline": str(pipeline), "auto_approve": True})
    shipped = stack.api.wait_state(ship, ENDED, timeout=240)
    assert shipped["type"] == "COMPLETED", stack.api.logs(ship)[-20:]
    return promote_run(stack, pipeline, after=after, timeout=30)


@pytest.fixture(scope="module")
def contended(
    stack: Stack, docker_client: docker.DockerClient, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Contended]:
    root = tmp_path_factory.mktemp("windows")
    config = docker_config(stack, root)
    with (
        kept_app(stack, docker_client, root) as app,
        served(stack, root),
        run_sim(docker_client, "--docker-config", str(config)) as sim,
        deployment_history(sim.url, f"/{app.name}") as history,
    ):
        data = _data(app, sim, root)
        pipeline = write_pipeline(root / "pipeline.yaml", data)
        sim.fault(kind="hang_deployment", app=f"/{app.name}")
        first = _ship(stack, pipeline, after=0)
        logged_at(stack, first, HOLDING, timeout=120)
        app.commit("v2")
        second = _ship(stack, pipeline, after=1)
        b_waited_at = logged_at(stack, second, WAITING, timeout=120)
        # The first run still holds the window: its deployment cannot finish.
        assert stack.api.state(first)["type"] == "RUNNING"
        assert not any(RELEASED in line for _, line in timed_logs(stack, first))
        sim.clear_faults()
        for run in (first, second):
            stack.api.wait_state(run, ENDED, timeout=180)
        digests = [str(stack.api.run(r)["parameters"]["digest"]) for r in (first, second)]
        yield Contended(app, root, sim, history, data, [first, second], digests, b_waited_at)


def _window(stack: Stack, run_id: str) -> tuple[dt.datetime, dt.datetime]:
    return logged_at(stack, run_id, HOLDING), logged_at(stack, run_id, RELEASED)


def test_two_promote_runs_deploy_one_at_a_time_and_keep_each_others_release(
    contended: Contended, stack: Stack
) -> None:
    first, second = contended.runs
    for run in contended.runs:
        state = stack.api.state(run)
        assert state["type"] == "COMPLETED", (state, stack.api.logs(run)[-20:])
    a_window, b_window = _window(stack, first), _window(stack, second)
    # The second run asked while the first held the window, and got it only after.
    assert a_window[0] < contended.b_waited_at < a_window[1] <= b_window[0]

    deployments = contended.history.ordered()
    images = [d.image.rsplit("@", 1)[-1] for d in deployments]
    # One deployment per release, in order: no third one putting anything back.
    assert images == contended.digests, deployments
    for dep, window in zip(deployments, (a_window, b_window), strict=True):
        assert dep.outcome == "success", dep
        assert dep.ended is not None
        assert window[0] <= dep.started and dep.ended <= window[1], (dep, window)
    assert deployments[0].ended is not None and deployments[0].ended < deployments[1].started

    for run in contended.runs:
        lines = stack.api.logs(run)
        assert not any("rolling back" in line.lower() for line in lines), lines[-20:]
    sim_app = contended.sim.admin.get(f"/v2/apps/{contended.app.name}").json()["app"]
    assert sim_app["container"]["docker"]["image"].endswith(contended.digests[1])
    assert "| production |" in newest_record(stack, second, contended.app)


def test_a_request_nobody_answers_ends_failed_and_the_records_say_timeout(
    contended: Contended, stack: Stack
) -> None:
    data = contended.data
    data["environments"][1]["approval"] = {"approvers": ["alice", "bob"], "timeout": "5s"}
    pipeline = write_pipeline(contended.root / "deadline.yaml", data)
    older = contended.digests[0]
    run = stack.api.run_deployment(
        "promote/promote",
        {"digest": older, "pipeline": str(pipeline), "older": True, "reason": "deadline test"},
    )
    stack.api.wait_state(run, ("PAUSED", *ENDED), timeout=120)
    reason = "a timeout counts as a rejection"
    # The server's expiry fails the run first; the automation's rerun then ends it.
    final = wait_for(
        f"run {run} to end after the server's pause expiry",
        lambda: (
            s
            if (s := stack.api.state(run))["type"] in ENDED and s["message"] != PAUSE_EXPIRED
            else None
        ),
        150,
    )
    # Failed (a rejection), not Crashed or Cancelled: Prefect's expiry, then our gate.
    assert final["type"] == "FAILED", final
    assert "ApprovalTimedOut" in final["message"] and reason in final["message"], final
    # The server expired the pause; the automation, not a person, had it run again.
    history = [(s["type"], s["message"] or "") for s in states_of(stack, run)]
    assert ("FAILED", PAUSE_EXPIRED) in history, history
    assert ("SCHEDULED", EXPIRED_MESSAGE) in history, history

    record = newest_record(stack, run, contended.app)
    assert "| production | timeout | (nobody) |" in record, record
    assert reason in record
    # The approval evidence attached to the digest: a Statement conveyor, no person, decided.
    (approval,) = [
        e.payload["predicate"]
        for e in evidence_of(stack, contended.app, older, "approval")
        if (e.payload.get("predicate") or {}).get("decision") == "timeout"
    ]
    assert approval["decided_by"] == "conveyor" and approval["answers"] == [], approval
    assert approval["environment"] == "production" and approval["run_id"] == run, approval
    # Production kept the newer release.
    sim_app = contended.sim.admin.get(f"/v2/apps/{contended.app.name}").json()["app"]
    assert sim_app["container"]["docker"]["image"].endswith(contended.digests[1])
