"""The DC/OS surface around Marathon: IAM service-account login, the admin router's
token check, version metadata, system health units and Mesos agents
(shapes per shared/reference (beside the checkout)/dcos/openapi-dcos.yaml)."""

from __future__ import annotations

import base64
import hmac
import secrets
import threading
import time
from pathlib import Path
from typing import Any

import jwt

from conveyor.sim.marathon.faults import Faults
from conveyor.sim.marathon.model import InvalidJson, parse_json
from conveyor.sim.marathon.state import REACHABLE_ADDRESS, Agent, Cluster, ranges_text
from conveyor.sim.marathon.web import Request, Response, Router

TOKEN_LIFETIME_S = 5 * 24 * 3600
DCOS_VERSION = {
    "version": "2.2.0",
    "dcos-variant": "open",
    "dcos-image-commit": "c5f2a5c3e4d1a8b2f0e9d7c6b5a4f3e2d1c0b9a8",
    "bootstrap-id": "0f9d8c7b6a5e4d3c2b1a09f8e7d6c5b4a3f2e1d0",
}
# What `dcos auth list-providers` shows; only service-account login is simulated.
PROVIDERS = {
    "dcos-services": {
        "authentication-type": "dcos-uid-servicekey",
        "description": "Signing in using a service account login token",
        "client-method": "dcos-servicecredential-post-receive-authtoken",
        "config": {"start_flow_url": "/acs/api/v1/auth/login"},
    }
}
MASTER_NAMES = {"master.mesos", "leader.mesos", "marathon.mesos"}
UNITS = [
    ("dcos-adminrouter.service", "Admin Router Master", "exposes a unified control plane proxy"),
    ("dcos-marathon.service", "Marathon", "container orchestration engine"),
    ("dcos-mesos-master.service", "Mesos Master", "distributed systems kernel"),
    ("dcos-mesos-dns.service", "Mesos DNS", "DNS-based service discovery"),
    ("dcos-exhibitor.service", "Exhibitor", "manages ZooKeeper"),
    (
        "dcos-diagnostics.service",
        "DC/OS Diagnostics Master",
        "aggregates and exposes component health",
    ),
]


def iam_error(status: int, title: str, description: str, code: str) -> Response:
    headers = {"WWW-Authenticate": "acsjwt"} if status == 401 else {}
    return Response(
        status, {"title": title, "description": description, "code": code}, headers=headers
    )


def load_service_accounts(specs: list[str]) -> dict[str, bytes]:
    """``NAME=PUBLIC_KEY_FILE`` pairs from the command line -> uid -> PEM public key."""
    accounts: dict[str, bytes] = {}
    for spec in specs:
        uid, sep, path = spec.partition("=")
        if not sep or not uid:
            raise ValueError(f"--service-account wants NAME=PUBLIC_KEY_FILE, got {spec!r}")
        accounts[uid] = Path(path).read_bytes()
    return accounts


class DcosAuth:
    """IAM login with service-account JWTs, and the ``Authorization: token=...`` check."""

    def __init__(self, accounts: dict[str, bytes]) -> None:
        self.accounts = accounts
        self._tokens: dict[str, tuple[str, float]] = {}
        self._lock = threading.Lock()

    def login(self, req: Request) -> Response:
        try:
            body = parse_json(req.body)
        except InvalidJson:
            body = None
        if not isinstance(body, dict) or not isinstance(body.get("uid"), str):
            return iam_error(
                400, "Bad Request", "Request body is not a valid login object.", "ERR_INVALID_DATA"
            )
        uid = body["uid"]
        key = self.accounts.get(uid)
        if key is None or not isinstance(body.get("token"), str):
            return iam_error(
                401,
                "Authentication error",
                "Login failed: unknown service account or missing login token.",
                "ERR_INVALID_CREDENTIALS",
            )
        try:
            claims = jwt.decode(
                body["token"], key, algorithms=["RS256"], options={"require": ["exp", "uid"]}
            )
        except jwt.PyJWTError as exc:
            return iam_error(
                401,
                "Authentication error",
                f"Service login token verification failed: {exc}",
                "ERR_INVALID_CREDENTIALS",
            )
        if claims.get("uid") != uid:
            return iam_error(
                401,
                "Authentication error",
                "Service login token verification failed: uid claim does not match.",
                "ERR_INVALID_CREDENTIALS",
            )
        token = secrets.token_urlsafe(32)
        with self._lock:
            self._tokens[token] = (uid, time.time() + TOKEN_LIFETIME_S)
        return Response(200, {"token": token})

    def check(self, req: Request) -> Response | None:
        """None when the request carries a valid token, else the admin router's 401."""
        scheme, _, token = req.header("authorization").partition("=")
        if scheme.strip().lower() != "token" or not token:
            return iam_error(
                401,
                "Unauthorized",
                "Authentication required: send 'Authorization: token=<auth token>'.",
                "ERR_MISSING_AUTHORIZATION",
            )
        with self._lock:
            found = self._tokens.get(token.strip())
        if found is None or found[1] < time.time():
            return iam_error(
                401,
                "Unauthorized",
                "Invalid or expired authentication token.",
                "ERR_INVALID_CREDENTIALS",
            )
        return None


