"""App definitions: Marathon's validation (422 details) and its defaults.

Paths in error details use Marathon's own notation (``/healthChecks(0)/path``) so a
client written against the simulator parses real Marathon's answers the same way.
Unknown fields are accepted and kept: the RAML types do not forbid additional
properties and Marathon ignores what it does not know.
"""

from __future__ import annotations

import copy
import json
import re
import uuid
from datetime import UTC, datetime
from typing import Any

from conveyor.sim.marathon import pathid

App = dict[str, Any]
Details = list[dict[str, Any]]

PORT_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
HEALTH_PROTOCOLS = {"HTTP", "HTTPS", "TCP", "COMMAND", "MESOS_TCP", "MESOS_HTTP", "MESOS_HTTPS"}
# What the simulator can really probe; the rest would silently never turn healthy.
PROBED_PROTOCOLS = {"HTTP", "MESOS_HTTP", "TCP", "MESOS_TCP"}
NETWORK_MODES = {"container", "container/bridge", "host"}
PORT_PROTOCOLS = {"tcp", "udp", "udp,tcp"}

HEALTH_DEFAULTS: dict[str, Any] = {
    "gracePeriodSeconds": 300,
    "intervalSeconds": 60,
    "maxConsecutiveFailures": 3,
    "timeoutSeconds": 20,
    "delaySeconds": 15,
    "protocol": "HTTP",
    "ipProtocol": "IPv4",
}

READINESS_DEFAULTS: dict[str, Any] = {
    "name": "readinessCheck",
    "protocol": "HTTP",
    "path": "/",
    "portName": "http-api",
    "intervalSeconds": 30,
    "timeoutSeconds": 10,
    "httpStatusCodesForReady": [200],
    "preserveLastResponse": False,
}

# Read-only fields of AppInfo that clients echo back; Marathon ignores them on writes.
INFO_FIELDS = {
    "tasks",
    "tasksRunning",
    "tasksStaged",
    "tasksHealthy",
    "tasksUnhealthy",
    "deployments",
    "lastTaskFailure",
    "taskStats",
    "readinessCheckResults",
    "versionInfo",
    "version",
}

# Fields that do not make tasks restart when they change (Marathon's "scale only").
NON_CONFIG_FIELDS = {"version", "versionInfo", "instances"}


class InvalidJson(Exception):
    def __init__(self, details: Details) -> None:
        self.details = details
        super().__init__("Invalid JSON")


class InvalidApp(Exception):
    def __init__(self, details: Details) -> None:
        self.details = details
        super().__init__("Object is not valid")


