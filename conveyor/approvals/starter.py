"""Who started a run (``conveyor ship --as NAME``), signed where a gate takes signed answers.

The person who starts a release may not approve it, like its authors. Their claim is
a small canonical statement (app, name, time) signed as approvals are, with OpenSSH's
``-Y sign`` in the same namespace; its ``type`` keeps it from being read as a decision.
Excluding a named starter only ever refuses more, so an unverifiable name still
excludes; the signature is what lets the record say who it was.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
from pathlib import Path

from pydantic import ValidationError

from conveyor.approvals import signing
from conveyor.approvals.policy import CLOCK_SKEW, find, identities
from conveyor.approvals.statement import StartClaim, StartedBy, stamp
from conveyor.config import EnvironmentConfig, Pipeline

TOKEN_PREFIX = "conveyor-start-v1"
# A signed start is used by the run it was made for: a replay later is refused.
START_VALID = dt.timedelta(minutes=15)


def start_token(app: str, name: str, key: Path, now: dt.datetime | None = None) -> str:
    """The signed start ``conveyor ship --as NAME --key PATH`` hands the ship run."""
    claim = StartClaim(app=app, started_by=name, time=stamp(now or dt.datetime.now(dt.UTC)))
    signature = signing.sign(claim.message(), key)
    parts = (claim.message(), signing.normalize(signature).encode())
    return ".".join([TOKEN_PREFIX, *(base64.urlsafe_b64encode(p).decode() for p in parts)])


def _parse(token: str) -> tuple[StartClaim, str]:
    parts = "".join(token.split()).split(".")
    if len(parts) != 3 or parts[0] != TOKEN_PREFIX:
        raise ValueError(f"not a signed start (expected {TOKEN_PREFIX}.…)")
    try:
        message, signature = (base64.urlsafe_b64decode(p) for p in parts[1:])
        return StartClaim.model_validate_json(message), signing.normalize(signature.decode())
    except (binascii.Error, UnicodeDecodeError, ValidationError, ValueError) as exc:
        raise ValueError(f"the signed start is damaged: {exc}") from None


def judge_start(env: EnvironmentConfig, app: str, name: str, token: str) -> StartedBy | str:
    """The starter as ``env``'s approvers list can check it, or why the claim is refused."""
    if not token.strip():
        return StartedBy(name=name, verified=False)
    try:
        claim, signature = _parse(token)
    except ValueError as exc:
        return str(exc)
    if claim.started_by != name or claim.app != app:
        return f"the signed start is for {claim.started_by} starting {claim.app}, not {name} starting {app}"
    assert env.approval is not None
    person = find(identities(env.approval), name)
    if person is None or not person.signers:
        # Not an approver here: they cannot approve it anyway, and no key is on file.
        return StartedBy(name=name, verified=False, claim=claim, signature=signature)
    check = signing.verify(
        claim.message(),
        signature,
        identity=person.signers[0].principals[0],
        signers=person.signers,
        at=claim.at,
    )
    if not check.ok:
        return f"{name}'s signed start does not verify: {check.detail}"
    return StartedBy(
        name=person.name, verified=True, key=check.fingerprint, claim=claim, signature=signature
    )


def start_problems(
    pipeline: Pipeline, name: str, token: str, now: dt.datetime | None = None
) -> list[str]:
    """Why ``ship --as NAME`` is refused before any work: a gate that takes only signed
    answers takes only a signed, fresh start that verifies against its list."""
    if not name.strip():
        return ["started_by: a signed start names nobody (--as NAME)"] if token.strip() else []
    now = now or dt.datetime.now(dt.UTC)
    problems = []
    for env in pipeline.environments:
        if env.approval is None or env.approval.identity != "signed":
            continue
        if not token.strip():
            problems.append(
                f"started_by: {env.name} takes only signed identities: sign the start with "
                f"`conveyor ship --as {name} --key ~/.ssh/id_ed25519` (or --sign for ssh-agent)"
            )
            continue
        judged = judge_start(env, pipeline.release_name, name, token)
        if isinstance(judged, str):
            problems.append(f"started_by: {judged}")
        elif judged.claim is not None and not (
            now - START_VALID <= judged.claim.at <= now + CLOCK_SKEW
        ):
            problems.append(
                f"started_by: the start was signed at {judged.claim.time}, not within "
                f"{START_VALID} of this run (a replay?)"
            )
    return problems
