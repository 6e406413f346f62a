"""The pyVmomi client against the real govmomi simulator: login, TLS trust, bulk reads."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest
from pydantic import SecretStr

from conveyor.clients.vsphere import VSphereClient, make_stub
from conveyor.config.base import SecretRef
from conveyor.config.preflight import AgentVmSelector, VSphereConfig
from conveyor.errors import (
    AuthenticationFailed,
    ConnectFailed,
    RequestTimeout,
    TLSVerificationFailed,
    is_transient,
)
from conveyor.preflight.vsphere import Demand, check_placement, run_preflight
from conveyor.sim import vcenter
from tests.parts import free_port, missing

pytestmark = pytest.mark.vcsim


def launch(*args: str) -> vcenter.VCenterSim:
    try:
        return vcenter.start(*args)
    except vcenter.SimulatorError as exc:
        missing("the vCenter simulator", str(exc))


@pytest.fixture(scope="module")
def sim() -> Iterator[vcenter.VCenterSim]:
    with launch("--hosts", "2", "--agents", "2") as running:
        yield running


def test_wrong_password_is_one_clear_error_and_one_login(sim: vcenter.VCenterSim) -> None:
    wrong = "not-the-password-3141"
    client = VSphereClient(make_stub(sim.url, ca_bundle=sim.cert), sim.username, SecretStr(wrong))
    with pytest.raises(AuthenticationFailed) as caught:
        client.login()
    assert "wrong user name or password" in str(caught.value)
    assert sim.username in str(caught.value) and wrong not in str(caught.value)
    assert not is_transient(caught.value)
    assert client.calls["Login"] == 1
    assert wrong not in repr(client)


def test_default_trust_rejects_the_self_signed_certificate(sim: vcenter.VCenterSim) -> None:
    client = VSphereClient(make_stub(sim.url), sim.username, sim.password)
    with pytest.raises(TLSVerificationFailed, match=r"set ca_bundle .* or pin its thumbprint"):
        client.login()
    assert client.calls["Login"] == 0


def test_ca_bundle_verifies_the_certificate(sim: vcenter.VCenterSim) -> None:
    with VSphereClient(make_stub(sim.url, ca_bundle=sim.cert), sim.username, sim.password) as c:
        assert c.inventory().cluster(sim.cluster).name == sim.cluster
    assert c.calls["Logout"] == 1


@pytest.mark.parametrize("form", ["sha256", "sha1", "colons"])
def test_thumbprint_pinning_accepts_the_right_certificate(
    sim: vcenter.VCenterSim, form: str
) -> None:
    pin = {
        "sha256": sim.thumbprint_sha256,
        "sha1": sim.thumbprint_sha1,
        "colons": ":".join(sim.thumbprint_sha256[i : i + 2] for i in range(0, 64, 2)).upper(),
    }[form]
    with VSphereClient(make_stub(sim.url, thumbprint=pin), sim.username, sim.password) as c:
        assert len(c.inventory().hosts) == 2


def test_thumbprint_pinning_rejects_another_certificate(sim: vcenter.VCenterSim) -> None:
    other = "ab" * 32
    client = VSphereClient(make_stub(sim.url, thumbprint=other), sim.username, sim.password)
    with pytest.raises(TLSVerificationFailed, match=f"does not match the pinned {other}"):
        client.login()


def test_refused_connection_is_transient() -> None:
    url = f"https://127.0.0.1:{free_port()}/sdk"
    client = VSphereClient(make_stub(url, thumbprint="ab" * 32), "user", SecretStr("pw"))
    with pytest.raises(ConnectFailed) as caught:
        client.login()
    assert is_transient(caught.value)


def test_large_inventory_is_read_in_bulk() -> None:
    with launch("--hosts", "50", "--agents", "3", "--vms", "1000") as big:
        cfg = VSphereConfig(
            url=big.url, username=big.username, password=SecretRef(env="VCSIM_PASSWORD"),
            thumbprint=big.thumbprint_sha256, cluster=big.cluster,
            agent_vms=AgentVmSelector(name_pattern="production-agent-*"),
        )  # fmt: skip
        with VSphereClient.from_config(cfg, big.password) as client:
            before = client.round_trips
            report = run_preflight(client, cfg, "production", Demand(3, 1, 1024))
            trips = client.round_trips - before
            assert report.failures == [], [c.line() for c in report.failures]
            assert trips <= 3, client.calls
            assert sum(1 for c in report.checks if c.subject.startswith("host ")) == 50
            # A second read reuses the session's container view: one call.
            before = client.round_trips
            placement = check_placement(client, cfg, [a.hostname for a in big.agents])
            assert client.round_trips - before == 1
            assert len(placement.hosts) == 3


def test_silent_peer_is_a_transient_timeout() -> None:
    with socket.socket() as silent:
        # Listening but never accepting: the TCP handshake completes, TLS never answers.
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        url = f"https://127.0.0.1:{silent.getsockname()[1]}/sdk"
        stub = make_stub(url, thumbprint="ab" * 32, timeout_s=0.5)
        client = VSphereClient(stub, "user", SecretStr("pw"))
        with pytest.raises(RequestTimeout) as caught:
            client.login()
    assert is_transient(caught.value)
