"""The docker driver for a release of several services, against the real Docker Engine
and a real registry: the shop sample (examples/shop) deployed member by member,
dependencies first, all or nothing."""

from __future__ import annotations

import hashlib
import json
import secrets
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import docker
import httpx
import pytest
from pydantic import SecretStr
from typer.testing import CliRunner

from conveyor.cli.main import app as cli
from conveyor.clients.build_context import context_tar
from conveyor.clients.registry import RegistryClient
from conveyor.config import ServiceConfig, ServiceEnvironment, load_pipeline
from conveyor.config.drivers import DockerDriverConfig
from conveyor.config.environment import HealthConfig
from conveyor.connections import Connections, secret_resolver
from conveyor.drivers.docker_release import DockerReleaseDriver, _levels
from conveyor.errors import ConfigError, DeploymentFailed
from conveyor.localstack.registry import RegistryServer
from conveyor.release import Release
from conveyor.release_set import ReleaseSet, record_release
from conveyor.source import find_release
from tests.images import discard_labelled
from tests.marathon_support import push, push_auth, start_registry
from tests.parts import free_port

pytestmark = [pytest.mark.docker, pytest.mark.registry]

SHOP = Path(__file__).resolve().parent.parent / "examples" / "shop"
USER = "conveyor"
ORDER = ("worker", "api", "front")  # dependencies first
DEPENDS = {"worker": [], "api": ["worker"], "front": ["api"]}

# Every member is built from the shop's one Dockerfile, as deployments/shop.yaml names it.
DOCKERFILE = Path("../Dockerfile")
# The shop's API (its image at version 2, so nothing of the sample's Dockerfile is written
# again here), except that it serves no /health on the port in /sickport and has no
# HEALTHCHECK: healthy as a candidate, sick after the cut-over.
SICK_API = """\
FROM {api}
USER 0:0
ARG VERSION=dev
ARG SICK_PORT=0
RUN echo "${{VERSION}}" > /www/version && cp -r /www /sick && rm /sick/health \
 && echo "${{SICK_PORT}}" > /sickport
USER 65534:65534
HEALTHCHECK NONE
CMD ["/bin/sh", "-c", "r=/www; [ \\"$PORT\\" = \\"$(cat /sickport)\\" ] && r=/sick; \
exec httpd -f -p \\"127.0.0.1:$PORT\\" -h $r"]
"""


@dataclass
class Pushed:
    registry: RegistryServer
    auth: dict[str, str]
    name: str
    images: dict[tuple[str, str], Release]  # (service, version) -> the pushed image
    ports: dict[str, int]


def _repo(pushed: Pushed, service: str) -> str:
    return f"{pushed.registry.address}/{pushed.name}/{service}"


def _push(
    client: docker.DockerClient,
    pushed: Pushed,
    service: str,
    version: str,
    context: Path,
    dockerfile_path: Path = DOCKERFILE,
) -> None:
    repo = _repo(pushed, service)
    tar, dockerfile = context_tar(context, dockerfile_path)
    with tar:
        client.images.build(
            fileobj=tar,
            custom_context=True,
            dockerfile=dockerfile,
            tag=f"{repo}:{version}",
            rm=True,
            buildargs={"VERSION": version, "SICK_PORT": str(pushed.ports["api"])},
            network_mode="none",
            labels={"conveyor.test": pushed.name},
        )
    digest = push(client, repo, version, pushed.auth)
    pushed.images[service, version] = Release(
        app=service,
        registry=pushed.registry.address,
        repository=f"{pushed.name}/{service}",
        digest=digest,
        version=version,
    )


@pytest.fixture(scope="module")
def pushed(
    docker_client: docker.DockerClient, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Pushed]:
    reg = start_registry(tmp_path_factory.mktemp("registry"), USER)
    ports = {s: free_port() for s in ORDER}
    result = Pushed(reg, push_auth(reg), "s" + secrets.token_hex(4), {}, ports)
    sick = tmp_path_factory.mktemp("sick-api")
    (sick / "Dockerfile").write_text(SICK_API.format(api=f"{_repo(result, 'api')}:2"))
    try:
        for service, version in (("worker", "1"), ("api", "1"), ("front", "1"), ("api", "2")):
            _push(docker_client, result, service, version, SHOP / service)
        _push(docker_client, result, "worker", "3", SHOP / "worker")
        _push(docker_client, result, "api", "sick", sick, Path("Dockerfile"))
        yield result
    finally:
        for c in docker_client.containers.list(all=True, filters={"label": "conveyor.managed=1"}):
            if c.labels.get("conveyor.app", "").startswith(result.name):
                c.remove(force=True)
        discard_labelled(docker_client, f"conveyor.test={result.name}")
        reg.stop()


