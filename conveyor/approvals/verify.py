"""Checking approval evidence offline: every signature, every binding, the count.

Trust comes from the pipeline file (the approvers' keys under review in git), never
from the evidence: a statement carries its signer's fingerprint only to be compared.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from conveyor.approvals import signing
from conveyor.approvals.policy import Identity, find, identities
from conveyor.approvals.statement import Answer, ApprovalPredicate, is_statement
from conveyor.config.approval import ApprovalConfig
from conveyor.errors import ApprovalEvidenceInvalid
from conveyor.evidence import Evidence


@dataclass
class ItemCheck:
    evidence: Evidence
    environment: str | None
    decision: str
    lines: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    signed: bool = False

    @property
    def ok(self) -> bool:
        return not self.problems


def _subject_problem(payload: dict[str, Any], digest: str) -> str | None:
    subjects = payload.get("subject") or []
    hexes = [
        str((s.get("digest") or {}).get("sha256", "")) for s in subjects if isinstance(s, dict)
    ]
    if hexes != [digest[7:]]:
        return f"the statement's subject is {', '.join(hexes) or 'missing'}, not {digest}"
    return None


def _binding(answer: Answer, p: ApprovalPredicate, digest: str) -> str | None:
    s = answer.statement
    if s is None or not answer.signature:
        return f"{answer.approver}'s answer has no signed statement"
    expected = {
        "digest": digest,
        "app": p.app,
        "environment": p.environment,
        "run_id": p.run_id,
        "approver": answer.approver,
        "decision": answer.decision,
        "comment": answer.comment,
        "time": answer.time,
    }
    for name, want in expected.items():
        got = getattr(s, name)
        if got != want:
            return f"{answer.approver}'s signed statement says {name} {got!r}, the record says {want!r}"
    return None


def _verify_as(person: Identity, message: bytes, signature: str, at: dt.datetime) -> signing.Check:
    """Did ``person``, by a key of theirs in the pipeline file, sign ``message`` at ``at``?"""
    return signing.verify(
        message, signature, identity=person.signers[0].principals[0], signers=person.signers, at=at
    )


def _check_answer(
    answer: Answer, p: ApprovalPredicate, digest: str, people: list[Identity]
) -> str | None:
    problem = _binding(answer, p, digest)
    if problem:
        return problem
    assert answer.statement is not None and answer.signature is not None
    person = find(people, answer.approver)
    if person is None or not person.signers:
        return f"{answer.approver} is not an approver with a key in the pipeline file"
    check = _verify_as(person, answer.statement.message(), answer.signature, answer.statement.at)
    if not check.ok:
        return f"{answer.approver}'s signature does not verify: {check.detail}"
    if answer.key and check.fingerprint and answer.key != check.fingerprint:
        return f"{answer.approver}'s answer names key {answer.key} but was signed with {check.fingerprint}"
    return None


def _starter_problem(p: ApprovalPredicate, people: list[Identity]) -> str | None:
    """A start recorded as verified must verify again, with a key on the list."""
    started = p.started_by
    if started is None or not started.verified:
        return None
    person = find(people, started.name)
    if started.claim is None or not started.signature or person is None or not person.signers:
        return f"the start by {started.name} is recorded as verified but cannot be checked"
    if started.claim.started_by != started.name or started.claim.app != p.app:
        return f"the signed start is for {started.claim.started_by} starting {started.claim.app}"
    check = _verify_as(person, started.claim.message(), started.signature, started.claim.at)
    return None if check.ok else f"the start by {started.name} does not verify: {check.detail}"


def _count_problems(
    p: ApprovalPredicate, config: ApprovalConfig | None, good: set[str]
) -> list[str]:
    problems = []
    if p.decision == "approve" and len(good) < p.required:
        problems.append(
            f"approved by {len(good)} verified approver(s) ({', '.join(sorted(good)) or 'none'}), "
            f"{p.required} required"
        )
    if config is not None:
        needed = config.required + (p.break_glass.extra_approvers if p.break_glass else 0)
        if p.decision == "approve" and p.required < needed:
            problems.append(
                f"recorded as needing {p.required} approver(s); the pipeline requires {needed}"
            )
    if not p.allow_self_approval:
        for ex in p.excluded:
            if ex.name in good:
                problems.append(f"{ex.name} approved although they may not: {ex.why}")
    return problems


def check_statement(
    item: Evidence, digest: str, config: ApprovalConfig | None, people: list[Identity]
) -> ItemCheck:
    """One approval record: its predicate, each answer's signature and binding, the count."""
    subject_problem = _subject_problem(item.payload, digest)
    try:
        p = ApprovalPredicate.model_validate(item.payload.get("predicate"))
    except ValidationError as exc:
        return ItemCheck(
            item, None, "?", problems=[f"not a valid approval predicate: {exc.errors()[0]['msg']}"]
        )
    check = ItemCheck(item, p.environment, p.decision, signed=p.identity == "signed")
    if subject_problem:
        check.problems.append(subject_problem)
    good: set[str] = set()
    for answer in p.answers:
        problem = None
        if answer.signature or p.identity == "signed":
            problem = _check_answer(answer, p, digest, people)
        state = (
            "INVALID"
            if problem
            else ("verified" if answer.signature else "not verified (typed identity)")
        )
        verb = "approved" if answer.decision == "approve" else "rejected"
        check.lines.append(f"{answer.approver} {verb} at {answer.time}: {state}")
        if problem:
            check.problems.append(problem)
        elif answer.decision == "approve" and (answer.signature or p.identity == "typed"):
            good.add(answer.approver)
    check.problems.extend(_count_problems(p, config, good))
    if p.started_by is not None:
        check.lines.append(p.started_by.describe())
        problem = _starter_problem(p, people)
        if problem:
            check.problems.append(problem)
    if p.decided_by == "conveyor":
        check.lines.append(
            f"timed out at {p.decided_at}: recorded by conveyor as the deadline passed, "
            "signed by no person"
        )
    if p.break_glass:
        check.lines.append(p.break_glass.describe())
    if p.allow_self_approval:
        check.lines.append("self-approval was allowed (approval.allow_self_approval: true)")
    if config is not None and config.identity == "signed" and p.identity != "signed":
        check.problems.append(
            f"recorded with identity {p.identity}; {p.environment} requires signed answers"
        )
    return check


