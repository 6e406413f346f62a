"""The manual gate, holding no process: Prefect's ``suspend_flow_run(wait_for_input=...)``.

While a release waits, its promote run is Suspended on the server and no flow process
or worker slot exists for it. An answer (the UI's Resume form, ``conveyor approve`` or
``POST /api/flow_runs/{id}/resume``) reschedules the run; a worker executes it again
from the start, and this gate then reads the answer stored under its pause key.

Every execution reads the same stored request (when it was asked, its deadline), so
the deadline does not restart with the process. Every answer is judged as it is read
(``conveyor.approvals.refusal``), a fresh one and one Prefect replays after a Retry
alike; a refused one is logged and the run asks again under the next key.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

from prefect import get_client
from prefect.client.schemas.objects import FlowRunInput, StateType
from prefect.runtime import deployment, flow_run

from conveyor.approvals import policy
from conveyor.approvals.record import approval_payload
from conveyor.approvals.statement import BreakGlass, StartedBy
from conveyor.approvals.waiting import (
    EXPIRED_MESSAGE,
    REQUEST_PREFIX,
    WaitingRequest,
    binding_problem,
)
from conveyor.config import EnvironmentConfig
from conveyor.errors import ApprovalRejected, ApprovalTimedOut, ConfigError
from conveyor.release import ApprovalRecord, Release, utcnow
from flows.approval_form import suspend
from tasks.runtime import logger

MAX_ASKS = 50
FINAL = {StateType.COMPLETED, StateType.FAILED, StateType.CANCELLED, StateType.CRASHED}


def pause_prefix(env: EnvironmentConfig, release: Release) -> str:
    return f"approval-{env.name}-{release.short}-"


@dataclass
class RunView:
    """What the server holds about this run's asks: fired keys, requests, answers."""

    run_id: UUID
    fired: set[str]
    round_start: dt.datetime
    requests: dict[str, WaitingRequest] = field(default_factory=dict)
    answers: dict[str, FlowRunInput] = field(default_factory=dict)

    def this_round(self, key: str) -> WaitingRequest | None:
        """The request stored under ``key`` when it was made in this round of asking."""
        request = self.requests.get(key)
        return request if request is not None and request.since >= self.round_start else None

    def round_deadline(self) -> dt.datetime | None:
        """A new ask in this round keeps the round's first deadline: a refused answer
        does not buy time."""
        current = [r for r in self.requests.values() if r.since >= self.round_start]
        return min((r.deadline for r in current), default=None)


def _round_start(states: list[Any]) -> dt.datetime:
    """When the current round of asking began: the last time the run was scheduled
    again after it had ended (a Retry), except for our own deadline bookkeeping."""
    start = dt.datetime.min.replace(tzinfo=dt.UTC)
    previous = None
    for state in sorted(states, key=lambda s: s.timestamp):
        if (
            state.type == StateType.SCHEDULED
            and previous in FINAL
            and state.message != EXPIRED_MESSAGE
        ):
            start = state.timestamp
        previous = state.type
    return start


def _read_run(client: Any, run_id: UUID, prefix: str) -> RunView:
    run = client.read_flow_run(run_id)
    view = RunView(
        run_id,
        set(run.empirical_policy.pause_keys or ()),
        _round_start(client.read_flow_run_states(run_id)),
    )
    for item in client.filter_flow_run_input(run_id, REQUEST_PREFIX + prefix, 500, set()):
        request = WaitingRequest.from_json(item.decoded_value)
        view.requests[request.pause_key] = request
    for item in client.filter_flow_run_input(run_id, f"suspended-{prefix}", 500, set()):
        if item.key.endswith("-response"):
            view.answers[item.key.removeprefix("suspended-").removesuffix("-response")] = item
    return view


def _store(client: Any, request: WaitingRequest, replace: bool) -> None:
    key = REQUEST_PREFIX + request.pause_key
    if replace:  # an ask of an earlier round that never reached the server's pause
        client.delete_flow_run_input(UUID(request.run_id), key)
    client.create_flow_run_input(UUID(request.run_id), key, json.dumps(request.to_json()))


