"""Helpers of the end-to-end pipeline tests: a real Prefect server, a real registry,
the sample app in a git repository of its own, and flows run as subprocesses.

The flows run in child processes, as a person runs them, so a test can answer their
approval gates through the Prefect API (the UI's own calls) and kill them mid-run.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import docker
import httpx
import pytest
import yaml
from pydantic import SecretStr

from conveyor.cli.prefect_setup import ensure_pools, prefect_client
from conveyor.localstack.deploy import work_pools
from conveyor.localstack.prefect_server import PrefectServer
from conveyor.localstack.registry import RegistryServer
from tests.images import discard
from tests.parts import free_port, missing, require_binary

REPO = Path(__file__).resolve().parent.parent
HELLO = REPO / "examples" / "hello"
USER = "conveyor"
PASSWORD_ENV = "CONVEYOR_E2E_REGISTRY_PASSWORD"
APPROVERS = ["alice", "bob"]
ENDED = ("COMPLETED", "FAILED", "CRASHED", "CANCELLED")
# What the end-to-end modules need: every real part, a Prefect server among them.
END_TO_END = [pytest.mark.docker, pytest.mark.registry, pytest.mark.trivy, pytest.mark.prefect]
T = TypeVar("T")


def wait_for(what: str, probe: Callable[[], T | None], timeout: float, interval: float = 0.25) -> T:
    """Poll ``probe`` until it returns something; fail naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value is not None:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:g}s waiting for {what}", pytrace=False)
        time.sleep(interval)


# --- the Prefect API, as the UI calls it ------------------------------------------