def _release(pushed: Pushed, version: str, **members: str) -> Release:
    chosen = [pushed.images[s, members[s]] for s in ORDER]
    content = "\n".join(sorted(f"{m.app}={m.digest}" for m in chosen))
    return Release(
        app=pushed.name,
        registry=pushed.registry.address,
        repository=pushed.name,
        digest="sha256:" + hashlib.sha256(content.encode()).hexdigest(),
        version=version,
        members=tuple(chosen),
    )


def _driver(
    client: docker.DockerClient, pushed: Pushed, http: httpx.Client, timeout_s: float = 20
) -> DockerReleaseDriver:
    services = [
        ServiceConfig(
            name=s,
            context=SHOP / s,
            depends_on=DEPENDS[s],
            environments={"it": ServiceEnvironment(port=pushed.ports[s])},
        )
        for s in ORDER
    ]
    return DockerReleaseDriver(
        "it",
        DockerDriverConfig(kind="docker", port=1),  # each member has its own port
        client,
        pushed.name,
        services,
        HealthConfig(path="/health", timeout_s=timeout_s, interval_s=0.2),
        http,
        registry_auth=pushed.auth,
    )


def _page(http: httpx.Client, pushed: Pushed) -> str:
    response = http.get(f"http://127.0.0.1:{pushed.ports['front']}/")
    assert response.status_code == 200, response.text
    return response.text


def _versions(client: docker.DockerClient, pushed: Pushed) -> dict[str, str]:
    """member -> version of its running container."""
    found = client.containers.list(
        filters={"label": ["conveyor.role=current", "conveyor.environment=it"]}
    )
    prefix = f"{pushed.name}-"
    return {
        c.labels["conveyor.app"].removeprefix(prefix): c.labels["conveyor.version"]
        for c in found
        if c.labels["conveyor.app"].startswith(prefix)
    }


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=10) as client:
        yield client


def test_a_release_deploys_whole_and_fails_whole(
    docker_client: docker.DockerClient, pushed: Pushed, http: httpx.Client
) -> None:
    driver = _driver(docker_client, pushed, http)
    r1 = _release(pushed, "r1", worker="1", api="1", front="1")
    assert driver.status().digest is None
    assert "first deploy" in driver.plan(r1)

    steps: list[str] = []
    first = driver.deploy(r1, steps.append)
    assert first.changed and first.state.digest == r1.digest and first.state.healthy
    # Dependencies first: the worker is up before the API, the API before the front.
    started = [next(i for i, s in enumerate(steps) if s.startswith(f"[{m}] ")) for m in ORDER]
    assert started == sorted(started)
    assert {i.member for i in first.state.instances} == set(ORDER)
    # The members found each other through CONVEYOR_URL_<SERVICE>: the chain answers.
    assert "shop front 1" in _page(http, pushed)
    assert "api 1 (worker: worker 1 did the work)" in _page(http, pushed)
    assert not driver.deploy(r1).changed
    assert "no change" in driver.plan(r1)

    # Only the API changes: the other members keep their containers.
    r2 = _release(pushed, "r2", worker="1", api="2", front="1")
    plan = driver.plan(r2)
    assert "--- api\n" in plan and "1 (" in plan and "-> 2" in plan
    assert "--- worker\nit on 127.0.0.1" in plan and "no change" in plan.split("--- api")[0]
    front_before = docker_client.containers.list(
        filters={"label": [f"conveyor.app={pushed.name}-front", "conveyor.role=current"]}
    )[0].id
    second = driver.deploy(r2)
    assert second.state.digest == r2.digest and second.state.previous_digest == r1.digest
    assert "api 2 (worker: worker 1 did the work)" in _page(http, pushed)
    assert docker_client.containers.get(front_before).status == "running"

    # The worker switches to 3, then the API fails on its port: the worker goes back too.
    r3 = _release(pushed, "r3", worker="3", api="sick", front="1")
    quick = _driver(docker_client, pushed, http, timeout_s=3)
    with pytest.raises(DeploymentFailed, match=r"member 'api' of release r3 failed") as err:
        quick.deploy(r3)
    assert "returned to the previous release: worker" in str(err.value)
    state = driver.status()
    assert state.digest == r2.digest and state.healthy
    assert _versions(docker_client, pushed) == {"worker": "1", "api": "2", "front": "1"}
    assert "api 2 (worker: worker 1 did the work)" in _page(http, pushed)

    # The whole release goes back, from the images already on the engine.
    back = driver.rollback()
    assert back.state.digest == r1.digest and back.state.previous_digest == r2.digest
    assert _versions(docker_client, pushed) == {"worker": "1", "api": "1", "front": "1"}
    assert "api 1 (worker: worker 1 did the work)" in _page(http, pushed)


