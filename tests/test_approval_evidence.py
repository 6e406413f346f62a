"""Approval evidence in Debian's real registry: verifies when good, names what was tampered."""

from __future__ import annotations

import copy
import datetime as dt
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from conveyor.approvals.changes import Changes, release_changes, request_lines, source_payload
from conveyor.approvals.policy import Tally, identities, judge
from conveyor.approvals.record import approval_payload, record_from_statement
from conveyor.approvals.statement import BreakGlass
from conveyor.approvals.verify import check_approvals, require_verified_approval
from conveyor.cli.main import app
from conveyor.clients.git_history import Commit, history
from conveyor.clients.registry import RegistryClient
from conveyor.config import ApprovalConfig
from conveyor.errors import ApprovalEvidenceInvalid
from conveyor.evidence import attach_evidence, read_evidence
from conveyor.localstack.registry import RegistryServer
from conveyor.release import Release
from tests.approval_support import Key, git_repo, make_key, signed, signed_request
from tests.registry_support import need_registry, push_image, random_layer

pytestmark = pytest.mark.registry
REPO = "approvals/shop"


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Key]:
    folder = tmp_path_factory.mktemp("keys")
    return {n: make_key(folder, n) for n in ("alice", "bob")}


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryClient]:
    need_registry()
    with (
        RegistryServer(tmp_path_factory.mktemp("registry")) as server,
        RegistryClient(server.url) as c,
    ):
        yield c


def cfg(keys: dict[str, Key], required: int = 2) -> ApprovalConfig:
    people = [{"name": n, "email": f"{n}@corp.example", "key": k.public} for n, k in keys.items()]
    return ApprovalConfig.model_validate(
        {"approvers": people, "identity": "signed", "required": required}
    )


def _pushed(client: RegistryClient, version: str) -> Release:
    """A fresh image of the shop in REPO, as the release ``version``."""
    digest = push_image(client, REPO, None, [random_layer(256)])
    return Release(
        app="shop", registry="127.0.0.1", repository=REPO, digest=digest, version=version
    )


def attach_checks(client: RegistryClient, digest: str) -> None:
    """The passed scan and integration evidence a release carries before its approval."""
    attach_evidence(client, REPO, digest, "scan", {"passed": True, "summary": "0 critical"})
    attach_evidence(
        client,
        REPO,
        digest,
        "integration",
        {"environment": "integration", "passed": 3, "failed": 0},
    )


def approved_release(
    client: RegistryClient, keys: dict[str, Key], **extra: Any
) -> tuple[Release, str]:
    """A pushed image with scan and integration evidence and a 2-of-2 signed approval."""
    release = _pushed(client, "1.0.0")
    digest = release.digest
    attach_checks(client, digest)
    config = cfg(keys)
    request = signed_request(identities(config), digest)
    glass = extra.get("break_glass")
    tally = Tally(required=2 + (glass.extra_approvers if glass else 0))
    for key in keys.values():
        verdict = judge(
            request, decision="", approver="", signature=signed(key, digest=digest).token()
        )
        assert verdict.answer is not None, verdict.refusal
        tally.add(verdict.answer)
    payload = approval_payload(release, request, tally, decision="approve", **extra)
    attach_evidence(client, REPO, digest, "approval", payload)
    return release, digest


def test_good_evidence_verifies(client: RegistryClient, keys: dict[str, Key]) -> None:
    _, digest = approved_release(client, keys)
    items = read_evidence(client, REPO, digest)
    assert [e.kind for e in items] == ["scan", "integration", "approval"]
    assert items[2].environment == "production" and items[2].passed
    (check,) = check_approvals(items, digest, {"production": cfg(keys)})
    assert check.ok, check.problems
    assert [line.split(" at ")[0] for line in check.lines] == ["alice approved", "bob approved"]
    assert all(line.endswith(": verified") for line in check.lines)
    require_verified_approval(items, digest, "production", cfg(keys))


def tamper(client: RegistryClient, digest: str, edit: Any) -> None:
    """Store an edited copy of the approval statement as the digest's latest approval."""
    (stored,) = [e for e in read_evidence(client, REPO, digest) if e.kind == "approval"][:1]
    forged = copy.deepcopy(stored.payload)
    edit(forged["predicate"])
    later = stored.created + dt.timedelta(seconds=1)
    attach_evidence(client, REPO, digest, "approval", forged, created=later)


def _edit_statement(p: dict[str, Any]) -> None:
    p["answers"][1]["statement"]["comment"] = "fine"
    p["answers"][1]["comment"] = "fine"


