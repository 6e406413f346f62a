"""Which answers count, checked with real OpenSSH signatures (ssh-keygen -Y sign/verify)."""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from conveyor.approvals import signing
from conveyor.approvals.changes import (
    changes_since,
    recorded_history,
    self_approvers,
    source_payload,
)
from conveyor.approvals.policy import Request, Tally, identities, judge
from conveyor.cli.sign_answer import signed_token
from conveyor.clients.git_history import history
from conveyor.config import ApprovalConfig
from conveyor.errors import SigningFailed
from tests.approval_support import (
    DIGEST,
    OTHER_DIGEST,
    RUN,
    Key,
    decision,
    git_repo,
    make_key,
    signed,
)


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Key]:
    folder = tmp_path_factory.mktemp("keys")
    return {n: make_key(folder, n) for n in ("alice", "bob", "mallory")}


def config(keys: dict[str, Key], **kw: object) -> ApprovalConfig:
    people = [
        {"name": n, "email": f"{n}@corp.example", "key": keys[n].public} for n in ("alice", "bob")
    ]
    return ApprovalConfig.model_validate({"approvers": people, "identity": "signed", **kw})


def request(cfg: ApprovalConfig, **kw: object) -> Request:
    base: dict[str, object] = {
        "app": "shop",
        "environment": "production",
        "digest": DIGEST,
        "run_id": RUN,
        "identity": cfg.identity,
        "people": identities(cfg),
        "valid_for": dt.timedelta(hours=1),
    }
    return Request(**{**base, **kw})  # type: ignore[arg-type]


def stop_agent(pid: int) -> None:
    """SIGTERM the agent and wait until it is gone: it daemonized, so it is no child to wait for."""
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)


def test_a_good_signature_counts(keys: dict[str, Key]) -> None:
    token = signed(keys["alice"]).token()
    verdict = judge(request(config(keys)), decision="approve", approver="alice", signature=token)
    assert verdict.refusal is None and verdict.answer is not None
    assert verdict.answer.verified and verdict.answer.key == signing.fingerprint(
        keys["alice"].public
    )


def test_a_signature_pasted_with_its_line_breaks_lost_still_counts(keys: dict[str, Key]) -> None:
    answer = signed(keys["alice"])
    mangled = answer.token()[:40] + "\n  " + answer.token()[40:]
    assert judge(request(config(keys)), decision="", approver="", signature=mangled).counts


def test_an_unsigned_answer_is_refused_with_how_to_sign(keys: dict[str, Key]) -> None:
    verdict = judge(request(config(keys)), decision="approve", approver="alice")
    assert verdict.refusal is not None
    assert "unsigned answer" in verdict.refusal and "conveyor approve" in verdict.refusal
    assert "--print" in verdict.refusal


def test_a_key_not_on_the_list_is_refused(keys: dict[str, Key]) -> None:
    forged = signed(keys["mallory"], approver="alice").token()
    verdict = judge(request(config(keys)), decision="approve", approver="alice", signature=forged)
    assert verdict.refusal is not None
    assert "not a key of alice" in verdict.refusal
    assert signing.fingerprint(keys["mallory"].public) in verdict.refusal
    stranger = signed(keys["mallory"]).token()
    verdict = judge(request(config(keys)), decision="approve", approver="", signature=stranger)
    assert verdict.refusal == "'mallory' is not on the approvers list of production"


@pytest.mark.parametrize(
    ("changed", "reason"),
    [
        ({"digest": OTHER_DIGEST}, f"for digest {OTHER_DIGEST}, not {DIGEST}"),
        ({"environment": "staging"}, "for environment staging, not production"),
        ({"run_id": "99999999-0000-0000-0000-000000000000"}, "(a replay)"),
    ],
)
def test_a_signature_over_another_release_or_run_is_refused(
    keys: dict[str, Key], changed: dict[str, str], reason: str
) -> None:
    token = signed(keys["alice"], **changed).token()
    verdict = judge(request(config(keys)), decision="approve", approver="alice", signature=token)
    assert verdict.refusal is not None and reason in verdict.refusal


