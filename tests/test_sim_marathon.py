"""The Marathon simulator against the real Docker Engine: apps run as real containers."""

from __future__ import annotations

import io
import json
import random
import tarfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import docker
import httpx
import pytest

from conveyor.sim.marathon import MarathonSim, Settings
from tests.parts import require_binary

pytestmark = pytest.mark.docker

IMAGE = "conveyor-test/marathon-sim-app:1"
SERVE = "exec httpd -f -p 127.0.0.1:$PORT0 -h /www"
# Writes what Marathon told the task into the served files, so tests can read its env.
SERVE_ENV = (
    "mkdir -p /tmp/www && cp /www/* /tmp/www/ && "
    'echo "$MARATHON_APP_ID $MESOS_TASK_ID $PORT0 $HOST" > /tmp/www/env && '
    "exec httpd -f -p 127.0.0.1:$PORT0 -h /tmp/www"
)


@pytest.fixture(scope="session")
def sim_image(docker_client: docker.DockerClient) -> str:
    """A busybox httpd image built FROM scratch (nothing is pulled)."""
    busybox = require_binary("busybox", "apt-get install busybox-static")
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        tar.add(busybox, arcname="busybox")
        dockerfile = (
            b"FROM scratch\nCOPY busybox /bin/busybox\n"
            b'RUN ["/bin/busybox", "--install", "-s", "/bin"]\n'
            b"RUN mkdir /www && echo ok > /www/health && echo hello > /www/index.html\n"
            b'LABEL conveyor.test="1"\n'
        )
        info = tarfile.TarInfo("Dockerfile")
        info.size = len(dockerfile)
        tar.addfile(info, io.BytesIO(dockerfile))
    buf.seek(0)
    docker_client.images.build(fileobj=buf, custom_context=True, tag=IMAGE, rm=True)
    return IMAGE


def port_block() -> range:
    """Task ports below Linux's ephemeral range, so free_port() never hands them out."""
    start = random.randrange(20000, 29000, 50)
    return range(start, start + 50)


@pytest.fixture
def make_sim(
    docker_client: docker.DockerClient, sim_image: str
) -> Iterator[Callable[..., MarathonSim]]:
    started: list[MarathonSim] = []

    def make(**overrides: Any) -> MarathonSim:
        settings = Settings(name=f"t{uuid.uuid4().hex[:8]}", ports=port_block(), **overrides)
        sim = MarathonSim(settings, docker_client).start()
        started.append(sim)
        return sim

    yield make
    for sim in started:
        sim.stop()
        left = docker_client.containers.list(
            all=True, filters={"label": f"conveyor.sim.instance={sim.settings.name}"}
        )
        assert not left, "the simulator left containers behind"


@pytest.fixture
def sim(make_sim: Callable[..., MarathonSim]) -> MarathonSim:
    return make_sim()


@pytest.fixture
def api(sim: MarathonSim) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=sim.url, timeout=10) as client:
        yield client


def wait_for(what: str, check: Callable[[], Any], timeout: float = 30, every: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def app_def(instances: int = 1, cmd: str = SERVE, **extra: Any) -> dict[str, Any]:
    return {
        "instances": instances,
        "cpus": 0.1,
        "mem": 32,
        "cmd": cmd,
        "container": {"type": "DOCKER", "docker": {"image": IMAGE}},
        "backoffSeconds": 0,
        "healthChecks": [
            {
                "protocol": "HTTP",
                "path": "/health",
                "intervalSeconds": 1,
                "timeoutSeconds": 1,
                "gracePeriodSeconds": 1,
                "maxConsecutiveFailures": 2,
            }
        ],
        **extra,
    }


def get_app(api: httpx.Client, app_id: str) -> dict[str, Any]:
    response = api.get(f"/v2/apps{app_id}")
    assert response.status_code == 200, response.text
    return dict(response.json()["app"])


def deployed(api: httpx.Client, app_id: str) -> bool:
    """True once the app has no deployment and every wanted task is healthy."""
    app = get_app(api, app_id)
    return not app["deployments"] and app["tasksHealthy"] == app["instances"] == len(app["tasks"])


class EventReader:
    """Collects /v2/events in a thread; the stream closes with the simulator."""

    def __init__(self, url: str) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []
        self._attached = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(url,), daemon=True)
        self._thread.start()
        assert self._attached.wait(10), "event stream did not attach"

    def _run(self, url: str) -> None:
        headers = {"Accept": "text/event-stream"}
        with httpx.stream("GET", f"{url}/v2/events", headers=headers, timeout=30) as response:
            name = ""
            for line in response.iter_lines():
                if line.startswith("event: "):
                    name = line[7:]
                elif line.startswith("data: "):
                    self.events.append((name, json.loads(line[6:])))
                    self._attached.set()

    def named(self, name: str) -> list[dict[str, Any]]:
        return [data for event, data in list(self.events) if event == name]


