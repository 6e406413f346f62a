"""``conveyor ship --as NAME``: the signed start, checked with real ``ssh-keygen -Y``, and
the starter refused as a self-approver."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from conveyor.approvals.changes import self_approvers
from conveyor.approvals.policy import Tally, identities, judge
from conveyor.approvals.record import approval_payload
from conveyor.approvals.starter import judge_start, start_problems, start_token
from conveyor.approvals.statement import StartedBy
from conveyor.approvals.verify import check_statement
from conveyor.cli.main import app as cli
from conveyor.config import Pipeline, parse_pipeline
from conveyor.evidence import Evidence
from conveyor.release import Release
from tests.approval_support import DIGEST, Key, make_key, signed, signed_request
from tests.parts import two_environments


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Key]:
    folder = tmp_path_factory.mktemp("keys")
    return {n: make_key(folder, n) for n in ("alice", "bob", "carol")}


def _pipeline(tmp_path: Path, keys: dict[str, Key], identity: str = "signed") -> Pipeline:
    return parse_pipeline(_document(tmp_path, keys, identity), "pipeline.yaml", tmp_path)


def _document(tmp_path: Path, keys: dict[str, Key], identity: str = "signed") -> dict[str, Any]:
    (tmp_path / "Dockerfile").write_text("FROM scratch\n")
    approval = {
        "approvers": [{"name": k.name, "key": k.public} for k in keys.values()],
        "identity": identity,
        "required": 2,
        "timeout": "1h",
    }
    gated = {"driver": {"kind": "docker", "port": 2}, "approval": approval}
    return two_environments(tmp_path, gated, app="shop")


def test_a_signed_gate_takes_only_a_fresh_signed_start_by_the_named_person(
    tmp_path: Path, keys: dict[str, Key]
) -> None:
    p = _pipeline(tmp_path, keys)
    good = start_token("shop", "carol", keys["carol"].private)
    assert start_problems(p, "carol", good) == []
    assert start_problems(p, "", "") == []
    (unsigned,) = start_problems(p, "carol", "")
    assert "production takes only signed identities" in unsigned
    assert "conveyor ship --as carol --key" in unsigned
    (other,) = start_problems(p, "alice", good)
    assert "the signed start is for carol starting shop, not alice starting shop" in other
    (forged,) = start_problems(p, "carol", start_token("shop", "carol", keys["bob"].private))
    assert "carol's signed start does not verify" in forged
    later = dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)
    (replay,) = start_problems(p, "carol", good, now=later)
    assert "not within 0:15:00 of this run (a replay?)" in replay
    typed = _pipeline(tmp_path, keys, identity="typed")
    assert start_problems(typed, "carol", "") == []


def test_a_release_of_several_services_is_started_under_its_release_name(
    tmp_path: Path, keys: dict[str, Key]
) -> None:
    data = _document(tmp_path, keys)
    app = data.pop("app")
    data["name"] = "shop"
    data["services"] = [{**app, "name": "api"}, {**app, "name": "front", "depends_on": ["api"]}]
    several = parse_pipeline(data, "pipeline.yaml", tmp_path)
    assert (
        start_problems(several, "carol", start_token("shop", "carol", keys["carol"].private)) == []
    )


def test_the_starter_may_not_approve_and_the_evidence_says_who_started(
    tmp_path: Path, keys: dict[str, Key]
) -> None:
    p = _pipeline(tmp_path, keys)
    env = p.environment("production")
    assert env.approval is not None
    started = judge_start(env, "shop", "carol", start_token("shop", "carol", keys["carol"].private))
    assert isinstance(started, StartedBy) and started.verified and started.key
    people = identities(env.approval)
    excluded = self_approvers(people, [], started.name)
    assert excluded == {"carol": "started this run"}
    request = signed_request(people, excluded=excluded, started_by=started)
    refused = judge(request, decision="", approver="", signature=signed(keys["carol"]).token())
    assert refused.refusal == "carol may not approve this release: started this run"
    tally = Tally(required=2)
    for name in ("alice", "bob"):
        verdict = judge(request, decision="", approver="", signature=signed(keys[name]).token())
        assert verdict.answer is not None, verdict.refusal
        tally.add(verdict.answer)
    release = Release(
        app="shop", registry="127.0.0.1", repository="r/shop", digest=DIGEST, version="1"
    )
    payload = approval_payload(release, request, tally, decision="approve")
    item = Evidence("approval", "sha256:" + "c" * 64, dt.datetime.now(dt.UTC), payload)
    check = check_statement(item, DIGEST, env.approval, people)
    assert check.ok, check.problems
    assert f"started by carol (signature verified, key {started.key})" in check.lines
    forged = started.model_copy(update={"name": "alice"})
    payload["predicate"]["started_by"] = forged.model_dump(mode="json")
    tampered = check_statement(item, DIGEST, None, people)
    assert any("the signed start is for carol starting shop" in p for p in tampered.problems)


def test_the_cli_refuses_a_signed_start_without_a_name_and_break_glass_without_a_reason(
    tmp_path: Path,
) -> None:
    runner = CliRunner()
    file = tmp_path / "pipeline.yaml"
    file.write_text("app: {}\n")
    ship = runner.invoke(cli, ["ship", "-p", str(file), "--key", str(tmp_path / "id")])
    assert ship.exit_code == 2
    assert "--key and --sign sign a start: name yourself with --as NAME" in ship.output
    digest = "sha256:" + "a" * 64
    glass = runner.invoke(cli, ["promote", digest, "-p", str(file), "--break-glass"])
    assert glass.exit_code == 2
    assert "--break-glass needs --reason TEXT" in glass.output
