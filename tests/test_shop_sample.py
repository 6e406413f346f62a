"""The three-service sample (examples/shop) at container level, on the real Docker Engine.

The images are built from the sample's own contexts through conveyor's build context
(links dereferenced), run with host networking on free 127.0.0.1 ports and wired
through ``CONVEYOR_URL_<SERVICE>`` as a release's members are: one GET of the front's
page proves the chain front -> api -> worker.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from pathlib import Path

import docker
import httpx
import pytest
from docker.models.containers import Container

from conveyor.clients.build_context import context_tar
from tests.images import discard_labelled
from tests.parts import free_port, require_binary

pytestmark = [pytest.mark.docker]

SHOP = Path(__file__).resolve().parent.parent / "examples" / "shop"
SERVICES = ("worker", "api", "front")
# The members' one Dockerfile, named from each context as deployments/shop.yaml names it.
DOCKERFILE = Path("../Dockerfile")
# Who calls whom, as deployments/shop.yaml names it.
CALLS = {"api": "worker", "front": "api"}
VERSION = "1.0-test"
READY_TIMEOUT_S = 20.0
# Labels this module's images and containers, so its clean-up removes only its own.
LABEL = "shop" + secrets.token_hex(4)


@pytest.fixture(scope="module")
def images(docker_client: docker.DockerClient) -> Iterator[dict[str, str]]:
    require_binary("busybox", "apt-get install busybox-static")
    built: dict[str, str] = {}
    try:
        for service in SERVICES:
            tar, dockerfile = context_tar(SHOP / service, DOCKERFILE)
            with tar:
                image, _ = docker_client.images.build(
                    fileobj=tar,
                    custom_context=True,
                    dockerfile=dockerfile,
                    rm=True,
                    buildargs={"VERSION": VERSION},
                    network_mode="none",
                    # Without a label of our own the build cache could hand back another
                    # module's image, and its clean-up would delete ours.
                    labels={"conveyor.test": LABEL},
                )
            built[service] = str(image.id)
        yield built
    finally:
        for c in docker_client.containers.list(
            all=True, filters={"label": f"conveyor.test={LABEL}"}
        ):
            c.remove(force=True)
        discard_labelled(docker_client, f"conveyor.test={LABEL}")


def _url(port: int) -> str:
    return f"http://127.0.0.1:{port}"


def _env_name(service: str) -> str:
    return f"CONVEYOR_URL_{service.upper()}"


def _wait_up(http: httpx.Client, port: int, container: Container) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        try:
            if http.get(f"{_url(port)}/health").status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    container.reload()
    pytest.fail(
        f"{container.name} ({container.status}) never answered /health: {container.logs()!r}"
    )


@pytest.fixture
def shop(
    docker_client: docker.DockerClient, images: dict[str, str]
) -> Iterator[tuple[dict[str, int], dict[str, Container]]]:
    run = secrets.token_hex(3)
    ports = {s: free_port() for s in SERVICES}
    started: dict[str, Container] = {}
    with httpx.Client(timeout=10) as http:
        try:
            for service in SERVICES:
                env = {"PORT": str(ports[service])}
                if service in CALLS:
                    callee = CALLS[service]
                    env[_env_name(callee)] = _url(ports[callee])
                started[service] = docker_client.containers.run(
                    images[service],
                    name=f"shop-test-{run}-{service}",
                    detach=True,
                    network_mode="host",
                    init=True,
                    environment=env,
                    labels={"conveyor.test": LABEL},
                )
                _wait_up(http, ports[service], started[service])
            yield ports, started
        finally:
            for container in started.values():
                container.remove(force=True)


def test_the_front_page_carries_the_api_and_the_worker(
    shop: tuple[dict[str, int], dict[str, Container]],
) -> None:
    ports, _ = shop
    with httpx.Client(timeout=10) as http:
        for service in SERVICES:
            assert http.get(f"{_url(ports[service])}/health").text.strip() == "ok"
            assert http.get(f"{_url(ports[service])}/version").text.strip() == VERSION
        page = http.get(f"{_url(ports['front'])}/")
    assert page.status_code == 200, page.text
    assert page.headers["content-type"] == "text/html"
    assert f"shop front {VERSION}" in page.text
    assert f"api {VERSION} (worker: worker {VERSION} did the work)" in page.text


def test_a_missing_worker_fails_the_front_page(
    shop: tuple[dict[str, int], dict[str, Container]],
) -> None:
    ports, started = shop
    started["worker"].stop(timeout=2)
    with httpx.Client(timeout=20) as http:
        page = http.get(f"{_url(ports['front'])}/")
        assert http.get(f"{_url(ports['api'])}/health").status_code == 200
    assert page.status_code == 502
    assert "the API did not answer" in page.text
    assert f"{_url(ports['api'])}/cgi-bin/api answered HTTP/1.1 502" in page.text


def test_the_pipeline_file_wires_each_caller_to_its_callee() -> None:
    """deployments/shop.yaml: in each cluster the URL a member is told is the fixed port
    of the member it calls, which it depends on (so Marathon starts that one first)."""
    from conveyor.config import load_pipeline
    from conveyor.drivers.marathon_app import load_template

    pipeline = load_pipeline(SHOP.parent.parent / "deployments" / "shop.yaml")
    services = {s.name: s for s in pipeline.members}
    assert [s.name for s in pipeline.members] == list(SERVICES)
    for env in pipeline.environments:
        apps = {}
        for name, s in services.items():
            template = s.environments[env.name].app_template
            assert template is not None
            apps[name] = load_template(template)
        for caller, callee in CALLS.items():
            assert services[caller].depends_on == [callee]
            fixed = apps[callee]
            assert fixed["requirePorts"] is True and fixed["instances"] == 1
            port = fixed["portDefinitions"][0]["port"]
            assert apps[caller]["env"] == {_env_name(callee): _url(port)}, (env.name, caller)
        ports = [a["portDefinitions"][0]["port"] for a in apps.values()]
        assert len(set(ports)) == len(ports), (env.name, ports)
