"""Which release is newer: the order in which releases passed the previous environment,
read from the evidence kept with each digest in the registry (never from tags).

A newer release asking for an environment supersedes older ones still waiting for it;
an older release than the one an environment runs is refused unless asked for as a
rollback, with a reason.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from prefect import get_client
from prefect.client.schemas.actions import ArtifactCreate
from prefect.client.schemas.filters import (
    FlowFilter,
    FlowFilterName,
    FlowRunFilter,
    FlowRunFilterState,
    FlowRunFilterStateType,
)
from prefect.client.schemas.objects import StateType
from prefect.runtime import flow_run
from prefect.states import Cancelled

from conveyor import evidence
from conveyor.approvals.messages import RequestFacts, decided
from conveyor.approvals.waiting import REQUEST_PREFIX
from conveyor.approvals.waiting import WaitingRequest as Request
from conveyor.clients.registry import RegistryClient
from conveyor.config import EnvironmentConfig, Pipeline
from conveyor.drivers.base import DeployedState
from conveyor.errors import OlderRelease
from conveyor.proof import results_kind as test_kind
from conveyor.release import Release, utcnow
from tasks.notify import notify
from tasks.runtime import connections, logger, pipeline_task


def _passed_at(
    registry: RegistryClient,
    pipeline: Pipeline,
    repository: str,
    digest: str,
    env: EnvironmentConfig,
) -> dt.datetime | None:
    """When ``digest`` last passed the environment before ``env`` (its scan, for the first)."""
    index = pipeline.environments.index(env)
    if index == 0:
        kinds: tuple[str, ...] = ("scan",)
        previous = None
    else:
        previous = pipeline.environments[index - 1].name
        kinds = (test_kind(pipeline, previous),)
    found = [
        e
        for e in evidence.read_evidence(registry, repository, digest, kinds)
        if e.passed and (previous is None or e.environment == previous)
    ]
    return found[-1].created if found else None


@pipeline_task("release order", retries=3)
def refuse_older(
    pipeline: Pipeline,
    env: EnvironmentConfig,
    release: Release,
    running: DeployedState,
    rollback_reason: str,
) -> None:
    if running.digest is None or running.digest == release.digest:
        return
    with connections(pipeline) as c:
        registry = c.registry()
        mine = _passed_at(registry, pipeline, release.repository, release.digest, env)
        theirs = _passed_at(registry, pipeline, release.repository, running.digest, env)
    if mine is None or theirs is None or mine >= theirs:
        return
    running_name = f"{running.version or '?'} ({running.digest})"
    if rollback_reason.strip():
        logger().warning(
            "rolling %s back from %s to the older %s (%s): %s",
            env.name,
            running_name,
            release.version,
            release.digest,
            rollback_reason,
        )
        return
    raise OlderRelease(
        f"refusing {release.version} ({release.digest}) for {env.name}: it is older than "
        f"{running_name}, which {env.name} runs (passed the previous stage at "
        f"{mine:%Y-%m-%d %H:%M:%S} vs {theirs:%Y-%m-%d %H:%M:%S} UTC); to roll back, "
        f"`conveyor promote {release.digest} --older --reason TEXT`"
    )


def _waiting(client: Any) -> list[Any]:
    flt = FlowRunFilter(
        state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.PAUSED]))
    )
    return list(
        client.read_flow_runs(
            flow_filter=FlowFilter(name=FlowFilterName(any_=["promote"])),
            flow_run_filter=flt,
            limit=200,
        )
    )


def _request_of(client: Any, run: Any) -> Request | None:
    key = run.state.state_details.pause_key if run.state else None
    if not key:
        return None
    try:
        return Request.from_json(
            json.loads(client.read_flow_run_input(run.id, REQUEST_PREFIX + key))
        )
    except Exception:
        return None


def _tell_superseded(env: EnvironmentConfig, request: Request, message: str) -> None:
    """The approvers asked about the older release learn they need not answer it."""
    if env.approval is None:
        return
    facts = RequestFacts(
        app=request.app,
        version=request.version,
        digest=request.digest,
        environment=env.name,
        run_id=request.run_id,
        ui_url=None,
        evidence=[],
    )
    notify(
        env.approval.notify,
        *decided(facts, "superseded", f"{message}; it never entered {env.name}, nothing to answer"),
    )


@pipeline_task("supersede older", retries=3)
def supersede_older(pipeline: Pipeline, env: EnvironmentConfig, release: Release) -> list[str]:
    """End every older release still waiting for ``env``: Cancelled, with the reason."""
    me = str(flow_run.get_id() or "")
    message = f"superseded by {release.version} ({release.digest})"
    ended: list[str] = []
    with get_client(sync_client=True) as client, connections(pipeline) as c:
        registry = c.registry()
        mine = _passed_at(registry, pipeline, release.repository, release.digest, env)
        for run in _waiting(client):
            request = _request_of(client, run)
            if (
                str(run.id) == me
                or request is None
                or request.repository != release.repository
                or request.environment != env.name
                or request.digest == release.digest
            ):
                continue
            theirs = _passed_at(registry, pipeline, request.repository, request.digest, env)
            if mine is None or theirs is None or theirs >= mine:
                continue
            client.set_flow_run_state(run.id, Cancelled(message=message))
            _record_superseded(client, registry, env, request, run, message, me)
            ended.append(str(run.id))
    return ended


def _record_superseded(
    client: Any,
    registry: RegistryClient,
    env: EnvironmentConfig,
    request: Request,
    run: Any,
    message: str,
    me: str,
) -> None:
    """Where a person looks for what became of the release: its approval evidence, its
    release artifact in the UI, the gate's notice and the log; ``me`` is the run that
    superseded it."""
    evidence.attach_evidence(
        registry,
        request.repository,
        request.digest,
        "approval",
        {
            "environment": env.name,
            "decision": "superseded",
            "approver": None,
            "comment": message,
            "at": utcnow().isoformat(),
            "flow_run_id": str(run.id),
            "digest": request.digest,
        },
    )
    client.create_artifact(
        ArtifactCreate(
            key=f"release-{request.app}",
            type="markdown",
            flow_run_id=run.id,
            description=f"{request.app} {request.version}: {message}",
            data=(
                f"# Release {request.app} {request.version}\n\n- digest: `{request.digest}`\n"
                f"- {env.name}: **{message}** in run {me}; it never entered {env.name}\n"
            ),
        )
    )
    _tell_superseded(env, request, message)
    logger().warning(
        "%s (%s) waited for %s in run %s: %s",
        request.version,
        request.digest,
        env.name,
        run.name,
        message,
    )