def test_an_altered_statement_is_refused(keys: dict[str, Key]) -> None:
    answer = signed(keys["bob"], verdict="reject", comment="no")
    altered = type(answer)(
        decision=answer.decision.model_copy(update={"decision": "approve"}),
        signature=answer.signature,
    )
    verdict = judge(
        request(config(keys)), decision="approve", approver="bob", signature=altered.token()
    )
    assert verdict.refusal is not None and "does not match the statement" in verdict.refusal


def test_an_old_statement_is_refused(keys: dict[str, Key]) -> None:
    old = dt.datetime.now(dt.UTC) - dt.timedelta(hours=2)
    token = signed(keys["alice"], when=old).token()
    verdict = judge(request(config(keys)), decision="approve", approver="alice", signature=token)
    assert verdict.refusal is not None and "longer ago than the 1:00:00" in verdict.refusal


def test_signing_through_ssh_agent(
    keys: dict[str, Key], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sock = tmp_path / "agent.sock"
    started = subprocess.run(
        ["ssh-agent", "-a", str(sock), "-s"], capture_output=True, text=True, check=True
    )
    pid = int(started.stdout.split("SSH_AGENT_PID=")[1].split(";")[0])
    env = {**os.environ, "SSH_AUTH_SOCK": str(sock)}
    try:
        subprocess.run(["ssh-add", "-q", str(keys["bob"].private)], env=env, check=True)
        pub = tmp_path / "bob.pub"
        pub.write_text(keys["bob"].public + "\n")
        monkeypatch.setenv("SSH_AUTH_SOCK", str(sock))
        answer = signing.sign(decision("bob").message(), pub)
        check = signing.verify(
            decision("bob").message(),
            answer,
            identity="bob",
            signers=identities(config(keys))[1].signers,
        )
        assert check.ok, check.detail
    finally:
        stop_agent(pid)
    with pytest.raises(SigningFailed, match="could not sign"):
        signing.sign(b"x", pub)


def test_allowed_signers_file_and_its_namespaces(keys: dict[str, Key], tmp_path: Path) -> None:
    allowed = tmp_path / "allowed_signers"
    alice_key = " ".join(keys["alice"].public.split()[:2])
    bob_key = " ".join(keys["bob"].public.split()[:2])
    allowed.write_text(
        f"# team\nalice@corp.example {alice_key} alice\n"
        f'bob@corp.example namespaces="git" {bob_key}\n'
    )
    cfg = ApprovalConfig(allowed_signers=allowed, identity="signed")
    assert [p.name for p in identities(cfg)] == ["alice@corp.example", "bob@corp.example"]
    good = signed(keys["alice"], approver="alice@corp.example").token()
    assert judge(request(cfg), decision="", approver="", signature=good).counts
    git_only = signed(keys["bob"], approver="bob@corp.example").token()
    verdict = judge(request(cfg), decision="", approver="", signature=git_only)
    assert verdict.refusal is not None and "does not verify" in verdict.refusal


def test_typed_identity_names_but_does_not_verify(keys: dict[str, Key]) -> None:
    cfg = ApprovalConfig(approvers=["alice", "bob"])  # type: ignore[list-item]
    verdict = judge(request(cfg), decision="approve", approver="alice")
    assert verdict.answer is not None and not verdict.answer.verified
    assert judge(request(cfg), decision="approve", approver="eve").refusal == (
        "'eve' is not on the approvers list of production"
    )


def test_required_two_counts_distinct_people(keys: dict[str, Key]) -> None:
    req, tally = request(config(keys)), Tally(required=2)
    assert tally.progress() == "0 of 2: waiting for 2 approvers"
    for _ in range(2):
        verdict = judge(req, decision="", approver="", signature=signed(keys["alice"]).token())
        assert verdict.answer is not None
        tally.add(verdict.answer)
        assert tally.outcome == "waiting"
    assert tally.progress() == "1 of 2: alice approved; waiting for one more"
    verdict = judge(req, decision="", approver="", signature=signed(keys["bob"]).token())
    assert verdict.answer is not None
    tally.add(verdict.answer)
    assert tally.outcome == "approve" and tally.progress() == "2 of 2: alice, bob approved"


def test_one_rejection_ends_it(keys: dict[str, Key]) -> None:
    req, tally = request(config(keys)), Tally(required=2)
    for key, verdict_ in ((keys["alice"], "approve"), (keys["bob"], "reject")):
        verdict = judge(
            req, decision="", approver="", signature=signed(key, verdict=verdict_).token()
        )
        assert verdict.answer is not None
        tally.add(verdict.answer)
    assert tally.outcome == "reject" and tally.rejection is not None
    assert tally.rejection.approver == "bob"


def test_authors_of_the_release_may_not_approve_it(keys: dict[str, Key], tmp_path: Path) -> None:
    shas = git_repo(
        tmp_path / "src",
        [
            ("running release", "carol", "carol@corp.example"),
            ("fix the checkout", "Alice A.", "Alice@Corp.Example"),
            ("bump", "dave", "dave@corp.example"),
        ],
    )
    revision, recorded = recorded_history(
        json.loads(json.dumps(source_payload(history(tmp_path / "src", shas[-1]), shas[-1])))
    )
    assert revision == shas[-1]
    changes = changes_since(recorded, running_revision=shas[0])
    assert [c.subject for c in changes.commits] == [
        "bump",
        "fix the checkout",
    ] and changes.since_known
    cfg = config(keys)
    excluded = self_approvers(identities(cfg), changes.commits, started_by="bob")
    assert excluded["alice"].startswith(f"authored {shas[1][:10]} ('fix the checkout')")
    assert excluded["bob"] == "started this run"
    token = signed(keys["alice"]).token()
    verdict = judge(request(cfg, excluded=excluded), decision="", approver="", signature=token)
    assert verdict.refusal == f"alice may not approve this release: {excluded['alice']}"
    allowed = judge(
        request(cfg, excluded=excluded, allow_self_approval=True),
        decision="",
        approver="",
        signature=token,
    )
    assert allowed.counts
    unknown_base = changes_since(recorded, running_revision="f" * 40)
    assert not unknown_base.since_known and len(unknown_base.commits) == 3


def test_conveyor_approve_signs_with_a_key_file_or_the_agent(
    keys: dict[str, Key], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    waiting = {"app": "shop", "environment": "production", "digest": DIGEST, "run_id": RUN}
    req = request(config(keys))
    token = signed_token(
        waiting, decision="approve", approver="alice", comment="ok", key=keys["alice"].private
    )
    assert judge(req, decision="", approver="alice", signature=token).counts
    sock = tmp_path / "agent.sock"
    started = subprocess.run(
        ["ssh-agent", "-a", str(sock), "-s"], capture_output=True, text=True, check=True
    )
    pid = int(started.stdout.split("SSH_AGENT_PID=")[1].split(";")[0])
    monkeypatch.setenv("SSH_AUTH_SOCK", str(sock))
    try:
        with pytest.raises(SigningFailed, match="no key in ssh-agent"):
            signed_token(waiting, decision="approve", approver="bob", comment="", key=None)
        for name in ("bob", "mallory"):
            subprocess.run(
                ["ssh-add", "-q", str(keys[name].private)], check=True, capture_output=True
            )
        token = signed_token(waiting, decision="reject", approver="bob", comment="no", key=None)
        verdict = judge(req, decision="", approver="bob", signature=token)
        assert verdict.answer is not None and verdict.answer.decision == "reject"
    finally:
        stop_agent(pid)