class PrefectApi:
    def __init__(self, api_url: str) -> None:
        self.http = httpx.Client(base_url=api_url, timeout=30)

    def _post(self, path: str, body: dict[str, Any]) -> Any:
        # A Prefect server on SQLite answers 503 ("database is locked") when writes
        # collide; Prefect's own client and the UI try again, and so do we, a few times.
        for attempt in range(4):
            response = self.http.post(path, json=body)
            if response.status_code != 503:
                break
            time.sleep(0.2 * 2**attempt)
        response.raise_for_status()
        return response.json()

    def runs_of(self, pipeline: Path, flow: str = "ship") -> list[dict[str, Any]]:
        """Flow runs of ``flow`` started with this pipeline file, oldest first."""
        runs = self._post(
            "/flow_runs/filter",
            {"flows": {"name": {"any_": [flow]}}, "sort": "EXPECTED_START_TIME_ASC", "limit": 50},
        )
        return [r for r in runs if r["parameters"].get("pipeline") == str(pipeline)]

    def run(self, run_id: str) -> dict[str, Any]:
        response = self.http.get(f"/flow_runs/{run_id}")
        response.raise_for_status()
        return dict(response.json())

    def state(self, run_id: str) -> dict[str, Any]:
        return dict(self.run(run_id)["state"])

    def state_types(self, run_id: str) -> list[str]:
        response = self.http.get("/flow_run_states/", params={"flow_run_id": run_id})
        response.raise_for_status()
        return [s["type"] for s in sorted(response.json(), key=lambda s: s["timestamp"])]

    def wait_run(self, pipeline: Path, flow: str = "ship", timeout: float = 60) -> str:
        """The id of the newest run of ``flow`` with ``pipeline``."""
        return str(
            wait_for(
                f"a {flow} run of {pipeline.name}",
                lambda: (self.runs_of(pipeline, flow) or [{}])[-1].get("id"),
                timeout,
            )
        )

    def _settled(self, run_id: str, state: dict[str, Any]) -> bool:
        """False while a pause's form is not saved yet: Prefect sets the Suspended state
        first, and the server refuses an answer until the form's schema is there."""
        keyset = (state.get("state_details") or {}).get("run_input_keyset")
        if state["type"] != "PAUSED" or not keyset:
            return True
        return self.http.get(f"/flow_runs/{run_id}/input/{keyset['schema']}").status_code == 200

    def wait_state(self, run_id: str, types: tuple[str, ...], timeout: float) -> dict[str, Any]:
        def probe() -> dict[str, Any] | None:
            state = self.state(run_id)
            return state if state["type"] in types and self._settled(run_id, state) else None

        return wait_for(f"run {run_id} to reach {'/'.join(types)}", probe, timeout)

    def wait_state_key(self, run_id: str, pause_key: str, timeout: float) -> dict[str, Any]:
        """The run's state once it paused under ``pause_key`` (or ended)."""

        def probe() -> dict[str, Any] | None:
            state = self.state(run_id)
            key = (state.get("state_details") or {}).get("pause_key")
            if state["type"] in ENDED or (key == pause_key and self._settled(run_id, state)):
                return state
            return None

        return wait_for(f"run {run_id} to pause as {pause_key}", probe, timeout)

    def resume(
        self, run_id: str, decision: str, approver: str, comment: str = ""
    ) -> dict[str, Any]:
        """What the UI's Resume form sends for a pause that waits for input."""
        run_input = {"decision": decision, "approver": approver, "comment": comment}
        return dict(self._post(f"/flow_runs/{run_id}/resume", {"run_input": run_input}))

    def run_deployment(self, name: str, parameters: dict[str, Any]) -> str:
        """Start a run of deployment ``flow/name``, as the UI's Run button does."""
        response = self.http.get(f"/deployments/name/{name}")
        response.raise_for_status()
        run = self._post(
            f"/deployments/{response.json()['id']}/create_flow_run", {"parameters": parameters}
        )
        return str(run["id"])

    def resume_bound(
        self,
        run_id: str,
        decision: str,
        approver: str,
        digest: str,
        environment: str,
        comment: str = "",
    ) -> dict[str, Any]:
        run_input = {
            "decision": decision,
            "approver": approver,
            "digest": digest,
            "environment": environment,
            "comment": comment,
        }
        return dict(self._post(f"/flow_runs/{run_id}/resume", {"run_input": run_input}))

    def logs(self, run_id: str) -> list[str]:
        """Every log line of the run and its task runs, paged.

        The flow process sends its logs in batches, the last ones after the run's final
        state: for an ended run, wait (a little) for the engine's closing line.
        """
        entries = self._logs(run_id)
        state = self.state(run_id)
        # A pause that timed out is failed by the server, with no closing line to wait for.
        by_server = "never resumed" in (state.get("message") or "")
        if state["type"] in ("COMPLETED", "FAILED") and not by_server:
            closing = f"Finished in state {state['name']}("
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline and not any(
                e["task_run_id"] is None and e["message"].startswith(closing) for e in entries
            ):
                time.sleep(0.25)
                entries = self._logs(run_id)
        return [entry["message"] for entry in entries]

    def _logs(self, run_id: str) -> list[dict[str, Any]]:
        entries: list[dict[str, Any]] = []
        for offset in range(0, 20_000, 200):
            page = self._post(
                "/logs/filter",
                {"logs": {"flow_run_id": {"any_": [run_id]}}, "limit": 200, "offset": offset},
            )
            entries += page
            if len(page) < 200:
                break
        return entries

    def artifacts(self, run_id: str) -> list[dict[str, Any]]:
        return list(
            self._post("/artifacts/filter", {"artifacts": {"flow_run_id": {"any_": [run_id]}}})
        )

    def task_runs(self, run_id: str) -> list[dict[str, Any]]:
        return list(
            self._post(
                "/task_runs/filter",
                {"flow_runs": {"id": {"any_": [run_id]}}, "sort": "EXPECTED_START_TIME_ASC"},
            )
        )

    def close(self) -> None:
        self.http.close()


# --- the stack ----------------------------------------------------------------


