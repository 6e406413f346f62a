"""The local stack as a one-machine team setup: a Prefect server, a process worker per
pool, prefect.yaml's deployments and the zombie automation; and the CLI against it,
while it answers and while it is down.

One stack (server and worker) serves the module; the CLI runs as a real ``conveyor``
process so that its error boundary is the one users meet.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from conveyor.cli import prefect_setup
from conveyor.localstack import process
from conveyor.localstack.stack import LocalStack
from tests.parts import free_port, require_postgres

pytestmark = [pytest.mark.prefect]

REPO = Path(__file__).resolve().parent.parent


def cli(home: Path, *args: str, timeout: float = 120) -> tuple[int, str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(CONVEYOR_HOME=str(home), COLUMNS="200", PREFECT_HOME=str(home / "cli-home"))
    done = subprocess.run(
        [sys.executable, "-c", "from conveyor.cli.main import main; main()", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )
    return done.returncode, done.stdout, done.stderr


@pytest.fixture(scope="module")
def home() -> Iterator[Path]:
    # Not under pytest's tmp_path: its folders are closed to other users, and the
    # PostgreSQL test runs the database as the postgres user.
    root = Path(tempfile.mkdtemp(prefix="conveyor-stack-"))
    root.chmod(0o755)
    state = root / "state"
    stack = LocalStack(state, prefect_port=free_port(), server_setup=prefect_setup.prepare_server)
    try:
        stack.up(["prefect", "workers"])
        yield state
    finally:
        LocalStack(state).down(["workers", "prefect"])
        shutil.rmtree(root, ignore_errors=True)


def test_up_starts_a_worker_and_registers_the_deployments(home: Path) -> None:
    stack = LocalStack(home, server_setup=prefect_setup.prepare_server)
    worker = stack.workers()[0]
    pid = worker.ours()
    assert pid is not None and os.getsid(pid) == pid
    code, out, err = cli(home, "status")
    assert code == 0, err
    assert f"worker {worker.pool}" in out and f"pid {pid}" in out, out

    with prefect_setup.prefect_client(stack.prefect.api_url) as client:
        names = {d.name for d in client.read_deployments()}
        assert {"ship", "promote", "rollback", "nightly-integration"} <= names
        # Runs start as the engine itself, not through the worker's workspace supervisor.
        template = client.read_work_pool(worker.pool).base_job_template
        command = template["variables"]["properties"]["command"]["default"]
        assert command.endswith(" -m prefect.engine") and sys.executable in command
        automations = client.read_automations_by_name(prefect_setup.ZOMBIE_AUTOMATION)
        assert len(automations) == 1
        expected = automations[0].trigger.expect  # type: ignore[union-attr]
        assert {"prefect.flow-run.Suspended", "prefect.flow-run.Paused"} <= expected
        # A second `up` changes nothing: one worker, one automation.
        again = stack.up(["prefect", "workers"])
        assert f"worker {worker.pool}: already running" in again
        assert len(client.read_automations_by_name(prefect_setup.ZOMBIE_AUTOMATION)) == 1


def test_a_deployment_runs_on_the_worker(home: Path) -> None:
    """The worker runs a deployment's flow from the checkout: the rollback flow reads
    the pipeline file named there and ends Failed naming it."""
    import time

    stack = LocalStack(home)
    with prefect_setup.prefect_client(stack.prefect.api_url) as client:
        deployment = client.read_deployment_by_name("rollback/rollback")
        params = {"pipeline": "deployments/nope.yaml", "environment": "production"}
        run = client.create_flow_run_from_deployment(deployment.id, parameters=params)
        deadline = time.monotonic() + 90
        state = client.read_flow_run(run.id).state
        while time.monotonic() < deadline and not (state and state.is_final()):
            time.sleep(0.5)
            state = client.read_flow_run(run.id).state
    assert state is not None and state.name == "Failed", state
    assert "deployments/nope.yaml: file not found" in (state.message or "")

    # The CLI checks the file first and starts nothing: one line per problem.
    code, out, err = cli(home, "rollback", "production", "-p", "deployments/nope.yaml")
    assert code == 2 and "started" not in out, out + err
    assert err.strip().splitlines()[-1] == "  deployments/nope.yaml: file not found", err
    assert "Traceback" not in out + err


def _suspended_request(api_url: str) -> dict[str, str]:
    """A run suspended the way promote's gate leaves one: a PAUSED-type state named
    Suspended with a pause key, and the request stored as a flow run input."""
    from prefect import flow
    from prefect.client.schemas.objects import State, StateDetails, StateType

    @flow(name="promote")
    def promote(digest: str) -> None:
        """Stands for the deployed flow; a run of no deployment no worker picks up."""

    now = dt.datetime.now(dt.UTC)
    deadline = now + dt.timedelta(hours=24)
    key = "approval-production-0123456789ab-1"
    with prefect_setup.prefect_client(api_url) as client:
        run = client.create_flow_run(
            promote,
            parameters={"digest": "sha256:" + "ab" * 32},
            state=State(type=StateType.RUNNING),
        )
        request = {
            "run_id": str(run.id),
            "app": "hello",
            "version": "v1.2.3",
            "digest": "sha256:" + "ab" * 32,
            "repository": "apps/hello",
            "environment": "production",
            "since": now.isoformat(),
            "deadline": deadline.isoformat(),
            "approvers": ["alice"],
            "valid_for_s": 86400.0,
            "pause_key": key,
        }
        client.create_flow_run_input(run.id, f"conveyor-request-{key}", json.dumps(request))
        details = StateDetails(pause_key=key, pause_reschedule=True, pause_timeout=deadline)
        state = State(type=StateType.PAUSED, name="Suspended", state_details=details)
        client.set_flow_run_state(run.id, state, force=True)
        return {**request, "run_name": run.name}


def test_approvals_json_and_a_digest_mismatch(home: Path) -> None:
    request = _suspended_request(LocalStack(home).prefect.api_url)
    code, out, err = cli(home, "approvals", "--json")
    assert code == 0, err
    listed = {item["run_id"]: item for item in json.loads(out)}
    item = listed[request["run_id"]]
    for field in ("run_name", "app", "version", "digest", "environment", "since", "deadline"):
        assert item[field] == request[field], field
    assert item["state"] == "Suspended"

    other = "sha256:" + "cd" * 32
    code, out, err = cli(home, "approve", request["run_id"], "--as", "alice", "--digest", other)
    assert code == 2 and "nothing was answered" in err and "Traceback" not in err, err


def _pipeline_file(root: Path, app: str) -> Path:
    (root / "app").mkdir(parents=True)
    # A repository of its own: build contexts must stay inside the pipeline file's.
    subprocess.run(["git", "init", "-q", str(root)], check=True, timeout=30)
    (root / "app" / "Dockerfile").write_text("FROM scratch\n")
    (root / "deployments").mkdir()
    envs = [
        {
            "name": name,
            "tag": f"{name}-ready",
            "driver": {"kind": "docker", "port": free_port()},
            "health": {"path": "/health", "timeout_s": 5},
            "tests": {"http": [{"name": "health", "path": "/health"}]},
            **({"approval": {"approvers": ["alice"], "timeout": "1h"}} if gate else {}),
        }
        for name, gate in (("integration", False), ("production", True))
    ]
    data = {
        "app": {"name": app, "context": "../app"},
        "registry": {
            "url": f"http://127.0.0.1:{free_port()}",
            "repository": f"conveyor/{app}",
            "username": "conveyor",
            "password": {"env": "CONVEYOR_TEST_UNUSED_PASSWORD"},
        },
        "environments": envs,
    }
    path = root / "deployments" / "pipeline.yaml"
    path.write_text(json.dumps(data))
    return path


def test_releases_json(home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Nothing deployed yet (read from the Docker Engine), one request waiting for
    production and one superseded: the shape scripts rely on."""
    from prefect import flow
    from prefect.client.schemas.objects import State, StateType

    monkeypatch.setenv("CONVEYOR_TEST_UNUSED_PASSWORD", "not-used")
    api = LocalStack(home).prefect.api_url
    request = _suspended_request(api)
    pipeline = _pipeline_file(tmp_path / "repo", "hello")

    @flow(name="promote")
    def promote(digest: str, environment: str) -> None:
        """Stands for the deployed flow."""

    reason = "superseded by v1.2.4 (sha256:" + "ef" * 32 + ")"
    with prefect_setup.prefect_client(api) as client:
        old = client.create_flow_run(
            promote,
            parameters={"digest": "sha256:" + "12" * 32, "environment": "production"},
            state=State(type=StateType.CANCELLED, message=reason),
        )
    code, out, err = cli(home, "releases", "--json", "-p", str(pipeline))
    assert code == 0, out + err
    found = json.loads(out)
    assert list(found) == ["integration", "production"]
    for entry in found.values():
        assert set(entry) >= {"running", "waiting", "superseded"}
        assert entry["running"] is None
    waiting = found["production"]["waiting"]
    assert request["run_id"] in [w["run_id"] for w in waiting]
    assert {(w["app"], w["environment"]) for w in waiting} == {("hello", "production")}
    assert found["integration"]["waiting"] == []
    superseded = found["production"]["superseded"]
    assert [(s["run_id"], s["reason"]) for s in superseded] == [(str(old.id), reason)]


