"""The local stack behind ``conveyor up/down/status``: Docker Engine, registry, Prefect
server, its workers and deployments, and the simulated clusters.

Everything lives in one state folder (default ``./.conveyor``): pid files, logs, the
registry's password and storage, the Prefect database, and ``stack.json`` with the
ports ``up`` used, so that ``down`` and ``status`` find the services again. ``up`` is
idempotent: a service of ours that answers is left as it is.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx
from pydantic import SecretStr

from conveyor.errors import LocalStackFailed
from conveyor.localstack import deploy, process
from conveyor.localstack.clusters import LocalClusters
from conveyor.localstack.dockerd import DockerDaemon
from conveyor.localstack.postgres import PostgresServer
from conveyor.localstack.prefect_server import PrefectServer
from conveyor.localstack.registry import RegistryServer
from conveyor.localstack.worker import PrefectWorker

SERVICES = ("docker", "registry", "prefect", "workers", "clusters")
HOST = "127.0.0.1"
DEFAULT_REGISTRY_PORT = 5000
DEFAULT_PREFECT_PORT = 4200
# Not 5432: a machine's own PostgreSQL usually has that one.
DEFAULT_POSTGRES_PORT = 5433
DATABASES = ("sqlite", "postgres")
# The simulated DC/OS clusters (integration, production) and vCenter of the local demo;
# deployments/local.yaml names these ports.
MARATHON_PORTS = (8081, 8082)
VCENTER_PORT = 8989
REGISTRY_USER = "conveyor"
REGISTRY_PROGRAM = "docker-registry"

Progress = Callable[[str], None]
# Prepares a Prefect server for prefect.yaml's deployments (api url, pools → lines to
# report). The CLI hands it in: it needs Prefect's client, which the library never imports.
ServerSetup = Callable[[str, list[str]], list[str]]


def _cluster_ports() -> tuple[tuple[int, int], int]:
    """The simulators' ports: CONVEYOR_MARATHON_PORTS="8081,8082", CONVEYOR_VCENTER_PORT."""
    raw = os.environ.get("CONVEYOR_MARATHON_PORTS", "")
    try:
        marathon = tuple(int(p) for p in raw.split(",")) if raw else MARATHON_PORTS
        vcenter = int(os.environ.get("CONVEYOR_VCENTER_PORT", VCENTER_PORT))
    except ValueError:
        raise LocalStackFailed(
            "CONVEYOR_MARATHON_PORTS must be two ports like 8081,8082 and "
            "CONVEYOR_VCENTER_PORT one port"
        ) from None
    if len(marathon) != 2:
        raise LocalStackFailed("CONVEYOR_MARATHON_PORTS must name two ports, like 8081,8082")
    return (marathon[0], marathon[1]), vcenter


def checkout() -> Path:
    """The checkout whose prefect.yaml the stack deploys and whose code its workers run:
    CONVEYOR_CHECKOUT, else the source tree of this (editable) install, else the
    current folder."""
    named = os.environ.get("CONVEYOR_CHECKOUT")
    candidates = [Path(named)] if named else [Path(__file__).resolve().parents[2], Path.cwd()]
    for path in candidates:
        if (path / "prefect.yaml").is_file():
            return path.resolve()
    raise LocalStackFailed(
        f"no prefect.yaml in {', '.join(map(str, candidates))}: run `conveyor up` in the "
        "checkout, or set CONVEYOR_CHECKOUT to it"
    )


def _silent(_: str) -> None:
    """Progress sink when the caller does not listen."""


@dataclass(frozen=True)
class ServiceStatus:
    name: str
    running: bool
    ours: bool  # started by ``conveyor up`` (and so stopped by ``down``)
    url: str
    detail: str


class _StackRegistry(RegistryServer):
    """The registry with its blobs under ``registry/data``, where the docs say they are."""

    @property
    def storage_path(self) -> Path:
        return self.root / "data"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None


def _answers_v2(url: str) -> bool:
    try:
        return httpx.get(f"{url}/v2/", timeout=3.0).status_code in (200, 401)
    except httpx.HTTPError:
        return False