def test_created_app_runs_healthy_real_containers(sim: MarathonSim, api: httpx.Client) -> None:
    events = EventReader(sim.url)
    response = api.put("/v2/apps/web", json=app_def(instances=2, cmd=SERVE_ENV, unknownField=1))
    assert response.status_code == 201, response.text
    body = response.json()
    assert response.headers["Marathon-Deployment-Id"] == body["deploymentId"]
    listed = api.get("/v2/deployments").json()
    assert [d["id"] for d in listed] == [body["deploymentId"]]
    assert listed[0]["affectedApps"] == ["/web"] and listed[0]["totalSteps"] == 2

    wait_for("the deployment to finish", lambda: deployed(api, "/web"))
    assert api.get("/v2/deployments").json() == []
    app = get_app(api, "/web")
    assert app["version"] == body["version"] and app["unknownField"] == 1
    for task in app["tasks"]:
        assert task["host"] == f"{sim.settings.name}-agent-1.example"
        assert task["ipAddresses"] == [{"ipAddress": "127.0.0.1", "protocol": "IPv4"}]
        assert task["state"] == "TASK_RUNNING" and task["healthCheckResults"][0]["alive"] is True
        port = task["ports"][0]
        assert port in sim.settings.ports
        served = httpx.get(f"http://127.0.0.1:{port}/env", timeout=5).text.split()
        assert served == ["/web", task["id"], str(port), task["host"]]
    assert len({t["ports"][0] for t in app["tasks"]}) == 2
    assert api.get("/v2/apps/web/versions").json() == {"versions": [body["version"]]}
    assert api.get(f"/v2/apps/web/versions/{body['version']}").json()["cmd"] == SERVE_ENV
    assert len(api.get("/v2/apps/web/tasks").json()["tasks"]) == 2

    wait_for("deployment_success", lambda: events.named("deployment_success"), timeout=5)
    success = events.named("deployment_success")[0]
    assert success["id"] == body["deploymentId"]
    assert {
        "api_post_event",
        "deployment_info",
        "deployment_step_success",
        "status_update_event",
        "health_status_changed_event",
        "instance_health_changed_event",
    } <= {name for name, _ in events.events}
    running = [e for e in events.named("status_update_event") if e["taskStatus"] == "TASK_RUNNING"]
    assert {e["taskId"] for e in running} == {t["id"] for t in app["tasks"]}

    assert api.delete("/v2/apps/web").status_code == 200
    assert api.get("/v2/apps/web").status_code == 404
    wait_for("the tasks to stop", lambda: api.get("/v2/tasks").json()["tasks"] == [])


def _sample_capacity(api: httpx.Client, stop: threading.Event, seen: list[int]) -> None:
    """Count tasks that really answer /health, sampling until ``stop``."""
    with httpx.Client(timeout=5) as probe:
        while not stop.is_set():
            tasks = api.get("/v2/apps/roll/tasks").json()["tasks"]
            healthy = 0
            for task in tasks:
                if task["state"] != "TASK_RUNNING":
                    continue
                try:
                    answer = probe.get(f"http://127.0.0.1:{task['ports'][0]}/health")
                    healthy += answer.status_code == 200
                except httpx.HTTPError:
                    pass
            seen.append(healthy)
            time.sleep(0.02)


def test_rolling_upgrade_keeps_minimum_health_capacity(api: httpx.Client) -> None:
    strategy = {"minimumHealthCapacity": 1, "maximumOverCapacity": 0.5}
    api.put("/v2/apps/roll", json=app_def(instances=2, upgradeStrategy=strategy))
    wait_for("the first version", lambda: deployed(api, "/roll"))
    first = {t["id"] for t in get_app(api, "/roll")["tasks"]}

    stop, seen = threading.Event(), list[int]()
    sampler = threading.Thread(target=_sample_capacity, args=(api, stop, seen))
    sampler.start()
    try:
        response = api.put("/v2/apps/roll", json={"env": {"RELEASE": "2"}})
        assert response.status_code == 200, response.text
        wait_for("the upgrade", lambda: deployed(api, "/roll"))
    finally:
        stop.set()
        sampler.join()
    app = get_app(api, "/roll")
    assert not first & {t["id"] for t in app["tasks"]}, "old tasks must all be replaced"
    assert {t["version"] for t in app["tasks"]} == {response.json()["version"]}
    assert len(seen) >= 3 and min(seen) >= 2, f"capacity dropped below 2 healthy: {seen}"
    assert app["versionInfo"]["lastConfigChangeAt"] == app["version"]