def now_iso() -> str:
    """Marathon's timestamp format: UTC with milliseconds and a Z."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def new_id() -> str:
    return str(uuid.uuid4())


def normalize_id(app_id: str) -> str:
    return pathid.canonical(app_id)


def config_key(app: App) -> str:
    """Identity of the launch configuration: equal keys mean no restart is needed."""
    return json.dumps({k: v for k, v in app.items() if k not in NON_CONFIG_FIELDS}, sort_keys=True)


class _Checker:
    def __init__(self) -> None:
        self.details: Details = []

    def add(self, path: str, error: str) -> None:
        for item in self.details:
            if item["path"] == path:
                item["errors"].append(error)
                return
        self.details.append({"path": path, "errors": [error]})

    def typed(self, obj: dict[str, Any], key: str, kinds: tuple[type, ...], path: str) -> bool:
        """True when ``key`` is present with a JSON type in ``kinds`` (bool is never a number)."""
        if key not in obj or obj[key] is None:
            return False
        value = obj[key]
        if isinstance(value, bool) and bool not in kinds:
            self.add(path, "error.expected.jsnumber")
            return False
        if not isinstance(value, kinds):
            expected = "jsnumber" if float in kinds else "jsstring" if str in kinds else "jsobject"
            self.add(path, f"error.expected.{expected}")
            return False
        return True

    def minimum(self, obj: dict[str, Any], key: str, low: float, path: str) -> None:
        if self.typed(obj, key, (int, float), path) and obj[key] < low:
            self.add(path, f"got {obj[key]}, expected {low} or more")

    def fraction(self, obj: dict[str, Any], key: str, path: str) -> None:
        if not self.typed(obj, key, (int, float), path):
            return
        if obj[key] > 1:
            self.add(path, "is greater than 1")
        elif obj[key] < 0:
            self.add(path, "is less than 0")


def _check_container(c: _Checker, container: Any) -> None:
    if container is None:
        return
    if not isinstance(container, dict):
        c.add("/container", "error.expected.jsobject")
        return
    kind = container.get("type", "DOCKER")
    if kind not in ("DOCKER", "MESOS"):
        c.add("/container/type", "error.expected.validenumvalue")
    docker = container.get("docker")
    if kind == "DOCKER" and not isinstance(docker, dict):
        c.add("/container/docker", "error.path.missing")
    elif isinstance(docker, dict):
        image = docker.get("image")
        if not isinstance(image, str) or not image:
            c.add(
                "/container/docker/image",
                "error.path.missing" if image is None else "must not be empty",
            )


def _check_health(c: _Checker, checks: Any, port_count: int) -> None:
    if checks is None:
        return
    if not isinstance(checks, list):
        c.add("/healthChecks", "error.expected.jsarray")
        return
    for i, hc in enumerate(checks):
        base = f"/healthChecks({i})"
        if not isinstance(hc, dict):
            c.add(base, "error.expected.jsobject")
            continue
        protocol = hc.get("protocol", "HTTP")
        if protocol not in HEALTH_PROTOCOLS:
            c.add(f"{base}/protocol", "error.expected.validenumvalue")
        elif protocol not in PROBED_PROTOCOLS:
            c.add(
                f"{base}/protocol", f"{protocol} health checks are not supported by the simulator"
            )
        path = hc.get("path")
        if path is not None and (not isinstance(path, str) or not path.startswith("/")):
            c.add(f"{base}/path", "must be an absolute path starting with '/'")
        for key in (
            "gracePeriodSeconds",
            "intervalSeconds",
            "maxConsecutiveFailures",
            "timeoutSeconds",
            "delaySeconds",
        ):
            c.minimum(hc, key, 0, f"{base}/{key}")
        index = hc.get("portIndex", 0)
        if hc.get("port") is None and (not isinstance(index, int) or not 0 <= index < port_count):
            c.add(
                base,
                "Health check port indices must address an element of the ports array "
                "or container port mappings.",
            )


def _check_readiness(c: _Checker, checks: Any, defs: Any) -> None:
    """Marathon's AppValidation.readinessCheckValidator, plus what the simulator can probe."""
    if checks is None:
        return
    if not isinstance(checks, list):
        c.add("/readinessChecks", "error.expected.jsarray")
        return
    if len(checks) > 1:
        c.add("/readinessChecks", f"got {len(checks)}, expected 1 or less")
    names = (
        {pd.get("name") for pd in defs if isinstance(pd, dict)} if isinstance(defs, list) else set()
    )
    for i, rc in enumerate(checks):
        base = f"/readinessChecks({i})"
        if not isinstance(rc, dict):
            c.add(base, "error.expected.jsobject")
            continue
        protocol = rc.get("protocol", "HTTP")
        if protocol not in ("HTTP", "HTTPS"):
            c.add(f"{base}/protocol", "error.expected.validenumvalue")
        elif protocol == "HTTPS":
            c.add(f"{base}/protocol", "HTTPS readiness checks are not supported by the simulator")
        port_name = rc.get("portName", "http-api")
        if port_name not in names:
            c.add(f"{base}/portName", f"No port definition reference for portName {port_name}")
        c.minimum(rc, "intervalSeconds", 0, f"{base}/intervalSeconds")
        c.minimum(rc, "timeoutSeconds", 1, f"{base}/timeoutSeconds")
        interval, timeout = rc.get("intervalSeconds", 30), rc.get("timeoutSeconds", 10)
        numbers = isinstance(interval, int | float) and isinstance(timeout, int | float)
        if numbers and timeout >= interval:
            c.add(f"{base}/timeoutSeconds", f"got {timeout}, expected less than {interval}")
        codes = rc.get("httpStatusCodesForReady", [200])
        if not isinstance(codes, list) or not codes:
            c.add(f"{base}/httpStatusCodesForReady", "must not be empty")
        elif not all(isinstance(x, int) and 100 <= x <= 999 for x in codes):
            c.add(f"{base}/httpStatusCodesForReady", "expected HTTP status codes 100 to 999")


def _check_ports(c: _Checker, defs: Any) -> None:
    if defs is None:
        return
    if not isinstance(defs, list):
        c.add("/portDefinitions", "error.expected.jsarray")
        return
    names: set[str] = set()
    for i, pd in enumerate(defs):
        base = f"/portDefinitions({i})"
        if not isinstance(pd, dict):
            c.add(base, "error.expected.jsobject")
            continue
        port = pd.get("port", 0)
        if not isinstance(port, int) or isinstance(port, bool) or not 0 <= port <= 65535:
            c.add(f"{base}/port", "got an invalid port, expected 0 to 65535")
        if pd.get("protocol", "tcp") not in PORT_PROTOCOLS:
            c.add(f"{base}/protocol", "error.expected.validenumvalue")
        name = pd.get("name")
        if name is not None:
            if not isinstance(name, str) or not PORT_NAME.match(name):
                c.add(
                    f"{base}/name",
                    "must fully match regular expression '^[a-z0-9]([-a-z0-9]*[a-z0-9])?$'",
                )
            elif name in names:
                c.add("/portDefinitions", "Port names must be unique.")
            else:
                names.add(name)


def _check_networks(c: _Checker, networks: Any) -> None:
    if networks is None:
        return
    if not isinstance(networks, list):
        c.add("/networks", "error.expected.jsarray")
        return
    for i, net in enumerate(networks):
        mode = net.get("mode", "container") if isinstance(net, dict) else None
        if mode not in NETWORK_MODES:
            c.add(f"/networks({i})/mode", "error.expected.validenumvalue")
        elif mode != "host":
            c.add(f"/networks({i})/mode", "the simulator supports only host networking")


