"""Where promote runs execute, and how a release is handed over to one.

An environment names the work pool (and queue) of a worker that reaches its cluster;
``ship`` and ``promote`` start the ``promote`` deployment on that pool for the next
gated environment and end, so no process waits for a person.
"""

from __future__ import annotations

from typing import Any

from prefect import get_client
from prefect.client.schemas.objects import FlowRun
from prefect.deployments import run_deployment
from prefect.exceptions import ObjectNotFound
from prefect.runtime import flow_run

from conveyor.config import EnvironmentConfig, Pipeline
from conveyor.errors import ConfigError
from conveyor.release import Handover, Release
from tasks.runtime import logger, pipeline_task

PROMOTE_FLOW = "promote"
STARTER_PARAMS = ("started_by", "start_token")


def deployment_name(env: EnvironmentConfig) -> str:
    return f"{PROMOTE_FLOW}/{env.runs_on.deployment}"


def _placement_problem(client: Any, index: int, env: EnvironmentConfig) -> str | None:
    where = f"environments[{index}].runs_on"
    pool = env.runs_on.work_pool
    try:
        client.read_work_pool(pool)
    except ObjectNotFound:
        known = ", ".join(sorted(p.name for p in client.read_work_pools())) or "none"
        return f"{where}.work_pool: work pool {pool!r} does not exist on the Prefect server (pools: {known})"
    queue = env.runs_on.work_queue
    if queue is not None:
        try:
            client.read_work_queue_by_name(queue, work_pool_name=pool)
        except ObjectNotFound:
            return f"{where}.work_queue: work pool {pool!r} has no queue {queue!r}"
    try:
        deployment = client.read_deployment_by_name(deployment_name(env))
    except ObjectNotFound:
        return (
            f"{where}.deployment: deployment {deployment_name(env)!r} does not exist "
            "(prefect.yaml declares it: `prefect deploy --all`, or `conveyor up`)"
        )
    if deployment.work_pool_name != pool:
        return (
            f"{where}.work_pool: deployment {deployment_name(env)!r} runs on pool "
            f"{deployment.work_pool_name!r}, not {pool!r}"
        )
    return None


@pipeline_task("check work pools", retries=2)
def check_placement(pipeline: Pipeline, source: str, first: int = 0) -> None:
    """Every gated environment from ``first`` on has its pool, queue and deployment."""
    with get_client(sync_client=True) as client:
        problems = [
            problem
            for i, env in enumerate(pipeline.environments)
            if i >= first and env.approval is not None
            if (problem := _placement_problem(client, i, env)) is not None
        ]
    if problems:
        raise ConfigError(source, problems)


@pipeline_task("hand over", retries=3)
def hand_over(
    pipeline_path: str,
    env: EnvironmentConfig,
    release: Release,
    auto_approve: bool,
) -> Handover:
    """Start the promote run that takes ``release`` into ``env``; do not wait for it.

    The idempotency key names this run and the digest, so a rerun of this run hands
    over to the same promote run instead of starting a second one.
    """
    parent = str(flow_run.get_id() or "")
    # Who started the release goes with it to every gate (they may not approve it).
    starter = {k: v for k, v in (flow_run.parameters or {}).items() if k in STARTER_PARAMS and v}
    # as_subflow=False: Prefect refuses to suspend a subflow, and the promote run
    # must outlive this one.
    started: FlowRun = run_deployment(  # type: ignore[assignment]
        name=deployment_name(env),
        parameters={
            "digest": release.digest,
            "pipeline": pipeline_path,
            "environment": env.name,
            "auto_approve": auto_approve,
            **starter,
        },
        timeout=0,
        as_subflow=False,
        work_queue_name=env.runs_on.work_queue,
        idempotency_key=f"handover-{parent}-{env.name}-{release.digest}",
        tags=[f"app:{release.app}", f"env:{env.name}"],
    )
    logger().info(
        "%s %s handed over to promote run %s (%s) on work pool %s; it waits there for %s",
        release.version,
        release.short,
        started.name,
        started.id,
        env.runs_on.work_pool,
        "its approval" if not auto_approve else "nobody (auto-approve)",
    )
    return Handover(
        environment=env.name,
        flow_run_id=str(started.id),
        flow_run_name=str(started.name),
        deployment=deployment_name(env),
        work_pool=env.runs_on.work_pool,
    )
