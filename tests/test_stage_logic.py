"""What the tasks used to compute themselves, now library functions tested without
Prefect: the release record, the verdict of an environment's checks, which pre-flight
findings block, and which evidence an environment's tests leave."""

from __future__ import annotations

from pathlib import Path

import pytest

from conveyor.config import EnvironmentConfig, Pipeline, parse_pipeline
from conveyor.errors import PreflightFailed
from conveyor.preflight import Check, PreflightReport
from conveyor.preflight.environment import raise_for_failures, report_rows
from conveyor.probe import CheckResult
from conveyor.proof import results_kind
from conveyor.record import render_record
from conveyor.release import (
    ApprovalRecord,
    Deployment,
    Release,
    ReleaseRecord,
    Verification,
)
from conveyor.verification import results_rows, verdict
from tests.parts import two_environments

DIGEST = "sha256:" + "c" * 64
VCENTER = {
    "url": "https://127.0.0.1:8989/sdk",
    "username": "u",
    "password": {"env": "X"},
    "thumbprint": "AA:" * 19 + "AA",
    "cluster": "c",
    "agent_vms": {"name_pattern": "agent-*"},
}


def _pipeline(tmp_path: Path, warnings_block: bool) -> Pipeline:
    (tmp_path / "Dockerfile").write_text("FROM scratch\n")
    production = {
        "driver": {"kind": "docker", "port": 2},
        "preflight": {"vsphere": {**VCENTER, "warnings_block": warnings_block}},
    }
    return parse_pipeline(two_environments(tmp_path, production), "pipeline.yaml", tmp_path)


def _report(source: str, status: str) -> PreflightReport:
    check = Check("host esx-01", "connection state", status, "detail")  # type: ignore[arg-type]
    return PreflightReport("production", source, (check,))


def test_the_release_record_says_where_the_digest_went_and_who_let_it_through() -> None:
    release = Release(
        app="hello",
        registry="127.0.0.1:5000",
        repository="conveyor/hello",
        digest=DIGEST,
        version="1.2.0",
        revision="abc123",
    )
    record = ReleaseRecord(
        release=release,
        scan_summary="0 blocking",
        deployments=[
            Deployment(environment="integration", changed=True),
            Deployment(environment="production", changed=False),
        ],
        verifications=[Verification(environment="integration", passed=3, failed=0, summary="ok")],
        approvals=[
            ApprovalRecord(environment="production", decision="approve", approver=None, comment="c")
        ],
    )
    text = render_record(record)
    assert text.startswith("# Release hello 1.2.0")
    assert f"- image: `127.0.0.1:5000/conveyor/hello@{DIGEST}`" in text
    assert "| yes |" in text and "| already there |" in text
    assert "| integration |" in text and "| 3 | 0 | ok |" in text
    assert "| production | approve | (nobody) | c |" in text


def test_the_verdict_counts_every_check_and_names_each_in_the_summary(tmp_path: Path) -> None:
    env = _pipeline(tmp_path, False).environments[0]
    results = [
        CheckResult("health", True, "200", 0.123),
        CheckResult("welcome page", False, "expected 'hi'", 1.0),
    ]
    found = verdict(env, results)
    assert (found.environment, found.passed, found.failed) == ("integration", 1, 1)
    assert found.summary == "health: ok, welcome page: FAILED"
    assert results_rows(results)[1] == {
        "check": "welcome page",
        "result": "FAILED",
        "detail": "expected 'hi'",
        "seconds": 1.0,
    }


@pytest.mark.parametrize(
    ("warnings_block", "reports", "blocks"),
    [
        (False, [_report("vsphere", "warn")], False),
        (True, [_report("vsphere", "warn")], True),
        # warnings_block is vCenter's setting: DC/OS warnings never block.
        (True, [_report("dcos", "warn")], False),
        (False, [_report("dcos", "fail")], True),
    ],
)
def test_which_preflight_findings_block(
    tmp_path: Path, warnings_block: bool, reports: list[PreflightReport], blocks: bool
) -> None:
    env: EnvironmentConfig = _pipeline(tmp_path, warnings_block).environments[1]
    assert len(report_rows(reports)) == 1
    if blocks:
        with pytest.raises(PreflightFailed, match="host esx-01: connection state: detail"):
            raise_for_failures(env, reports)
    else:
        raise_for_failures(env, reports)


def test_the_first_environment_leaves_integration_evidence_the_others_verification(
    tmp_path: Path,
) -> None:
    pipeline = _pipeline(tmp_path, False)
    assert results_kind(pipeline, "integration") == "integration"
    assert results_kind(pipeline, "production") == "verification"
