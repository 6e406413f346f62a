"""The simulator's DC/OS surface (IAM login, admin router) and its command line."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import docker
import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from typer.testing import CliRunner

from conveyor.cli.sim_marathon import app as cli_app
from conveyor.sim.marathon import MarathonSim
from tests import test_sim_marathon as base
from tests.test_sim_marathon import app_def, port_block, wait_for

pytestmark = pytest.mark.docker

PROJECT = Path(__file__).resolve().parent.parent
# The API tests' fixtures, shared: pytest finds fixtures by module attribute.
make_sim = base.make_sim
sim_image = base.sim_image


def _keypair() -> tuple[Any, bytes]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return key, public


def _login_token(key: Any, uid: str, ttl: float = 300) -> str:
    return jwt.encode({"uid": uid, "exp": int(time.time() + ttl)}, key, algorithm="RS256")


@pytest.fixture(scope="module")
def account() -> tuple[Any, bytes]:
    return _keypair()


@pytest.fixture
def dcos(make_sim: Callable[..., MarathonSim], account: tuple[Any, bytes]) -> MarathonSim:
    return make_sim(dcos=True, agents=2, agent_cpus=1.0, service_accounts={"conveyor": account[1]})


@pytest.fixture
def client(dcos: MarathonSim) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=dcos.url, timeout=10) as c:
        yield c


def test_login_with_service_account_jwt(client: httpx.Client, account: tuple[Any, bytes]) -> None:
    key, _ = account
    anonymous = client.get("/service/marathon/v2/apps")
    assert anonymous.status_code == 401
    assert anonymous.headers["WWW-Authenticate"] == "acsjwt"
    assert set(anonymous.json()) == {"title", "description", "code"}

    login = client.post(
        "/acs/api/v1/auth/login", json={"uid": "conveyor", "token": _login_token(key, "conveyor")}
    )
    assert login.status_code == 200, login.text
    token = login.json()["token"]
    authed = {"Authorization": f"token={token}"}
    assert client.get("/service/marathon/v2/apps", headers=authed).json() == {"apps": []}
    assert (
        client.get(
            "/service/marathon/v2/apps", headers={"Authorization": f"Bearer {token}"}
        ).status_code
        == 401
    )
    assert client.get("/v2/apps", headers=authed).status_code == 404, (
        "Marathon is only behind the admin router"
    )


@pytest.mark.parametrize(
    "body",
    [
        "wrong-key",
        "unknown-uid",
        "expired",
        "uid-mismatch",
    ],
)
def test_login_refuses_bad_tokens(
    client: httpx.Client, account: tuple[Any, bytes], body: str
) -> None:
    key, _ = account
    other, _ = _keypair() if body == "wrong-key" else (key, b"")
    uid = "stranger" if body == "unknown-uid" else "conveyor"
    claim_uid = "someone-else" if body == "uid-mismatch" else uid
    ttl = -60 if body == "expired" else 300
    token = jwt.encode({"uid": claim_uid, "exp": int(time.time() + ttl)}, other, algorithm="RS256")
    response = client.post("/acs/api/v1/auth/login", json={"uid": uid, "token": token})
    assert response.status_code == 401
    assert response.json()["code"] == "ERR_INVALID_CREDENTIALS"
    assert response.headers["WWW-Authenticate"] == "acsjwt"


def test_dcos_cluster_routes(
    dcos: MarathonSim, client: httpx.Client, account: tuple[Any, bytes]
) -> None:
    version = client.get("/dcos-metadata/dcos-version.json")
    assert version.status_code == 200 and version.json()["version"] == "2.2.0"
    assert {"dcos-image-commit", "bootstrap-id"} <= set(version.json())
    token = client.post(
        "/acs/api/v1/auth/login",
        json={"uid": "conveyor", "token": _login_token(account[0], "conveyor")},
    ).json()["token"]
    client.headers["Authorization"] = f"token={token}"

    units = client.get("/system/health/v1/units").json()["units"]
    assert units and all(
        u["health"] == 0 and {"id", "name", "description"} <= set(u) for u in units
    )
    client.post("/_sim/faults", json={"kind": "unit_unhealthy", "unit": "dcos-marathon.service"})
    sick = {u["id"]: u["health"] for u in client.get("/system/health/v1/units").json()["units"]}
    assert sick["dcos-marathon.service"] == 1

    # Two instances of 0.6 CPU cannot share one 1-CPU agent: placement spreads them.
    put = client.put("/service/marathon/v2/apps/spread", json=app_def(instances=2, cpus=0.6))
    assert put.status_code == 201, put.text
    wait_for("both tasks", lambda: len(_running(client, "/spread")) == 2)
    hosts = {t["host"] for t in _running(client, "/spread")}
    assert hosts == {
        f"{dcos.settings.name}-agent-1.example",
        f"{dcos.settings.name}-agent-2.example",
    }
    slaves = client.get("/mesos/master/slaves").json()["slaves"]
    assert {s["hostname"] for s in slaves} == hosts
    for slave in slaves:
        assert slave["active"] and slave["resources"]["cpus"] == 1.0
        assert slave["used_resources"]["cpus"] == pytest.approx(0.6)
        assert slave["resources"]["ports"].startswith("[")


def _running(client: httpx.Client, app_id: str) -> list[dict[str, Any]]:
    tasks = client.get(f"/service/marathon/v2/apps{app_id}/tasks").json()["tasks"]
    return [t for t in tasks if t["state"] == "TASK_RUNNING"]


def test_command_line_serves_and_cleans_up_on_sigterm(
    sim_image: str, docker_client: docker.DockerClient
) -> None:
    name = f"cli{uuid.uuid4().hex[:8]}"
    block = port_block()
    env = {**os.environ, "PYTHONPATH": str(PROJECT)}
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "conveyor.sim.marathon",
            "--listen",
            "127.0.0.1:0",
            "--name",
            name,
            "--ports",
            f"{block.start}-{block.stop - 1}",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env,
        cwd=PROJECT,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert line.startswith("listening on http://127.0.0.1:"), line
        url = line.split()[-1]
        with httpx.Client(base_url=url, timeout=10) as api:
            definition = app_def(instances=1)
            del definition["healthChecks"]
            assert api.put("/v2/apps/cli", json=definition).status_code == 201
            wait_for("the task", lambda: api.get("/v2/apps/cli").json()["app"]["tasksRunning"] == 1)
        labels = {"label": f"conveyor.sim.instance={name}"}
        assert len(docker_client.containers.list(filters=labels)) == 1
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
        assert docker_client.containers.list(all=True, filters=labels) == []
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)


def test_typer_command_refuses_non_loopback_listen() -> None:
    result = CliRunner().invoke(cli_app, ["marathon", "--listen", "10.1.2.3:8080"])
    assert result.exit_code == 2
    assert "127.0.0.1 or ::1" in result.output