def test_every_member_needs_a_port_of_its_own(
    docker_client: docker.DockerClient, http: httpx.Client
) -> None:
    same = ServiceEnvironment(port=18080)
    services = [
        ServiceConfig(name="a", context=SHOP, environments={"it": same}),
        ServiceConfig(name="b", context=SHOP, environments={"it": same}),
        ServiceConfig(name="c", context=SHOP),
    ]
    with pytest.raises(ConfigError) as err:
        DockerReleaseDriver(
            "it",
            DockerDriverConfig(kind="docker", port=1),
            docker_client,
            "x",
            services,
            HealthConfig(path="/health"),
            http,
        )
    assert err.value.problems == [
        "services (b).environments.it.port: 18080 is already another member's port",
        "services (c).environments.it.port: the docker driver needs the host port c serves on",
    ]


def _pipeline_file(tmp_path: Path, pushed: Pushed, ports: dict[str, int]) -> Path:
    for s in ORDER:
        shutil.copytree(SHOP / s, tmp_path / s)  # links followed
    shutil.copy(SHOP / "Dockerfile", tmp_path / "Dockerfile")
    (tmp_path / "password").write_text(pushed.auth["password"])
    services = [
        {
            "name": s,
            "context": s,
            "dockerfile": str(DOCKERFILE),
            "depends_on": DEPENDS[s],
            "environments": {"planned": {"port": ports[s]}},
        }
        for s in ORDER
    ]
    doc = {
        "name": pushed.name,
        "services": services,
        "registry": {
            "url": pushed.registry.url,
            "repository": pushed.name,
            "username": USER,
            "password": {"file": "password"},
        },
        "environments": [
            {
                "name": "planned",
                "tag": "integration-ready",
                "driver": {"kind": "docker", "port": ports["front"]},
                "health": {"path": "/health", "timeout_s": 20, "interval_s": 0.2},
            }
        ],
    }
    path = tmp_path / "pipeline.yaml"
    path.write_text(json.dumps(doc))  # JSON is YAML
    return path


def test_plan_shows_the_change_of_each_member(
    docker_client: docker.DockerClient, pushed: Pushed, tmp_path: Path
) -> None:
    """``conveyor plan`` of a services: file, through the pipeline file, the registry's
    release artifacts and the driver the composition root builds for it."""
    ports = {s: free_port() for s in ORDER}
    file = _pipeline_file(tmp_path, pushed, ports)
    pipeline = load_pipeline(file)
    registry = RegistryClient(pushed.registry.url, USER, SecretStr(pushed.auth["password"]))
    recorded = {}
    for version, api in (("p1", "1"), ("p2", "2")):
        members = tuple(pushed.images[s, api if s == "api" else "1"] for s in ORDER)
        release_set = ReleaseSet(
            name=pushed.name,
            registry=pushed.registry.address,
            repository=pushed.name,
            version=version,
            members=members,
        )
        recorded[version] = record_release(registry, release_set).digest
    registry.close()
    with Connections(pipeline, resolve_secret=secret_resolver()) as opened:
        first = find_release(opened, recorded["p1"])
        assert opened.driver(pipeline.environment("planned")).deploy(first).state.healthy

    args = ["plan", "planned", "-p", str(file), "--digest", recorded["p2"]]
    shown = CliRunner().invoke(cli, [*args, "--json"])
    assert shown.exit_code == 0, shown.output
    doc = json.loads(shown.output)
    assert doc["running"]["digest"] == recorded["p1"]
    assert doc["release"]["digest"] == recorded["p2"]
    rows = {m["service"]: m for m in doc["members"]}
    assert [m["service"] for m in doc["members"]] == list(ORDER)
    assert {s: m["change"] for s, m in rows.items()} == {
        "worker": "none",
        "api": "update",
        "front": "none",
    }
    assert rows["api"]["running"] == [pushed.images["api", "1"].digest]
    assert rows["api"]["target"]["digest"] == pushed.images["api", "2"].digest
    assert "no change" in rows["worker"]["plan"] and "->" in rows["api"]["plan"]

    text = CliRunner().invoke(cli, args)
    assert text.exit_code == 0, text.output
    assert "update" in text.output and "--- api" in text.output


def test_members_that_call_no_other_switch_in_one_level() -> None:
    """No engine: the levels a deploy switches side by side, dependencies first."""

    def svc(name: str, *deps: str) -> ServiceConfig:
        return ServiceConfig(name=name, context=SHOP / "front", depends_on=list(deps))

    services = [svc("d", "b", "c"), svc("b", "a"), svc("a"), svc("c")]
    assert _levels(services) == [["a", "c"], ["b"], ["d"]]
