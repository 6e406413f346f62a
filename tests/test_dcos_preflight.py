"""The DC/OS pre-flight's reading of an app's host ports and of Mesos's port ranges."""

from __future__ import annotations

from typing import Any

import pytest

from conveyor.clients.dcos import Agent
from conveyor.preflight.dcos import host_ports, port_checks, port_ranges

BRIDGE = [{"mode": "container/bridge"}]
DOCKER = {"type": "DOCKER", "docker": {"image": "x"}}


@pytest.mark.parametrize(
    ("app", "expected"),
    [
        ({}, [0]),
        ({"portDefinitions": []}, []),
        ({"portDefinitions": [{"port": 8080}, {"port": 0}]}, [0, 0]),
        ({"requirePorts": True, "portDefinitions": [{"port": 8080}, {"port": 0}]}, [8080, 0]),
        (
            {"networks": BRIDGE, "container": {**DOCKER, "portMappings": [{"containerPort": 80}]}},
            [0],
        ),
        (
            {"networks": BRIDGE, "container": {**DOCKER, "portMappings": [{"hostPort": 9000}]}},
            [9000],
        ),
        (
            {"networks": [{"mode": "container", "name": "dcos"}],
             "container": {**DOCKER, "portMappings": [{"containerPort": 80}]}},
            [],
        ),
    ],
)  # fmt: skip
def test_host_ports_of_an_app(app: dict[str, Any], expected: list[int]) -> None:
    assert host_ports(app) == expected


def _agent(name: str, offered: str, used: str | None) -> Agent:
    resources: dict[str, Any] = {"ports": offered}
    return Agent.model_validate(
        {"hostname": name, "resources": resources, "used_resources": {"ports": used}}
    )


def test_dynamic_ports_count_free_ones_per_agent() -> None:
    assert port_ranges("[31000-31002, 31005-31005]") == [range(31000, 31003), range(31005, 31006)]
    agents = [_agent("a1", "[31000-31003]", "[31000-31002]"), _agent("a2", "[31000-31001]", None)]
    # Two ports an instance: a1's one free port takes none, a2's two take one.
    app = {"instances": 1, "portDefinitions": [{"port": 0}, {"port": 0}]}
    (fits,) = port_checks(agents, app, running=0)
    assert fits.status == "ok" and "fit 1 (a1 1 free ports, a2 2 free ports)" in fits.detail
    (short,) = port_checks(agents, {**app, "instances": 2}, running=0)
    assert short.status == "fail"
