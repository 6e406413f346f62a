"""After a production deploy: do the instances spread over enough ESXi hosts that one
host failure cannot take the app down?"""

from __future__ import annotations

import time

from conveyor.clients.vsphere import VSphereClient
from conveyor.config import EnvironmentConfig, Pipeline
from conveyor.drivers.base import DeployedState
from conveyor.errors import PlacementViolation
from conveyor.preflight.vsphere import check_placement
from conveyor.probe import CheckResult
from tasks.common import resolve_secret


def placement_result(
    pipeline: Pipeline, env: EnvironmentConfig, state: DeployedState
) -> CheckResult | None:
    cfg = env.preflight.vsphere
    if cfg is None or not state.instances:
        return None
    agents = [i.agent or i.host for i in state.instances]
    started = time.monotonic()
    try:
        with VSphereClient.from_config(cfg, resolve_secret(cfg.password)) as client:
            result = check_placement(client, cfg, agents, cfg.min_hosts)
    except PlacementViolation as exc:
        return CheckResult("placement over ESXi hosts", False, str(exc), time.monotonic() - started)
    spread = ", ".join(f"{p.agent} on {p.host}" for p in result.placements)
    return CheckResult(
        "placement over ESXi hosts",
        True,
        f"{len(result.hosts)} hosts: {spread}",
        time.monotonic() - started,
    )