@pytest.mark.parametrize(
    ("edit", "problem"),
    [
        (
            lambda p: p["answers"][0].update(comment="ok by me"),
            "alice's signed statement says comment 'looks good', the record says 'ok by me'",
        ),
        (
            _edit_statement,
            "bob's signature does not verify: the signature does not match the statement",
        ),
        (lambda p: p["answers"].pop(), "approved by 1 verified approver(s) (alice), 2 required"),
        (
            lambda p: p.update(required=1),
            "recorded as needing 1 approver(s); the pipeline requires 2",
        ),
        (
            lambda p: p["answers"][0].update(signature=None, statement=None),
            "alice's answer has no signed statement",
        ),
        (
            lambda p: p.update(excluded=[{"name": "bob", "why": "authored abc"}]),
            "bob approved although they may not: authored abc",
        ),
    ],
)
def test_tampered_evidence_names_what_is_wrong(
    client: RegistryClient, keys: dict[str, Key], edit: Any, problem: str
) -> None:
    _, digest = approved_release(client, keys)
    tamper(client, digest, edit)
    items = read_evidence(client, REPO, digest)
    original, forged = check_approvals(items, digest, {"production": cfg(keys)})
    assert original.ok and any(problem in p for p in forged.problems)
    with pytest.raises(ApprovalEvidenceInvalid, match="does not verify") as raised:
        require_verified_approval(items, digest, "production", cfg(keys))
    assert any(problem in p for p in raised.value.problems)


def test_evidence_moved_to_another_digest_does_not_verify(
    client: RegistryClient, keys: dict[str, Key]
) -> None:
    _, digest = approved_release(client, keys)
    (stored,) = [e for e in read_evidence(client, REPO, digest) if e.kind == "approval"]
    other = push_image(client, REPO, None, [random_layer(256)])
    attach_evidence(client, REPO, other, "approval", stored.payload)
    (check,) = check_approvals(read_evidence(client, REPO, other), other, {"production": cfg(keys)})
    assert f"the statement's subject is {digest[7:]}, not {other}" in check.problems
    assert any("signed statement says digest" in p for p in check.problems)


def test_break_glass_is_marked_and_needs_one_more(
    client: RegistryClient, keys: dict[str, Key]
) -> None:
    glass = BreakGlass(reason="payment outage", window="weekend (cron '0 18 * * FRI' for 62h)")
    _, digest = approved_release(client, keys, break_glass=glass)
    (check,) = check_approvals(
        read_evidence(client, REPO, digest), digest, {"production": cfg(keys)}
    )
    assert "BREAK-GLASS during weekend (cron '0 18 * * FRI' for 62h): payment outage" in check.lines
    assert "approved by 2 verified approver(s) (alice, bob), 3 required" in check.problems


def test_break_glass_outside_a_freeze_is_marked_and_verifies_with_the_usual_count(
    client: RegistryClient, keys: dict[str, Key]
) -> None:
    glass = BreakGlass(reason="hotfix", window=None)
    _, digest = approved_release(client, keys, break_glass=glass)
    (check,) = check_approvals(
        read_evidence(client, REPO, digest), digest, {"production": cfg(keys)}
    )
    assert "BREAK-GLASS outside any freeze window: hotfix" in check.lines
    assert check.ok, check.problems


def _decided_release(
    client: RegistryClient, keys: dict[str, Key], decision: str
) -> tuple[str, list[Any]]:
    """A digest whose approval evidence is bob's signed rejection, or a timeout after alice."""
    release = _pushed(client, "1.0.1")
    digest = release.digest
    request = signed_request(identities(cfg(keys)), digest)
    tally = Tally(required=2)
    answers = [("alice", "approve")] + ([("bob", "reject")] if decision == "reject" else [])
    for name, verdict in answers:
        token = signed(keys[name], digest=digest, verdict=verdict, comment="no").token()
        counted = judge(request, decision="", approver="", signature=token)
        assert counted.answer is not None, counted.refusal
        tally.add(counted.answer)
    payload = approval_payload(release, request, tally, decision=decision)  # type: ignore[arg-type]
    attach_evidence(client, REPO, digest, "approval", payload)
    return digest, check_approvals(
        read_evidence(client, REPO, digest), digest, {"production": cfg(keys)}
    )


def test_a_signed_rejection_is_kept_as_the_signed_statement(
    client: RegistryClient, keys: dict[str, Key]
) -> None:
    digest, (check,) = _decided_release(client, keys, "reject")
    assert check.ok and check.decision == "reject", check.problems
    assert any(
        line.startswith("bob rejected at ") and line.endswith(": verified") for line in check.lines
    )
    (stored,) = [e for e in read_evidence(client, REPO, digest) if e.kind == "approval"]
    (bob,) = [a for a in stored.payload["predicate"]["answers"] if a["approver"] == "bob"]
    assert bob["statement"]["decision"] == "reject" and bob["signature"].startswith(
        "-----BEGIN SSH SIGNATURE-----"
    )
    assert stored.payload["predicate"]["decided_by"] == "approvers"
    with pytest.raises(ApprovalEvidenceInvalid, match="does not verify"):
        require_verified_approval(
            read_evidence(client, REPO, digest), digest, "production", cfg(keys)
        )


