"""A release of three services as one Marathon group on the simulator (real containers,
real health probes): live once every member is healthy; when one member fails its
health check the whole group returns to the version it ran before, and the error names
that member."""

from __future__ import annotations

from typing import Any

import pytest

from conveyor.clients.marathon import MarathonClient
from conveyor.drivers.marathon_group import Member, deploy_group
from conveyor.errors import DeploymentFailed
from tests import test_sim_marathon as base
from tests.test_sim_marathon import app_def

pytestmark = pytest.mark.docker

make_sim = base.make_sim
sim_image = base.sim_image
sim = base.sim

GROUP = "/shop"


def _members(release: str, broken: str | None = None) -> list[Member]:
    deps = {"worker": [], "api": ["worker"], "front": ["api"]}
    members = []
    for name, needs in deps.items():
        definition: dict[str, Any] = {**app_def(), "env": {"RELEASE": release}}
        definition["dependencies"] = needs
        if name == broken:
            definition["healthChecks"] = [{**definition["healthChecks"][0], "path": "/nope"}]
        members.append(Member(name, definition))
    return members


def test_a_member_failing_health_returns_the_whole_group(sim: Any) -> None:
    client = MarathonClient(sim.url, timeout_s=5)
    first = deploy_group(client, GROUP, _members("1"), timeout_s=60)
    assert first.previous is None
    for name in ("worker", "api", "front"):
        assert client.app(f"{GROUP}/{name}").definition()["env"] == {"RELEASE": "1"}
    assert client.app(f"{GROUP}/front").definition()["dependencies"] == [f"{GROUP}/api"]

    with pytest.raises(DeploymentFailed, match=r"member 'api' of group /shop .* back at"):
        deploy_group(client, GROUP, _members("2", broken="api"), timeout_s=8, rollback_timeout_s=60)
    group = client.find_group(GROUP)
    assert group is not None and group.version != first.version
    for name in ("worker", "api", "front"):
        app = client.app(f"{GROUP}/{name}", embed=("app.tasks",))
        assert app.definition()["env"] == {"RELEASE": "1"}, name
        assert app.tasks and all(t.health_check_results[0].alive for t in app.tasks), name
    client.close()