def test_cli_with_the_server_down_says_so_in_one_line(home: Path) -> None:
    """Last in the module: it stops the server and starts it again."""
    stack = LocalStack(home)
    request = _suspended_request(stack.prefect.api_url)
    stack.down(["workers", "prefect"])
    url = stack.prefect.api_url
    for args in (
        ["approvals", "--json"],
        ["approve", str(uuid.uuid4()), "--as", "alice"],
        ["promote", "sha256:" + "ab" * 32],
    ):
        code, out, err = cli(home, *args, timeout=60)
        lines = err.strip().splitlines()
        assert code == 3, (args, out, err)
        assert lines == [lines[0]] and f"cannot reach the Prefect server at {url}" in lines[0], err
        assert "Traceback" not in out + err

    # Back up (same database): the request that waited before the outage is listed again.
    stack.up(["prefect"])
    code, out, err = cli(home, "approvals", "--json")
    assert code == 0, err
    assert request["run_id"] in {item["run_id"] for item in json.loads(out)}


def test_postgres_backed_server_runs_a_flow() -> None:
    require_postgres()
    from prefect import flow

    root = Path(tempfile.mkdtemp(prefix="conveyor-pg-"))
    root.chmod(0o755)
    state = root / "state"
    stack = LocalStack(state, prefect_port=free_port(), db="postgres", postgres_port=free_port())
    try:
        done = stack.up(["prefect"])
        assert any(line.startswith("postgres: started") for line in done), done
        assert LocalStack(state).db == "postgres"  # kept for status and down
        pg = stack.postgres.ours()
        assert pg is not None and process.alive(pg)

        @flow(name="on-postgres")
        def hello() -> str:
            return "hello"

        from prefect.settings import PREFECT_API_URL, temporary_settings

        with temporary_settings({PREFECT_API_URL: stack.prefect.api_url}):
            state_ = hello(return_state=True)
        assert state_.is_completed()
        # The run is in PostgreSQL's tables, not in some SQLite file.
        import asyncio

        import asyncpg

        async def stored() -> int:
            dsn = stack.postgres.url().get_secret_value().replace("+asyncpg", "")
            conn = await asyncpg.connect(dsn)
            try:
                query = "SELECT count(*) FROM flow_run WHERE id = $1 AND state_type = 'COMPLETED'"
                return int(await conn.fetchval(query, state_.state_details.flow_run_id))
            finally:
                await conn.close()

        assert asyncio.run(stored()) == 1
        assert not (stack.prefect.home / "prefect.db").exists()
        rows = {s.name: s for s in stack.status()}
        assert rows["postgres"].running and "database postgres" in rows["prefect"].detail
    finally:
        stack.down(["prefect"])
    assert stack.postgres.ours() is None
    shutil.rmtree(root, ignore_errors=True)
