"""Three services built side by side on the real Docker Engine and pushed to a real
registry; a second ship with one service's source changed rebuilds only that one and
carries the other digests (judged by the build inputs recorded in the image labels)."""

from __future__ import annotations

import logging
from pathlib import Path

import docker
import pytest

from conveyor.build_many import (
    Outcome,
    Target,
    build_all,
    build_inputs,
    build_service,
    parallelism,
)
from conveyor.clients.docker_engine import DockerEngine
from conveyor.clients.registry import RegistryClient
from conveyor.config import ServiceConfig
from conveyor.errors import BuildFailed
from conveyor.localstack.registry import RegistryServer
from conveyor.promotion import TagPolicy
from tests.registry_support import need_registry

pytestmark = pytest.mark.docker
NAMES = ("worker", "api", "front")
POLICY = TagPolicy(frozenset({"integration-ready"}))


def _services(root: Path) -> list[ServiceConfig]:
    services = []
    for name in NAMES:
        context = root / name
        context.mkdir(exist_ok=True)
        (context / "Dockerfile").write_text("FROM scratch\nCOPY index.html /www/\n")
        if not (context / "index.html").exists():
            (context / "index.html").write_text(f"{name} 1\n")
        services.append(ServiceConfig(name=name, context=context))
    return services


def test_only_the_changed_service_is_rebuilt(
    tmp_path: Path, docker_client: docker.DockerClient
) -> None:
    need_registry()
    engine = DockerEngine(docker_client)
    with RegistryServer(tmp_path / "registry") as server, RegistryClient(server.url) as client:
        host = server.url.split("://", 1)[1]

        def ship(version: str, running: dict[str, str]) -> dict[str, Outcome]:
            def one(service: ServiceConfig, logger: logging.Logger) -> Outcome:
                target = Target(
                    client,
                    host,
                    f"conveyor/shop/{service.name}",
                    version,
                    None,
                    running.get(service.name),
                    POLICY,
                    tmp_path / "locks",
                )
                return build_service(engine, service, target, logger)

            return build_all(_services(tmp_path / "src"), one)

        (tmp_path / "src").mkdir()
        first = ship("1.0.0", {})
        assert all(o.rebuilt for o in first.values())
        running = {n: o.digest for n, o in first.items()}

        (tmp_path / "src" / "api" / "index.html").write_text("api 2\n")
        second = ship("1.1.0", running)
        assert {n for n, o in second.items() if o.rebuilt} == {"api"}
        assert second["api"].digest != running["api"]
        assert {n: second[n].digest for n in ("worker", "front")} == {
            n: running[n] for n in ("worker", "front")
        }


def test_every_build_runs_and_each_failure_is_named(tmp_path: Path) -> None:
    services = [ServiceConfig(name=n, context=tmp_path) for n in NAMES]

    def one(service: ServiceConfig, logger: logging.Logger) -> Outcome:
        if service.name != "api":
            raise BuildFailed(f"step 2 failed in {service.name}")
        return Outcome(service.name, "sha256:" + "0" * 64, rebuilt=True)

    with pytest.raises(BuildFailed, match=r"^worker: step 2 failed in worker; front: step 2"):
        build_all(services, one)
    assert parallelism(20, cpus=2) == 2 and parallelism(1, cpus=8) == 1


def test_a_dockerfile_outside_the_context_is_a_build_input(tmp_path: Path) -> None:
    """examples/shop's members share ``../Dockerfile``, which is none of their context's
    files: a change to it must rebuild them, not carry their images."""
    shared = tmp_path / "Dockerfile"
    shared.write_text("FROM scratch\nCOPY index.html /www/\n")
    context = tmp_path / "api"
    context.mkdir()
    (context / "index.html").write_text("api 1\n")
    service = ServiceConfig(name="api", context=context, dockerfile=Path("../Dockerfile"))
    before = build_inputs(service)
    shared.write_text("FROM scratch\nCOPY index.html /srv/\n")
    assert build_inputs(service) != before
