"""One environment's pre-flight: the platform's own checks through its driver, and the
vCenter ground under it, as the environment's pipeline file asks."""

from __future__ import annotations

from conveyor.config import EnvironmentConfig
from conveyor.connections import Connections
from conveyor.errors import ConfigError
from conveyor.preflight import PreflightReport
from conveyor.preflight.vsphere import run_preflight
from conveyor.release import Release


def environment_preflight(
    connections: Connections, env: EnvironmentConfig, release: Release | None
) -> list[PreflightReport]:
    """Every report the environment's pre-flight asks for; ``release`` is what the
    platform's checks measure room for (needed only where ``preflight.dcos`` is set)."""
    reports: list[PreflightReport] = []
    driver = connections.driver(env)
    if env.preflight.dcos:
        if release is None:
            raise ValueError(f"the DC/OS pre-flight of {env.name} needs the release to deploy")
        report = driver.preflight(release)
        if report is None:
            raise ConfigError(
                "pipeline", [f"environments.{env.name}.preflight.dcos: needs the marathon driver"]
            )
        reports.append(report)
    vsphere = connections.vsphere(env)
    if vsphere is not None and env.preflight.vsphere is not None:
        reports.append(run_preflight(vsphere, env.preflight.vsphere, env.name, driver.demand()))
    return reports


def raise_for_failures(env: EnvironmentConfig, reports: list[PreflightReport]) -> None:
    """Failures block; vCenter's warnings block too where ``warnings_block`` says so."""
    warnings_block = env.preflight.vsphere.warnings_block if env.preflight.vsphere else False
    for report in reports:
        report.raise_for_failures(warnings_block=warnings_block and report.source == "vsphere")


def report_rows(reports: list[PreflightReport]) -> list[dict[str, str]]:
    """One row per check, for the pre-flight table a person reads."""
    return [
        {
            "source": r.source,
            "object": c.subject,
            "check": c.name,
            "status": c.status,
            "detail": c.detail,
        }
        for r in reports
        for c in r.checks
    ]