def test_a_timeout_is_recorded_by_conveyor_and_says_nobody_signed_it(
    client: RegistryClient, keys: dict[str, Key]
) -> None:
    digest, (check,) = _decided_release(client, keys, "timeout")
    assert check.ok and check.decision == "timeout", check.problems
    assert any("alice approved at" in line and "verified" in line for line in check.lines)
    assert any(
        line.startswith("timed out at ")
        and "recorded by conveyor" in line
        and "signed by no person" in line
        for line in check.lines
    )
    (stored,) = [e for e in read_evidence(client, REPO, digest) if e.kind == "approval"]
    assert stored.payload["predicate"]["decided_by"] == "conveyor"


def pipeline_file(folder: Path, url: str, keys: dict[str, Key]) -> Path:
    (folder / "app").mkdir(parents=True, exist_ok=True)
    (folder / "app" / "Dockerfile").write_text("FROM scratch\n")
    people = [{"name": n, "email": f"{n}@corp.example", "key": k.public} for n, k in keys.items()]
    doc = {
        "app": {"name": "shop", "context": "app"},
        "registry": {"url": url, "repository": REPO},
        "environments": [
            {
                "name": "integration",
                "tag": "integration-ready",
                "driver": {"kind": "docker", "port": 18080},
            },
            {
                "name": "production",
                "tag": "production-ready",
                "driver": {"kind": "docker", "port": 18081},
                "approval": {"approvers": people, "identity": "signed", "required": 2},
            },
        ],
    }
    path = folder / "pipeline.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def test_conveyor_verify_prints_who_approved_and_what_is_wrong(
    client: RegistryClient, keys: dict[str, Key], tmp_path: Path
) -> None:
    file = pipeline_file(tmp_path, client.url, keys)
    _, digest = approved_release(client, keys)
    runner = CliRunner()
    good = runner.invoke(app, ["verify", digest, "-p", str(file), "--env", "production"])
    assert good.exit_code == 0, good.output
    assert "alice approved at" in good.output and "the evidence of" in good.output
    as_json = runner.invoke(app, ["verify", digest, "-p", str(file), "--json"])
    report = json.loads(as_json.output)
    assert [r["status"] for r in report["evidence"]] == ["passed", "passed", "verified"]
    tamper(client, digest, _edit_statement)
    bad = runner.invoke(app, ["verify", digest, "-p", str(file), "--json"])
    assert bad.exit_code == 1
    statuses = [r["status"] for r in json.loads(bad.output)["evidence"]]
    assert statuses == ["passed", "passed", "verified", "INVALID"]
    problems = json.loads(bad.output)["evidence"][3]["problems"]
    assert any("bob's signature does not verify" in p for p in problems)
    unapproved = push_image(client, REPO, None, [random_layer(64)])
    none = runner.invoke(app, ["verify", unapproved, "-p", str(file), "--env", "production"])
    assert none.exit_code == 1 and "no approval evidence for production" in none.output


def test_changes_since_the_running_release_come_from_source_evidence(
    client: RegistryClient, tmp_path: Path
) -> None:
    shas = git_repo(
        tmp_path / "src",
        [("v1", "carol", "carol@corp.example"), ("fix", "alice", "alice@corp.example")],
    )
    digests = []
    for sha in shas:
        digest = push_image(client, REPO, None, [random_layer(64)])
        attach_evidence(
            client, REPO, digest, "source", source_payload(history(tmp_path / "src", sha), sha)
        )
        digests.append(digest)

    def source(digest: str) -> dict[str, Any]:
        return read_evidence(client, REPO, digest, ("source",))[-1].payload

    found = release_changes(source(digests[1]), source(digests[0]))
    assert [c.subject for c in found.commits] == ["fix"] and found.since_known
    assert [c.subject for c in release_changes(source(digests[1]), None).commits] == ["fix", "v1"]


def test_an_earlier_approval_is_read_back_from_its_statement(
    client: RegistryClient, keys: dict[str, Key]
) -> None:
    _, digest = approved_release(client, keys)
    (stored,) = [e for e in read_evidence(client, REPO, digest) if e.kind == "approval"]
    earlier = record_from_statement(stored.payload, required=2)
    assert earlier is not None and earlier.approver == "alice, bob"
    assert earlier.digest == digest and earlier.statement == stored.payload
    assert record_from_statement(stored.payload, required=3) is None


def test_the_request_lists_changes_and_who_may_not_approve() -> None:
    commit = Commit(
        sha="c" * 40,
        subject="fix login",
        author_name="Alice",
        author_email="alice@corp.example",
        committer_name="ci",
        committer_email="ci@corp.example",
    )
    lines = request_lines(
        Changes([commit], since_known=True), {"alice": "authored cccccccccc"}, False
    )
    assert lines == [
        "changes since the running release (1 commits):",
        "  cccccccccc fix login (Alice <alice@corp.example>)",
        "alice may not approve: authored cccccccccc",
    ]
