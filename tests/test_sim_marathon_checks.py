"""The simulator runs health and readiness checks, and places tasks, as Marathon and Mesos do."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import docker
import httpx
import pytest

from conveyor.sim.marathon import MarathonSim, Settings
from tests import test_sim_marathon as base
from tests.test_sim_marathon import app_def, deployed, get_app, wait_for

# The simulator fixtures of the base module (pytest finds fixtures by module attribute).
sim_image, make_sim, sim, api = base.sim_image, base.make_sim, base.sim, base.api

pytestmark = pytest.mark.docker

# Serves /www plus /ready when READY=now; a test creates /ready later with docker exec.
SERVE_READY = (
    "mkdir -p /tmp/www && cp /www/* /tmp/www/ && "
    '{ [ "$READY" = now ] && echo ok > /tmp/www/ready; '
    "exec httpd -f -p 127.0.0.1:$PORT0 -h /tmp/www; }"
)


def _stamp(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def _ready_app(ready: str) -> dict[str, Any]:
    return app_def(
        cmd=SERVE_READY,
        env={"READY": ready},
        portDefinitions=[{"port": 0, "name": "http"}],
        readinessChecks=[
            {
                "portName": "http",
                "path": "/ready",
                "intervalSeconds": 2,
                "timeoutSeconds": 1,
                "preserveLastResponse": True,
            }
        ],
        upgradeStrategy={"minimumHealthCapacity": 1, "maximumOverCapacity": 1},
    )


def test_readiness_check_holds_a_rolling_upgrade(
    api: httpx.Client, docker_client: docker.DockerClient
) -> None:
    api.put("/v2/apps/ready", json=_ready_app("now")).raise_for_status()
    wait_for("the first version", lambda: deployed(api, "/ready"))
    old = get_app(api, "/ready")["tasks"][0]["id"]

    api.put("/v2/apps/ready", json=_ready_app("later")).raise_for_status()

    def answered_404() -> list[dict[str, Any]]:
        # The first query may come before httpd listens: Marathon then records a 504.
        deps = api.get("/v2/deployments").json()
        results = [r for d in deps for a in d["currentActions"] for r in a["readinessCheckResults"]]
        return [r for r in results if r["lastResponse"]["status"] == 404]

    results = wait_for("a 404 from the readiness check", answered_404, timeout=15)
    assert results[0]["ready"] is False and results[0]["name"] == "readinessCheck"
    new = results[0]["taskId"]
    wait_for("the new task healthy", lambda: get_app(api, "/ready")["tasksHealthy"] == 2)
    # Healthy but not ready: the deployment holds and the old task keeps serving.
    assert api.get("/v2/deployments").json(), "the deployment must wait for readiness"
    assert old in {t["id"] for t in get_app(api, "/ready")["tasks"]}

    (container,) = docker_client.containers.list(filters={"label": f"conveyor.sim.task={new}"})
    container.exec_run(["/bin/sh", "-c", "echo ok > /tmp/www/ready"])
    wait_for("the upgrade to finish", lambda: deployed(api, "/ready"), timeout=15)
    assert [t["id"] for t in get_app(api, "/ready")["tasks"]] == [new]


def test_readiness_check_needs_a_named_port(api: httpx.Client) -> None:
    body = app_def(readinessChecks=[{"portName": "web", "intervalSeconds": 1}])
    response = api.put("/v2/apps/unready", json=body)
    assert response.status_code == 422
    paths = {d["path"]: d["errors"] for d in response.json()["details"]}
    assert paths["/readinessChecks(0)/portName"] == [
        "No port definition reference for portName web"
    ]
    assert paths["/readinessChecks(0)/timeoutSeconds"] == ["got 10, expected less than 1"]


def test_delay_seconds_holds_mesos_checks_only(api: httpx.Client) -> None:
    check = {"path": "/health", "intervalSeconds": 1, "timeoutSeconds": 1, "delaySeconds": 2}
    body = app_def(
        healthChecks=[{**check, "protocol": "MESOS_HTTP"}, {**check, "protocol": "HTTP"}]
    )
    api.put("/v2/apps/delay", json=body).raise_for_status()
    wait_for("the app healthy", lambda: deployed(api, "/delay"))
    task = get_app(api, "/delay")["tasks"][0]
    started = _stamp(task["startedAt"])
    mesos, marathon = (_stamp(r["firstSuccess"]) - started for r in task["healthCheckResults"])
    # Mesos waits delaySeconds; Marathon-level checks do not implement it (its docs say so).
    assert 2.0 <= mesos < 3.5, mesos
    assert marathon < 1.5, marathon


def test_zero_max_failures_never_kills_on_http_checks(api: httpx.Client, sim: MarathonSim) -> None:
    body = app_def()
    body["healthChecks"][0].update(maxConsecutiveFailures=0, gracePeriodSeconds=0)
    api.put("/v2/apps/keep", json=body).raise_for_status()
    wait_for("the app healthy", lambda: deployed(api, "/keep"))
    task = get_app(api, "/keep")["tasks"][0]["id"]
    httpx.post(f"{sim.url}/_sim/faults", json={"kind": "health", "app": "/keep"}).raise_for_status()

    def failed_thrice() -> bool:
        results = get_app(api, "/keep")["tasks"][0]["healthCheckResults"]
        return bool(results[0]["consecutiveFailures"] >= 3)

    wait_for("three failed probes", failed_thrice, timeout=10)
    app = get_app(api, "/keep")
    assert [t["id"] for t in app["tasks"]] == [task] and app["tasksUnhealthy"] == 1


def test_cpus_and_mem_become_container_limits(
    sim: MarathonSim, api: httpx.Client, docker_client: docker.DockerClient
) -> None:
    api.put("/v2/apps/limits", json=app_def(cpus=0.25, mem=48)).raise_for_status()
    wait_for("the app healthy", lambda: deployed(api, "/limits"))
    task = get_app(api, "/limits")["tasks"][0]["id"]
    (container,) = docker_client.containers.list(filters={"label": f"conveyor.sim.task={task}"})
    host = container.attrs["HostConfig"]
    assert host["NanoCpus"] == 250_000_000 and host["Memory"] == 48 * 1024 * 1024
    # Below Mesos's floors (docker refuses memory under 6 MB), and above the host's cores.
    floor = sim.engine.runtime.limits({"cpus": 0, "mem": 1})
    assert floor == {"nano_cpus": 10_000_000, "mem_limit": 32 * 1024 * 1024}
    cores = int(docker_client.info()["NCPU"])
    assert sim.engine.runtime.limits({"cpus": cores + 1, "mem": 64})["nano_cpus"] == cores * 10**9


def test_app_waits_in_the_queue_while_the_cluster_is_full(
    make_sim: Callable[..., MarathonSim],
) -> None:
    sim = make_sim(agents=1, agent_cpus=1.0)
    with httpx.Client(base_url=sim.url, timeout=10) as api:
        api.put("/v2/apps/first", json=app_def(cpus=0.6)).raise_for_status()
        wait_for("the first app", lambda: deployed(api, "/first"))
        api.put("/v2/apps/second", json=app_def(cpus=0.6)).raise_for_status()

        def queued() -> list[dict[str, Any]]:
            items = api.get("/v2/queue").json()["queue"]
            return [i for i in items if i["processedOffersSummary"]["unusedOffersCount"] >= 2]

        (item,) = wait_for("the second app in the queue", queued, timeout=10)
        assert item["app"]["id"] == "/second" and item["count"] == 1
        assert item["delay"] == {"timeLeftSeconds": 0, "overdue": True}
        funnel = {
            s["reason"]: s for s in item["processedOffersSummary"]["rejectSummaryLaunchAttempt"]
        }
        assert funnel["InsufficientCpus"]["declined"] >= 2
        assert get_app(api, "/second")["tasks"] == []

        api.delete("/v2/apps/first").raise_for_status()
        wait_for("the second app to start once room frees", lambda: deployed(api, "/second"))
        assert api.get("/v2/queue").json() == {"queue": []}


def _sim_tasks(sim: MarathonSim) -> dict[str, str | None]:
    """Task id -> container id, from the simulator's own state dump."""
    state = httpx.get(f"{sim.url}/_sim/state", timeout=5).json()
    return {t["id"]: t["containerId"] for app in state["apps"].values() for t in app["tasks"]}


