from __future__ import annotations

from collections.abc import Iterator

import docker
import pytest

from tests import images
from tests.parts import free_port, missing

# Whole files go to the test processes (--dist loadfile) in the order collected
# (--no-loadscope-reorder; xdist would put the files with most tests first): the files
# that take longest, as measured on the suite (tests/test_*.py, heaviest first), start
# first, so the suite does not end on one process running a long file alone.
HEAVIEST_FIRST = (
    "test_pipeline_recovery",
    "test_pipeline_durable",
    "test_pipeline_services",
    "test_pipeline_faults",
    "test_pipeline_approval",
    "test_stack_worker",
    "test_pipeline_outage",
    "test_pipeline_gates",
    "test_pipeline_signed",
    "test_pipeline_windows",
    "test_pipeline_marathon_restart",
    "test_run_boundaries",
    "test_marathon_driver",
    "test_notify",
    "test_stack",
    "test_docker_release_driver",
    "test_docker_driver",
    "test_sim_marathon_dcoscli",
    "test_sim_marathon",
    "test_sim_marathon_checks",
    "test_pipeline_config",
)


def _runs_the_session(config: pytest.Config) -> bool:
    return not hasattr(config, "workerinput")  # xdist's workers have it, the controller not


def pytest_configure(config: pytest.Config) -> None:
    if _runs_the_session(config):
        images.start_session()


def pytest_unconfigure(config: pytest.Config) -> None:
    if _runs_the_session(config):
        images.end_session()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {name: i for i, name in enumerate(HEAVIEST_FIRST)}
    # sort is stable: the tests of a file keep their order, and the rest their file order.
    items.sort(key=lambda item: rank.get(item.path.stem, len(rank)))


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
