"""The Marathon driver against the simulator, with real containers and a real registry."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import httpx
import pytest

from conveyor.config.drivers import MarathonDriverConfig
from conveyor.drivers.marathon import MarathonDriver
from conveyor.errors import DeploymentFailed
from conveyor.release import Release
from tests.background import Background
from tests.images import discard_repository
from tests.marathon_support import Sim, build_and_push, fast_template, run_sim, start_registry

pytestmark = [pytest.mark.docker, pytest.mark.registry]


@dataclass
class Images:
    v1: Release
    v2: Release
    sick: Release  # serves no /health: never passes its health check


@pytest.fixture(scope="module")
def images(
    docker_client: docker.DockerClient, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Images]:
    reg = start_registry(tmp_path_factory.mktemp("registry"))
    app = "m" + secrets.token_hex(4)
    try:
        yield Images(
            v1=build_and_push(docker_client, reg, app, "1.0"),
            v2=build_and_push(docker_client, reg, app, "2.0"),
            sick=build_and_push(docker_client, reg, app, "sick", with_health=False),
        )
    finally:
        discard_repository(docker_client, f"{reg.address}/conveyor/{app}")
        reg.stop()


@pytest.fixture(scope="module")
def sim(docker_client: docker.DockerClient, images: Images) -> Iterator[Sim]:
    with run_sim(docker_client) as s:
        yield s


def make_driver(sim: Sim, tmp_path: Path, **settings: Any) -> MarathonDriver:
    config = MarathonDriverConfig(
        kind="marathon",
        url=sim.url,
        app_id=settings.pop("app_id", "/hello-" + secrets.token_hex(3)),
        app_template=settings.pop("template", None) or fast_template(tmp_path),
        deploy_timeout_s=settings.pop("deploy_timeout_s", 60),
        **settings,
    )
    return MarathonDriver("integration", config)


class HealthySampler(Background):
    """Counts healthy tasks of the app while a deploy runs (capacity must not drop)."""

    def __init__(self, sim: Sim, app_id: str) -> None:
        super().__init__()
        self.sim, self.app_id = sim, app_id
        self.samples: list[int] = []

    def _run(self) -> None:
        with httpx.Client(base_url=self.sim.url, timeout=5) as http:
            while not self._stop.wait(0.1):
                tasks = http.get(f"/v2/apps{self.app_id}/tasks").json()["tasks"]
                results = [t.get("healthCheckResults") or [] for t in tasks]
                self.samples.append(sum(1 for r in results if r and all(h["alive"] for h in r)))


def versions_of(sim: Sim, app_id: str) -> list[str]:
    return list(sim.admin.get(f"/v2/apps{app_id}/versions").json()["versions"])


def test_deploy_rerun_plan_upgrade_and_rollback(sim: Sim, images: Images, tmp_path: Path) -> None:
    said: list[str] = []
    with closing(make_driver(sim, tmp_path)) as driver:
        first = driver.deploy(images.v1, said.append)
        assert first.changed and first.state.digest == images.v1.digest
        assert len(first.state.instances) == 2 and first.state.healthy
        for instance in first.state.instances:
            assert httpx.get(instance.url + "/version", timeout=5).text.strip() == "1.0"
            assert instance.agent and instance.agent.endswith(".example")
        assert any("2/2 instances healthy" in s for s in said)

        before = versions_of(sim, driver.app_id)
        again = driver.deploy(images.v1)
        assert not again.changed and versions_of(sim, driver.app_id) == before
        assert driver.plan(images.v1).startswith("no changes")

        diff = driver.plan(images.v2)
        assert f'-      "image": "{images.v1.image}"' in diff
        assert f'+      "image": "{images.v2.image}"' in diff
        assert '+    "conveyor.version": "2.0"' in diff
        assert versions_of(sim, driver.app_id) == before, "plan must change nothing"

        with HealthySampler(sim, driver.app_id) as sampler:
            second = driver.deploy(images.v2)
        assert second.changed and second.state.digest == images.v2.digest
        assert second.state.previous_digest == images.v1.digest
        assert sampler.samples and min(sampler.samples) >= 2, sampler.samples
        for instance in second.state.instances:
            assert httpx.get(instance.url + "/version", timeout=5).text.strip() == "2.0"

        back = driver.rollback()
        assert back.changed and back.state.digest == images.v1.digest and back.state.healthy


def test_failing_health_rolls_back_and_names_the_tasks(
    sim: Sim, images: Images, tmp_path: Path
) -> None:
    with closing(make_driver(sim, tmp_path, deploy_timeout_s=6)) as driver:
        driver.deploy(images.v1)
        driver.deploy(images.v2)
        with pytest.raises(DeploymentFailed) as info:
            driver.deploy(images.sick)
        message = str(info.value)
        assert images.sick.image in message and "rolled back" in message
        assert "health check failing" in message or "no passing health check" in message
        state = driver.status()
        assert state.digest == images.v2.digest and state.healthy
        assert not [d for d in sim.state()["deployments"] if driver.app_id in str(d)]
        # The newest stored version of another image is the one that failed: what a
        # rollback restores (and conveyor gc keeps) is the release that ran before.
        assert state.previous_digest == images.v1.digest
        back = driver.rollback()
        assert back.state.digest == images.v1.digest and back.state.healthy


def test_deployment_timeout_reverts_the_deployment(
    sim: Sim, images: Images, tmp_path: Path
) -> None:
    with closing(make_driver(sim, tmp_path, deploy_timeout_s=3)) as driver:
        try:
            driver.deploy(images.v1)
            fault = sim.fault(kind="hang_deployment", app=driver.app_id, duration=4)
            with pytest.raises(DeploymentFailed) as info:
                driver.deploy(images.v2)
            assert "within 3s" in str(info.value) and "rolled back (deployment" in str(info.value)
            assert driver.status().digest == images.v1.digest
            assert fault["kind"] == "hang_deployment"
        finally:
            sim.clear_faults()


def test_lock_is_waited_out_or_named(sim: Sim, images: Images, tmp_path: Path) -> None:
    said: list[str] = []
    with closing(make_driver(sim, tmp_path, lock_wait_s=15)) as driver:
        driver.deploy(images.v1)
        holder = sim.fault(kind="lock", app=driver.app_id, duration=1.5)["deploymentId"]
        assert driver.deploy(images.v2, said.append).state.digest == images.v2.digest
        assert any("locked by deployment " + holder in s for s in said), said

        impatient = make_driver(sim, tmp_path, app_id=driver.app_id, lock_wait_s=0.5)
        with closing(impatient):
            holder = sim.fault(kind="lock", app=driver.app_id, duration=10)["deploymentId"]
            with pytest.raises(DeploymentFailed) as info:
                impatient.deploy(images.v1)
        assert holder in str(info.value) and "force" in str(info.value)


def test_503_during_a_leader_change_is_retried(sim: Sim, images: Images, tmp_path: Path) -> None:
    with closing(make_driver(sim, tmp_path)) as driver:
        try:
            sim.fault(kind="unavailable", duration=0.4)
            outcome = driver.deploy(images.v1)
            assert outcome.changed and outcome.state.healthy
        finally:
            sim.clear_faults()


def test_polling_fallback_without_the_event_stream(
    sim: Sim, images: Images, tmp_path: Path
) -> None:
    with closing(make_driver(sim, tmp_path, event_stream=False, poll_max_interval_s=0.5)) as driver:
        assert driver.deploy(images.v1).state.healthy