def test_restart_adopts_running_containers_and_replaces_lost_ones(
    docker_client: docker.DockerClient, sim_image: str, tmp_path: Path
) -> None:
    settings = Settings(
        name=f"t{uuid.uuid4().hex[:8]}", ports=base.port_block(), state_dir=tmp_path
    )
    mine = {"label": f"conveyor.sim.instance={settings.name}"}
    try:
        with MarathonSim(settings, docker_client) as first:
            with httpx.Client(base_url=first.url, timeout=10) as api:
                api.put("/v2/apps/keep", json=app_def(instances=2)).raise_for_status()
                wait_for("the app healthy", lambda: deployed(api, "/keep"))
                version = get_app(api, "/keep")["version"]
            before = _sim_tasks(first)
        assert {c.id for c in docker_client.containers.list(filters=mine)} == set(before.values())

        with MarathonSim(settings, docker_client) as second:
            with httpx.Client(base_url=second.url, timeout=10) as api:
                (app,) = api.get("/v2/apps").json()["apps"]
                assert app["id"] == "/keep" and app["version"] == version
                wait_for("the adopted tasks healthy", lambda: deployed(api, "/keep"))
            assert _sim_tasks(second) == before, "the same containers must serve the app"
        lost_task, lost_container = sorted(before.items())[0]
        docker_client.containers.get(lost_container).remove(force=True)

        with MarathonSim(settings, docker_client) as third:
            with httpx.Client(base_url=third.url, timeout=10) as api:
                wait_for("the lost task replaced", lambda: deployed(api, "/keep"))
                failure = get_app(api, "/keep")["lastTaskFailure"]
            after = _sim_tasks(third)
        assert failure["taskId"] == lost_task and failure["state"] == "TASK_LOST"
        assert lost_task not in after and len(after) == 2
        assert set(before.items()) - {(lost_task, lost_container)} <= set(after.items())
    finally:
        for container in docker_client.containers.list(all=True, filters=mine):
            container.remove(force=True)