def test_failing_version_keeps_deploying_until_rolled_back(
    sim: MarathonSim, api: httpx.Client
) -> None:
    events = EventReader(sim.url)
    api.put("/v2/apps/bad", json=app_def())
    wait_for("the good version", lambda: deployed(api, "/bad"))
    good = get_app(api, "/bad")
    broken = api.put(
        "/v2/apps/bad", json={"cmd": "exec httpd -f -p 127.0.0.1:$PORT0 -h /bin"}
    ).json()

    failed_ids: set[str] = set()

    def replaced_twice() -> bool:
        app = get_app(api, "/bad")
        failed_ids.update(t["id"] for t in app["tasks"] if t["version"] == broken["version"])
        return len(failed_ids) >= 2 and len(events.named("unhealthy_instance_kill_event")) >= 1

    wait_for("failed tasks to be replaced", replaced_twice, timeout=40)
    assert [d["id"] for d in api.get("/v2/deployments").json()] == [broken["deploymentId"]]
    app = get_app(api, "/bad")
    old = [t for t in app["tasks"] if t["id"] == good["tasks"][0]["id"]]
    assert old and old[0]["healthCheckResults"][0]["alive"], "the old task keeps min capacity"
    kill = events.named("unhealthy_instance_kill_event")[0]
    assert kill["appId"] == "/bad" and "404" in kill["reason"]

    rollback = api.delete(f"/v2/deployments/{broken['deploymentId']}")
    assert rollback.status_code == 200, rollback.text
    assert rollback.json()["deploymentId"] != broken["deploymentId"]
    wait_for("the rollback", lambda: deployed(api, "/bad"))
    app = get_app(api, "/bad")
    assert (
        app["cmd"] == good["cmd"] and len(api.get("/v2/apps/bad/versions").json()["versions"]) == 3
    )
    # Marathon gives the restored settings a new config version and replaces every task
    # launched before it, the kept good one too: no task is left on an older version.
    assert app["versionInfo"]["lastConfigChangeAt"] == app["version"] == rollback.json()["version"]
    assert [t["version"] for t in app["tasks"]] == [app["version"]]
    assert app["tasks"][0]["id"] != good["tasks"][0]["id"]
    assert [e["id"] for e in events.named("deployment_failed")] == [broken["deploymentId"]]
    missing = api.delete(f"/v2/deployments/{broken['deploymentId']}")
    assert missing.status_code == 404


def test_force_delete_deployment_only_cancels(api: httpx.Client) -> None:
    api.put("/v2/apps/hang", json=app_def(instances=0))
    wait_for("the empty app", lambda: deployed(api, "/hang"))
    api.post("/_sim/faults", json={"kind": "hang_deployment", "app": "/hang"})
    dep = api.put("/v2/apps/hang", json={"instances": 1}).json()
    time.sleep(0.5)
    assert [d["id"] for d in api.get("/v2/deployments").json()] == [dep["deploymentId"]]
    cancel = api.delete(f"/v2/deployments/{dep['deploymentId']}", params={"force": "true"})
    assert cancel.status_code == 202 and cancel.content == b""
    assert api.get("/v2/deployments").json() == []
    assert get_app(api, "/hang")["instances"] == 1, "force-cancel keeps the new definition"


def test_locked_app_answers_409_until_forced(api: httpx.Client) -> None:
    lock = api.post("/_sim/faults", json={"kind": "lock", "app": "/locked", "duration": 30})
    assert lock.status_code == 201
    holder = lock.json()["deploymentId"]
    response = api.put("/v2/apps/locked", json=app_def(instances=0))
    assert response.status_code == 409
    assert response.json()["deployments"] == [{"id": holder}]
    assert response.json()["message"].startswith("App is locked by one or more deployments.")
    forced = api.put("/v2/apps/locked", params={"force": "true"}, json=app_def(instances=0))
    assert forced.status_code == 201, forced.text
    assert holder not in {d["id"] for d in api.get("/v2/deployments").json()}
    again = api.post("/v2/apps", json={**app_def(instances=0), "id": "/locked"})
    assert again.status_code == 409 and "already exists" in again.json()["message"]


