"""The approval evidence of one gate, built from what the gate saw."""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

from pydantic import ValidationError

from conveyor.approvals.policy import Request, Tally
from conveyor.approvals.statement import (
    ApprovalPredicate,
    BreakGlass,
    Exclusion,
    Refusal,
    approval_statement,
    parse_stamp,
    stamp,
)
from conveyor.release import ApprovalRecord, Release


def approval_payload(
    release: Release,
    request: Request,
    tally: Tally,
    *,
    decision: Literal["approve", "reject", "timeout"],
    refused: list[Refusal] | None = None,
    break_glass: BreakGlass | None = None,
    decided_at: dt.datetime | None = None,
) -> dict[str, Any]:
    """An in-toto Statement: the digest as subject, every counted answer with its signature."""
    predicate = ApprovalPredicate(
        app=release.app,
        version=release.version,
        environment=request.environment,
        run_id=request.run_id,
        decision=decision,
        decided_by="conveyor" if decision == "timeout" else "approvers",
        identity="signed" if request.identity == "signed" else "typed",
        required=tally.required,
        allow_self_approval=request.allow_self_approval,
        excluded=[Exclusion(name=n, why=w) for n, w in sorted(request.excluded.items())],
        break_glass=break_glass if break_glass is not None else request.break_glass,
        started_by=request.started_by,
        answers=list(tally.answers),
        refused=refused or [],
        decided_at=stamp(decided_at or dt.datetime.now(dt.UTC)),
    )
    return approval_statement(
        registry=release.registry,
        repository=release.repository,
        digest=release.digest,
        predicate=predicate.model_dump(mode="json", exclude_none=True),
    )


def record_from_statement(payload: dict[str, Any], required: int) -> ApprovalRecord | None:
    """The approval an approval Statement records, when it approved with ``required`` people."""
    try:
        p = ApprovalPredicate.model_validate(payload.get("predicate"))
    except ValidationError:
        return None
    if p.decision != "approve" or len(p.approvers) < max(required, p.required):
        return None
    subject = (payload.get("subject") or [{}])[0].get("digest", {}).get("sha256")
    return ApprovalRecord(
        environment=p.environment,
        decision="approve",
        approver=", ".join(p.approvers),
        comment="; ".join(a.comment for a in p.answers if a.comment),
        at=parse_stamp(p.decided_at),
        flow_run_id=p.run_id,
        digest=f"sha256:{subject}" if subject else None,
        statement=payload,
    )


def rejected_by(payload: dict[str, Any] | None) -> str | None:
    """Who rejected, in the approval Statement of a rejection."""
    try:
        p = ApprovalPredicate.model_validate((payload or {}).get("predicate"))
    except ValidationError:
        return None
    return next((a.approver for a in p.answers if a.decision == "reject"), None)