def _timeout(
    env: EnvironmentConfig,
    release: Release,
    request: WaitingRequest,
    asked: policy.Request,
    tally: policy.Tally,
) -> ApprovalTimedOut:
    """The deadline passed: conveyor records it (with what had counted), no person signs it."""
    assert env.approval is not None
    return ApprovalTimedOut(
        f"no decision for {env.name} within {env.approval.timeout} (asked at "
        f"{request.since:%Y-%m-%d %H:%M:%S} UTC; {tally.progress()}): a timeout counts as "
        "a rejection",
        approval_payload(release, asked, tally, decision="timeout"),
    )


def _policy_request(
    env: EnvironmentConfig,
    release: Release,
    run_id: UUID,
    excluded: dict[str, str],
    glass: BreakGlass | None,
    started: StartedBy | None,
) -> policy.Request:
    assert env.approval is not None
    cfg = env.approval
    return policy.Request(
        app=release.app,
        environment=env.name,
        digest=release.digest,
        run_id=str(run_id),
        identity=cfg.identity,
        people=policy.identities(cfg),
        excluded=excluded,
        allow_self_approval=cfg.allow_self_approval,
        valid_for=cfg.answer_validity,
        break_glass=glass,
        started_by=started,
    )


def _judge(
    stored: FlowRunInput,
    key: str,
    env: EnvironmentConfig,
    release: Release,
    asked: policy.Request,
    tally: policy.Tally,
) -> bool:
    """Count the answer in ``tally`` (True), or log why it is refused."""
    assert env.approval is not None
    raw = stored.decoded_value if isinstance(stored.decoded_value, dict) else {}
    given_at = stored.created or utcnow()
    now = utcnow()
    why = binding_problem(
        raw,
        digest=release.digest,
        environment=env.name,
        given_at=given_at,
        valid_for=env.approval.answer_validity,
        now=now,
    )
    if why is None:
        verdict = policy.judge(
            asked,
            decision=str(raw.get("decision", "")),
            approver=str(raw.get("approver", "")),
            comment=str(raw.get("comment", "")),
            signature=str(raw.get("signature", "")),
            now=now,
        )
        why = verdict.refusal
        if verdict.answer is not None:
            tally.add(verdict.answer)
            logger().info(
                "%s %s %s (%s) for %s (%s): %s",
                verdict.answer.approver,
                "approved" if verdict.answer.decision == "approve" else "rejected",
                release.version,
                release.digest,
                env.name,
                tally.progress(),
                verdict.answer.comment,
            )
            return True
    logger().warning(
        "refused the %s from %r given at %s UTC (pause %s): %s; asking again",
        raw.get("decision") or "answer",
        raw.get("approver"),
        f"{given_at:%Y-%m-%d %H:%M:%S}",
        key,
        why,
    )
    return False


def _decided(
    env: EnvironmentConfig,
    release: Release,
    tally: policy.Tally,
    run_id: UUID,
    asked: policy.Request,
) -> ApprovalRecord | None:
    rejection = tally.rejection
    if rejection is not None:
        raise ApprovalRejected(
            f"{rejection.approver} rejected {release.version} ({release.short}) for "
            f"{env.name}: {rejection.comment or 'no reason given'}",
            approval_payload(release, asked, tally, decision="reject"),
        )
    if tally.outcome != "approve":
        return None
    last = tally.answers[-1]
    return ApprovalRecord(
        environment=env.name,
        decision="approve",
        approver=", ".join(tally.approvers),
        comment="; ".join(a.comment for a in tally.answers if a.comment),
        flow_run_id=str(run_id),
        digest=release.digest,
        at=dt.datetime.strptime(last.time, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.UTC),
        statement=approval_payload(release, asked, tally, decision="approve"),
    )


def _answered(
    view: RunView,
    key: str,
    env: EnvironmentConfig,
    release: Release,
    asked: policy.Request,
    tally: policy.Tally,
    counted: list[str],
) -> ApprovalRecord | None:
    """The answer given under ``key`` judged into ``tally``; the approval once it decides."""
    if _judge(view.answers[key], key, env, release, asked, tally):
        counted.append(key)
    return _decided(env, release, tally, view.run_id, asked)