@dataclass
class Stack:
    root: Path
    prefect: PrefectServer
    registry: RegistryServer
    password: SecretStr
    api: PrefectApi
    # prefect.yaml's deployments and the one process worker every pipeline module shares
    # (``serve``): registered and started by the first module that needs them.
    deployed: bool = False
    worker: Worker | None = None

    def env(self, **extra: str) -> dict[str, str]:
        """The environment of a flow subprocess: our server, our password, a home of its own."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
        env.update(
            PREFECT_API_URL=self.prefect.api_url,
            PREFECT_HOME=str(self.root / "client-home"),
            PREFECT_LOGGING_LEVEL="INFO",
            PREFECT_SERVER_ALLOW_EPHEMERAL_MODE="false",
            COLUMNS="200",
            **{PASSWORD_ENV: self.password.get_secret_value()},
        )
        env.update(extra)
        return env

    def stop(self) -> None:
        """The worker (where one was started), the API client, the Prefect server and
        the registry."""
        if self.worker is not None:
            self.worker.stop()
        self.api.close()
        self.prefect.stop()
        self.registry.stop()


_shared: dict[str, Stack] = {}


def start_stack(root: Path) -> Stack:
    require_binary("docker-registry", "apt-get install docker-registry")
    require_binary("htpasswd", "apt-get install apache2-utils")
    require_binary("trivy", "install trivy (see README)")
    if not Path("/usr/bin/busybox").is_file():
        missing("busybox-static", "apt-get install busybox-static")
    password = SecretStr(secrets.token_urlsafe(18))
    registry = RegistryServer(root / "registry", port=free_port(), htpasswd=(USER, password))
    registry.start(timeout=60)
    prefect = PrefectServer(root / "prefect", port=free_port())
    try:
        prefect.start(timeout=240)
    except BaseException:
        registry.stop()
        raise
    return Stack(root, prefect, registry, password, PrefectApi(prefect.api_url))


@pytest.fixture(scope="session")
def stack(
    tmp_path_factory: pytest.TempPathFactory, docker_client: docker.DockerClient
) -> Iterator[Stack]:
    """One Prefect server and one registry for every pipeline test module.

    Each module that imports this fixture gets its own fixture definition; the first
    starts the stack and the others share it, since a Prefect server takes long to start.
    """
    if "stack" in _shared:
        yield _shared["stack"]
        return
    started = start_stack(tmp_path_factory.mktemp("e2e"))
    _shared["stack"] = started
    try:
        yield started
    finally:
        _shared.clear()
        started.stop()


# --- the sample app -------------------------------------------------------------


def _git(repo: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", "-c", "user.name=e2e", "-c", "user.email=e2e@localhost", *args],
        cwd=repo,
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    return done.stdout.strip()


@dataclass
class App:
    """The sample app under a unique name, in a git repository of its own."""

    name: str
    source: Path
    stack: Stack
    docker: docker.DockerClient
    versions: list[str] = field(default_factory=list)

    def commit(self, page: str) -> str:
        """A new commit (so a new version and a new digest); returns the version."""
        (self.source / "www" / "index.html").write_text(f"<p>{page}</p>\n")
        _git(self.source, "add", "-A")
        _git(self.source, "commit", "-q", "-m", page)
        version = _git(self.source, "describe", "--tags", "--always")
        self.versions.append(version)
        return version

    @property
    def repository(self) -> str:
        return f"conveyor/{self.name}"

    def containers(self, environment: str, role: str = "current") -> list[Any]:
        labels = [
            "conveyor.managed=1",
            f"conveyor.app={self.name}",
            f"conveyor.environment={environment}",
            f"conveyor.role={role}",
        ]
        # A container the driver removes between the engine's list and docker-py's
        # per-container inspect is gone, not an error of the test.
        found = self.docker.containers.list(
            all=True, filters={"label": labels}, ignore_removed=True
        )
        return list(found)

    def current(self, environment: str) -> Any:
        found = self.containers(environment)
        assert len(found) == 1, f"{environment}: expected one current container, found {found}"
        return found[0]

    def image_digests(self, container: Any) -> set[str]:
        repo_digests = self.docker.images.get(container.attrs["Image"]).attrs.get("RepoDigests", [])
        return {d.split("@", 1)[1] for d in repo_digests}

    def local_tags(self) -> list[str]:
        prefix = f"{self.stack.registry.address}/{self.repository}:"
        # Other runs on the shared engine remove images while docker-py inspects the list.
        for _ in range(5):
            try:
                images = self.docker.images.list()
            except docker.errors.NotFound:
                continue
            return [t for image in images for t in image.tags if t.startswith(prefix)]
        return []

    def clean(self) -> None:
        for container in self.docker.containers.list(
            all=True, filters={"label": f"conveyor.app={self.name}"}
        ):
            container.remove(force=True)
        discard(*self.local_tags())


def new_app(stack: Stack, docker_client: docker.DockerClient, root: Path) -> App:
    """A fresh copy of examples/hello with one commit, under a unique app name."""
    name = f"hello-{secrets.token_hex(3)}"
    source = root / name
    # symlinks=True keeps busybox a link, as in the repository; the build dereferences it.
    shutil.copytree(HELLO, source, symlinks=True)
    _git(source, "init", "-q")
    made = App(name, source, stack, docker_client)
    made.commit("v1")
    return made


@contextlib.contextmanager
def kept_app(stack: Stack, docker_client: docker.DockerClient, root: Path) -> Iterator[App]:
    """``new_app`` for as long as a fixture needs it; its containers and images go after."""
    made = new_app(stack, docker_client, root)
    try:
        yield made
    finally:
        made.clean()


@pytest.fixture
def app(stack: Stack, docker_client: docker.DockerClient, tmp_path: Path) -> Iterator[App]:
    with kept_app(stack, docker_client, tmp_path) as made:
        yield made


@dataclass
class Released:
    """One app whose first release runs in production, for a module whose tests each ship
    what follows it (one ship fewer a test); ``first`` is that release's pipeline data."""

    app: App
    first: dict[str, Any]
    root: Path


