"""The Marathon driver of a release of several services, on the simulator with real
containers and a real registry: what the group runs is read back from Marathon alone
(the release artifact's digest on every member), a rerun changes nothing, and a
rollback returns the whole group to the release before; a member the release did not
change keeps its tasks. The release before is what status reports (for ``conveyor gc``),
and a deploy that failed and was put back does not become it."""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from pathlib import Path

import docker
import httpx
import pytest

from conveyor.config.drivers import MarathonDriverConfig
from conveyor.drivers.marathon_release import MarathonReleaseDriver, MemberSpec
from conveyor.errors import DeploymentFailed
from conveyor.release import Release
from tests.images import discard_repository
from tests.marathon_support import Sim, build_and_push, fast_template, run_sim, start_registry

pytestmark = [pytest.mark.docker, pytest.mark.registry]


@pytest.fixture(scope="module")
def images(
    docker_client: docker.DockerClient, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Release, Release]]:
    reg = start_registry(tmp_path_factory.mktemp("registry"))
    app = "g" + secrets.token_hex(4)
    try:
        yield (
            build_and_push(docker_client, reg, app, "1.0"),
            build_and_push(docker_client, reg, app, "2.0"),
        )
    finally:
        discard_repository(docker_client, f"{reg.address}/conveyor/{app}")
        reg.stop()


@pytest.fixture(scope="module")
def sim(docker_client: docker.DockerClient, images: tuple[Release, Release]) -> Iterator[Sim]:
    with run_sim(docker_client) as s:
        yield s


def _release(fill: str, version: str, worker: Release, api: Release) -> Release:
    members = tuple(
        image.model_copy(update={"app": name}) for name, image in (("worker", worker), ("api", api))
    )
    return Release(
        app="shop",
        registry="r",
        repository="conveyor/shop",
        digest="sha256:" + fill * 64,
        version=version,
        members=members,
    )


def _task_ids(sim: Sim, group: str, member: str) -> set[str]:
    tasks = httpx.get(f"{sim.url}/v2/apps{group}/{member}/tasks", timeout=5).json()["tasks"]
    return {t["id"] for t in tasks}


def _sick(driver: MarathonReleaseDriver, tmp_path: Path) -> MarathonReleaseDriver:
    """The driver's group with an API template whose health check asks for a path the
    app does not serve, given a few seconds only."""
    template = fast_template(tmp_path, instances=1)
    app = json.loads(template.read_text())
    app["healthChecks"][0]["path"] = "/missing"
    template.write_text(json.dumps(app))
    worker, api = driver.members
    members = [worker, MemberSpec(api.name, template, api.depends_on)]
    config = driver.config.model_copy(update={"deploy_timeout_s": 5})
    return MarathonReleaseDriver(driver.environment, config, members)


def test_the_group_runs_deploys_again_as_a_no_op_and_rolls_back_whole(
    sim: Sim, images: tuple[Release, Release], tmp_path: Path
) -> None:
    v1, v2 = images
    config = MarathonDriverConfig(
        kind="marathon",
        url=sim.url,
        app_id="/shop-" + secrets.token_hex(3),
        app_template=fast_template(tmp_path, instances=1),
        deploy_timeout_s=60,
        rollback_timeout_s=60,
    )
    members = [
        MemberSpec("worker", config.app_template),
        MemberSpec("api", config.app_template, ("worker",)),
    ]
    driver = MarathonReleaseDriver("production", config, members)
    first, second = _release("a", "1", v1, v1), _release("b", "2", v1, v2)
    try:
        deployed = driver.deploy(first)
        assert deployed.changed and deployed.state.runs(first)
        assert {(i.member, i.digest) for i in deployed.state.instances} == {
            ("worker", v1.digest),
            ("api", v1.digest),
        }
        assert not driver.deploy(first).changed
        assert "api:" in driver.plan_members(second)["api"]

        worker_tasks = _task_ids(sim, config.app_id, "worker")
        driver.deploy(second)
        assert driver.status().runs(second)
        assert driver.status().previous_digest == first.digest
        # The worker's image did not change: Marathon left its task alone.
        assert _task_ids(sim, config.app_id, "worker") == worker_tasks

        # A third release whose API never turns healthy: the group goes back to the second,
        # and the release before it is still the first, not the one that failed.
        sick = _sick(driver, tmp_path)
        try:
            with pytest.raises(DeploymentFailed, match=r"member 'api'.*: it runs 2 again"):
                sick.deploy(_release("c", "3", v2, v2))
        finally:
            sick.close()
        state = driver.status()
        assert state.runs(second) and state.previous_digest == first.digest

        back = driver.rollback()
        assert back.state.digest == first.digest and back.state.version == "1"
        assert {(i.member, i.digest) for i in back.state.instances} == {
            ("worker", v1.digest),
            ("api", v1.digest),
        }
        assert back.state.healthy
        # The first release names none before it: what another rollback would restore is
        # the newest version with another release, the second.
        assert back.state.previous_digest == second.digest
    finally:
        driver.client.put_group(config.app_id, {"apps": []}, force=True)
        driver.close()
