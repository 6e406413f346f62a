"""Wiring and command line: ``python -m conveyor.sim.marathon --listen 127.0.0.1:PORT ...``."""

from __future__ import annotations

import argparse
import ipaddress
import logging
import signal
import socket
import sys
import threading
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import docker

from conveyor.sim.marathon.admin import AdminApi
from conveyor.sim.marathon.api import MarathonApi
from conveyor.sim.marathon.dcos import BasicAuth, DcosApi, DcosAuth, load_service_accounts
from conveyor.sim.marathon.engine import Engine
from conveyor.sim.marathon.events import EventBus
from conveyor.sim.marathon.faults import Faults
from conveyor.sim.marathon.persist import BadStateFile, StateFile
from conveyor.sim.marathon.runtime import DockerRuntime, load_docker_auths
from conveyor.sim.marathon.state import Cluster
from conveyor.sim.marathon.web import Request, Response, Router, SimServer, message

log = logging.getLogger(__name__)

MARATHON_VERSION = "1.11.24"
MARATHON_PREFIX = "/service/marathon"
PUBLIC_PATHS = {"/dcos-metadata/dcos-version.json", "/acs/api/v1/auth/providers"}


@dataclass
class Settings:
    host: str = "127.0.0.1"
    port: int = 0
    name: str = "marathon"
    dcos: bool = False
    service_accounts: dict[str, bytes] = field(default_factory=dict)
    ports: range = range(31000, 32000)
    agents: int = 1
    agent_cpus: float = 4.0
    agent_mem: float = 8192.0
    basic_auth: tuple[str, str] | None = None
    docker_auths: dict[str, dict[str, str]] = field(default_factory=dict)
    # Where apps, versions, deployments and tasks are kept across restarts (None: nowhere).
    state_dir: Path | None = None


def _loopback(host: str) -> str:
    """The house rule: the simulator only ever binds to the loopback interface."""
    try:
        if ipaddress.ip_address(host).is_loopback:
            return host
    except ValueError:
        pass
    raise ValueError(f"--listen must be 127.0.0.1 or ::1, not {host!r}")


