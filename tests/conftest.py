from __future__ import annotations

from collections.abc import Iterator

import docker
import pytest

from tests.parts import free_port, missing


@pytest.fixture(scope="session")
def docker_client() -> Iterator[docker.DockerClient]:
    """The real Docker Engine (``.ci/run`` and ``conveyor up`` start it)."""
    try:
        client = docker.from_env(timeout=60)
        client.ping()
    except docker.errors.DockerException as exc:
        missing("the Docker Engine", f"start it with `conveyor up` or dockerd ({exc})")
    yield client
    client.close()


@pytest.fixture
def port() -> int:
    return free_port()
