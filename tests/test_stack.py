"""`conveyor up/down/status` on free ports with a state folder of its own.

The shared Docker Engine already answers here, so ``up`` must use it and ``down``
must leave it running: other tests need it.
"""

from __future__ import annotations

import os
import socket
import stat
from collections.abc import Iterator
from pathlib import Path

import docker
import httpx
import pytest
from typer.testing import CliRunner

from conveyor.cli.stack import app
from conveyor.errors import LocalStackFailed
from conveyor.localstack import process
from conveyor.localstack.stack import LocalStack
from tests.parts import free_port, require_binary

pytestmark = [pytest.mark.docker, pytest.mark.registry, pytest.mark.prefect]

runner = CliRunner()


def _cli(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.output


@pytest.fixture
def home(tmp_path: Path) -> Iterator[Path]:
    state = tmp_path / "state"
    yield state
    # Whatever a failed test left running is stopped; dockerd is never ours here.
    LocalStack(state).down(["clusters", "prefect", "registry"])


@pytest.fixture
def listener() -> Iterator[int]:
    """A port some other process listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield int(s.getsockname()[1])


def test_up_twice_status_down(home: Path, docker_client: docker.DockerClient) -> None:
    require_binary("docker-registry", "apt-get install docker-registry")
    require_binary("htpasswd", "apt-get install apache2-utils")
    rp, pp = free_port(), free_port()
    ports = ["--registry-port", str(rp), "--prefect-port", str(pp)]
    code, out = _cli("up", "--home", str(home), *ports, "--only", "docker,registry,prefect")
    assert code == 0, out
    assert "docker: already running" in out
    assert "registry: started" in out and "prefect: started" in out
    assert f"PREFECT_API_URL=http://127.0.0.1:{pp}/api" in out

    stack = LocalStack(home)  # finds its ports again in the state folder
    assert (stack.registry_port, stack.prefect_port) == (rp, pp)
    pids = {"registry": stack._registry_ours(), "prefect": stack.prefect.ours()}
    for pid in pids.values():
        assert pid is not None
        assert os.getsid(pid) == pid, "services must run detached, in a session of their own"

    password = stack.password_file
    assert stat.S_IMODE(password.stat().st_mode) == 0o600
    url = f"http://127.0.0.1:{rp}/v2/"
    assert httpx.get(url).status_code == 401
    assert httpx.get(url, auth=("conveyor", password.read_text().strip())).status_code == 200
    assert httpx.get(f"http://127.0.0.1:{pp}/api/health").status_code == 200

    code, out = _cli("up", "--home", str(home), "--only", "registry,prefect")
    assert code == 0, out
    assert "registry: already running" in out and "prefect: already running" in out
    assert {"registry": stack._registry_ours(), "prefect": stack.prefect.ours()} == pids
    assert password.read_text() == stack.password_file.read_text()

    assert [(s.name, s.running, s.ours) for s in stack.status()][:3] == [
        ("docker", True, False),
        ("registry", True, True),
        ("prefect", True, True),
    ]
    code, out = _cli("env", "--home", str(home))
    assert f"export PREFECT_API_URL=http://127.0.0.1:{pp}/api" in out

    code, out = _cli("down", "--home", str(home))
    assert code == 0, out
    assert "docker: left alone" in out
    assert not any(process.alive(pid) for pid in pids.values() if pid)
    docker_client.ping()
    assert [(s.name, s.running) for s in stack.status()][:3] == [
        ("docker", True),
        ("registry", False),
        ("prefect", False),
    ]

    code, out = _cli("down", "--home", str(home))
    assert code == 0 and "registry: not running" in out


def test_registry_port_taken(home: Path, listener: int) -> None:
    require_binary("docker-registry", "apt-get install docker-registry")
    code, out = _cli(
        "up", "--home", str(home), "--only", "registry", "--registry-port", str(listener)
    )
    assert code == 1
    assert f"port {listener} is taken by another process" in out
    assert "--registry-port" in out


def test_prefect_port_taken(home: Path, listener: int) -> None:
    with pytest.raises(LocalStackFailed, match="pass --prefect-port"):
        LocalStack(home, prefect_port=listener).up(["prefect"])


def test_missing_binary_says_what_to_install(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    empty = tmp_path / "bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    with pytest.raises(
        LocalStackFailed, match="docker-registry not found: apt-get install docker-registry"
    ):
        LocalStack(home, registry_port=free_port()).up(["registry"])


def test_a_stale_pid_file_is_not_trusted(home: Path) -> None:
    # Our own pid: alive, but not a docker-registry, so not ours to stop.
    home.mkdir(parents=True)
    (home / "registry.pid").write_text(f"{os.getpid()}\n")
    (home / "prefect.pid").write_text("999999999\n")
    stack = LocalStack(home, registry_port=free_port(), prefect_port=free_port())
    assert not any(s.ours for s in stack.status())
    assert stack.down(["prefect", "registry"]) == ["prefect: not running", "registry: not running"]


def test_unknown_service(home: Path) -> None:
    code, out = _cli("up", "--home", str(home), "--only", "docker,redis")
    assert code == 1 and "unknown service redis" in out


def test_simulated_clusters_up_status_down(
    home: Path, docker_client: docker.DockerClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The demo's two DC/OS simulators and vCenter come up with their credentials."""
    require_binary("go", "apt-get install golang-go")
    ports = [free_port(), free_port()]
    vcenter = free_port()
    monkeypatch.setenv("CONVEYOR_MARATHON_PORTS", ",".join(map(str, ports)))
    monkeypatch.setenv("CONVEYOR_VCENTER_PORT", str(vcenter))
    stack = LocalStack(home, registry_port=free_port())
    done = stack.up(["registry", "clusters"])
    assert any(line.startswith("vcenter: started") for line in done), done
    key = home / "clusters" / "service-account.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    # A DC/OS simulator refuses anonymous Marathon calls: the service account is required.
    assert httpx.get(f"http://127.0.0.1:{ports[0]}/service/marathon/v2/apps").status_code == 401
    rows = {s.name: s.running for s in stack.status()}
    assert rows["dcos-integration"] and rows["dcos-production"] and rows["vcenter"]
    assert "vcenter: already running" in stack.up(["clusters"])[-1]
    stack.down(["clusters"])
    assert not process.listening("127.0.0.1", vcenter)