def _new_request(
    view: RunView,
    env: EnvironmentConfig,
    release: Release,
    key: str,
    now: dt.datetime,
    tally: policy.Tally,
    counted: tuple[str, ...],
) -> WaitingRequest:
    assert env.approval is not None
    return WaitingRequest(
        run_id=str(view.run_id),
        app=release.app,
        version=release.version,
        digest=release.digest,
        repository=release.repository,
        environment=env.name,
        since=now,
        deadline=view.round_deadline() or now + env.approval.timeout,
        approvers=tuple(env.approval.names),
        valid_for_s=env.approval.answer_validity.total_seconds(),
        pause_key=key,
        progress=tally.progress(),
        counted=counted,
    )


def deployed_run_id() -> UUID:
    run_id, deployment_id = flow_run.get_id(), deployment.get_id()
    if run_id is None or deployment_id is None:
        raise ConfigError(
            "promote",
            [
                "an approval gate waits in a deployed run only (the run is suspended and "
                "executed again by a worker): start it through the promote deployment "
                "(`conveyor up`, or `prefect deploy --all` and a worker)"
            ],
        )
    return UUID(str(run_id))


def request_approval(
    env: EnvironmentConfig,
    release: Release,
    evidence: list[str],
    on_ask: Any = None,
    excluded: dict[str, str] | None = None,
    glass: BreakGlass | None = None,
    started: StartedBy | None = None,
) -> ApprovalRecord:
    """The approval of an allowlisted person, or ``ApprovalRejected`` (a rejection or the
    deadline). Suspends the run (its process exits) while nobody has answered.

    ``on_ask(request)`` runs before each new suspension (the caller records the wait).
    ``excluded`` names approvers who may not approve this release, with why (their own
    change, unless ``approval.allow_self_approval``). ``glass``, a break-glass promotion
    into a freeze, needs one approver more and is marked in the evidence, as is who
    ``started`` the run (``excluded`` names them already). Called from
    the flow's body, never a task: Prefect suspends flow runs only.
    """
    if env.approval is None:
        raise ValueError(f"environment {env.name} has no approval gate")
    run_id = deployed_run_id()
    prefix = pause_prefix(env, release)
    with get_client(sync_client=True) as client:
        view = _read_run(client, run_id, prefix)
    asked = _policy_request(env, release, run_id, excluded or {}, glass, started)
    tally = policy.Tally(required=policy.required_approvers(env.approval, glass))
    counted: list[str] = []
    for n in range(1, MAX_ASKS + 1):
        key = f"{prefix}{n}"
        request = view.this_round(key)
        now = utcnow()
        if key in view.fired:
            if key in view.answers:
                record = _answered(view, key, env, release, asked, tally, counted)
                if record is not None:
                    return record
            elif request is not None and now >= request.deadline:
                raise _timeout(env, release, request, asked, tally)
            continue
        if request is None:
            request = _new_request(view, env, release, key, now, tally, tuple(counted))
            with get_client(sync_client=True) as client:
                # A request of an earlier round under this key is replaced.
                _store(client, request, replace=key in view.requests)
            view.requests[key] = request
        if now >= request.deadline:
            raise _timeout(env, release, request, asked, tally)
        if on_ask is not None:
            on_ask(request)
        suspend(
            env, release, evidence, request, math.ceil((request.deadline - now).total_seconds())
        )
        # Only reached when the server says this key fired already (a race with
        # another execution): read again what it holds.
        with get_client(sync_client=True) as client:
            view = _read_run(client, run_id, prefix)
    raise ApprovalRejected(f"{MAX_ASKS} answers for {env.name} were refused; asking no more")


def auto_approve(env: EnvironmentConfig, release: Release) -> ApprovalRecord:
    """Demo only: nobody looked at this release. Said loudly in the log and the record."""
    logger().warning(
        "AUTO-APPROVED %s for %s WITHOUT A PERSON (allowed by this pipeline file only)",
        release.version,
        env.name,
    )
    return ApprovalRecord(
        environment=env.name,
        decision="approve",
        approver=None,
        comment="AUTO-APPROVED for the demo: no person reviewed this release",
        flow_run_id=str(flow_run.get_id() or ""),
        digest=release.digest,
    )
