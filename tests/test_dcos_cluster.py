"""DC/OS service-account login and the cluster pre-flight, against the simulator in --dcos mode."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import docker
import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from pydantic import SecretStr

from conveyor.config.base import SecretRef
from conveyor.config.drivers import MarathonAuth, MarathonDriverConfig
from conveyor.connections import marathon_auth
from conveyor.drivers.marathon import MarathonDriver
from conveyor.errors import AuthenticationFailed, PreflightFailed
from conveyor.release import Release
from tests.marathon_support import Sim, build_and_push, fast_template, run_sim, start_registry

pytestmark = [pytest.mark.docker]

UID = "conveyor-deployer"


def _pem(key: rsa.RSAPrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


@dataclass
class Cluster:
    sim: Sim
    key: str  # the service account's private key (PEM)
    release: Release


class CountingTransport(httpx.HTTPTransport):
    """A real transport that counts what goes out: proves there is no retry storm."""

    def __init__(self) -> None:
        super().__init__()
        self.paths: list[str] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.paths.append(request.url.path)
        return super().handle_request(request)


@pytest.fixture(scope="module")
def cluster(
    docker_client: docker.DockerClient, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Cluster]:
    tmp = tmp_path_factory.mktemp("dcos")
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public = tmp / "deployer.pub"
    public.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    reg = start_registry(tmp / "registry")
    try:
        release = build_and_push(docker_client, reg, "d" + secrets.token_hex(4), "1.0")
        args = ("--dcos", "--service-account", f"{UID}={public}", "--agent-cpus", "1")
        with run_sim(docker_client, *args, agents=2) as sim:
            yield Cluster(sim, _pem(key), release)
    finally:
        reg.stop()


def make_driver(
    cluster: Cluster,
    tmp_path: Path,
    key: str | None = None,
    transport: httpx.BaseTransport | None = None,
    **template: object,
) -> MarathonDriver:
    config = MarathonDriverConfig(
        kind="marathon",
        url=cluster.sim.url,
        dcos=True,
        app_id="/dc-" + secrets.token_hex(3),
        app_template=fast_template(tmp_path, **template),
        auth=MarathonAuth(kind="dcos", uid=UID, private_key=SecretRef(env="DCOS_KEY_UNUSED")),
        deploy_timeout_s=60,
    )
    pem = SecretStr(key or cluster.key)
    auth = marathon_auth(config, lambda ref: pem)
    return MarathonDriver("integration", config, auth=auth, transport=transport)


def test_service_account_logs_in_once_and_deploys(cluster: Cluster, tmp_path: Path) -> None:
    counted = CountingTransport()
    driver = make_driver(cluster, tmp_path, transport=counted)
    try:
        outcome = driver.deploy(cluster.release)
        assert outcome.state.healthy and outcome.state.digest == cluster.release.digest
        assert driver.status().digest == cluster.release.digest
        assert counted.paths.count("/acs/api/v1/auth/login") == 1
        assert any(p.startswith("/service/marathon/v2/apps") for p in counted.paths)
        assert cluster.key not in repr(driver.auth)
    finally:
        driver.close()


def test_wrong_key_is_one_clear_error_without_a_retry_storm(
    cluster: Cluster, tmp_path: Path
) -> None:
    other = _pem(rsa.generate_private_key(public_exponent=65537, key_size=2048))
    counted = CountingTransport()
    driver = make_driver(cluster, tmp_path, key=other, transport=counted)
    try:
        with pytest.raises(AuthenticationFailed) as info:
            driver.status()
        message = str(info.value)
        assert UID in message and "public key" in message and "ERR_INVALID_CREDENTIALS" in message
        assert other not in message
        assert counted.paths == ["/acs/api/v1/auth/login"]
    finally:
        driver.close()


def test_an_expired_session_is_renewed_once(cluster: Cluster, tmp_path: Path) -> None:
    counted = CountingTransport()
    driver = make_driver(cluster, tmp_path, transport=counted)
    try:
        driver.status()
        # IAM forgot the session (expiry, restart): exactly one new login, then on as before.
        driver.auth._token = "expired-" + secrets.token_hex(8)  # type: ignore[union-attr]
        driver.status()
        assert counted.paths.count("/acs/api/v1/auth/login") == 2
    finally:
        driver.close()


def test_preflight_passes_on_a_healthy_cluster(cluster: Cluster, tmp_path: Path) -> None:
    driver = make_driver(cluster, tmp_path)
    try:
        report = driver.preflight(cluster.release)
        report.raise_for_failures()
        lines = [c.line() for c in report.checks]
        assert any("DC/OS version: 2.2.0" in line for line in lines), lines
        assert any("system units: all" in line for line in lines), lines
        assert any("host ports: need 1 host ports (any)" in line for line in lines), lines
    finally:
        driver.close()


def test_preflight_names_an_unhealthy_unit(cluster: Cluster, tmp_path: Path) -> None:
    driver = make_driver(cluster, tmp_path)
    cluster.sim.fault(kind="unit_unhealthy", unit="dcos-mesos-dns.service", duration=30)
    try:
        with pytest.raises(PreflightFailed) as info:
            driver.preflight(cluster.release).raise_for_failures()
        assert "unit dcos-mesos-dns.service: health" in str(info.value)
        assert len(info.value.failures) == 1
    finally:
        cluster.sim.clear_faults()
        driver.close()


def test_preflight_names_missing_resources(cluster: Cluster, tmp_path: Path) -> None:
    # Two agents of 1 cpu each: 3 instances of 0.6 cpus cannot be placed.
    driver = make_driver(cluster, tmp_path, instances=3, cpus=0.6)
    try:
        with pytest.raises(PreflightFailed) as info:
            driver.preflight(cluster.release).raise_for_failures()
        message = str(info.value)
        assert "need room for 3 instances (3 new) of 0.6 cpus" in message
        assert "active agents fit 2" in message and "missing" in message
    finally:
        driver.close()


def test_preflight_refuses_when_fixed_host_ports_are_taken(
    cluster: Cluster, tmp_path: Path
) -> None:
    first, second = cluster.sim.state()["agents"]
    port = first["portRange"][0] + 1
    fixed = {"requirePorts": True, "portDefinitions": [{"port": port, "name": "http"}]}
    holder = make_driver(cluster, tmp_path, instances=1, **fixed)
    wanting = make_driver(cluster, tmp_path, instances=1, **fixed)
    try:
        holder.preflight(cluster.release).raise_for_failures()
        assert holder.deploy(cluster.release).state.healthy
        with pytest.raises(PreflightFailed) as info:
            wanting.preflight(cluster.release).raise_for_failures()
        (line,) = info.value.failures
        assert f"host ports: need 1 host ports (fixed {port})" in line
        assert f"{first['hostname']} port {port} taken" in line
        assert f"{second['hostname']} port {port} not offered" in line
    finally:
        holder.close()
        wanting.close()