def released_fixture(ship_first: Callable[[Stack, App, Path], dict[str, Any]]) -> Any:
    """A module's ``released`` fixture: a fresh app whose first release ``ship_first``
    ships (returning its pipeline data), shared by the module's tests, cleaned up after."""

    @pytest.fixture(scope="module")
    def released(
        stack: Stack, docker_client: docker.DockerClient, tmp_path_factory: pytest.TempPathFactory
    ) -> Iterator[Released]:
        root = tmp_path_factory.mktemp("released")
        with kept_app(stack, docker_client, root) as app:
            yield Released(app, ship_first(stack, app, root), root)

    return released


# --- pipeline files and flow runs ---------------------------------------------------


def check(name: str, path: str, body: str | None = None) -> dict[str, Any]:
    found: dict[str, Any] = {"name": name, "path": path}
    if body is not None:
        found["expect_body_contains"] = body
    return found


def environment(
    name: str, tag: str, tests: list[dict[str, Any]], approval_timeout: str | None = None
) -> dict[str, Any]:
    env: dict[str, Any] = {
        "name": name,
        "tag": tag,
        "driver": {"kind": "docker", "port": free_port(), "candidate_port": free_port()},
        "health": {"path": "/health", "timeout_s": 30, "interval_s": 0.2},
        "tests": {"http": tests},
    }
    if approval_timeout is not None:
        env["approval"] = {"approvers": APPROVERS, "timeout": approval_timeout}
    return env


