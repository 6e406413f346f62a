"""Pre-flight: is the target cluster sound enough to take this release? Asked of
DC/OS (units, agents, resources) and of vCenter (hosts, agent VMs, datastores,
alarms), as the environment's pipeline file says; every check lands in one table."""

from __future__ import annotations

from contextlib import closing

from prefect.artifacts import create_table_artifact

from conveyor.clients.vsphere import VSphereClient
from conveyor.config import EnvironmentConfig, MarathonDriverConfig, Pipeline, VSphereConfig
from conveyor.drivers.marathon import MarathonDriver
from conveyor.drivers.marathon_app import load_template
from conveyor.errors import ConfigError
from conveyor.preflight import PreflightReport
from conveyor.preflight.vsphere import Demand, run_preflight
from conveyor.release import Release
from tasks.common import logger, resolve_secret, stage
from tasks.wiring import driver_for


def demand_of(env: EnvironmentConfig) -> Demand | None:
    """What the app's instances take, from the Marathon app template; counting them
    all (not only the over-capacity of a rolling upgrade) keeps the check on the safe side."""
    if not isinstance(env.driver, MarathonDriverConfig):
        return None
    app = load_template(env.driver.app_template)
    return Demand(
        instances=int(app.get("instances", 1)),
        cpus=float(app.get("cpus", 1)),
        mem_mb=float(app.get("mem", 128)),
    )


def dcos_report(pipeline: Pipeline, env: EnvironmentConfig, release: Release) -> PreflightReport:
    with closing(driver_for(pipeline, env)) as driver:
        if not isinstance(driver, MarathonDriver):
            raise ConfigError(
                "pipeline", [f"environments.{env.name}.preflight.dcos: needs the marathon driver"]
            )
        return driver.preflight(release)


def vsphere_report(env: EnvironmentConfig, cfg: VSphereConfig) -> PreflightReport:
    with VSphereClient.from_config(cfg, resolve_secret(cfg.password)) as client:
        return run_preflight(client, cfg, env.name, demand_of(env))


def publish(env: EnvironmentConfig, reports: list[PreflightReport]) -> None:
    rows = [
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
    if rows:
        create_table_artifact(
            key=f"preflight-{env.name}", table=rows, description=f"pre-flight of {env.name}"
        )


@stage("pre-flight", retries=3)
def preflight(
    pipeline: Pipeline, env: EnvironmentConfig, release: Release
) -> list[PreflightReport]:
    log = logger()
    reports: list[PreflightReport] = []
    if env.preflight.dcos:
        reports.append(dcos_report(pipeline, env, release))
    if env.preflight.vsphere is not None:
        reports.append(vsphere_report(env, env.preflight.vsphere))
    publish(env, reports)
    for report in reports:
        for warning in report.warnings:
            log.warning("%s pre-flight warning: %s", report.source, warning.line())
    warnings_block = env.preflight.vsphere.warnings_block if env.preflight.vsphere else False
    for report in reports:
        report.raise_for_failures(warnings_block=warnings_block and report.source == "vsphere")
    log.info("%s pre-flight: %d checks passed", env.name, sum(len(r.checks) for r in reports))
    return reports