class MarathonSim:
    """One simulated Marathon (optionally inside DC/OS) serving HTTP in a background thread."""

    def __init__(self, settings: Settings, client: docker.DockerClient) -> None:
        self.settings = settings
        _loopback(settings.host)
        self.faults = Faults()
        self.bus = EventBus()
        store = StateFile(settings.state_dir) if settings.state_dir else None
        saved = store.load() if store else None
        self.cluster = Cluster(
            settings.name,
            settings.agents,
            settings.agent_cpus,
            settings.agent_mem,
            settings.ports,
            framework_id=saved.get("frameworkId") if saved else None,
        )
        runtime = DockerRuntime(client, settings.name, settings.docker_auths)
        self.engine = Engine(self.cluster, runtime, self.bus, self.faults, store)
        family = socket.AF_INET6 if ":" in settings.host else socket.AF_INET
        self.httpd = SimServer((settings.host, settings.port), self.dispatch, family)
        self.port = int(self.httpd.server_address[1])
        host = f"[{settings.host}]" if ":" in settings.host else settings.host
        self.url = f"http://{host}:{self.port}"
        self.marathon = Router()
        MarathonApi(self.engine, self._info(), lambda: self.httpd.stopping).mount(self.marathon)
        self.admin = Router()
        AdminApi(self.engine, self.faults, settings.name).mount(self.admin)
        self.dcos_routes = Router()
        DcosApi(self.cluster, self.faults, self.engine.lock).mount(self.dcos_routes)
        self.dcos_auth = DcosAuth(settings.service_accounts) if settings.dcos else None
        self.basic_auth = BasicAuth(*settings.basic_auth) if settings.basic_auth else None
        self._thread: threading.Thread | None = None

    def _info(self) -> dict[str, Any]:
        leader = f"{self.settings.host}:{self.port}"
        return {
            "name": "marathon",
            "version": MARATHON_VERSION,
            "buildref": "conveyor-sim",
            "elected": True,
            "leader": leader,
            "frameworkId": self.cluster.framework_id,
            "marathon_config": {
                "framework_name": "marathon",
                "hostname": self.settings.host,
                "master": "zk://sim/mesos",
                "mesos_role": "*",
                "mesos_user": "root",
                "task_launch_timeout": 300000,
                "webui_url": self.url,
                "features": [],
                "ha": False,
                "checkpoint": True,
            },
            "zookeeper_config": {"zk": "zk://sim/marathon", "zk_timeout": 10000},
            "http_config": {"http_port": self.port, "https_port": 8443},
            "simulator": {
                "name": self.settings.name,
                "dcos": self.settings.dcos,
                "reachableAddress": "127.0.0.1",
            },
        }

    # --- request dispatch ---------------------------------------------------------

    @staticmethod
    def _route(router: Router, req: Request) -> Response:
        method = "GET" if req.method == "HEAD" else req.method
        handler, params, known = router.find(method, req.path)
        if handler is None:
            return message(405 if known else 404, "Method not allowed" if known else "Not found")
        req.params = params
        return handler(req)

    def dispatch(self, req: Request) -> Response:
        if req.path.startswith("/_sim/"):
            return self._route(self.admin, req)
        status = self.faults.unavailable()
        if status is not None:
            return message(status, "Service temporarily unavailable (simulated fault)")
        if self.dcos_auth is not None:
            return self._dispatch_dcos(req, self.dcos_auth)
        if self.basic_auth is not None and req.path.startswith("/v2"):
            denied = self.basic_auth.check(req)
            if denied is not None:
                return denied
        return self._route(self.marathon, req)

    def _dispatch_dcos(self, req: Request, auth: DcosAuth) -> Response:
        if req.path == "/acs/api/v1/auth/login" and req.method == "POST":
            return auth.login(req)
        if req.path in PUBLIC_PATHS:
            # Public in DC/OS too: the CLI reads them before anyone logs in.
            return self._route(self.dcos_routes, req)
        denied = auth.check(req)
        if denied is not None:
            return denied
        if req.path == MARATHON_PREFIX or req.path.startswith(MARATHON_PREFIX + "/"):
            req.path = req.path[len(MARATHON_PREFIX) :] or "/"
            return self._route(self.marathon, req)
        return self._route(self.dcos_routes, req)

    # --- lifecycle --------------------------------------------------------------------

    def start(self) -> MarathonSim:
        self.engine.start()
        self._thread = threading.Thread(
            target=self.httpd.serve_forever,
            kwargs={"poll_interval": 0.2},
            name="sim-http",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self.httpd.stopping = True
        self.httpd.shutdown()
        self.httpd.server_close()
        self.engine.stop()

    def __enter__(self) -> MarathonSim:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _port_range(text: str) -> range:
    low, _, high = text.partition("-")
    first, last = int(low), int(high or low)
    if not 1024 <= first <= last <= 65535:
        raise argparse.ArgumentTypeError(f"bad port range {text!r}")
    return range(first, last + 1)


def parse_args(argv: list[str] | None = None) -> Settings:
    parser = argparse.ArgumentParser(
        prog="python -m conveyor.sim.marathon",
        description="Marathon (and DC/OS) API simulator on the Docker Engine",
    )
    parser.add_argument(
        "--listen", default="127.0.0.1:8080", help="HOST:PORT (loopback only; PORT 0 = any)"
    )
    parser.add_argument(
        "--dcos", action="store_true", help="serve DC/OS around Marathon (/service/marathon)"
    )
    parser.add_argument(
        "--service-account", action="append", default=[], metavar="NAME=PUBLIC_KEY_FILE"
    )
    parser.add_argument("--ports", type=_port_range, default=range(31000, 32000))
    parser.add_argument("--agents", type=int, default=1)
    parser.add_argument("--agent-cpus", type=float, default=4.0)
    parser.add_argument("--agent-mem", type=float, default=8192.0)
    parser.add_argument("--name", default="marathon")
    parser.add_argument("--basic-auth", metavar="USER:PASSWORD_FILE")
    parser.add_argument("--docker-config", type=Path, help="docker config.json with registry auths")
    parser.add_argument(
        "--state-dir", type=Path, help="keep apps and deployments here across restarts"
    )
    args = parser.parse_args(argv)
    return settings_from(
        listen=args.listen,
        dcos=args.dcos,
        service_accounts=args.service_account,
        ports=args.ports,
        agents=args.agents,
        agent_cpus=args.agent_cpus,
        agent_mem=args.agent_mem,
        name=args.name,
        basic_auth=args.basic_auth,
        docker_config=args.docker_config,
        state_dir=args.state_dir,
    )


def settings_from(
    listen: str,
    dcos: bool,
    service_accounts: list[str],
    ports: range,
    agents: int,
    agent_cpus: float,
    agent_mem: float,
    name: str,
    basic_auth: str | None,
    docker_config: Path | None,
    state_dir: Path | None = None,
) -> Settings:
    host, _, port = listen.rpartition(":")
    host = _loopback(host.strip("[]") or "127.0.0.1")
    credentials = None
    if basic_auth:
        user, sep, password_file = basic_auth.partition(":")
        if not sep:
            raise ValueError("--basic-auth wants USER:PASSWORD_FILE")
        credentials = (user, Path(password_file).read_text().strip())
    return replace(
        Settings(),
        host=host,
        port=int(port),
        name=name,
        dcos=dcos,
        service_accounts=load_service_accounts(service_accounts),
        ports=ports,
        agents=max(1, agents),
        agent_cpus=agent_cpus,
        agent_mem=agent_mem,
        basic_auth=credentials,
        docker_auths=load_docker_auths(docker_config),
        state_dir=state_dir,
    )


def run(settings: Settings) -> int:
    """Serve until SIGTERM/SIGINT, then remove every container this instance started."""
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    client = docker.from_env(timeout=120)
    done = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: done.set())
    sim = MarathonSim(settings, client).start()
    print(f"listening on {sim.url}", flush=True)
    try:
        while not done.wait(0.5):
            pass
    finally:
        sim.stop()
        client.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    try:
        settings = parse_args(argv)
    except (ValueError, OSError) as exc:
        print(f"marathon-sim: {exc}", file=sys.stderr)
        return 2
    try:
        return run(settings)
    except BadStateFile as exc:
        print(f"marathon-sim: {exc}", file=sys.stderr)
        return 2