@pytest.mark.parametrize(
    ("change", "path", "error"),
    [
        ({"cpus": -1}, "/cpus", "got -1, expected 0 or more"),
        ({"mem": -5}, "/mem", "got -5, expected 0 or more"),
        ({"instances": -1}, "/instances", "got -1, expected 0 or more"),
        (
            {"upgradeStrategy": {"minimumHealthCapacity": 1.5}},
            "/upgradeStrategy/minimumHealthCapacity",
            "is greater than 1",
        ),
        (
            {"upgradeStrategy": {"maximumOverCapacity": -0.1}},
            "/upgradeStrategy/maximumOverCapacity",
            "is less than 0",
        ),
        (
            {"container": {"type": "DOCKER", "docker": {}}},
            "/container/docker/image",
            "error.path.missing",
        ),
        (
            {"healthChecks": [{"protocol": "GOPHER"}]},
            "/healthChecks(0)/protocol",
            "error.expected.validenumvalue",
        ),
        (
            {"healthChecks": [{"protocol": "HTTP", "path": "health"}]},
            "/healthChecks(0)/path",
            "must be an absolute path starting with '/'",
        ),
        (
            {"portDefinitions": [{"port": 70000}]},
            "/portDefinitions(0)/port",
            "got an invalid port, expected 0 to 65535",
        ),
        (
            {"networks": [{"mode": "container"}]},
            "/networks(0)/mode",
            "the simulator supports only host networking",
        ),
    ],
)
def test_invalid_definitions_answer_422_with_details(
    api: httpx.Client, change: dict[str, Any], path: str, error: str
) -> None:
    response = api.put("/v2/apps/invalid", json={**app_def(), **change})
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["message"] == "Object is not valid"
    assert {"path": path, "errors": [error]} in body["details"]
    assert api.get("/v2/apps/invalid").status_code == 404


def test_bad_id_and_bad_json(api: httpx.Client) -> None:
    bad_id = api.post("/v2/apps", json={**app_def(), "id": "/Not_Valid"})
    assert bad_id.status_code == 422 and bad_id.json()["details"][0]["path"] == "/id"
    syntax = api.put(
        "/v2/apps/x", content=b"{not json", headers={"Content-Type": "application/json"}
    )
    assert syntax.status_code == 400 and syntax.json()["message"] == "Invalid JSON"
    assert api.get("/v2/apps/nope").json() == {"message": "App '/nope' does not exist"}


def test_unavailable_fault_answers_503_then_recovers(api: httpx.Client) -> None:
    assert api.post("/_sim/faults", json={"kind": "unavailable", "duration": 30}).status_code == 201
    assert api.get("/v2/apps").status_code == 503
    assert api.get("/v2/info").status_code == 503
    assert api.get("/_sim/state").status_code == 200, "the admin endpoint is never faulted"
    assert api.delete("/_sim/faults").json() == {"cleared": 1}
    info = api.get("/v2/info")
    assert info.status_code == 200 and info.json()["name"] == "marathon"
    assert api.get("/v2/leader").json()["leader"] == info.json()["leader"]


def test_health_fault_kills_and_replaces_tasks(api: httpx.Client) -> None:
    api.put("/v2/apps/flaky", json=app_def(instances=2))
    wait_for("the app", lambda: deployed(api, "/flaky"))
    before = {t["id"] for t in get_app(api, "/flaky")["tasks"]}
    api.post("/_sim/faults", json={"kind": "health", "app": "/flaky", "count": 1, "cause": "chaos"})

    def one_replaced() -> bool:
        now = {t["id"] for t in get_app(api, "/flaky")["tasks"]}
        return len(before - now) == 1 and deployed(api, "/flaky")

    wait_for("one task to be replaced", one_replaced, timeout=30)
    state = api.get("/_sim/state").json()
    assert state["faults"][0]["victims"] and set(state["faults"][0]["victims"]) <= before


def test_failed_pull_is_a_task_failure(api: httpx.Client) -> None:
    image = "127.0.0.1:9/conveyor/absent@sha256:" + "0" * 64
    definition = {**app_def(), "container": {"type": "DOCKER", "docker": {"image": image}}}
    api.put("/v2/apps/nopull", json=definition)
    failure = wait_for(
        "lastTaskFailure", lambda: get_app(api, "/nopull").get("lastTaskFailure"), timeout=30
    )
    assert failure["state"] == "TASK_FAILED" and "Failed to pull image" in failure["message"]
    assert get_app(api, "/nopull")["deployments"], "Marathon never fails a deployment"


def test_basic_auth_guards_v2(make_sim: Callable[..., MarathonSim]) -> None:
    sim = make_sim(basic_auth=("ops", "s3cret"))
    assert httpx.get(f"{sim.url}/v2/apps", timeout=5).status_code == 401
    wrong = httpx.get(f"{sim.url}/v2/apps", auth=("ops", "nope"), timeout=5)
    assert wrong.status_code == 401 and wrong.headers["WWW-Authenticate"].startswith("Basic")
    assert httpx.get(f"{sim.url}/v2/apps", auth=("ops", "s3cret"), timeout=5).json() == {"apps": []}
    assert httpx.get(f"{sim.url}/ping", timeout=5).text == "pong"