class BasicAuth:
    """HTTP basic auth for a plain Marathon (``--http_credentials``)."""

    def __init__(self, user: str, password: str) -> None:
        self._expected = base64.b64encode(f"{user}:{password}".encode()).decode()

    def check(self, req: Request) -> Response | None:
        scheme, _, value = req.header("authorization").partition(" ")
        if scheme.lower() == "basic" and hmac.compare_digest(value.strip(), self._expected):
            return None
        return Response(
            401,
            {"message": "Invalid username or password."},
            headers={"WWW-Authenticate": 'Basic realm="Mesosphere"'},
        )


class DcosApi:
    def __init__(self, cluster: Cluster, faults: Faults, lock: threading.Condition) -> None:
        self.cluster = cluster
        self.faults = faults
        # The engine's lock: agents' used resources change under it.
        self.lock = lock

    def mount(self, router: Router) -> None:
        router.add("GET", "/dcos-metadata/dcos-version.json", lambda r: Response(200, DCOS_VERSION))
        router.add("GET", "/metadata/?", self.metadata)
        router.add("GET", r"/mesos_dns/v1/hosts/(?P<host>[^/]+)", self.dns_hosts)
        router.add("GET", "/acs/api/v1/auth/providers/?", lambda r: Response(200, PROVIDERS))
        router.add("GET", "/system/health/v1/units/?", self.units)
        router.add("GET", "/mesos/master/slaves/?", self.slaves)

    def metadata(self, req: Request) -> Response:
        """The admin router's /metadata: the CLI files each cluster under its CLUSTER_ID."""
        return Response(
            200,
            {
                "PUBLIC_IPV4": REACHABLE_ADDRESS,
                "CLUSTER_ID": self.cluster.framework_id[:36],
                "SIMULATED": True,
            },
        )

    @staticmethod
    def dns_hosts(req: Request) -> Response:
        """Mesos-DNS's host lookup, for the one master the simulator is (the CLI counts
        masters this way); every other name is unknown, answered as Mesos-DNS does."""
        name = req.params["host"].rstrip(".")
        if name in MASTER_NAMES:
            return Response(200, [{"host": f"{name}.", "ip": REACHABLE_ADDRESS}])
        return Response(200, [{"host": "", "ip": ""}])

    def units(self, req: Request) -> Response:
        bad = self.faults.unhealthy_units()
        return Response(
            200,
            {
                "units": [
                    {
                        "id": uid,
                        "name": name,
                        "health": 1 if uid in bad else 0,
                        "description": description,
                        "help": "",
                        "output": "unit is not healthy" if uid in bad else "",
                    }
                    for uid, name, description in UNITS
                ]
            },
        )

    def slaves(self, req: Request) -> Response:
        slaves: list[dict[str, Any]] = []
        with self.lock:
            for agent in self.cluster.agents:
                slaves.append(self._agent(agent))
        return Response(200, {"slaves": slaves})

    @staticmethod
    def _agent(agent: Agent) -> dict[str, Any]:
        return {
            "id": agent.id,
            "hostname": agent.hostname,
            "port": 5051,
            "active": True,
            "pid": "slave(1)@127.0.0.1:5051",
            "resources": {
                "cpus": agent.cpus,
                "mem": agent.mem,
                "disk": agent.disk,
                "gpus": 0,
                "ports": ranges_text(agent.port_range),
            },
            "used_resources": {
                "cpus": round(agent.used_cpus, 4),
                "mem": agent.used_mem,
                "disk": 0,
                "gpus": 0,
                "ports": ranges_text(agent.ports),
            },
            "attributes": {},
        }