class LocalStack:
    def __init__(
        self,
        home: Path,
        registry_port: int | None = None,
        prefect_port: int | None = None,
        dockerd_timeout: float = 60.0,
        prefect_timeout: float = 180.0,
        db: str | None = None,
        postgres_port: int | None = None,
        server_setup: ServerSetup | None = None,
    ) -> None:
        self.home = home.resolve()
        self.server_setup = server_setup
        saved = self._saved_ports()
        self.registry_port = registry_port or saved.get("registry_port", DEFAULT_REGISTRY_PORT)
        self.prefect_port = prefect_port or saved.get("prefect_port", DEFAULT_PREFECT_PORT)
        self.postgres_port = postgres_port or saved.get("postgres_port", DEFAULT_POSTGRES_PORT)
        self.db = db or self._saved_db()
        if self.db not in DATABASES:
            raise LocalStackFailed(f"--db must be one of {', '.join(DATABASES)}, not {self.db!r}")
        self.docker = DockerDaemon(self.home)
        self.postgres = PostgresServer(self.home, HOST, self.postgres_port)
        url = self.postgres.url() if self.db == "postgres" else None
        self.prefect = PrefectServer(self.home, HOST, self.prefect_port, database_url=url)
        self.clusters = LocalClusters(self.home, *_cluster_ports())
        self.dockerd_timeout = dockerd_timeout
        self.prefect_timeout = prefect_timeout

    def __repr__(self) -> str:
        return f"LocalStack(home={str(self.home)!r})"

    # --- state ----------------------------------------------------------------

    @property
    def state_file(self) -> Path:
        return self.home / "stack.json"

    def _saved_ports(self) -> dict[str, int]:
        try:
            data = json.loads(self.state_file.read_text())
        except (OSError, ValueError):
            return {}
        return {k: int(v) for k, v in data.items() if k.endswith("_port")}

    def _saved_db(self) -> str:
        try:
            return str(json.loads(self.state_file.read_text()).get("db", "sqlite"))
        except (OSError, ValueError, AttributeError):
            return "sqlite"

    def _save_ports(self) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        state: dict[str, int | str] = {
            "registry_port": self.registry_port,
            "prefect_port": self.prefect_port,
            "postgres_port": self.postgres_port,
            "db": self.db,
        }
        self.state_file.write_text(json.dumps(state, indent=2) + "\n")

    @property
    def registry_root(self) -> Path:
        return self.home / "registry"

    @property
    def registry_pid_file(self) -> Path:
        return self.home / "registry.pid"

    @property
    def registry_url(self) -> str:
        return f"http://{HOST}:{self.registry_port}"

    @property
    def password_file(self) -> Path:
        return self.registry_root / "password"

    def registry_password(self) -> SecretStr:
        """The registry password, generated on first use and kept readable by its owner only."""
        return process.generated_secret(self.password_file)

    def env(self) -> dict[str, str]:
        """What a shell needs to use the stack (``eval "$(conveyor env)"``)."""
        return {
            "PREFECT_API_URL": self.prefect.api_url,
            "CONVEYOR_HOME": str(self.home),
            "CONVEYOR_REGISTRY": f"{HOST}:{self.registry_port}",
        }

    # --- the registry -----------------------------------------------------------

    def _registry_ours(self) -> int | None:
        return process.read_pid(self.registry_pid_file, REGISTRY_PROGRAM)

    def _start_registry(self) -> str:
        if self._registry_ours() is not None and _answers_v2(self.registry_url):
            return "already running"
        for binary, package in (
            (REGISTRY_PROGRAM, "docker-registry"),
            ("htpasswd", "apache2-utils"),
        ):
            if shutil.which(binary) is None:
                raise LocalStackFailed(f"{binary} not found: apt-get install {package}")
        if process.listening(HOST, self.registry_port):
            raise LocalStackFailed(
                f"port {self.registry_port} is taken by another process: "
                "pass --registry-port (or set CONVEYOR_REGISTRY_PORT) or stop it"
            )
        server = _StackRegistry(
            self.registry_root,
            HOST,
            self.registry_port,
            htpasswd=(REGISTRY_USER, self.registry_password()),
        )
        server.start(timeout=60)
        if server.pid is None:
            raise LocalStackFailed(f"docker-registry did not start; see {server.log_path}")
        process.write_pid(self.registry_pid_file, server.pid)
        return f"started (pid {server.pid})"

    def _stop_registry(self) -> str:
        pid = self._registry_ours()
        self.registry_pid_file.unlink(missing_ok=True)
        if pid is None:
            return "not running"
        process.stop(pid)
        return f"stopped (pid {pid})"

    def _postgres_status(self) -> list[ServiceStatus]:
        if self.db != "postgres":
            return []
        pid = self.postgres.ours()
        detail = f"pid {pid}, data {self.postgres.data}" if pid else f"log {self.postgres.log_path}"
        address = f"postgresql://{HOST}:{self.postgres_port}"
        return [ServiceStatus("postgres", pid is not None, pid is not None, address, detail)]

    # --- workers and deployments ---------------------------------------------------

    def workers(self) -> list[PrefectWorker]:
        """The workers this stack started (their pid files), whatever prefect.yaml says now."""
        folder = self.home / "workers"
        pools = sorted(p.stem for p in folder.glob("*.pid")) if folder.is_dir() else []
        return [PrefectWorker(self.home, pool, Path()) for pool in pools]

    def _start_workers(self, progress: Progress) -> list[str]:
        """Pools, the zombie automation and prefect.yaml's deployments, then a worker per pool."""
        if not self.prefect.healthy():
            raise LocalStackFailed(
                f"the Prefect server on {self.prefect.url} does not answer: "
                "start it first (conveyor up --only prefect)"
            )
        if self.server_setup is None:
            raise LocalStackFailed("workers need the Prefect server prepared: use `conveyor up`")
        source = checkout()
        pools = deploy.work_pools(source)
        env = PrefectWorker(self.home, pools[0], source).environment(self.prefect.api_url)
        prepared = self.server_setup(self.prefect.api_url, pools)
        progress(f"deployments of {source / 'prefect.yaml'}")
        count = deploy.register_deployments(source, env)
        done = [f"deployments: {count} registered from {source / 'prefect.yaml'}", *prepared]
        for pool in pools:
            progress(f"worker for pool {pool}")
            worker = PrefectWorker(self.home, pool, source)
            done.append(f"worker {pool}: {worker.start(self.prefect.api_url)}")
        return done

    def _stop_workers(self) -> list[str]:
        return [f"worker {w.pool}: {w.stop()}" for w in self.workers()] or ["workers: none running"]

    # --- the commands -------------------------------------------------------------

    def _check_ports(self, services: Sequence[str]) -> None:
        if self.registry_port == self.prefect_port and {"registry", "prefect"} <= set(services):
            raise LocalStackFailed(
                f"the registry and Prefect cannot share port {self.prefect_port}"
            )
        running = self._saved_ports()
        for name, key, port in (
            ("registry", "registry_port", self.registry_port),
            ("prefect", "prefect_port", self.prefect_port),
        ):
            mine = self._registry_ours() if name == "registry" else self.prefect.ours()
            if name in services and mine is not None and running.get(key, port) != port:
                raise LocalStackFailed(
                    f"the {name} of this stack already runs on port {running[key]}: "
                    "run `conveyor down` first to change its port"
                )

    def up(self, services: Sequence[str] = SERVICES, progress: Progress = _silent) -> list[str]:
        """Start what is not running yet; one line per service saying what happened."""
        unknown = sorted(set(services) - set(SERVICES))
        if unknown:
            raise LocalStackFailed(f"unknown service {', '.join(unknown)}; known: {SERVICES}")
        self._check_ports(services)
        done = []
        if "docker" in services:
            progress("Docker Engine")
            done.append(f"docker: {self.docker.ensure(self.dockerd_timeout)}")
        if "registry" in services:
            progress(f"registry on {self.registry_url}")
            done.append(f"registry: {self._start_registry()}")
            self._save_ports()
        if "prefect" in services and self.db == "postgres":
            progress(f"PostgreSQL on {HOST}:{self.postgres_port}")
            done.append(f"postgres: {self.postgres.start()}")
            self._save_ports()
        if "prefect" in services:
            progress(f"Prefect server on {self.prefect.url} (this takes a while)")
            done.append(f"prefect: {self.prefect.start(self.prefect_timeout)}")
            self._save_ports()
        if "workers" in services:
            done += self._start_workers(progress)
        if "clusters" in services:
            progress("simulated DC/OS clusters and vCenter (the first start compiles vcsim)")
            host = self.registry_url.split("://", 1)[1]
            done += self.clusters.up(host, REGISTRY_USER, self.registry_password())
        return done

    def down(self, services: Sequence[str] = SERVICES, progress: Progress = _silent) -> list[str]:
        """Stop what ``up`` started, in reverse order; leave everything else alone."""
        done = []
        if "clusters" in services:
            progress("simulated clusters")
            done += self.clusters.down()
        if "workers" in services:
            progress("workers")
            done += self._stop_workers()
        if "prefect" in services:
            progress("Prefect server")
            done.append(f"prefect: {self.prefect.stop()}")
            if self.postgres.ours() is not None:
                done.append(f"postgres: {self.postgres.stop()}")
        if "registry" in services:
            progress("registry")
            done.append(f"registry: {self._stop_registry()}")
        if "docker" in services:
            progress("Docker Engine")
            done.append(f"docker: {self.docker.stop()}")
        return done

    def status(self) -> list[ServiceStatus]:
        docker_pid = self.docker.ours()
        registry_pid = self._registry_ours()
        prefect_pid = self.prefect.ours()
        return [
            ServiceStatus(
                "docker",
                self.docker.answers(),
                docker_pid is not None,
                os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock"),
                f"log {self.docker.log_path}" if docker_pid else "not ours: left alone",
            ),
            ServiceStatus(
                "registry",
                _answers_v2(self.registry_url),
                registry_pid is not None,
                self.registry_url,
                f"user {REGISTRY_USER}, password in {self.password_file}",
            ),
            ServiceStatus(
                "prefect",
                self.prefect.healthy(),
                prefect_pid is not None,
                self.prefect.api_url,
                f"database {self.db}, log {self.prefect.log_path}",
            ),
            *self._postgres_status(),
            *[
                ServiceStatus(
                    f"worker {w.pool}",
                    pid is not None,
                    pid is not None,
                    f"pool {w.pool}",
                    f"pid {pid}, log {w.log_path}" if pid else f"log {w.log_path}",
                )
                for w in self.workers()
                for pid in [w.ours()]
            ],
            *[
                ServiceStatus(name, running, running, url, "simulator")
                for name, running, url in self.clusters.status()
            ],
        ]