def check_legacy(item: Evidence, config: ApprovalConfig | None) -> ItemCheck:
    """An approval recorded before statements existed: a name nobody signed."""
    p = item.payload
    check = ItemCheck(item, item.environment, str(p.get("decision", "?")))
    check.lines.append(
        f"{p.get('approver') or '(nobody)'} {p.get('decision')} at {p.get('at')}: not verified (unsigned record)"
    )
    if config is not None and config.identity == "signed":
        check.problems.append(f"an unsigned record; {item.environment} requires signed answers")
    return check


def check_approvals(
    items: list[Evidence], digest: str, configs: Mapping[str, ApprovalConfig]
) -> list[ItemCheck]:
    """Every approval record of a digest, each judged by its environment's approvers."""
    people_of = {env: identities(cfg) for env, cfg in configs.items()}
    checks = []
    for item in items:
        if item.kind != "approval":
            continue
        env = item.environment
        config = configs.get(env) if env else None
        if is_statement(item.payload):
            checks.append(check_statement(item, digest, config, people_of.get(env or "", [])))
        else:
            checks.append(check_legacy(item, config))
    return checks


def require_verified_approval(
    items: list[Evidence], digest: str, environment: str, config: ApprovalConfig
) -> ItemCheck:
    """The latest approval of ``digest`` for ``environment`` must be an approval that verifies."""
    mine = [
        c
        for c in check_approvals(items, digest, {environment: config})
        if c.environment == environment
    ]
    if not mine:
        raise ApprovalEvidenceInvalid(f"{digest}: no approval evidence for {environment}", [])
    latest = mine[-1]
    problems = list(latest.problems)
    if latest.decision != "approve":
        problems.append(f"the latest decision is {latest.decision}")
    if problems:
        raise ApprovalEvidenceInvalid(
            f"the approval evidence of {digest} for {environment} does not verify", problems
        )
    return latest