def validate(app: App) -> None:
    """Raise ``InvalidApp`` with every problem Marathon would report for ``app``."""
    c = _Checker()
    app_id = app.get("id")
    if app_id is None:
        c.add("/id", "error.path.missing")
    elif not isinstance(app_id, str):
        c.add("/id", "error.expected.jsstring")
    else:
        for error in pathid.errors(app_id):
            c.add("/id", error)
    deps = app.get("dependencies")
    if deps is not None and (
        not isinstance(deps, list) or not all(isinstance(d, str) for d in deps)
    ):
        c.add("/dependencies", "error.expected.jsarray")
    elif deps:
        for i, dep in enumerate(deps):
            for error in pathid.errors(dep, need_segment=False):
                c.add(f"/dependencies({i})", error)
    for key, low in (
        ("cpus", 0),
        ("mem", 0),
        ("disk", 0),
        ("gpus", 0),
        ("instances", 0),
        ("backoffSeconds", 0),
        ("backoffFactor", 1),
        ("maxLaunchDelaySeconds", 0),
        ("taskKillGracePeriodSeconds", 0),
    ):
        c.minimum(app, key, low, f"/{key}")
    if app.get("cmd") is not None and app.get("args") is not None:
        c.add(
            "/", "AppDefinition must either contain one of 'cmd' or 'args', and/or a 'container'."
        )
    if app.get("cmd") is None and app.get("args") is None and app.get("container") is None:
        c.add(
            "/", "AppDefinition must either contain one of 'cmd' or 'args', and/or a 'container'."
        )
    _check_container(c, app.get("container"))
    strategy = app.get("upgradeStrategy")
    if isinstance(strategy, dict):
        c.fraction(strategy, "minimumHealthCapacity", "/upgradeStrategy/minimumHealthCapacity")
        c.fraction(strategy, "maximumOverCapacity", "/upgradeStrategy/maximumOverCapacity")
    elif strategy is not None:
        c.add("/upgradeStrategy", "error.expected.jsobject")
    _check_ports(c, app.get("portDefinitions"))
    _check_networks(c, app.get("networks"))
    defs = app.get("portDefinitions")
    _check_health(c, app.get("healthChecks"), len(defs) if isinstance(defs, list) else 1)
    _check_readiness(c, app.get("readinessChecks"), defs)
    if c.details:
        raise InvalidApp(c.details)


def with_defaults(app: App) -> App:
    """The definition as Marathon stores and returns it: every default filled in."""
    out = copy.deepcopy(app)
    out["id"] = normalize_id(out["id"])
    # Like Marathon's AppNormalization: dependencies resolve against the app's group.
    out["dependencies"] = [
        pathid.canonical(d, pathid.parent(out["id"])) for d in out.get("dependencies") or []
    ]
    defaults: dict[str, Any] = {
        "cmd": None,
        "args": None,
        "user": None,
        "env": {},
        "instances": 1,
        "cpus": 1,
        "mem": 128,
        "disk": 0,
        "gpus": 0,
        "executor": "",
        "constraints": [],
        "uris": [],
        "fetch": [],
        "storeUrls": [],
        "backoffSeconds": 1,
        "backoffFactor": 1.15,
        "maxLaunchDelaySeconds": 300,
        "container": None,
        "healthChecks": [],
        "readinessChecks": [],
        "dependencies": [],
        "labels": {},
        "requirePorts": False,
        "killSelection": "YOUNGEST_FIRST",
        "networks": [{"mode": "host"}],
        "secrets": {},
        "role": "*",
        "portDefinitions": [{"port": 0, "protocol": "tcp"}],
        "taskKillGracePeriodSeconds": None,
    }
    for key, value in defaults.items():
        if out.get(key) is None:
            out[key] = value
    strategy = out.get("upgradeStrategy") or {}
    out["upgradeStrategy"] = {"minimumHealthCapacity": 1, "maximumOverCapacity": 1, **strategy}
    out["portDefinitions"] = [{"port": 0, "protocol": "tcp", **pd} for pd in out["portDefinitions"]]
    out["healthChecks"] = [
        {
            **HEALTH_DEFAULTS,
            **({"portIndex": 0} if hc.get("port") is None else {}),
            **({"path": "/"} if hc.get("protocol", "HTTP").endswith("HTTP") else {}),
            **hc,
        }
        for hc in out["healthChecks"]
    ]
    out["readinessChecks"] = [{**READINESS_DEFAULTS, **rc} for rc in out["readinessChecks"]]
    return out


def parse_json(raw: bytes) -> Any:
    """Decode a request body, raising Marathon's 400 shape on malformed JSON."""
    try:
        return json.loads(raw or b"null")
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidJson([{"path": "/", "errors": [f"error.expected.json: {exc}"]}]) from None
