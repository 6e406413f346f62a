"""What an approver signs, and the in-toto Statement the decision is kept as.

An approver signs one *decision*: a small JSON object naming the app, environment,
digest, decision, comment, time and the run that asked, serialized canonically
(sorted keys, no spaces, UTF-8) so the signed bytes can be rebuilt from the stored
object by anyone. The evidence attached to the digest is an in-toto Statement v1 whose
subject is the image digest and whose predicate holds every answer with its signature,
so supply-chain tools that read in-toto can read ours.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
import re
from pathlib import Path
from typing import Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from conveyor.approvals import signing

STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PREDICATE_TYPE = "https://conveyor.dev/attestation/approval/v1"
DECISION_TYPE: Final = "https://conveyor.dev/approval-decision/v1"
TOKEN_PREFIX = "conveyor-approval-v1"
_TIME_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")


STAMP_FORMAT = "%Y-%m-%dT%H:%M:%SZ"


def stamp(when: dt.datetime) -> str:
    """Second-precision UTC, the one spelling of a time inside a signed decision."""
    return when.astimezone(dt.UTC).strftime(STAMP_FORMAT)


def parse_stamp(text: str) -> dt.datetime:
    """The time a ``stamp`` spells, in UTC."""
    return dt.datetime.strptime(text, STAMP_FORMAT).replace(tzinfo=dt.UTC)


def canonical(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


class SignedClaim(BaseModel):
    """What a person signs: the canonical bytes of its fields, stamped with a time.

    The decision an approver signs and the start a starter signs are read, checked and
    rebuilt the same way; the signed bytes are ``canonical(claim.model_dump())``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    time: str

    @property
    def at(self) -> dt.datetime:
        return parse_stamp(self.time)

    def message(self) -> bytes:
        return canonical(self.model_dump())


class Decision(SignedClaim):
    """Strings only, on purpose: the signed bytes are rebuilt from the stored object."""

    type: Literal["https://conveyor.dev/approval-decision/v1"] = DECISION_TYPE
    app: str
    environment: str
    digest: str = Field(pattern=r"^sha256:[0-9a-f]{64}$")
    decision: Literal["approve", "reject"]
    approver: str
    comment: str = ""
    time: str
    run_id: str

    @field_validator("time")
    @classmethod
    def _utc_seconds(cls, v: str) -> str:
        if not _TIME_RE.match(v):
            raise ValueError("time must be UTC to the second, like 2026-12-01T21:30:00Z")
        return v


class SignedAnswer(BaseModel):
    model_config = ConfigDict(frozen=True)

    decision: Decision
    signature: str

    def token(self) -> str:
        """One line to paste into the Resume form's signature field."""
        parts = (self.decision.message(), signing.normalize(self.signature).encode())
        return ".".join([TOKEN_PREFIX, *(base64.urlsafe_b64encode(p).decode() for p in parts)])

    @classmethod
    def from_token(cls, token: str) -> SignedAnswer:
        """Parse a pasted token; ``ValueError`` says what is wrong with it."""
        parts = "".join(token.split()).split(".")
        if len(parts) != 3 or parts[0] != TOKEN_PREFIX:
            raise ValueError(
                f"not a signed answer (expected {TOKEN_PREFIX}.… as printed by `conveyor approve --print`)"
            )
        try:
            message, signature = (base64.urlsafe_b64decode(p) for p in parts[1:])
            decision = Decision.model_validate_json(message)
            return cls(decision=decision, signature=signing.normalize(signature.decode()))
        except (binascii.Error, UnicodeDecodeError, ValidationError, ValueError) as exc:
            raise ValueError(
                f"the signed answer is damaged (copied incompletely?): {exc}"
            ) from None


def sign_decision(decision: Decision, key: Path) -> SignedAnswer:
    return SignedAnswer(decision=decision, signature=signing.sign(decision.message(), key))


def subject_name(registry: str, repository: str) -> str:
    return f"{registry}/{repository}"


def approval_statement(
    *, registry: str, repository: str, digest: str, predicate: dict[str, Any]
) -> dict[str, Any]:
    return {
        "_type": STATEMENT_TYPE,
        "subject": [{"name": subject_name(registry, repository), "digest": {"sha256": digest[7:]}}],
        "predicateType": PREDICATE_TYPE,
        "predicate": predicate,
    }


def is_statement(payload: dict[str, Any]) -> bool:
    return payload.get("_type") == STATEMENT_TYPE and payload.get("predicateType") == PREDICATE_TYPE


class Answer(BaseModel):
    """One answer that counted, as kept in the evidence."""

    approver: str
    decision: Literal["approve", "reject"]
    comment: str = ""
    time: str
    verified: bool
    key: str | None = None  # the signing key's SHA256 fingerprint
    statement: Decision | None = None
    signature: str | None = None


class Refusal(BaseModel):
    approver: str
    reason: str
    time: str


class Exclusion(BaseModel):
    """Someone on the list who may not approve this release, and why."""

    name: str
    why: str


class BreakGlass(BaseModel):
    """A promotion asked for with --break-glass: why, and the freeze window it overrides.

    ``window`` None: no window was active when the gate decided (the freeze had ended, or
    there was none); the promotion is marked but needs no extra approver.
    """

    reason: str
    window: str | None = None

    @property
    def extra_approvers(self) -> int:
        return 1 if self.window else 0

    def describe(self) -> str:
        where = f"during {self.window}" if self.window else "outside any freeze window"
        return f"BREAK-GLASS {where}: {self.reason}"


START_TYPE: Final = "https://conveyor.dev/run-start/v1"


class StartClaim(SignedClaim):
    type: Literal["https://conveyor.dev/run-start/v1"] = START_TYPE
    app: str
    started_by: str
    time: str


class StartedBy(BaseModel):
    """The starter as the evidence keeps it; ``claim`` and ``signature`` when signed."""

    name: str
    verified: bool
    key: str | None = None
    claim: StartClaim | None = None
    signature: str | None = None

    def describe(self) -> str:
        how = f"signature verified, key {self.key}" if self.verified else "not verified"
        return f"started by {self.name} ({how})"


class ApprovalPredicate(BaseModel):
    app: str
    version: str
    environment: str
    run_id: str
    decision: Literal["approve", "reject", "timeout"]
    # approvers: the decision is their answers (signed where identity is signed);
    # conveyor: the deadline passed and the gate recorded it, no person signed anything.
    decided_by: Literal["approvers", "conveyor"] = "approvers"
    identity: Literal["typed", "signed"]
    required: int
    allow_self_approval: bool = False
    excluded: list[Exclusion] = Field(default_factory=list)
    break_glass: BreakGlass | None = None
    started_by: StartedBy | None = None
    answers: list[Answer] = Field(default_factory=list)
    refused: list[Refusal] = Field(default_factory=list)
    decided_at: str

    @property
    def approvers(self) -> list[str]:
        return sorted({a.approver for a in self.answers if a.decision == "approve"})
