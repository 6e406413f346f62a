"""Which answers count: signature, binding to this release and run, freshness, no self-approval.

``judge`` looks at one answer and says why it is refused, or what it counts as; a
``Tally`` collects the answers that count until ``required`` distinct people agree or
one of them rejects. Nothing here talks to Prefect: the gate hands answers in.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field
from pathlib import Path

from conveyor.approvals import signing
from conveyor.approvals.statement import (
    Answer,
    BreakGlass,
    Decision,
    SignedAnswer,
    StartedBy,
    stamp,
)
from conveyor.config.approval import ApprovalConfig
from conveyor.errors import ConfigError

# A signed decision may be dated this much after the run's clock: machines disagree a little.
CLOCK_SKEW = dt.timedelta(minutes=5)


@dataclass(frozen=True)
class Identity:
    """An approver: the name answers use, emails and keys to match commits and signatures."""

    name: str
    aliases: frozenset[str]
    emails: frozenset[str]
    signers: tuple[signing.Signer, ...]

    @property
    def fingerprints(self) -> frozenset[str]:
        return frozenset(signing.fingerprint(s.key) for s in self.signers)


def _split_line(line: str) -> list[str]:
    """Whitespace-separated fields, double quotes protecting spaces (allowed-signers syntax)."""
    fields, current, quoted = [], "", False
    for ch in line:
        if ch == '"':
            quoted = not quoted
        if ch.isspace() and not quoted:
            if current:
                fields.append(current)
            current = ""
        else:
            current += ch
    return [*fields, current] if current else fields


def parse_allowed_signers(text: str, source: str) -> list[signing.Signer]:
    """git's allowed-signers lines: ``principals [options] keytype base64 [comment]``."""
    signers, problems = [], []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        fields = _split_line(line)
        has_options = len(fields) > 2 and not fields[1].startswith(("ssh-", "ecdsa-", "sk-"))
        key_at = 2 if has_options else 1
        if len(fields) < key_at + 2:
            problems.append(f"line {number}: expected 'principals [options] keytype key'")
            continue
        principals = tuple(p for p in fields[0].split(",") if p)
        signers.append(
            signing.Signer(
                principals=principals,
                key=f"{fields[key_at]} {fields[key_at + 1]}",
                options=fields[1] if has_options else "",
            )
        )
    if problems:
        raise ConfigError(source, problems)
    return signers


def _principal(name: str) -> str:
    # Names may hold spaces ("Alice Smith"); an allowed-signers principal may not.
    return re.sub(r'[\s,"*?!]', "_", name)


def identities(config: ApprovalConfig) -> list[Identity]:
    """Everyone who may answer: the inline approvers, then the allowed-signers file's."""
    found = [
        Identity(
            name=a.name,
            aliases=frozenset({a.name} | ({a.email} if a.email else set())),
            emails=frozenset({a.email.lower()} if a.email else set()),
            signers=(signing.Signer((_principal(a.name),), signing.public_key(a.key)),)
            if a.key
            else (),
        )
        for a in config.approvers
    ]
    if config.allowed_signers is not None:
        found.extend(_file_identities(config.allowed_signers, {i.name for i in found}))
    return found


def _file_identities(path: Path, taken: set[str]) -> list[Identity]:
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(str(path), [f"approval.allowed_signers: cannot read: {exc}"]) from None
    merged: dict[str, list[signing.Signer]] = {}
    for signer in parse_allowed_signers(text, str(path)):
        # One principal on several lines is one person with several keys (a rotation).
        merged.setdefault(signer.principals[0], []).append(signer)
    return [
        Identity(
            name=name,
            aliases=frozenset(p for s in signers for p in s.principals),
            emails=frozenset(p.lower() for s in signers for p in s.principals if "@" in p),
            signers=tuple(signers),
        )
        for name, signers in merged.items()
        if name not in taken
    ]


def find(people: list[Identity], name: str) -> Identity | None:
    return next((i for i in people if name == i.name or name in i.aliases), None)


@dataclass(frozen=True)
class Request:
    """What this gate is asking about; every answer must be bound to exactly this."""

    app: str
    environment: str
    digest: str
    run_id: str
    identity: str  # "typed" or "signed"
    people: list[Identity]
    excluded: dict[str, str] = field(default_factory=dict)  # name -> why they may not
    allow_self_approval: bool = False
    valid_for: dt.timedelta | None = None
    break_glass: BreakGlass | None = None
    started_by: StartedBy | None = None


def required_approvers(config: ApprovalConfig, glass: BreakGlass | None) -> int:
    """``approval.required``, and one more for a break-glass promotion into a freeze."""
    return config.required + (glass.extra_approvers if glass is not None else 0)


@dataclass(frozen=True)
class Verdict:
    answer: Answer | None
    refusal: str | None

    @property
    def counts(self) -> bool:
        return self.answer is not None


def refuse(reason: str) -> Verdict:
    return Verdict(None, reason)


