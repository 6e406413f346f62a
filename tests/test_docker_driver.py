"""The docker driver against the real Docker Engine and a real registry.

The sample app (examples/hello) is built at test time FROM scratch with Debian's
busybox, pushed to a registry started here, and deployed by digest.
"""

from __future__ import annotations

import io
import secrets
from collections.abc import Iterator
from dataclasses import dataclass

import docker
import httpx
import pytest

from conveyor.config.drivers import DockerDriverConfig
from conveyor.config.environment import HealthConfig
from conveyor.drivers.docker import DockerDriver
from conveyor.errors import AuthenticationFailed, DeploymentFailed
from conveyor.localstack.registry import RegistryServer
from conveyor.release import Release
from tests.images import discard_labelled
from tests.marathon_support import build_and_push, hello_context, push_auth, start_registry
from tests.parts import free_port

pytestmark = [pytest.mark.docker, pytest.mark.registry]

USER = "conveyor"

# The hello app, except that it serves no /health on the port baked in as SICK_PORT:
# healthy as a candidate, sick after the cut-over.
SICK_DOCKERFILE = """\
FROM scratch
COPY busybox /bin/busybox
RUN ["/bin/busybox", "--install", "-s", "/bin"]
COPY www /www
ARG VERSION=dev
ARG SICK_PORT=0
RUN echo "${VERSION}" > /www/version && mkdir /sick && echo "${SICK_PORT}" > /sick/port
USER 65534:65534
ENV PORT=8080
CMD ["/bin/sh", "-c", "r=/www; [ \\"$PORT\\" = \\"$(cat /sick/port)\\" ] && r=/sick; \
exec httpd -f -p \\"127.0.0.1:$PORT\\" -h $r"]
"""


def _context(dockerfile: str | None = None, with_health: bool = True) -> io.BytesIO:
    return hello_context(with_health, dockerfile)


@dataclass
class Shipped:
    registry: RegistryServer
    auth: dict[str, str]
    app: str
    releases: dict[str, Release]
    port: int  # the integration port the sick release fails on


def _build_and_push(
    client: docker.DockerClient,
    reg: RegistryServer,
    auth: dict[str, str],
    app: str,
    version: str,
    context: io.BytesIO,
    buildargs: dict[str, str],
) -> Release:
    return build_and_push(
        client, reg, app, version, context=context, buildargs=buildargs, auth=auth
    )


@pytest.fixture(scope="module")
def shipped(
    docker_client: docker.DockerClient, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Shipped]:
    reg = start_registry(tmp_path_factory.mktemp("registry"), USER)
    auth = push_auth(reg)
    app = "t" + secrets.token_hex(4)
    port = free_port()
    releases = {}
    try:
        for version in ("1.0", "2.0"):
            releases[version] = _build_and_push(
                docker_client, reg, auth, app, version, _context(), {}
            )
        releases["nohealth"] = _build_and_push(
            docker_client, reg, auth, app, "nohealth", _context(with_health=False), {}
        )
        releases["sick"] = _build_and_push(
            docker_client,
            reg,
            auth,
            app,
            "sick",
            _context(SICK_DOCKERFILE),
            {"SICK_PORT": str(port)},
        )
        yield Shipped(reg, auth, app, releases, port)
    finally:
        for c in docker_client.containers.list(all=True, filters={"label": f"conveyor.app={app}"}):
            c.remove(force=True)
        discard_labelled(docker_client, f"conveyor.test={app}")
        reg.stop()


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=5) as client:
        yield client


def _driver(
    docker_client: docker.DockerClient,
    shipped: Shipped,
    http: httpx.Client,
    environment: str,
    port: int,
    timeout_s: float = 20,
    auth: dict[str, str] | None = None,
) -> DockerDriver:
    return DockerDriver(
        environment=environment,
        config=DockerDriverConfig(kind="docker", port=port),
        client=docker_client,
        app=shipped.app,
        port_env="PORT",
        health=HealthConfig(path="/health", timeout_s=timeout_s, interval_s=0.2),
        http=http,
        registry_auth=auth or shipped.auth,
    )


def _served_version(http: httpx.Client, port: int) -> str:
    return http.get(f"http://127.0.0.1:{port}/version").text.strip()


def _roles(client: docker.DockerClient, app: str, environment: str) -> list[tuple[str, str, str]]:
    labels = [f"conveyor.app={app}", f"conveyor.environment={environment}"]
    found = client.containers.list(all=True, filters={"label": labels})
    return sorted(
        (c.labels["conveyor.role"], c.labels["conveyor.version"], c.status) for c in found
    )