def pipeline_data(
    app: App,
    integration: list[dict[str, Any]] | None = None,
    production: list[dict[str, Any]] | None = None,
    approval_timeout: str = "10m",
    password: dict[str, str] | None = None,
    ports: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A pipeline document: integration, then production behind an approval gate.

    ``ports`` reuses the driver settings of an earlier file, so a second ship of the
    same app lands on the same containers.
    """
    health = [check("health answers", "/health", "ok")]
    envs = [
        environment(
            "integration",
            "integration-ready",
            integration if integration is not None else [*health, check("version", "/version")],
        ),
        environment(
            "production",
            "production-ready",
            production if production is not None else health,
            approval_timeout,
        ),
    ]
    for env in envs:
        if ports and env["name"] in ports:
            env["driver"] = ports[env["name"]]
    return {
        "app": {"name": app.name, "context": str(app.source)},
        "registry": {
            "url": app.stack.registry.url,
            "repository": app.repository,
            "username": USER,
            "password": password or {"env": PASSWORD_ENV},
        },
        "scan": {"scanners": ["secret", "misconfig"], "blocking": ["CRITICAL", "HIGH"]},
        "environments": envs,
    }


def write_pipeline(path: Path, data: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def port_of(data: dict[str, Any], environment_name: str) -> int:
    env = next(e for e in data["environments"] if e["name"] == environment_name)
    return int(env["driver"]["port"])


def drivers(data: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e["driver"] for e in data["environments"]}


class FlowProcess:
    """``conveyor <args>`` in a child process of its own group, output in a file."""

    def __init__(self, stack: Stack, args: list[str], log: Path, **env: str) -> None:
        self.args = args
        self.log = log
        with log.open("wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", "from conveyor.cli.main import main; main()", *args],
                cwd=REPO,
                env=stack.env(**env),
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )

    @property
    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait(self, timeout: float = 120) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            pytest.fail(
                f"conveyor {' '.join(self.args)} ran over {timeout:g}s:\n{self.output[-3000:]}"
            )

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)


def start_ship(stack: Stack, pipeline: Path, log: Path, *extra: str) -> FlowProcess:
    """``conveyor ship -p <pipeline> <extra>`` started in the background."""
    return FlowProcess(stack, ["ship", "-p", str(pipeline), *extra], log)


def conveyor(
    stack: Stack, args: list[str], log: Path, timeout: float = 120, **env: str
) -> tuple[int, str]:
    """Run ``conveyor <args>`` to its end; returns (exit code, output)."""
    process = FlowProcess(stack, args, log, **env)
    return process.wait(timeout), process.output


def served_version(port: int) -> str:
    return httpx.get(f"http://127.0.0.1:{port}/version", timeout=5).text.strip()


# --- deployments and a process worker -------------------------------------------------

POOL = "conveyor"


def deploy_all(stack: Stack, log: Path) -> None:
    """What a team runs once: the work pools (as ``conveyor up`` creates them, runs
    starting as the engine itself), then every deployment in prefect.yaml."""
    env = stack.env(CONVEYOR_CHECKOUT=str(REPO))
    prefect = [sys.executable, "-m", "prefect"]
    with prefect_client(stack.prefect.api_url) as client:
        ensure_pools(client, work_pools(REPO))
    with log.open("wb") as out:
        subprocess.run(
            [*prefect, "--no-prompt", "deploy", "--all"],
            cwd=REPO,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            timeout=300,
            check=True,
        )


def processes_of_run(run_id: str) -> list[int]:
    """Pids of every process of ours that executes ``run_id`` (Prefect puts the id in
    the flow process's environment)."""
    needle = f"PREFECT__FLOW_RUN_ID={run_id}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            if needle in (entry / "environ").read_bytes().split(b"\0"):
                found.append(int(entry.name))
    return found


def descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


class Worker:
    """``prefect worker start --pool conveyor``, polling every second."""

    def __init__(self, stack: Stack, log: Path) -> None:
        self.log = log
        with log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "prefect", "worker", "start", "--pool", POOL],
                cwd=REPO,
                env=stack.env(
                    PREFECT_WORKER_QUERY_SECONDS="1", PREFECT_WORKER_PREFETCH_SECONDS="1"
                ),
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )

    def flow_processes(self) -> list[int]:
        return descendants(self.proc.pid)

    def kill(self) -> None:
        """SIGKILL the worker and every flow process it started, each by its pid."""
        for pid in [*self.flow_processes(), self.proc.pid]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.kill()


def serve(stack: Stack) -> Worker:
    """prefect.yaml's deployments and a process worker, once for the whole session: a
    worker's start and ``prefect deploy --all`` each cost many seconds on 2 cores. A
    test that kills the worker calls this again for a new one."""
    if not stack.deployed:
        deploy_all(stack, stack.root / "deploy.log")
        stack.deployed = True
    if stack.worker is None or stack.worker.proc.poll() is not None:
        stack.worker = Worker(stack, stack.root / "worker.log")
    return stack.worker


@contextlib.contextmanager
def served(stack: Stack, root: Path | None = None) -> Iterator[Worker]:
    """The session's worker for a module (see ``serve``): it outlives the module, the
    stack stops it at the end of the session. ``root`` is accepted, and not needed, for
    modules written when each started a worker of its own."""
    yield serve(stack)


def allow_auto_approve(data: dict[str, Any]) -> dict[str, Any]:
    """``data`` with every gate open to ``--auto-approve`` (the demo's setting)."""
    for env in data["environments"]:
        if "approval" in env:
            env["approval"]["allow_auto_approve"] = True
    return data


def promote_run(stack: Stack, pipeline: Path, after: int = 0, timeout: float = 240) -> str:
    """The promote run ``ship`` handed ``pipeline``'s release over to (the ``after``-th
    one on), once it exists."""
    return str(
        wait_for(
            f"a promote run of {pipeline.name}",
            lambda: (
                r[-1]["id"] if len(r := stack.api.runs_of(pipeline, "promote")) > after else None
            ),
            timeout,
        )
    )


@pytest.fixture(scope="module", autouse=True)
def worker(stack: Stack) -> Worker:
    """The session's worker (``serve``) for every test of a module that imports this."""
    return serve(stack)