def how_to_sign(request: Request) -> str:
    return (
        f"{request.environment} accepts only signed answers: run `conveyor approve "
        f"{request.run_id} --as NAME --key ~/.ssh/id_ed25519` (or without --key to sign with "
        "ssh-agent), or paste the line `conveyor approve … --print` prints into the signature field"
    )


def _binding_problem(request: Request, decision: Decision, approver: str) -> str | None:
    for what, got, want in (
        ("app", decision.app, request.app),
        ("environment", decision.environment, request.environment),
        ("digest", decision.digest, request.digest),
    ):
        if got != want:
            return f"the signed statement is for {what} {got}, not {want}"
    if decision.run_id != request.run_id:
        return f"the signed statement was made for run {decision.run_id}, not this run {request.run_id} (a replay)"
    if approver and approver != decision.approver:
        return f"the answer says {approver!r} but the statement was signed as {decision.approver!r}"
    return None


def _age_problem(request: Request, decision: Decision, now: dt.datetime) -> str | None:
    if decision.at > now + CLOCK_SKEW:
        return f"the statement is dated {decision.time}, in the future"
    if request.valid_for is not None and now - decision.at > request.valid_for:
        return f"the statement was signed at {decision.time}, longer ago than the {request.valid_for} an answer is valid"
    return None


def judge_signed(request: Request, token: str, approver: str, now: dt.datetime) -> Verdict:
    try:
        signed = SignedAnswer.from_token(token)
    except ValueError as exc:
        return refuse(str(exc))
    decision = signed.decision
    problem = _binding_problem(request, decision, approver) or _age_problem(request, decision, now)
    if problem:
        return refuse(problem)
    person = find(request.people, decision.approver)
    if person is None:
        return refuse(
            f"{decision.approver!r} is not on the approvers list of {request.environment}"
        )
    if not person.signers:
        return refuse(f"{person.name} has no key on the approvers list to check a signature with")
    check = signing.verify(
        decision.message(),
        signed.signature,
        identity=person.signers[0].principals[0],
        signers=person.signers,
        at=decision.at,
    )
    if not check.ok:
        return refuse(f"{person.name}'s signature does not verify: {check.detail}")
    return _counted(
        request,
        person,
        Answer(
            approver=person.name,
            decision=decision.decision,
            comment=decision.comment,
            time=decision.time,
            verified=True,
            key=check.fingerprint,
            statement=decision,
            signature=signing.normalize(signed.signature),
        ),
    )


def _counted(request: Request, person: Identity, answer: Answer) -> Verdict:
    why = request.excluded.get(person.name)
    if why and not request.allow_self_approval and answer.decision == "approve":
        return refuse(f"{person.name} may not approve this release: {why}")
    return Verdict(answer, None)


def judge(
    request: Request,
    *,
    decision: str,
    approver: str,
    comment: str = "",
    signature: str = "",
    now: dt.datetime | None = None,
) -> Verdict:
    """Refuse with a reason, or say what the answer counts as."""
    now = now or dt.datetime.now(dt.UTC)
    if signature.strip():
        return judge_signed(request, signature, approver, now)
    if request.identity == "signed":
        return refuse(f"unsigned answer from {approver!r}: {how_to_sign(request)}")
    person = find(request.people, approver)
    if person is None:
        return refuse(f"{approver!r} is not on the approvers list of {request.environment}")
    if decision not in ("approve", "reject"):
        return refuse(f"decision must be approve or reject, not {decision!r}")
    return _counted(
        request,
        person,
        Answer(
            approver=person.name,
            decision="approve" if decision == "approve" else "reject",
            comment=comment,
            time=stamp(now),
            verified=False,
        ),
    )


@dataclass
class Tally:
    """Distinct approvers so far; one counted rejection decides at once."""

    required: int
    answers: list[Answer] = field(default_factory=list)

    def add(self, answer: Answer) -> None:
        # A second answer of one person replaces the first: they count once, as they last said.
        self.answers = [a for a in self.answers if a.approver != answer.approver] + [answer]

    @property
    def approvers(self) -> list[str]:
        return [a.approver for a in self.answers if a.decision == "approve"]

    @property
    def rejection(self) -> Answer | None:
        return next((a for a in self.answers if a.decision == "reject"), None)

    @property
    def outcome(self) -> str:
        if self.rejection is not None:
            return "reject"
        return "approve" if len(self.approvers) >= self.required else "waiting"

    def progress(self) -> str:
        have = self.approvers
        done = f"{len(have)} of {self.required}"
        if not have:
            return f"{done}: waiting for {self.required} approver{'s' if self.required > 1 else ''}"
        missing = self.required - len(have)
        said = ", ".join(have) + " approved"
        if missing <= 0:
            return f"{done}: {said}"
        more = "one more" if missing == 1 else f"{missing} more"
        return f"{done}: {said}; waiting for {more}"