def test_docker_driver_lifecycle(
    docker_client: docker.DockerClient, shipped: Shipped, http: httpx.Client
) -> None:
    """First deploy, idempotent redeploy, upgrade, failed upgrades, rollback."""
    env, port, r = "integration", shipped.port, shipped.releases
    driver = _driver(docker_client, shipped, http, env, port)
    assert driver.status().digest is None
    assert "first deploy" in driver.plan(r["1.0"])

    steps: list[str] = []
    first = driver.deploy(r["1.0"], steps.append)
    assert first.changed
    assert first.state.digest == r["1.0"].digest and first.state.healthy
    assert any("candidate" in s for s in steps)
    assert _served_version(http, port) == "1.0"
    container = docker_client.containers.get(first.state.detail["container"])
    assert container.labels["conveyor.managed"] == "1"
    assert container.attrs["HostConfig"]["NetworkMode"] == "host"

    again = driver.deploy(r["1.0"])
    assert not again.changed
    assert "no change" in driver.plan(r["1.0"])
    assert f"1.0 ({r['1.0'].digest}) -> 2.0" in driver.plan(r["2.0"])

    upgraded = driver.deploy(r["2.0"])
    assert upgraded.changed and upgraded.state.version == "2.0"
    assert upgraded.state.previous_digest == r["1.0"].digest
    assert _served_version(http, port) == "2.0"
    assert _roles(docker_client, shipped.app, env) == [
        ("current", "2.0", "running"),
        ("previous", "1.0", "created"),
    ]

    # A candidate that never turns healthy changes nothing.
    quick = _driver(docker_client, shipped, http, env, port, timeout_s=2)
    with pytest.raises(DeploymentFailed, match="nothing was changed"):
        quick.deploy(r["nohealth"])
    assert _served_version(http, port) == "2.0"
    assert _roles(docker_client, shipped.app, env) == [
        ("current", "2.0", "running"),
        ("previous", "1.0", "created"),
    ]

    # Healthy as a candidate, sick on the real port: the old release comes back.
    with pytest.raises(DeploymentFailed, match=r"restored 2\.0"):
        quick.deploy(r["sick"])
    state = driver.status()
    assert state.digest == r["2.0"].digest and state.healthy
    assert state.previous_digest == r["1.0"].digest
    assert _served_version(http, port) == "2.0"

    back = driver.rollback()
    assert back.changed and back.state.digest == r["1.0"].digest and back.state.healthy
    assert back.state.previous_digest == r["2.0"].digest
    assert _served_version(http, port) == "1.0"
    assert _roles(docker_client, shipped.app, env) == [
        ("current", "1.0", "running"),
        ("previous", "2.0", "created"),
    ]


def test_environments_run_side_by_side(
    docker_client: docker.DockerClient, shipped: Shipped, http: httpx.Client
) -> None:
    r = shipped.releases
    a = _driver(docker_client, shipped, http, "side-a", free_port())
    b = _driver(docker_client, shipped, http, "side-b", free_port())
    a.deploy(r["1.0"])
    b.deploy(r["2.0"])
    assert a.status().digest == r["1.0"].digest and a.status().healthy
    assert b.status().digest == r["2.0"].digest and b.status().healthy
    with pytest.raises(DeploymentFailed, match="no previous release"):
        b.rollback()


def test_status_does_not_trust_a_lying_label(
    docker_client: docker.DockerClient, shipped: Shipped, http: httpx.Client
) -> None:
    r, port = shipped.releases, free_port()
    driver = _driver(docker_client, shipped, http, "liar", port)
    # A container claiming to run 2.0 while its image is 1.0.
    docker_client.containers.create(
        r["1.0"].image,
        name=f"conveyor-{shipped.app}-liar",
        network_mode="host",
        init=True,
        environment={"PORT": str(port)},
        labels={
            "conveyor.managed": "1",
            "conveyor.app": shipped.app,
            "conveyor.environment": "liar",
            "conveyor.role": "current",
            "conveyor.digest": r["2.0"].digest,
            "conveyor.version": "2.0",
        },
    ).start()
    state = driver.status()
    assert state.digest is None
    assert "label says" in state.detail["warning"]
    # A deploy replaces it rather than believing it.
    assert driver.deploy(r["2.0"]).changed
    assert driver.status().digest == r["2.0"].digest


def test_wrong_registry_password_is_terminal(
    docker_client: docker.DockerClient, shipped: Shipped, http: httpx.Client
) -> None:
    # A release that is not local yet, so the engine must ask the registry for it.
    release = _build_and_push(
        docker_client, shipped.registry, shipped.auth, shipped.app, "auth", _context(), {}
    )
    # Removed now, not at the session's end (tests/images.py): no other build has its last
    # step, the label of this module's own app, as a cached step.
    docker_client.images.remove(release.image.split("@")[0] + ":auth", force=True, noprune=True)
    wrong = {"username": USER, "password": "wrong"}
    driver = _driver(docker_client, shipped, http, "badauth", free_port(), auth=wrong)
    with pytest.raises(AuthenticationFailed) as err:
        driver.deploy(release)
    assert "wrong" not in str(err.value)


def test_rerun_after_an_interrupted_cut_over(
    docker_client: docker.DockerClient, shipped: Shipped, http: httpx.Client
) -> None:
    r, env = shipped.releases, "rerun"
    driver = _driver(docker_client, shipped, http, env, free_port())
    driver.deploy(r["1.0"])
    driver.deploy(r["2.0"])
    # The run died right after turning the running 2.0 into a stopped "previous".
    current = docker_client.containers.get(driver.status().detail["container"])
    current.stop(timeout=5)
    driver._recreate(current, "previous", start=False)
    state = driver.status()
    assert state.digest is None and state.previous_digest == r["2.0"].digest

    rerun = driver.deploy(r["1.0"])
    assert rerun.changed and rerun.state.healthy
    assert rerun.state.previous_digest == r["2.0"].digest
    assert _roles(docker_client, shipped.app, env) == [
        ("current", "1.0", "running"),
        ("previous", "2.0", "created"),
    ]
