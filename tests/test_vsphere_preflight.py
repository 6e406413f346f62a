"""vSphere pre-flight and placement against the real govmomi simulator.

One healthy simulator serves the module; faults the vSphere API can set (maintenance
mode, power off) are set through it and undone. Faults it cannot set (a full
datastore, a red alarm, a disconnected host) come from a second simulator's options.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pyVmomi import vim

from conveyor.clients.vsphere import VSphereClient
from conveyor.config import parse_pipeline
from conveyor.config.base import SecretRef
from conveyor.config.preflight import AgentVmSelector, VSphereConfig
from conveyor.connections import Connections
from conveyor.errors import AuthenticationFailed, PlacementViolation, PreflightFailed
from conveyor.preflight import PreflightReport
from conveyor.preflight.vsphere import Demand, check_placement, run_preflight
from conveyor.sim import vcenter
from tests.parts import missing, two_environments

pytestmark = pytest.mark.vcsim

SMALL = Demand(instances=2, cpus=1.0, mem_mb=512)


def launch(*args: str) -> vcenter.VCenterSim:
    try:
        return vcenter.start(*args)
    except vcenter.SimulatorError as exc:
        missing("the vCenter simulator", str(exc))


def config(sim: vcenter.VCenterSim, **overrides: object) -> VSphereConfig:
    values: dict[str, object] = {
        "url": sim.url,
        "username": sim.username,
        "password": SecretRef(env="VCSIM_PASSWORD"),
        "thumbprint": sim.thumbprint_sha256,
        "cluster": sim.cluster,
        "datacenter": sim.datacenter,
        "agent_vms": AgentVmSelector(folder="dcos-agents"),
    }
    values.update(overrides)
    return VSphereConfig.model_validate(values)


@pytest.fixture(scope="module")
def sim() -> Iterator[vcenter.VCenterSim]:
    with launch("--hosts", "3", "--agents", "3", "--vms", "6") as running:
        yield running


@pytest.fixture
def client(sim: vcenter.VCenterSim) -> Iterator[VSphereClient]:
    with VSphereClient.from_config(config(sim), sim.password) as c:
        yield c


def _find(client: VSphereClient, kind: type, name: str) -> vim.ManagedEntity:
    """A pyVmomi handle on one object, to set a fault through the vSphere API."""
    content = client.content
    view = content.viewManager.CreateContainerView(content.rootFolder, [kind], True)
    try:
        return next(o for o in view.view if o.name == name)
    finally:
        view.DestroyView()


def _wait(task: vim.Task) -> None:
    for _ in range(200):
        if task.info.state in ("success", "error"):
            assert task.info.state == "success", task.info.error
            return
        time.sleep(0.05)
    raise AssertionError("task did not finish in 10 s")


def failing(report: PreflightReport) -> list[str]:
    return [c.line() for c in report.failures]


def test_healthy_cluster_passes_every_check(sim: vcenter.VCenterSim, client: VSphereClient) -> None:
    report = run_preflight(client, config(sim), "production", SMALL)
    assert report.failures == [] and report.warnings == [], report.checks
    subjects = {c.subject for c in report.checks}
    assert {f"host {h}" for h in sim.hosts} <= subjects
    assert {f"vm {a.vm}" for a in sim.agents} <= subjects
    assert "datastore datastore1" in subjects
    report.raise_for_failures(warnings_block=True)


@pytest.mark.parametrize(
    "selector",
    [
        AgentVmSelector(folder="dcos-agents"),
        AgentVmSelector(name_pattern="production-agent-*"),
        AgentVmSelector(custom_attribute="dcos-role", custom_attribute_value="agent"),
    ],
    ids=["folder", "name-pattern", "custom-attribute"],
)
def test_agent_vms_are_chosen_by_folder_pattern_or_attribute(
    sim: vcenter.VCenterSim, client: VSphereClient, selector: AgentVmSelector
) -> None:
    report = run_preflight(client, config(sim, agent_vms=selector), "production")
    checked = sorted(c.subject for c in report.checks if c.name == "agent state")
    assert checked == sorted(f"vm {a.vm}" for a in sim.agents)


def test_selector_matching_nothing_fails(sim: vcenter.VCenterSim, client: VSphereClient) -> None:
    cfg = config(sim, agent_vms=AgentVmSelector(name_pattern="staging-agent-*"))
    report = run_preflight(client, cfg, "production")
    assert any("agent VMs" in line and "no VM matches" in line for line in failing(report))


def test_host_in_maintenance_mode_fails_naming_the_host(
    sim: vcenter.VCenterSim, client: VSphereClient
) -> None:
    host = _find(client, vim.HostSystem, sim.hosts[1])
    _wait(host.EnterMaintenanceMode_Task(timeout=0))
    try:
        report = run_preflight(client, config(sim), "production", SMALL)
    finally:
        _wait(host.ExitMaintenanceMode_Task(timeout=0))
    assert failing(report) == [f"host {sim.hosts[1]}: state: in maintenance mode"]
    with pytest.raises(PreflightFailed, match=sim.hosts[1]):
        report.raise_for_failures()


def test_powered_off_agent_vm_fails_naming_the_vm(
    sim: vcenter.VCenterSim, client: VSphereClient
) -> None:
    agent = sim.agents[2].vm
    vm = _find(client, vim.VirtualMachine, agent)
    _wait(vm.PowerOffVM_Task())
    try:
        report = run_preflight(client, config(sim), "production")
    finally:
        _wait(vm.PowerOnVM_Task())
    assert failing(report) == [f"vm {agent}: agent state: power state poweredOff"]


def test_not_enough_headroom_fails_with_the_figures(
    sim: vcenter.VCenterSim, client: VSphereClient
) -> None:
    # 3 hosts of 16 cores and 128 GiB: 100 instances of 1 core and 8 GiB do not fit in memory.
    report = run_preflight(client, config(sim), "production", Demand(100, 0.25, 8192))
    lines = failing(report)
    assert len(lines) == 1 and lines[0].startswith(f"cluster {sim.cluster}: memory headroom:"), (
        lines
    )
    assert "819200 MiB needed" in lines[0]


def test_placement_maps_agents_to_vms_and_hosts(
    sim: vcenter.VCenterSim, client: VSphereClient
) -> None:
    agents = [sim.agents[0].hostname, sim.agents[1].ip]
    result = check_placement(client, config(sim), agents)
    mapping = result.mapping()
    assert mapping[sim.agents[0].hostname].vm == sim.agents[0].vm
    assert mapping[sim.agents[0].hostname].host == sim.agents[0].host
    assert mapping[sim.agents[1].ip].host == sim.agents[1].host
    assert result.hosts == sorted({sim.agents[0].host, sim.agents[1].host})
    assert result.check.status == "ok"


def test_instances_on_one_host_violate_placement(
    sim: vcenter.VCenterSim, client: VSphereClient
) -> None:
    same = sim.agents[0].hostname
    with pytest.raises(
        PlacementViolation,
        match=rf"2 instances run on 1 ESXi host\(s\) \({sim.agents[0].host}: 2\)",
    ):
        check_placement(client, config(sim), [same, same])


def test_min_hosts_from_config_is_enforced(sim: vcenter.VCenterSim, client: VSphereClient) -> None:
    agents = [a.hostname for a in sim.agents[:2]]
    with pytest.raises(PlacementViolation, match="at least 2 required"):
        check_placement(client, config(sim, min_hosts=2), [agents[0], agents[0], agents[0]])
    assert len(check_placement(client, config(sim, min_hosts=2), agents).hosts) == 2


def test_unknown_agent_is_a_violation_naming_it(
    sim: vcenter.VCenterSim, client: VSphereClient
) -> None:
    with pytest.raises(PlacementViolation, match=r"nowhere-agent-9\.example"):
        check_placement(client, config(sim), [sim.agents[0].hostname, "nowhere-agent-9.example"])


@pytest.fixture(scope="module")
def faulty() -> Iterator[vcenter.VCenterSim]:
    with launch(
        "--hosts", "3", "--datastore-free-pct", "3", "--red-alarm-on", "esx-02",
        "--disconnect-host", "esx-03", "--cluster-status", "yellow",
    ) as running:  # fmt: skip
        yield running


def test_faults_the_api_cannot_set_each_fail_naming_the_object(faulty: vcenter.VCenterSim) -> None:
    with VSphereClient.from_config(config(faulty), faulty.password) as client:
        report = run_preflight(client, config(faulty), "production", SMALL)
    lines = failing(report)
    assert "host esx-03: state: connection state disconnected" in lines
    assert any(line.startswith("host esx-02: triggered alarm: red alarm") for line in lines)
    assert any(line.startswith("datastore datastore1: free space: 3.0% free") for line in lines)
    assert len(lines) == 3, lines
    assert [c.line() for c in report.warnings] == [
        f"cluster {faulty.cluster}: overall status: yellow"
    ]


def test_warnings_block_only_when_configured() -> None:
    with launch("--hosts", "2", "--cluster-status", "yellow") as yellow:
        lenient, strict = config(yellow), config(yellow, warnings_block=True)
        with VSphereClient.from_config(lenient, yellow.password) as client:
            report = run_preflight(client, lenient, "production", SMALL)
    assert report.failures == []
    report.raise_for_failures(warnings_block=lenient.warnings_block)
    with pytest.raises(PreflightFailed, match=f"cluster {yellow.cluster}: overall status: yellow"):
        report.raise_for_failures(warnings_block=strict.warnings_block)


def test_the_composition_root_hands_out_one_logged_in_session_and_logs_it_out(
    sim: vcenter.VCenterSim, tmp_path: Path
) -> None:
    (tmp_path / "Dockerfile").write_text("FROM scratch\n")
    cfg = config(sim).model_dump(mode="json", exclude_none=True)
    production = {
        "driver": {"kind": "docker", "port": 18091, "candidate_port": 18092},
        "preflight": {"vsphere": cfg},
    }
    data = two_environments(tmp_path, production, integration_port=18081)
    pipeline = parse_pipeline(data, "pipeline.yaml", tmp_path)
    production = pipeline.environments[1]
    with Connections(pipeline, resolve_secret=lambda _ref: sim.password) as c:
        session = c.vsphere(production)
        assert session is not None and c.vsphere(production) is session
        report = run_preflight(session, production.preflight.vsphere, "production", SMALL)  # type: ignore[arg-type]
        assert not report.failures, report.failures
    with pytest.raises(AuthenticationFailed, match="not logged in"):
        session.content  # noqa: B018
